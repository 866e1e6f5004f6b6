package acquire

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// BlockMap records which blocks of an image held data at the source: the
// blocks EBS listed, or the extents of a file or device outside its holes.
// Blocks outside the runs were read as zeros without being read.
//
// Its canonical text form (stored beside the image) is
//
//	impound-blockmap/1
//	size <image bytes>
//	block-size 524288
//	runs <number of runs>
//	<first block> <count>
//	...
//
// with decimal numbers without leading zeros, runs sorted, non-empty,
// non-overlapping and non-adjacent (adjacent runs are merged), every line
// ending in "\n". [ParseBlockMap] rejects every other form.
type BlockMap struct {
	Size      int64
	BlockSize int64
	Runs      []Extent
}

// Extent is a range of consecutive written blocks.
type Extent struct {
	First, Count int64
}

const blockMapHeader = "impound-blockmap/1"

// maxBlockMapRuns caps what ParseBlockMap accepts: one run per block of a
// 64 TiB volume at most.
const maxBlockMapRuns = 1 << 27

// ErrBadBlockMap reports a block map that is not in canonical form.
var ErrBadBlockMap = errors.New("acquire: malformed block map")

// Blocks returns the number of blocks of the image.
func (m *BlockMap) Blocks() int64 {
	if m.BlockSize <= 0 {
		return 0
	}
	return (m.Size + m.BlockSize - 1) / m.BlockSize
}

// Written returns the number of written blocks.
func (m *BlockMap) Written() int64 {
	var n int64
	for _, r := range m.Runs {
		n += r.Count
	}
	return n
}

// add records block i as written; blocks must be added in increasing order.
func (m *BlockMap) add(i int64) {
	if l := len(m.Runs); l > 0 && m.Runs[l-1].First+m.Runs[l-1].Count == i {
		m.Runs[l-1].Count++
		return
	}
	m.Runs = append(m.Runs, Extent{First: i, Count: 1})
}

// truncate returns the runs covering blocks below n, as a new slice.
func truncateRuns(runs []Extent, n int64) []Extent {
	out := make([]Extent, 0, len(runs))
	for _, r := range runs {
		if r.First >= n {
			break
		}
		if r.First+r.Count > n {
			r.Count = n - r.First
		}
		out = append(out, r)
	}
	return out
}

// Contains reports whether block i was written.
func (m *BlockMap) Contains(i int64) bool {
	lo, hi := 0, len(m.Runs)
	for lo < hi {
		mid := (lo + hi) / 2
		r := m.Runs[mid]
		switch {
		case i < r.First:
			hi = mid
		case i >= r.First+r.Count:
			lo = mid + 1
		default:
			return true
		}
	}
	return false
}

// MarshalText returns the canonical text form.
func (m *BlockMap) MarshalText() ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nsize %d\nblock-size %d\nruns %d\n", blockMapHeader, m.Size, m.BlockSize, len(m.Runs))
	for _, r := range m.Runs {
		fmt.Fprintf(&b, "%d %d\n", r.First, r.Count)
	}
	return b.Bytes(), nil
}

// ParseBlockMap parses the canonical text form, rejecting anything else.
func ParseBlockMap(text []byte) (*BlockMap, error) {
	s := string(text)
	line := func() (string, bool) {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			return "", false
		}
		l := s[:i]
		s = s[i+1:]
		return l, true
	}
	field := func(name string) (int64, error) {
		l, ok := line()
		v, found := strings.CutPrefix(l, name+" ")
		if !ok || !found {
			return 0, fmt.Errorf("%w: want %q line", ErrBadBlockMap, name)
		}
		return parseCanonicalInt(v)
	}
	if l, ok := line(); !ok || l != blockMapHeader {
		return nil, fmt.Errorf("%w: bad header", ErrBadBlockMap)
	}
	m := &BlockMap{}
	var err error
	if m.Size, err = field("size"); err != nil {
		return nil, err
	}
	if m.BlockSize, err = field("block-size"); err != nil {
		return nil, err
	}
	if m.BlockSize == 0 {
		return nil, fmt.Errorf("%w: block size 0", ErrBadBlockMap)
	}
	n, err := field("runs")
	if err != nil {
		return nil, err
	}
	blocks := m.Blocks()
	if n > maxBlockMapRuns || n > blocks {
		return nil, fmt.Errorf("%w: too many runs", ErrBadBlockMap)
	}
	m.Runs = make([]Extent, 0, min(n, 1<<16))
	next := int64(-1) // first block a run may start at
	for range n {
		l, ok := line()
		if !ok {
			return nil, fmt.Errorf("%w: truncated", ErrBadBlockMap)
		}
		a, b, ok := strings.Cut(l, " ")
		if !ok {
			return nil, fmt.Errorf("%w: bad run %q", ErrBadBlockMap, l)
		}
		first, err := parseCanonicalInt(a)
		if err != nil {
			return nil, err
		}
		count, err := parseCanonicalInt(b)
		if err != nil {
			return nil, err
		}
		if count == 0 || first <= next || first > blocks-count {
			return nil, fmt.Errorf("%w: run %q out of order or range", ErrBadBlockMap, l)
		}
		m.Runs = append(m.Runs, Extent{First: first, Count: count})
		next = first + count // adjacent runs must have been merged
	}
	if s != "" {
		return nil, fmt.Errorf("%w: trailing data", ErrBadBlockMap)
	}
	return m, nil
}

func parseCanonicalInt(s string) (int64, error) {
	if s == "" || len(s) > 19 || (s[0] == '0' && s != "0") {
		return 0, fmt.Errorf("%w: bad number %q", ErrBadBlockMap, s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: bad number %q", ErrBadBlockMap, s)
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: bad number %q", ErrBadBlockMap, s)
	}
	return v, nil
}
