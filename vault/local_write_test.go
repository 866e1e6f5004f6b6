package vault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
)

// TestLocalWriteSizes: writes below and above the size whose hashing runs
// beside the write system call, and past several write-behind chunks, give
// the receipt the SHA-256 of exactly what is stored.
func TestLocalWriteSizes(t *testing.T) {
	ctx := context.Background()
	st, err := Open(ctx, t.TempDir(), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(7, 3*writeBehindChunk+12345)
	w, err := st.Create(ctx, "ev/mixed", PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{1, concurrentHashMin - 1, concurrentHashMin, 512 << 10, 4 << 20, 17}
	for off, i := 0, 0; off < len(data); i++ {
		n := min(sizes[i%len(sizes)], len(data)-off)
		if k, err := w.Write(data[off : off+n]); err != nil || k != n {
			t.Fatalf("write %d bytes at %d: %d, %v", n, off, k, err)
		}
		off += n
	}
	r, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	if r.SHA256 != hex.EncodeToString(want[:]) || r.Size != int64(len(data)) {
		t.Fatalf("receipt %d bytes %s, want %d bytes %x", r.Size, r.SHA256, len(data), want)
	}
	rc, err := st.Get(ctx, "ev/mixed", "")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored content differs (%d bytes, %v)", len(got), err)
	}
}

// TestLocalWriteErrorBreaksWriter: once a write fails (here a full disk),
// the file and the running hash may disagree, so the writer refuses to
// commit or checkpoint; Abort leaves nothing.
func TestLocalWriteErrorBreaksWriter(t *testing.T) {
	dir := mountTmpfs(t)
	ctx := context.Background()
	st, err := Open(ctx, dir, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	w, err := st.Create(ctx, "ev/full", PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	block := randomBytes(3, 256<<10)
	var werr error
	for i := 0; i < 8 && werr == nil; i++ {
		_, werr = w.Write(block)
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("writing 2 MiB to a 1 MiB disk: %v, want ENOSPC", werr)
	}
	if _, err := w.Write([]byte("more")); err == nil {
		t.Fatal("Write after a failed write succeeded")
	}
	if _, _, err := w.Checkpoint(); err == nil {
		t.Fatal("Checkpoint after a failed write succeeded")
	}
	if _, err := w.Commit(); err == nil {
		t.Fatal("Commit after a failed write succeeded")
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Stat(ctx, "ev/full", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after a failed write: %v", err)
	}
	if tmp, _ := os.ReadDir(dir + "/.impound/tmp"); len(tmp) != 0 {
		t.Fatalf("%d temporary files left", len(tmp))
	}
}
