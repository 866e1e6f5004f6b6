package acquire

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/impound-ir/impound/vault"
)

// cancelAfter is a source that cancels the acquisition once it has read
// n blocks, as an operator's Ctrl-C would.
type cancelAfter struct {
	Source
	n        int64
	cancel   context.CancelFunc
	stateDir string
	state    string
}

func (s *cancelAfter) ReadBlock(ctx context.Context, b Block, p []byte) error {
	if b.Index >= s.n {
		// Let a checkpoint past block 16 be saved first.
		for range 1000 {
			if st, err := loadState(s.stateDir, s.state); err == nil && st.NextBlock >= 16 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		s.cancel()
		<-ctx.Done()
		return ctx.Err()
	}
	return s.Source.ReadBlock(ctx, b, p)
}

func testResume(t *testing.T, s vault.Store, compression string) {
	const size = 40*BlockSize + 999
	path := tempFile(t, "disk.img")
	want := writeSparse(t, path, size, map[int64][]byte{
		0:                randomBytes(21, 12*BlockSize),
		20 * BlockSize:   randomBytes(22, 20*BlockSize+999),
		13*BlockSize + 5: []byte("x"),
	})
	stateDir := t.TempDir()
	src, err := OpenFile(path, SourceInfo{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	opts := NewOptions()
	opts.Case = "case-r"
	opts.Key, _ = DefaultKey(opts.Case, src.Info(), compression)
	opts.Compression = compression
	opts.StateDir = stateDir
	opts.CheckpointInterval = time.Nanosecond
	opts.Hashes = []string{"sha256", "md5"}
	opts.Workers = 3

	ctx, cancel := context.WithCancel(context.Background())
	ev, err := Run(ctx, &cancelAfter{Source: src, n: 30, cancel: cancel, stateDir: stateDir, state: stateName(opts.Case, src.Info(), opts.Key)}, s, opts)
	if !errors.Is(err, context.Canceled) || ev != nil {
		t.Fatalf("interrupted Run = %v, %v", ev, err)
	}
	statePath := StatePath(stateDir, opts.Case, src.Info(), opts.Key)
	if _, err := os.Stat(statePath); err != nil {
		t.Fatalf("no state after interruption: %v", err)
	}
	if _, err := Run(context.Background(), src, s, opts); !errors.Is(err, ErrStateExists) {
		t.Fatalf("Run without resume over a saved state: %v", err)
	}
	opts.Resume = true
	ev, err = Run(context.Background(), src, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Hashes["sha256"] != sha256hex(want) || ev.Resumed != 1 {
		t.Fatalf("resumed hashes %v (resumed %d), want sha256 %s", ev.Hashes, ev.Resumed, sha256hex(want))
	}
	root := independentMerkle(t, want)
	if ev.MerkleRoot != hex.EncodeToString(root[:]) {
		t.Fatal("merkle root wrong after resume")
	}
	if ev.WrittenBlocks != 12+1+21 {
		t.Fatalf("written blocks %d", ev.WrittenBlocks)
	}
	if got := imageOf(t, s, ev); string(got) != string(want) {
		t.Fatal("stored image differs after resume")
	}
	if _, err := os.Stat(statePath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state left after success: %v", err)
	}
	keys, err := s.List(context.Background(), "cases/")
	if err != nil || len(keys) != 2 {
		t.Fatalf("vault keys %v, want the image and its block map", keys)
	}
}

func TestResumeMemory(t *testing.T) { testResume(t, vault.NewMemory(), CompressNone) }

func TestResumeLocal(t *testing.T) {
	s, err := vault.Open(context.Background(), t.TempDir(), vault.NewOptions())
	if err != nil {
		t.Fatal(err)
	}
	testResume(t, s, CompressNone)
}

// TestResumeAfterKill kills -9 a process in the middle of an acquisition into
// a local vault, then resumes: one object, the right hashes.
func TestResumeAfterKill(t *testing.T) {
	if os.Getenv("IMPOUND_ACQUIRE_CHILD") == "1" {
		t.Skip("child")
	}
	dir := t.TempDir()
	const size = 64 * BlockSize
	path := filepath.Join(dir, "disk.img")
	want := randomBytes(33, size)
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	vaultDir, stateDir := filepath.Join(dir, "vault"), filepath.Join(dir, "state")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSlowAcquire$", "-test.v")
	cmd.Env = append(os.Environ(), "IMPOUND_ACQUIRE_CHILD=1", "ACQ_PATH="+path, "ACQ_VAULT="+vaultDir, "ACQ_STATE="+stateDir)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until a checkpoint beyond block 16 is saved, then kill -9.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		st, err := loadState(stateDir, stateName("case-k", SourceInfo{Kind: KindFile, Path: path}, ""))
		if err == nil && st.NextBlock >= 16 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no checkpoint within 3 minutes; child output:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()

	s, err := vault.Open(context.Background(), vaultDir, vault.NewOptions())
	if err != nil {
		t.Fatal(err)
	}
	src, err := OpenFile(path, SourceInfo{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	opts := killOptions(stateDir, src)
	opts.Resume = true
	ev, err := Run(context.Background(), src, s, opts)
	if err != nil {
		t.Fatalf("resume after kill: %v\nchild output:\n%s", err, out.String())
	}
	if ev.Hashes["sha256"] != sha256hex(want) || ev.Resumed != 1 {
		t.Fatalf("hashes %v resumed %d", ev.Hashes, ev.Resumed)
	}
	if got := imageOf(t, s, ev); string(got) != string(want) {
		t.Fatal("stored image differs after kill and resume")
	}
	keys, _ := s.List(context.Background(), "")
	if len(keys) != 2 {
		t.Fatalf("vault keys %v", keys)
	}
}

func killOptions(stateDir string, src Source) Options {
	opts := NewOptions()
	opts.Case = "case-k"
	opts.Key, _ = DefaultKey(opts.Case, src.Info(), CompressNone)
	opts.StateDir = stateDir
	opts.CheckpointInterval = time.Nanosecond
	opts.Workers = 1
	return opts
}

// slowSource reads one block every 20 ms.
type slowSource struct{ Source }

func (s slowSource) ReadBlock(ctx context.Context, b Block, p []byte) error {
	time.Sleep(20 * time.Millisecond)
	return s.Source.ReadBlock(ctx, b, p)
}

// TestHelperSlowAcquire is the child process of TestResumeAfterKill.
func TestHelperSlowAcquire(t *testing.T) {
	if os.Getenv("IMPOUND_ACQUIRE_CHILD") != "1" {
		t.Skip("helper process")
	}
	s, err := vault.Open(context.Background(), os.Getenv("ACQ_VAULT"), vault.NewOptions())
	if err != nil {
		t.Fatal(err)
	}
	src, err := OpenFile(os.Getenv("ACQ_PATH"), SourceInfo{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), slowSource{src}, s, killOptions(os.Getenv("ACQ_STATE"), src))
	fmt.Println("child finished (should have been killed):", err)
}

// partStore models S3 multipart uploads: its writers pass data on in whole
// parts only, so a checkpoint covers fewer bytes than were written, at
// offsets unrelated to block or frame boundaries.
type partStore struct {
	vault.Store
	part int
}

type partWriter struct {
	vault.Writer
	part int
	buf  []byte
}

func (s partStore) Create(ctx context.Context, key string, o vault.PutOptions) (vault.Writer, error) {
	w, err := s.Store.Create(ctx, key, o)
	return &partWriter{Writer: w, part: s.part}, err
}

func (s partStore) Resume(ctx context.Context, state []byte) (vault.Writer, int64, error) {
	w, off, err := s.Store.Resume(ctx, state)
	return &partWriter{Writer: w, part: s.part}, off, err
}

func (w *partWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for len(w.buf) >= w.part {
		if _, err := w.Writer.Write(w.buf[:w.part]); err != nil {
			return 0, err
		}
		w.buf = w.buf[w.part:]
	}
	return len(p), nil
}

func (w *partWriter) Commit() (*vault.Receipt, error) {
	if _, err := w.Writer.Write(w.buf); err != nil {
		return nil, err
	}
	return w.Writer.Commit()
}

func TestResumePartAligned(t *testing.T) {
	for _, c := range []string{CompressNone, CompressZstd} {
		t.Run("compression="+c, func(t *testing.T) {
			testResume(t, partStore{Store: vault.NewMemory(), part: 1<<20 + 12345}, c)
		})
	}
}

// TestResumeEBS interrupts a snapshot acquisition and resumes it: the
// listing restarts at the saved block (StartingBlockIndex) and the result is
// the uninterrupted one.
func TestResumeEBS(t *testing.T) {
	var idx []int32
	for i := int32(0); i < 2048; i += 3 {
		idx = append(idx, i)
	}
	f := newFakeEBS("snap-5", 1, seededBlocks(55, idx...))
	ctx := context.Background()
	src, err := NewEBSSource(ctx, f, f.id, nil, fastEBSOptions())
	if err != nil {
		t.Fatal(err)
	}
	s := localVault(t)
	opts := NewOptions()
	opts.Case = "case-re"
	opts.Key, _ = DefaultKey(opts.Case, src.Info(), CompressNone)
	opts.StateDir = t.TempDir()
	opts.CheckpointInterval = time.Nanosecond
	cctx, cancel := context.WithCancel(ctx)
	name := stateName(opts.Case, src.Info(), opts.Key)
	ev, err := Run(cctx, &cancelAfter{Source: src, n: 1200, cancel: cancel, stateDir: opts.StateDir, state: name}, s, opts)
	if !errors.Is(err, context.Canceled) || ev != nil {
		t.Fatalf("interrupted Run = %v, %v", ev, err)
	}
	st, err := loadState(opts.StateDir, name)
	if err != nil || st.NextBlock < 16 {
		t.Fatalf("state %+v, %v", st, err)
	}
	gets := f.gets.Load()
	opts.Resume = true
	ev, err = Run(ctx, src, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, s, ev, expect(t, f.reader))
	if ev.WrittenBlocks != int64(len(idx)) || ev.Resumed != 1 {
		t.Fatalf("written %d (want %d), resumed %d", ev.WrittenBlocks, len(idx), ev.Resumed)
	}
	// The resumed run read only from the saved block on.
	if again := f.gets.Load() - gets; again > int64(len(idx))-st.NextBlock/3+int64(boundaryEvery) {
		t.Fatalf("resume read %d blocks again from block %d", again, st.NextBlock)
	}
}
