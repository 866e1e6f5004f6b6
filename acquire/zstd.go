package acquire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
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
//
// Frames are independent, so up to zstdWorkers of them are compressed at
// once, each on its own goroutine; they are written out in order, on the
// caller's goroutine, so the output writer is never shared. Its position
// is known for the frames already written; Mark and MarkOffset let the
// checkpointer name a boundary before its frames are out.
type zstdEncoder struct {
	w       io.Writer
	enc     *zstd.Encoder
	workers int
	frame   []byte       // raw bytes of the frame being filled
	pending []*zstdFrame // frames being compressed, in order
	free    [][]byte     // raw frame buffers to reuse
	outs    [][]byte     // compressed frame buffers to reuse
	err     error        // the first write error: the encoder is then broken

	off     int64            // output bytes written
	entries []seekable.Entry // frames written
	ends    []int64          // output offset after each frame written
}

// zstdFrame is one frame handed to a compressing goroutine.
type zstdFrame struct {
	raw, out []byte
	done     chan struct{}
}

// zstdWorkers is how many frames are compressed at once: one per core, at
// most 4 (each holds a 4 MiB frame and its output).
func zstdWorkers() int { return min(4, max(1, runtime.NumCPU())) }

func newZstdEncoder(state []byte) (encoder, error) {
	workers := zstdWorkers()
	// The concurrency option only sizes the pool EncodeAll draws from; the
	// bytes of a frame depend on its input and the level alone.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(workers), zstd.WithEncoderCRC(true))
	if err != nil {
		return nil, err
	}
	e := &zstdEncoder{enc: enc, workers: workers, frame: make([]byte, 0, FrameSize)}
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
		if e.err != nil {
			return e.err
		}
		n := min(len(p), FrameSize-len(e.frame))
		e.frame = append(e.frame, p[:n]...)
		p = p[n:]
		if len(e.frame) == FrameSize {
			if err := e.submit(); err != nil {
				return err
			}
		}
	}
	return nil
}

// submit hands the full (or, at the end, last) frame to a goroutine, then
// writes out finished frames while workers frames are in flight.
func (e *zstdEncoder) submit() error {
	f := &zstdFrame{raw: e.frame, done: make(chan struct{})}
	if k := len(e.outs); k > 0 {
		f.out, e.outs = e.outs[k-1][:0], e.outs[:k-1]
	}
	go func() {
		f.out = e.enc.EncodeAll(f.raw, f.out)
		close(f.done)
	}()
	e.pending = append(e.pending, f)
	if k := len(e.free); k > 0 {
		e.frame, e.free = e.free[k-1][:0], e.free[:k-1]
	} else {
		e.frame = make([]byte, 0, FrameSize)
	}
	for len(e.pending) >= e.workers {
		if err := e.emit(); err != nil {
			return err
		}
	}
	return nil
}

// emit waits for the oldest frame in flight and writes it out.
func (e *zstdEncoder) emit() error {
	f := e.pending[0]
	<-f.done
	e.pending = e.pending[1:]
	if e.err != nil {
		return e.err
	}
	if _, err := e.w.Write(f.out); err != nil {
		e.err = err
		return err
	}
	e.off += int64(len(f.out))
	e.entries = append(e.entries, seekable.Entry{Compressed: uint32(len(f.out)), Decompressed: uint32(len(f.raw))})
	e.ends = append(e.ends, e.off)
	e.free = append(e.free, f.raw)
	e.outs = append(e.outs, f.out)
	return nil
}

// AtBoundary: no partial frame is buffered (frames in flight are accounted
// for by Mark).
func (e *zstdEncoder) AtBoundary() bool { return len(e.frame) == 0 }
func (e *zstdEncoder) Offset() int64    { return e.off }

func (e *zstdEncoder) Close() error {
	if e.err != nil {
		return e.err
	}
	if len(e.frame) > 0 {
		if err := e.submit(); err != nil {
			return err
		}
	}
	for len(e.pending) > 0 {
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

// Mark is the boundary after every frame submitted so far.
func (e *zstdEncoder) Mark() encMark { return encMark{frames: len(e.entries) + len(e.pending)} }

// MarkOffset is the output offset at m, once all of m's frames are out.
func (e *zstdEncoder) MarkOffset(m encMark) (int64, bool) {
	switch {
	case m.frames > len(e.entries):
		return 0, false
	case m.frames == 0:
		return 0, true
	}
	return e.ends[m.frames-1], true
}

func (e *zstdEncoder) StateAt(m encMark) ([]byte, error) {
	off, ok := e.MarkOffset(m)
	if !ok {
		return nil, errors.New("acquire: zstd encoder mark beyond the frames written")
	}
	b := append([]byte(zstdStateTag), make([]byte, 0, 8+8*m.frames)...)
	b = binary.BigEndian.AppendUint64(b, uint64(off))
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
		e.ends = append(e.ends, sum)
	}
	if sum != e.off {
		return fmt.Errorf("acquire: zstd encoder state: frames total %d bytes, offset %d: %w", sum, e.off, ErrStateMismatch)
	}
	return nil
}
