package acquire

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"github.com/impound-ir/impound/internal/testenv"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/impound-ir/impound/vault"
)

// randomBytes returns reproducible pseudo-random data.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// writeSparse writes a file of size bytes where only the given ranges hold
// data (the rest are holes), returning the file's full content.
func writeSparse(t testing.TB, path string, size int64, data map[int64][]byte) []byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	for off, d := range data {
		if _, err := f.WriteAt(d, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], d)
	}
	return want
}

// independentMerkle computes the tree hash with tlog's own storage-based
// algorithm, independently of the streaming accumulator.
func independentMerkle(t testing.TB, image []byte) tlog.Hash {
	t.Helper()
	var stored []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	n := int64(0)
	for off := 0; off < len(image); off += BlockSize {
		hs, err := tlog.StoredHashes(n, image[off:min(off+BlockSize, len(image))], r)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
		n++
	}
	h, err := tlog.TreeHash(n, r)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func readBack(t testing.TB, s vault.Store, r *vault.Receipt) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), r.Key, r.VersionID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return string(bytesToHex(s[:]))
}

func bytesToHex(b []byte) []byte {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return out
}

// sha256sum runs the coreutils tool on path.
func sha256sum(t testing.TB, path string) string {
	t.Helper()
	testenv.Tool(t, "sha256sum")
	out, err := exec.Command("sha256sum", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(bytes.Fields(out)[0])
}

func tempFile(t testing.TB, name string) string { return filepath.Join(t.TempDir(), name) }

// imageOf reads the stored image back, decompressed when it is compressed.
func imageOf(t testing.TB, s vault.Store, ev *Evidence) []byte {
	t.Helper()
	b := readBack(t, s, ev.Image)
	if ev.Compression == CompressZstd {
		return decompressSeekable(t, b)
	}
	return b
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// expected describes an image the test knows, computed by streaming it
// once: its size, SHA-256 and an independent Merkle root.
type expected struct {
	size   int64
	sha256 string
	root   tlog.Hash
	open   func() io.Reader
}

func expect(t testing.TB, open func() io.Reader) expected {
	t.Helper()
	var stored []tlog.Hash
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	h := sha256.New()
	r := open()
	buf := make([]byte, BlockSize)
	var n, size int64
	for {
		k, err := io.ReadFull(r, buf)
		if k > 0 {
			h.Write(buf[:k])
			hs, herr := tlog.StoredHashes(n, buf[:k], hr)
			if herr != nil {
				t.Fatal(herr)
			}
			stored = append(stored, hs...)
			n++
			size += int64(k)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	root, err := tlog.TreeHash(n, hr)
	if err != nil {
		t.Fatal(err)
	}
	return expected{size: size, sha256: hex.EncodeToString(h.Sum(nil)), root: root, open: open}
}

// checkHash checks the image hash, the Merkle root and the vault's receipt.
func checkHash(t testing.TB, ev *Evidence, want expected) {
	t.Helper()
	if ev.Hashes["sha256"] != want.sha256 || ev.Size != want.size || ev.Image.SHA256 != ev.Hashes["sha256"] || ev.Image.Size != want.size {
		t.Fatalf("sha256 %s (receipt %s, %d bytes), want %s (%d bytes)", ev.Hashes["sha256"], ev.Image.SHA256, ev.Image.Size, want.sha256, want.size)
	}
	if ev.MerkleRoot != hex.EncodeToString(want.root[:]) {
		t.Fatalf("merkle root %s, want %x", ev.MerkleRoot, want.root)
	}
}

// checkImage also compares the stored image with the expected one, streaming.
func checkImage(t testing.TB, s vault.Store, ev *Evidence, want expected) {
	t.Helper()
	checkHash(t, ev, want)
	rc, err := s.Get(context.Background(), ev.Image.Key, ev.Image.VersionID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if off, ok := sameStream(rc, want.open()); !ok {
		t.Fatalf("stored image differs from the source at byte %d", off)
	}
}

// sameStream compares two streams, returning the first differing offset.
func sameStream(a, b io.Reader) (int64, bool) {
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	var off int64
	for {
		na, ea := io.ReadFull(a, ba)
		nb, eb := io.ReadFull(b, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			for i := 0; i < min(na, nb); i++ {
				if ba[i] != bb[i] {
					return off + int64(i), false
				}
			}
			return off + int64(min(na, nb)), false
		}
		off += int64(na)
		if ea != nil || eb != nil {
			return off, (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF)
		}
	}
}

func localVault(t testing.TB) vault.Store {
	t.Helper()
	s, err := vault.Open(context.Background(), t.TempDir(), vault.NewOptions())
	if err != nil {
		t.Fatal(err)
	}
	return s
}
