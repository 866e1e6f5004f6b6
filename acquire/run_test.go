package acquire

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/impound-ir/impound/vault"
)

func acquireFile(t *testing.T, path string, s vault.Store, mod func(*Options)) (*Evidence, error) {
	t.Helper()
	src, err := OpenFile(path, SourceInfo{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	opts := NewOptions()
	opts.Case = "case-1"
	opts.Key, _ = DefaultKey(opts.Case, src.Info(), CompressNone)
	if mod != nil {
		mod(&opts)
	}
	return Run(context.Background(), src, s, opts)
}

func TestFileBitForBit(t *testing.T) {
	// Not a multiple of the block size; data in blocks 0-2, 7 and the short
	// last block; holes elsewhere.
	const size = 10*BlockSize + 12345
	path := tempFile(t, "disk.img")
	want := writeSparse(t, path, size, map[int64][]byte{
		0:                randomBytes(1, 3*BlockSize-100),
		7*BlockSize + 9:  randomBytes(2, 1000),
		10 * BlockSize:   randomBytes(3, 12345),
		5 * BlockSize:    make([]byte, 0),
		3*BlockSize - 50: []byte("straddles nothing"),
	})
	s := vault.NewMemory()
	ev, err := acquireFile(t, path, s, func(o *Options) { o.Hashes = []string{"sha256", "md5", "sha1", "sha512"} })
	if err != nil {
		t.Fatal(err)
	}
	got := readBack(t, s, ev.Image)
	if string(got) != string(want) {
		t.Fatalf("image read back differs from the source (%d vs %d bytes)", len(got), len(want))
	}
	if ev.Hashes["sha256"] != sha256sum(t, path) || ev.Hashes["sha256"] != sha256hex(want) {
		t.Errorf("sha256 %s, sha256sum says %s", ev.Hashes["sha256"], sha256sum(t, path))
	}
	m5, s1, s512 := md5.Sum(want), sha1.Sum(want), sha512.Sum512(want)
	for name, sum := range map[string][]byte{"md5": m5[:], "sha1": s1[:], "sha512": s512[:]} {
		if ev.Hashes[name] != hex.EncodeToString(sum) {
			t.Errorf("%s = %s, want %x", name, ev.Hashes[name], sum)
		}
	}
	root := independentMerkle(t, want)
	if ev.MerkleRoot != hex.EncodeToString(root[:]) {
		t.Errorf("merkle root %s, tlog computes %x", ev.MerkleRoot, root)
	}
	if ev.Blocks != 11 || ev.Size != size || ev.BlockSize != BlockSize {
		t.Errorf("blocks %d size %d block size %d", ev.Blocks, ev.Size, ev.BlockSize)
	}
	// Holes are filesystem-granular: blocks 0,1,2,7,10 hold data.
	if ev.WrittenBlocks != 5 || ev.Stats.Reads != 5 {
		t.Errorf("written blocks %d, reads %d; want 5 and 5", ev.WrittenBlocks, ev.Stats.Reads)
	}
	bm, err := ParseBlockMap(readBack(t, s, ev.BlockMap))
	if err != nil {
		t.Fatal(err)
	}
	wantRuns := []Extent{{0, 3}, {7, 1}, {10, 1}}
	if len(bm.Runs) != len(wantRuns) {
		t.Fatalf("block map runs %v, want %v", bm.Runs, wantRuns)
	}
	for i := range wantRuns {
		if bm.Runs[i] != wantRuns[i] {
			t.Fatalf("block map runs %v, want %v", bm.Runs, wantRuns)
		}
	}
	if ev.Image.SHA256 != ev.Hashes["sha256"] || ev.StoredSize != size {
		t.Errorf("receipt %+v", ev.Image)
	}
	if _, err := json.Marshal(ev); err != nil {
		t.Fatal(err)
	}
}

func TestFileEmptyAndOneByte(t *testing.T) {
	for _, size := range []int{0, 1, BlockSize, BlockSize + 1} {
		path := tempFile(t, "f")
		data := randomBytes(uint64(size), size)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s := vault.NewMemory()
		ev, err := acquireFile(t, path, s, nil)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if got := readBack(t, s, ev.Image); string(got) != string(data) {
			t.Fatalf("size %d: content differs", size)
		}
		root := independentMerkle(t, data)
		if ev.Hashes["sha256"] != sha256hex(data) || ev.MerkleRoot != hex.EncodeToString(root[:]) {
			t.Fatalf("size %d: hashes %v root %s", size, ev.Hashes, ev.MerkleRoot)
		}
	}
}

// shortSource claims more bytes than it has.
type shortSource struct{ *FileSource }

func (s shortSource) Size() int64 { return s.FileSource.Size() + 3*BlockSize }
func (s shortSource) Blocks(ctx context.Context, from int64, fn func(Block) error) error {
	for i := from; i < (s.Size()+BlockSize-1)/BlockSize; i++ {
		if err := fn(Block{Index: i}); err != nil {
			return err
		}
	}
	return nil
}

func TestFailureLeavesNothing(t *testing.T) {
	path := tempFile(t, "f")
	if err := os.WriteFile(path, randomBytes(9, 2*BlockSize), 0o600); err != nil {
		t.Fatal(err)
	}
	fs, err := OpenFile(path, SourceInfo{})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	s := vault.NewMemory()
	opts := NewOptions()
	opts.Key = "cases/c/evidence/x.img"
	ev, err := Run(context.Background(), shortSource{fs}, s, opts)
	if !errors.Is(err, ErrShortSource) || ev != nil {
		t.Fatalf("Run = %v, %v; want ErrShortSource and no evidence", ev, err)
	}
	keys, err := s.List(context.Background(), "")
	if err != nil || len(keys) != 0 {
		t.Fatalf("vault holds %v after a failed acquisition", keys)
	}
}

func TestMerkleMatchesTlog(t *testing.T) {
	for n := range 70 {
		var m merkle
		image := randomBytes(uint64(n), n*64)
		var stored []tlog.Hash
		r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for i, x := range idx {
				out[i] = stored[x]
			}
			return out, nil
		})
		for i := range n {
			rec := image[i*64 : i*64+64]
			m.add(tlog.RecordHash(rec))
			hs, _ := tlog.StoredHashes(int64(i), rec, r)
			stored = append(stored, hs...)
			// Round-trip the state at every step.
			st, _ := m.MarshalBinary()
			var m2 merkle
			if err := m2.UnmarshalBinary(st); err != nil {
				t.Fatal(err)
			}
			m = m2
		}
		want, err := tlog.TreeHash(int64(n), r)
		if err != nil {
			t.Fatal(err)
		}
		if m.root() != want {
			t.Fatalf("n=%d: root %v, tlog %v", n, m.root(), want)
		}
	}
}

func TestParseHashes(t *testing.T) {
	got, err := ParseHashes("md5, SHA-1,sha256,md5")
	if err != nil || len(got) != 3 || got[0] != "sha256" || got[1] != "md5" || got[2] != "sha1" {
		t.Fatalf("ParseHashes = %v, %v", got, err)
	}
	if _, err := ParseHashes("crc32"); !errors.Is(err, ErrUnknownHash) {
		t.Fatalf("crc32: %v", err)
	}
}

// lyingStore is a memory vault whose receipts misreport the object.
type lyingStore struct {
	vault.Store
	lie func(*vault.Receipt)
}

type lyingWriter struct {
	vault.Writer
	lie func(*vault.Receipt)
}

func (s lyingStore) Create(ctx context.Context, key string, opts vault.PutOptions) (vault.Writer, error) {
	w, err := s.Store.Create(ctx, key, opts)
	return lyingWriter{w, s.lie}, err
}

func (w lyingWriter) Commit() (*vault.Receipt, error) {
	r, err := w.Writer.Commit()
	if err == nil {
		c := *r
		w.lie(&c)
		r = &c
	}
	return r, err
}

// TestStoredMismatch: a raw image's SHA-256 is the vault's; a receipt
// whose size differs from what was streamed, or whose SHA-256 is not one,
// fails the acquisition instead of becoming evidence.
func TestStoredMismatch(t *testing.T) {
	path := tempFile(t, "f")
	if err := os.WriteFile(path, randomBytes(4, 3*BlockSize+7), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, lie := range map[string]func(*vault.Receipt){
		"size":   func(r *vault.Receipt) { r.Size-- },
		"sha256": func(r *vault.Receipt) { r.SHA256 = "" },
	} {
		t.Run(name, func(t *testing.T) {
			ev, err := acquireFile(t, path, lyingStore{vault.NewMemory(), lie}, nil)
			if !errors.Is(err, ErrStoredMismatch) || ev != nil {
				t.Fatalf("Run = %v, %v; want ErrStoredMismatch", ev, err)
			}
		})
	}
}
