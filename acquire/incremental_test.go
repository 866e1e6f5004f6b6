package acquire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/vault"
)

// countingEBS is the real SDK client, counting the GetSnapshotBlock calls
// that reach it.
type countingEBS struct {
	*ebs.Client
	gets atomic.Int64
}

func (c *countingEBS) GetSnapshotBlock(ctx context.Context, in *ebs.GetSnapshotBlockInput, optFns ...func(*ebs.Options)) (*ebs.GetSnapshotBlockOutput, error) {
	c.gets.Add(1)
	return c.Client.GetSnapshotBlock(ctx, in, optFns...)
}

// snapshotVolume snapshots v through the real EC2 client and returns the
// snapshot ID and, with want, its image as the simulator holds it.
func (e *simEnv) snapshotVolume(t testing.TB, v *awssim.Volume, want bool) (string, expected) {
	t.Helper()
	ctx := context.Background()
	c := ec2.NewFromConfig(e.cfg)
	out, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(v.ID())})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.SnapshotId)
	if err := ec2.NewSnapshotCompletedWaiter(c, func(o *ec2.SnapshotCompletedWaiterOptions) { o.MinDelay = 10 * time.Millisecond }).
		Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if !want {
		return id, expected{}
	}
	return id, expect(t, func() io.Reader {
		r, err := e.env.Sim.SnapshotImage(id)
		if err != nil {
			t.Fatal(err)
		}
		return r
	})
}

// incrementalFixture: a volume snapshotted (A), acquired in full, changed,
// and snapshotted again (B).
type incrementalFixture struct {
	e          *simEnv
	store      vault.Store
	base       *Evidence
	snapB      string
	wantB      expected
	ebsChanged int64 // changed blocks B holds data in
}

func newIncrementalFixture(t *testing.T, compression string) *incrementalFixture {
	e := newSimEnv(t)
	v, err := e.acct.CreateVolume(awssim.VolumeOptions{SizeGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	seedScattered(v) // blocks 0-3, 100-140, 2047
	snapA, _ := e.snapshotVolume(t, v, false)
	f := &incrementalFixture{e: e, store: localVault(t)}
	src, err := NewEBSSource(t.Context(), NewEBSClient(e.cfg), snapA, nil, fastEBSOptions())
	if err != nil {
		t.Fatal(err)
	}
	opts := NewOptions()
	opts.Case = "case-inc"
	opts.Compression = compression
	opts.Key, _ = DefaultKey(opts.Case, src.Info(), compression)
	if f.base, err = Run(t.Context(), src, f.store, opts); err != nil {
		t.Fatal(err)
	}
	// Change a written block, overwrite another with zeros (still
	// written), and write two new ones.
	v.WriteRandom(2*BlockSize+100, 1000, 7)
	if _, err := v.WriteAt(make([]byte, BlockSize), 120*BlockSize); err != nil {
		t.Fatal(err)
	}
	v.WriteRandom(500*BlockSize, 2*BlockSize, 8)
	f.ebsChanged = 4
	f.snapB, f.wantB = e.snapshotVolume(t, v, true)
	return f
}

func (f *incrementalFixture) acquire(t *testing.T, api ebsChangedAPI, store Store, base BaseAcquisition) (*Evidence, error) {
	t.Helper()
	src, err := NewIncrementalSource(t.Context(), api, f.store, base, f.snapB, nil, fastEBSOptions())
	if err != nil {
		return nil, err
	}
	opts := NewOptions()
	opts.Case = "case-inc"
	opts.Key, _ = DefaultKey(opts.Case, src.Info(), CompressNone)
	return Run(t.Context(), src, store, opts)
}

// TestIncremental runs every incremental case over one fixture (each
// costs a 1 GiB simulated volume), and bit for bit over a zstd base.
func TestIncremental(t *testing.T) {
	f := newIncrementalFixture(t, CompressNone)
	t.Run("BitForBit", func(t *testing.T) { testIncrementalBitForBit(t, f, true) })
	t.Run("TamperedBase", func(t *testing.T) { testIncrementalTamperedBase(t, f) })
	t.Run("UnrelatedBase", func(t *testing.T) { testIncrementalUnrelatedBase(t, f) })
	t.Run("ZstdBase", func(t *testing.T) { testIncrementalBitForBit(t, newIncrementalFixture(t, CompressZstd), false) })
}

func testIncrementalBitForBit(t *testing.T, f *incrementalFixture, compareFull bool) {
	base, err := BaseFromEvidence(f.base)
	if err != nil {
		t.Fatal(err)
	}
	api := &countingEBS{Client: NewEBSClient(f.e.cfg)}
	ev, err := f.acquire(t, api, f.store, base)
	if err != nil {
		t.Fatal(err)
	}
	// The image is B's, byte for byte; its Merkle root is tlog's.
	checkImage(t, f.store, ev, f.wantB)
	// Only the changed blocks came from EBS.
	if got := api.gets.Load(); got != f.ebsChanged {
		t.Fatalf("%d GetSnapshotBlock calls, want %d (the changed blocks)", got, f.ebsChanged)
	}
	inc := ev.Incremental
	if inc == nil || inc.BaseSnapshotID != f.base.Source.SnapshotID || inc.BaseImage.SHA256 != f.base.Image.SHA256 ||
		inc.BaseMerkleRoot != f.base.MerkleRoot || inc.EBSBlocks != f.ebsChanged || inc.ChangedBlocks != f.ebsChanged ||
		inc.ReusedBlocks != f.base.WrittenBlocks-2 {
		t.Fatalf("incremental record %+v", inc)
	}
	if ev.Source.Kind != KindIncremental || ev.Source.SnapshotID != f.snapB || ev.Source.BaseSnapshotID != f.base.Source.SnapshotID {
		t.Fatalf("source %+v", ev.Source)
	}
	// Same image, block map and root as a full acquisition of B.
	if !compareFull {
		return
	}
	fullStore := localVault(t)
	full, err := f.e.acquire(t, f.e.cfg, f.snapB, fastEBSOptions(), fullStore)
	if err != nil {
		t.Fatal(err)
	}
	if full.MerkleRoot != ev.MerkleRoot || full.Hashes[SHA256] != ev.Hashes[SHA256] || full.WrittenBlocks != ev.WrittenBlocks {
		t.Fatalf("full acquisition: root %s sha256 %s written %d; incremental: %s %s %d",
			full.MerkleRoot, full.Hashes[SHA256], full.WrittenBlocks, ev.MerkleRoot, ev.Hashes[SHA256], ev.WrittenBlocks)
	}
	if ev.WrittenBlocks != f.base.WrittenBlocks+2 {
		t.Fatalf("written blocks %d, want %d", ev.WrittenBlocks, f.base.WrittenBlocks+2)
	}
	gotMap := readBack(t, f.store, ev.BlockMap)
	m, err := ParseBlockMap(gotMap)
	if err != nil || !m.Contains(500) || !m.Contains(501) || !m.Contains(120) || m.Contains(502) {
		t.Fatalf("block map %q: %v", gotMap, err)
	}
	if fullMap := readBack(t, fullStore, full.BlockMap); !bytes.Equal(fullMap, gotMap) {
		t.Fatalf("block map %q, a full acquisition's %q", gotMap, fullMap)
	}
}

// tamperStore serves one object with one byte flipped.
type tamperStore struct {
	vault.Store
	key string
	off int64
}

func (s tamperStore) Get(ctx context.Context, key, version string) (io.ReadCloser, error) {
	rc, err := s.Store.Get(ctx, key, version)
	if err != nil || key != s.key {
		return rc, err
	}
	return &tamperReader{rc: rc, off: s.off}, nil
}

// tamperReader streams rc with the byte at off flipped.
type tamperReader struct {
	rc  io.ReadCloser
	pos int64
	off int64
}

func (r *tamperReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if r.off >= r.pos && r.off < r.pos+int64(n) {
		p[r.off-r.pos] ^= 0x40
	}
	r.pos += int64(n)
	return n, err
}

func (r *tamperReader) Close() error { return r.rc.Close() }

func testIncrementalTamperedBase(t *testing.T, f *incrementalFixture) {
	base, _ := BaseFromEvidence(f.base)
	for name, off := range map[string]int64{
		"reused block":    101*BlockSize + 17, // unchanged: its bytes would go into B's image
		"changed block":   2*BlockSize + 5,    // changed: only hashed
		"unwritten block": 700 * BlockSize,    // zeros in A and B
	} {
		t.Run(name, func(t *testing.T) {
			out := localVault(t)
			api := &countingEBS{Client: NewEBSClient(f.e.cfg)}
			src, err := NewIncrementalSource(t.Context(), api, tamperStore{f.store, base.Image.Key, off}, base, f.snapB, nil, fastEBSOptions())
			if err != nil {
				t.Fatal(err)
			}
			opts := NewOptions()
			opts.Key = "b.img"
			ev, err := Run(t.Context(), src, out, opts)
			if !errors.Is(err, ErrBaseMismatch) || ev != nil {
				t.Fatalf("Run = %v, %v; want ErrBaseMismatch", ev, err)
			}
			if !strings.Contains(err.Error(), f.base.MerkleRoot) {
				t.Fatalf("error does not name the recorded root: %v", err)
			}
			if keys, _ := out.List(t.Context(), ""); len(keys) != 0 {
				t.Fatalf("a failed incremental acquisition left %v", keys)
			}
		})
	}
	// A block map that is not the recorded one is refused at once.
	_, err := NewIncrementalSource(t.Context(), NewEBSClient(f.e.cfg), tamperStore{f.store, base.BlockMap.Key, 30}, base, f.snapB, nil, fastEBSOptions())
	if !errors.Is(err, ErrBaseMismatch) {
		t.Fatalf("tampered block map: %v", err)
	}
	// A wrong recorded root (the ledger names another image) fails too.
	wrong := base
	wrong.MerkleRoot = strings.Repeat("0", 64)
	if _, err := f.acquire(t, NewEBSClient(f.e.cfg), localVault(t), wrong); !errors.Is(err, ErrBaseMismatch) {
		t.Fatalf("wrong root: %v", err)
	}
}

func testIncrementalUnrelatedBase(t *testing.T, f *incrementalFixture) {
	// An acquisition of a snapshot of another volume of the same size.
	other, _ := f.e.snapshot(t, 1, func(v *awssim.Volume) { v.WriteRandom(0, BlockSize, 11) })
	ev, err := f.e.acquire(t, f.e.cfg, other, fastEBSOptions(), f.store)
	if err != nil {
		t.Fatal(err)
	}
	base, _ := BaseFromEvidence(ev)
	_, err = NewIncrementalSource(t.Context(), NewEBSClient(f.e.cfg), f.store, base, f.snapB, nil, fastEBSOptions())
	if !errors.Is(err, ErrUnrelatedBase) || !strings.Contains(err.Error(), other) || !strings.Contains(err.Error(), "impound acquire snapshot") {
		t.Fatalf("unrelated base: %v", err)
	}
	// A base of another size is refused too.
	base.Size *= 2
	if _, err := NewIncrementalSource(t.Context(), NewEBSClient(f.e.cfg), f.store, base, f.snapB, nil, fastEBSOptions()); !errors.Is(err, ErrUnrelatedBase) {
		t.Fatalf("base of another size: %v", err)
	}
	// The base as the newer snapshot: EBS refuses the order.
	fb, _ := BaseFromEvidence(f.base)
	fb.SnapshotID = f.snapB
	if _, err := NewIncrementalSource(t.Context(), NewEBSClient(f.e.cfg), f.store, fb, f.snapB, nil, fastEBSOptions()); err == nil {
		t.Fatal("base equal to the snapshot accepted")
	}
}

// TestIncrementalReaderAfterFailedWalk: once the walk over the base has
// failed (here, an altered base), a reader still asking for a base block it
// was handed gets the walk's error, so the acquisition fails with
// ErrBaseMismatch whichever goroutine reports first.
func TestIncrementalReaderAfterFailedWalk(t *testing.T) {
	s := &IncrementalSource{pending: map[int64]pendingBlock{}}
	buf := make([]byte, BlockSize)
	s.pending[7] = pendingBlock{buf: &buf}
	s.pool.New = func() any { b := make([]byte, BlockSize); return &b }
	walk := fmt.Errorf("base image has Merkle root 00, its acquisition recorded 11: %w", ErrBaseMismatch)
	s.failWalk(walk)
	if len(s.pending) != 0 {
		t.Fatalf("%d blocks still pending after the walk failed", len(s.pending))
	}
	_, _, err := s.readBlockLeaf(t.Context(), Block{Index: 7, Token: baseBlockToken}, make([]byte, BlockSize))
	if !errors.Is(err, ErrBaseMismatch) || !strings.Contains(err.Error(), "recorded 11") {
		t.Fatalf("reader after a failed walk: %v, want the walk's ErrBaseMismatch", err)
	}
	// Without a failed walk, a block nobody read ahead is a plain error.
	s = &IncrementalSource{pending: map[int64]pendingBlock{}}
	if _, _, err := s.readBlockLeaf(t.Context(), Block{Index: 3, Token: baseBlockToken}, make([]byte, BlockSize)); err == nil || errors.Is(err, ErrBaseMismatch) {
		t.Fatalf("block not read ahead: %v", err)
	}
}
