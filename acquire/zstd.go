package acquire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/impound-ir/impound/acquire/seekable"
)

// FrameSize is the raw size of one independent zstd frame of a compressed
// image (the last may be shorter): the granularity of random access.
const FrameSize = 4 << 20

// zstdEncoder writes the zstd seekable format: one independent frame per
// FrameSize raw bytes, then the seek table. Frames are encoded with
// EncodeAll and fixed options, so encoding is deterministic: a resumed run
// regenerates byte-identical output.
type zstdEncoder struct {
	w       io.Writer
	enc     *zstd.Encoder
	frame   []byte
	out     []byte
	off     int64
	entries []seekable.Entry
}

func newZstdEncoder(state []byte) (encoder, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
	if err != nil {
		return nil, err
	}
	e := &zstdEncoder{enc: enc, frame: make([]byte, 0, FrameSize)}
	if state != nil {
		if err := e.unmarshal(state); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func (e *zstdEncoder) setOutput(w io.Writer) { e.w = w }

func (e *zstdEncoder) Write(p []byte) error {
	for len(p) > 0 {
		n := min(len(p), FrameSize-len(e.frame))
		e.frame = append(e.frame, p[:n]...)
		p = p[n:]
		if len(e.frame) == FrameSize {
			if err := e.emit(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *zstdEncoder) emit() error {
	e.out = e.enc.EncodeAll(e.frame, e.out[:0])
	if _, err := e.w.Write(e.out); err != nil {
		return err
	}
	e.off += int64(len(e.out))
	e.entries = append(e.entries, seekable.Entry{Compressed: uint32(len(e.out)), Decompressed: uint32(len(e.frame))})
	e.frame = e.frame[:0]
	return nil
}

func (e *zstdEncoder) AtBoundary() bool { return len(e.frame) == 0 }
func (e *zstdEncoder) Offset() int64    { return e.off }

func (e *zstdEncoder) Close() error {
	if len(e.frame) > 0 {
		if err := e.emit(); err != nil {
			return err
		}
	}
	table := seekable.AppendTable(nil, e.entries)
	if _, err := e.w.Write(table); err != nil {
		return err
	}
	e.off += int64(len(table))
	return e.enc.Close()
}

const zstdStateTag = "impound-zstd-seekable/1\n"

func (e *zstdEncoder) Mark() encMark { return encMark{off: e.off, frames: len(e.entries)} }

func (e *zstdEncoder) StateAt(m encMark) ([]byte, error) {
	if m.frames > len(e.entries) {
		return nil, errors.New("acquire: zstd encoder mark beyond its frames")
	}
	b := append([]byte(zstdStateTag), make([]byte, 0, 8+8*m.frames)...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.off))
	for _, x := range e.entries[:m.frames] {
		b = binary.BigEndian.AppendUint32(b, x.Compressed)
		b = binary.BigEndian.AppendUint32(b, x.Decompressed)
	}
	return b, nil
}

func (e *zstdEncoder) unmarshal(b []byte) error {
	rest, ok := strings.CutPrefix(string(b), zstdStateTag)
	if !ok || len(rest) < 8 || (len(rest)-8)%8 != 0 {
		return fmt.Errorf("acquire: bad zstd encoder state: %w", ErrStateMismatch)
	}
	p := []byte(rest)
	e.off = int64(binary.BigEndian.Uint64(p))
	var sum int64
	for p = p[8:]; len(p) > 0; p = p[8:] {
		x := seekable.Entry{Compressed: binary.BigEndian.Uint32(p), Decompressed: binary.BigEndian.Uint32(p[4:])}
		sum += int64(x.Compressed)
		e.entries = append(e.entries, x)
	}
	if sum != e.off {
		return fmt.Errorf("acquire: zstd encoder state: frames total %d bytes, offset %d: %w", sum, e.off, ErrStateMismatch)
	}
	return nil
}
