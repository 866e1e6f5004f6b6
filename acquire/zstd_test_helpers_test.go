package acquire

import (
	"bytes"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/impound-ir/impound/acquire/seekable"
)

// decompressSeekable decompresses a whole seekable stream twice, with a
// plain zstd decoder (which skips the seek table) and with the seekable
// reader, and checks that both agree.
func decompressSeekable(t testing.TB, b []byte) []byte {
	t.Helper()
	d, err := zstd.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	plain, err := io.ReadAll(d)
	if err != nil {
		t.Fatalf("plain zstd decoder: %v", err)
	}
	r, err := seekable.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	viaTable := make([]byte, r.Size())
	if _, err := r.ReadAt(viaTable, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, viaTable) {
		t.Fatal("seekable reader and plain decoder disagree")
	}
	return plain
}
