// Package seekable reads and writes the seek table of the zstd seekable
// format (facebook/zstd contrib/seekable_format): a compressed stream made
// of independent zstd frames followed by a skippable frame listing each
// frame's compressed and decompressed size, so a reader can decompress any
// range of the original by decompressing only the frames that cover it.
//
// impound stores compressed images in this format; tools that understand it
// (zstd's seekable API, t2sz, this package's Reader) read ranges directly,
// and any zstd decoder decompresses the whole stream, skipping the table.
//
// The seek table written here has no per-frame checksums (descriptor 0):
// each frame carries zstd's own content checksum instead.
package seekable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"
)

const (
	skippableMagic = 0x184D2A5E
	seekableMagic  = 0x8F92EAB1
	footerSize     = 9
	// MaxFrames caps the frames of one table (2^27 frames: 512 TiB of 4 MiB frames).
	MaxFrames = 1 << 27
)

// ErrFormat reports a stream that is not in the seekable format.
var ErrFormat = errors.New("seekable: not a zstd seekable stream")

// Entry describes one frame.
type Entry struct {
	Compressed   uint32
	Decompressed uint32
}

// AppendTable appends the seek-table skippable frame for entries to dst.
func AppendTable(dst []byte, entries []Entry) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, skippableMagic)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(entries)*8+footerSize))
	for _, e := range entries {
		dst = binary.LittleEndian.AppendUint32(dst, e.Compressed)
		dst = binary.LittleEndian.AppendUint32(dst, e.Decompressed)
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(entries)))
	dst = append(dst, 0) // descriptor: no checksums
	dst = binary.LittleEndian.AppendUint32(dst, seekableMagic)
	return dst
}

// TableSize returns the size of the seek table of n frames.
func TableSize(n int) int64 { return 8 + int64(n)*8 + footerSize }

// ParseFooter reads the footer (the last 9 bytes of the stream) and returns
// the number of frames and whether entries carry checksums.
func ParseFooter(footer []byte) (frames int, checksums bool, err error) {
	if len(footer) != footerSize || binary.LittleEndian.Uint32(footer[5:]) != seekableMagic {
		return 0, false, fmt.Errorf("%w: no seekable footer", ErrFormat)
	}
	n := binary.LittleEndian.Uint32(footer)
	d := footer[4]
	if d&0x7c != 0 || n > MaxFrames {
		return 0, false, fmt.Errorf("%w: bad seek table descriptor or size", ErrFormat)
	}
	return int(n), d&0x80 != 0, nil
}

// ParseTable parses a whole seek-table skippable frame (as AppendTable
// writes it, possibly with checksums) and returns its entries.
func ParseTable(b []byte) ([]Entry, error) {
	if len(b) < 8+footerSize {
		return nil, fmt.Errorf("%w: seek table too short", ErrFormat)
	}
	n, sums, err := ParseFooter(b[len(b)-footerSize:])
	if err != nil {
		return nil, err
	}
	size := 8
	if sums {
		size = 12
	}
	if binary.LittleEndian.Uint32(b) != skippableMagic ||
		int64(binary.LittleEndian.Uint32(b[4:])) != int64(n)*int64(size)+footerSize ||
		int64(len(b)) != 8+int64(n)*int64(size)+footerSize {
		return nil, fmt.Errorf("%w: seek table frame header does not match its footer", ErrFormat)
	}
	entries := make([]Entry, n)
	p := b[8:]
	for i := range entries {
		entries[i] = Entry{Compressed: binary.LittleEndian.Uint32(p), Decompressed: binary.LittleEndian.Uint32(p[4:])}
		p = p[size:]
	}
	return entries, nil
}

// Reader reads ranges of the decompressed content of a seekable stream.
type Reader struct {
	r       io.ReaderAt
	comp    []int64 // compressed offset of frame i; comp[n] = start of the table
	decomp  []int64 // decompressed offset of frame i; decomp[n] = total size
	dec     *zstd.Decoder
	mu      sync.Mutex
	cached  int
	buf     []byte
	scratch []byte
}

// NewReader reads the seek table at the end of the size bytes of r.
func NewReader(r io.ReaderAt, size int64) (*Reader, error) {
	if size < 8+footerSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrFormat, size)
	}
	footer := make([]byte, footerSize)
	if _, err := r.ReadAt(footer, size-footerSize); err != nil {
		return nil, err
	}
	n, sums, err := ParseFooter(footer)
	if err != nil {
		return nil, err
	}
	es := int64(8)
	if sums {
		es = 12
	}
	tsize := 8 + int64(n)*es + footerSize
	if tsize > size {
		return nil, fmt.Errorf("%w: seek table larger than the stream", ErrFormat)
	}
	table := make([]byte, tsize)
	if _, err := r.ReadAt(table, size-tsize); err != nil {
		return nil, err
	}
	entries, err := ParseTable(table)
	if err != nil {
		return nil, err
	}
	rd := &Reader{r: r, comp: make([]int64, n+1), decomp: make([]int64, n+1), cached: -1}
	for i, e := range entries {
		rd.comp[i+1] = rd.comp[i] + int64(e.Compressed)
		rd.decomp[i+1] = rd.decomp[i] + int64(e.Decompressed)
	}
	if rd.comp[n] != size-tsize {
		return nil, fmt.Errorf("%w: frames cover %d bytes, the stream has %d before its seek table", ErrFormat, rd.comp[n], size-tsize)
	}
	rd.dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return rd, nil
}

// Size is the decompressed size.
func (r *Reader) Size() int64 { return r.decomp[len(r.decomp)-1] }

// Frames is the number of frames.
func (r *Reader) Frames() int { return len(r.comp) - 1 }

// Close releases the decoder.
func (r *Reader) Close() error { r.dec.Close(); return nil }

// ReadAt reads decompressed bytes at off, decompressing only the frames
// that cover them.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if off < 0 {
		return 0, errors.New("seekable: negative offset")
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= r.Size() {
			return n, io.EOF
		}
		i := sort.Search(r.Frames(), func(i int) bool { return r.decomp[i+1] > pos })
		if err := r.load(i); err != nil {
			return n, err
		}
		n += copy(p[n:], r.buf[pos-r.decomp[i]:])
	}
	return n, nil
}

func (r *Reader) load(i int) error {
	if r.cached == i {
		return nil
	}
	csize := r.comp[i+1] - r.comp[i]
	if cap(r.scratch) < int(csize) {
		r.scratch = make([]byte, csize)
	}
	src := r.scratch[:csize]
	if _, err := r.r.ReadAt(src, r.comp[i]); err != nil {
		return err
	}
	want := r.decomp[i+1] - r.decomp[i]
	out, err := r.dec.DecodeAll(src, r.buf[:0])
	if err != nil {
		return fmt.Errorf("seekable: frame %d: %w", i, err)
	}
	if int64(len(out)) != want {
		return fmt.Errorf("%w: frame %d decompresses to %d bytes, the table says %d", ErrFormat, i, len(out), want)
	}
	r.buf, r.cached = out, i
	return nil
}
