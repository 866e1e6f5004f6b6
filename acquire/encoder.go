package acquire

import (
	"fmt"
	"io"
)

// encoder turns the raw image stream into the stored object's bytes.
type encoder interface {
	setOutput(w io.Writer)
	// Write takes the next raw image bytes.
	Write(p []byte) error
	// AtBoundary reports whether no input is buffered short of a whole
	// unit (a frame): a resumed run can start at this point of the input.
	AtBoundary() bool
	// Offset is the number of output bytes emitted so far.
	Offset() int64
	// Mark notes the encoder's position at a boundary, cheaply (it is
	// taken every few blocks), possibly before the output up to it is
	// emitted; MarkOffset is the output offset at the mark once it is.
	// StateAt serialises the state at an emitted mark not older than the
	// last one persisted.
	Mark() encMark
	MarkOffset(m encMark) (int64, bool)
	StateAt(m encMark) ([]byte, error)
	// Close emits what remains (a trailer for formats that have one).
	Close() error
}

func newEncoder(kind string, state []byte) (encoder, error) {
	switch kind {
	case CompressNone:
		e := &rawEncoder{}
		if state != nil {
			if _, err := fmt.Sscanf(string(state), "raw %d", &e.off); err != nil {
				return nil, fmt.Errorf("acquire: bad raw encoder state: %w", err)
			}
		}
		return e, nil
	case CompressZstd:
		return newZstdEncoder(state)
	}
	return nil, fmt.Errorf("acquire: unknown compression %q", kind)
}

// encMark is an encoder's position at a boundary: for the raw format its
// output offset; for framed formats the number of frames before it (the
// seek table is append-only, so the table at a mark is a prefix of the
// live one).
type encMark struct {
	off    int64
	frames int
}

// rawEncoder stores the image as it is.
type rawEncoder struct {
	w   io.Writer
	off int64
}

func (e *rawEncoder) setOutput(w io.Writer) { e.w = w }
func (e *rawEncoder) Write(p []byte) error {
	n, err := e.w.Write(p)
	e.off += int64(n)
	return err
}
func (e *rawEncoder) AtBoundary() bool { return true }
func (e *rawEncoder) Offset() int64    { return e.off }
func (e *rawEncoder) Mark() encMark    { return encMark{off: e.off} }
func (e *rawEncoder) MarkOffset(m encMark) (int64, bool) {
	return m.off, true
}
func (e *rawEncoder) StateAt(m encMark) ([]byte, error) {
	return fmt.Appendf(nil, "raw %d", m.off), nil
}
func (e *rawEncoder) Close() error { return nil }

// skipWriter drops the first skip bytes written to it: output a resumed vault
// writer already holds, regenerated because resume restarts at a boundary.
type skipWriter struct {
	w    io.Writer
	skip int64
}

func (s *skipWriter) Write(p []byte) (int, error) {
	n := len(p)
	if s.skip > 0 {
		d := min(int64(len(p)), s.skip)
		s.skip -= d
		p = p[d:]
	}
	if len(p) == 0 {
		return n, nil
	}
	if _, err := s.w.Write(p); err != nil {
		return 0, err
	}
	return n, nil
}
