package acquire

import (
	"context"
	"encoding/hex"
	"github.com/impound-ir/impound/internal/testenv"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/impound-ir/impound/vault"
)

// TestLoopDevice acquires a real block device: a loop device over a file.
// It needs root and losetup; it is skipped without them.
func TestLoopDevice(t *testing.T) {
	testenv.Tool(t, "losetup")
	if os.Geteuid() != 0 {
		t.Skip("attaching a loop device needs root")
	}
	const size = 9*BlockSize + 4096 // loop devices are sized in 512-byte sectors
	path := tempFile(t, "backing.img")
	want := randomBytes(77, size)
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", "--read-only", path).CombinedOutput()
	if err != nil {
		t.Skipf("losetup cannot attach a loop device here: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })

	src, err := OpenFile(dev, SourceInfo{InstanceID: "i-0123456789abcdef0"})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.Size() != size || src.Info().Kind != KindDevice || src.Info().DevicePath != dev {
		t.Fatalf("device %s: size %d (want %d), info %+v", dev, src.Size(), size, src.Info())
	}
	s := vault.NewMemory()
	opts := NewOptions()
	opts.Key, _ = DefaultKey("case-dev", src.Info(), CompressNone)
	ev, err := Run(context.Background(), src, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, s, ev.Image); string(got) != string(want) {
		t.Fatal("image of the loop device differs from its backing file")
	}
	root := independentMerkle(t, want)
	if ev.Hashes["sha256"] != sha256sum(t, path) || ev.MerkleRoot != hex.EncodeToString(root[:]) {
		t.Fatalf("hashes %v root %s", ev.Hashes, ev.MerkleRoot)
	}
	if ev.WrittenBlocks != ev.Blocks || ev.Source.InstanceID != "i-0123456789abcdef0" {
		t.Fatalf("devices are read whole: written %d of %d; source %+v", ev.WrittenBlocks, ev.Blocks, ev.Source)
	}
}

func TestSparseFileReadsOnlyData(t *testing.T) {
	// 256 MiB file with 3 data extents: only their blocks are read.
	const size = 256 << 20
	path := tempFile(t, "sparse.img")
	writeSparseNoImage(t, path, size, map[int64][]byte{
		0:                 randomBytes(1, 4096),
		312*BlockSize + 1: randomBytes(2, 2*BlockSize),
		size - 10:         []byte("0123456789"),
	})
	src, err := OpenFile(path, SourceInfo{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var idx []int64
	if err := src.Blocks(context.Background(), 0, func(b Block) error { idx = append(idx, b.Index); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []int64{0, 312, 313, 314, 511}
	if len(idx) != len(want) {
		t.Fatalf("written blocks %v, want %v", idx, want)
	}
	for i := range want {
		if idx[i] != want[i] {
			t.Fatalf("written blocks %v, want %v", idx, want)
		}
	}
	// From the middle, as a resume does.
	idx = idx[:0]
	src.Blocks(context.Background(), 313, func(b Block) error { idx = append(idx, b.Index); return nil })
	if len(idx) != 3 || idx[0] != 313 {
		t.Fatalf("blocks from 313: %v", idx)
	}
	ev, err := Run(context.Background(), src, discardStore{}, func() Options { o := NewOptions(); o.Key = "k"; return o }())
	if err != nil {
		t.Fatal(err)
	}
	if ev.Stats.Reads != 5 || ev.WrittenBlocks != 5 || ev.Hashes["sha256"] != sha256sum(t, path) {
		t.Fatalf("reads %d written %d sha256 %s", ev.Stats.Reads, ev.WrittenBlocks, ev.Hashes["sha256"])
	}
}

// writeSparseNoImage is writeSparse for files too big to hold in memory.
func writeSparseNoImage(t testing.TB, path string, size int64, data map[int64][]byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, d := range data {
		if _, err := f.WriteAt(d, off); err != nil {
			t.Fatal(err)
		}
	}
}
