package acquire

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/impound-ir/impound/acquire/seekable"
	"github.com/impound-ir/impound/vault"
)

// fsLike returns compressible, filesystem-like data: text, zeros and some
// random blocks.
func fsLike(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		switch i % 4 {
		case 0:
			for k := 0; k < 2000; k++ {
				b.WriteString("inode 12 uid 0 gid 0 mode 0644 /etc/passwd root:x:0:0:root:/root:/bin/bash\n")
			}
		case 1:
			b.Write(make([]byte, 300000))
		case 2:
			b.Write(randomBytes(uint64(i), 100000))
		default:
			b.WriteString("GET /index.html HTTP/1.1 200 ")
		}
	}
	return b.Bytes()[:n]
}

func TestZstdSeekable(t *testing.T) {
	const size = 7*FrameSize + 3*BlockSize + 77
	want := fsLike(size)
	path := tempFile(t, "fs.img")
	writeSparse(t, path, size, map[int64][]byte{0: want})
	s := vault.NewMemory()
	ev, err := acquireFile(t, path, s, func(o *Options) {
		o.Compression = CompressZstd
		o.Key, _ = DefaultKey("case-z", SourceInfo{Path: path}, CompressZstd)
	})
	if err != nil {
		t.Fatal(err)
	}
	stored := readBack(t, s, ev.Image)
	if ev.Compression != "zstd" || ev.StoredSize != int64(len(stored)) || ev.StoredSize >= size/2 {
		t.Fatalf("compression %q stored %d of %d bytes", ev.Compression, ev.StoredSize, size)
	}
	if ev.Image.SHA256 != sha256hex(stored) || ev.Hashes["sha256"] != sha256hex(want) {
		t.Fatal("hashes: the image hash must be the raw image's, the receipt's the stored object's")
	}
	root := independentMerkle(t, want)
	if ev.MerkleRoot != hex.EncodeToString(root[:]) {
		t.Fatal("merkle root")
	}
	if got := decompressSeekable(t, stored); !bytes.Equal(got, want) {
		t.Fatal("decompressed image differs")
	}
	// Random access: a range in the middle, across a frame boundary.
	r, err := seekable.NewReader(bytes.NewReader(stored), int64(len(stored)))
	if err != nil {
		t.Fatal(err)
	}
	if r.Frames() != 8 {
		t.Fatalf("%d frames, want 8", r.Frames())
	}
	p := make([]byte, 1000)
	off := int64(3*FrameSize - 500)
	if _, err := r.ReadAt(p, off); err != nil || !bytes.Equal(p, want[off:off+1000]) {
		t.Fatalf("ReadAt across frames: %v", err)
	}
	if n, err := r.ReadAt(p, size-10); n != 10 || err != io.EOF {
		t.Fatalf("ReadAt at the end: %d, %v", n, err)
	}
}

func TestResumeZstd(t *testing.T) { testResume(t, vault.NewMemory(), CompressZstd) }

func TestResumeZstdLocal(t *testing.T) {
	s, err := vault.Open(context.Background(), t.TempDir(), vault.NewOptions())
	if err != nil {
		t.Fatal(err)
	}
	testResume(t, s, CompressZstd)
}

func FuzzBlockMap(f *testing.F) {
	m := &BlockMap{Size: 10 * BlockSize, BlockSize: BlockSize, Runs: []Extent{{0, 2}, {5, 1}, {9, 1}}}
	b, _ := m.MarshalText()
	f.Add(b)
	f.Add([]byte("impound-blockmap/1\nsize 0\nblock-size 524288\nruns 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseBlockMap(b)
		if err != nil {
			return
		}
		out, _ := m.MarshalText()
		if !bytes.Equal(out, b) {
			t.Fatalf("parse then format changed the block map:\n%q\n%q", b, out)
		}
	})
}

// TestZstdParallelDeterministic: frames compressed several at a time come
// out in order and byte for byte as a one-frame-at-a-time encoder writes
// them (resume regenerates output and relies on it), whatever the writes'
// sizes; a failing output stops the encoder with that error.
func TestZstdParallelDeterministic(t *testing.T) {
	data := fsLike(9*FrameSize + 12345)
	// The reference: each frame alone with the same options, then the table.
	ref, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	var entries []seekable.Entry
	for off := 0; off < len(data); off += FrameSize {
		raw := data[off:min(off+FrameSize, len(data))]
		n := len(want)
		want = ref.EncodeAll(raw, want)
		entries = append(entries, seekable.Entry{Compressed: uint32(len(want) - n), Decompressed: uint32(len(raw))})
	}
	want = seekable.AppendTable(want, entries)

	for _, step := range []int{BlockSize, 3*FrameSize + 1, 4096} {
		e, err := newZstdEncoder(nil)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		e.setOutput(&got)
		for off := 0; off < len(data); off += step {
			if err := e.Write(data[off:min(off+step, len(data))]); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want) || e.Offset() != int64(len(want)) {
			t.Fatalf("writes of %d bytes: %d bytes out (offset %d), want the reference's %d", step, got.Len(), e.Offset(), len(want))
		}
	}

	e, err := newZstdEncoder(nil)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk full")
	e.setOutput(failWriter{boom})
	err = e.Write(data)
	if err == nil {
		err = e.Close()
	}
	if !errors.Is(err, boom) {
		t.Fatalf("encoder over a failing output: %v, want %v", err, boom)
	}
	if err := e.Write(data[:10]); !errors.Is(err, boom) {
		t.Fatalf("Write after the failure: %v", err)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write(p []byte) (int, error) { return 0, f.err }
