package awssim

import (
	"encoding/base64"
	"io"
	mrand "math/rand/v2"

	"github.com/minio/sha256-simd"
)

// block is one written 512 KiB EBS block. It is immutable once created, so
// volumes, snapshots and copies share it freely.
type block struct {
	data   []byte // always BlockSize bytes
	sumB64 string // base64 SHA-256 of data, computed once
}

func newBlock(data []byte) *block {
	sum := sha256.Sum256(data)
	return &block{data: data, sumB64: base64.StdEncoding.EncodeToString(sum[:])}
}

// blockMap maps block indexes to blocks. A snapshot's map is never modified
// after the snapshot is created.
type blockMap map[int64]*block

func (m blockMap) clone() blockMap {
	out := make(blockMap, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// writeAt writes p at byte offset off into m, copying on write.
func (m blockMap) writeAt(p []byte, off int64) {
	for len(p) > 0 {
		idx := off / BlockSize
		in := int(off % BlockSize)
		n := min(len(p), BlockSize-in)
		data := make([]byte, BlockSize)
		if old := m[idx]; old != nil && n < BlockSize {
			copy(data, old.data)
		}
		copy(data[in:], p[:n])
		m[idx] = newBlock(data)
		p = p[n:]
		off += int64(n)
	}
}

// imageReader reads a sparse block map as a flat image of size bytes.
type imageReader struct {
	blocks blockMap
	size   int64
	off    int64
}

var zeroBlock = make([]byte, BlockSize)

func (r *imageReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	idx := r.off / BlockSize
	in := r.off % BlockSize
	src := zeroBlock
	if b := r.blocks[idx]; b != nil {
		src = b.data
	}
	n := copy(p, src[in:min(int64(BlockSize), in+(r.size-r.off))])
	r.off += int64(n)
	return n, nil
}

// RandomReader returns n bytes of reproducible pseudo-random data derived from
// seed: the same seed and n always give the same bytes. Use it to seed
// volumes and to compute the expected image independently.
func RandomReader(seed uint64, n int64) io.Reader {
	var key [32]byte
	for i := range 4 {
		for j := range 8 {
			key[i*8+j] = byte((seed + uint64(i)*0x9e3779b97f4a7c15) >> (8 * j))
		}
	}
	return io.LimitReader(mrand.NewChaCha8(key), n)
}
