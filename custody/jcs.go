package custody

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Canonical JSON after RFC 8785 (JSON Canonicalization Scheme): object
// members sorted by the UTF-16 code units of their names, no insignificant
// white space, strings with the minimal escaping, numbers as ECMAScript
// prints them. The encoder refuses numbers that would change value on the way
// (integers beyond 2^53) rather than alter what is recorded.

const maxJSONDepth = 32

// canonicalJSON re-encodes one JSON value canonically.
func canonicalJSON(in []byte) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(in))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: details: %v", ErrMalformed, err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: details: data after the JSON value", ErrMalformed)
	}
	var buf bytes.Buffer
	buf.Grow(len(in))
	if err := appendCanonical(&buf, v, 0); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// checkCanonicalJSON reports whether in is exactly its canonical form.
func checkCanonicalJSON(in []byte) error {
	if !scanCanonical(in) {
		return fmt.Errorf("%w: details are not canonical JSON (RFC 8785)", ErrMalformed)
	}
	return nil
}

func appendCanonical(buf *bytes.Buffer, v any, depth int) error {
	if depth > maxJSONDepth {
		return fmt.Errorf("%w: details nested deeper than %d", ErrMalformed, maxJSONDepth)
	}
	switch v := v.(type) {
	case nil:
		buf.WriteString("null")
	case bool:
		if v {
			buf.WriteString("true")
		} else {
			buf.WriteString("false")
		}
	case string:
		return appendJSONString(buf, v)
	case json.Number:
		s, err := canonicalNumber(v)
		if err != nil {
			return err
		}
		buf.WriteString(s)
	case []any:
		buf.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := appendCanonical(buf, e, depth+1); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareUTF16)
		buf.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := appendJSONString(buf, k); err != nil {
				return err
			}
			buf.WriteByte(':')
			if err := appendCanonical(buf, v[k], depth+1); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	default:
		return fmt.Errorf("%w: details: unexpected JSON value %T", ErrMalformed, v)
	}
	return nil
}

// canonicalNumber prints n as ECMAScript does (which is what encoding/json
// does for a float64). An integer literal that would print as another
// integer (beyond 2^53, where float64 loses precision) is refused rather
// than recorded as a different value.
func canonicalNumber(n json.Number) (string, error) {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return "", fmt.Errorf("%w: details: number %s out of range", ErrMalformed, n)
	}
	if f == 0 {
		f = 0 // -0 prints as 0
	}
	b, err := json.Marshal(f)
	if err != nil {
		return "", fmt.Errorf("%w: details: number %s: %v", ErrMalformed, n, err)
	}
	if isIntLiteral(string(n)) && f != 0 && strings.TrimPrefix(string(b), "-") != strings.TrimPrefix(string(n), "-") {
		return "", fmt.Errorf("%w: details: integer %s cannot be represented exactly; record it as a string", ErrMalformed, n)
	}
	return string(b), nil
}

func isIntLiteral(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func compareUTF16(a, b string) int {
	return slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
}

func appendJSONString(buf *bytes.Buffer, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: details: invalid UTF-8 in string", ErrMalformed)
	}
	const hex = "0123456789abcdef"
	buf.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			buf.WriteString(`\"`)
		case c == '\\':
			buf.WriteString(`\\`)
		case c == '\b':
			buf.WriteString(`\b`)
		case c == '\f':
			buf.WriteString(`\f`)
		case c == '\n':
			buf.WriteString(`\n`)
		case c == '\r':
			buf.WriteString(`\r`)
		case c == '\t':
			buf.WriteString(`\t`)
		case c < 0x20:
			buf.WriteString(`\u00`)
			buf.WriteByte(hex[c>>4])
			buf.WriteByte(hex[c&0xf])
		default:
			buf.WriteByte(c)
		}
	}
	buf.WriteByte('"')
	return nil
}

// scanCanonical reports whether in is exactly canonical JSON, in one pass
// and without building values: the same answer as comparing in with
// canonicalJSON(in) (FuzzCanonicalJSON checks that), at a fraction of the
// cost, for verifying large ledgers.
func scanCanonical(in []byte) bool {
	s := jcsScanner{b: in}
	return s.value(0) && s.i == len(s.b)
}

type jcsScanner struct {
	b   []byte
	i   int
	key []uint16 // decoded key being compared
}

func (s *jcsScanner) value(depth int) bool {
	if s.i >= len(s.b) || depth > maxJSONDepth {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(depth)
	case c == '[':
		s.i++
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			return true
		}
		for {
			if !s.value(depth + 1) {
				return false
			}
			if s.i >= len(s.b) {
				return false
			}
			switch s.b[s.i] {
			case ',':
				s.i++
			case ']':
				s.i++
				return true
			default:
				return false
			}
		}
	case c == '"':
		_, ok := s.str(false)
		return ok
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	default:
		return s.number()
	}
}

func (s *jcsScanner) lit(l string) bool {
	if !bytes.HasPrefix(s.b[s.i:], []byte(l)) {
		return false
	}
	s.i += len(l)
	return true
}

func (s *jcsScanner) object(depth int) bool {
	s.i++ // {
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return true
	}
	var prev []uint16
	first := true
	for {
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return false
		}
		k, ok := s.str(true)
		if !ok {
			return false
		}
		// Members strictly ascending by UTF-16 code units: sorted, no duplicates.
		if !first && slices.Compare(prev, k) >= 0 {
			return false
		}
		prev, first = append(prev[:0], k...), false
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		if !s.value(depth + 1) {
			return false
		}
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// str scans a string in canonical escaping; with decode, it returns the
// string's UTF-16 code units.
func (s *jcsScanner) str(decode bool) ([]uint16, bool) {
	s.i++ // opening quote
	s.key = s.key[:0]
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.key, true
		case c < 0x20:
			return nil, false
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return nil, false
			}
			var r byte
			switch s.b[s.i+1] {
			case '"', '\\':
				r = s.b[s.i+1]
			case 'b':
				r = '\b'
			case 'f':
				r = '\f'
			case 'n':
				r = '\n'
			case 'r':
				r = '\r'
			case 't':
				r = '\t'
			case 'u':
				// Only control characters without a short form, lower-case hex.
				if s.i+6 > len(s.b) || s.b[s.i+2] != '0' || s.b[s.i+3] != '0' || (s.b[s.i+4] != '0' && s.b[s.i+4] != '1') {
					return nil, false
				}
				h := s.b[s.i+5]
				var lo byte
				switch {
				case '0' <= h && h <= '9':
					lo = h - '0'
				case 'a' <= h && h <= 'f':
					lo = h - 'a' + 10
				default:
					return nil, false
				}
				r = (s.b[s.i+4]-'0')<<4 | lo
				if r == '\b' || r == '\f' || r == '\n' || r == '\r' || r == '\t' {
					return nil, false
				}
				s.i += 6
				if decode {
					s.key = append(s.key, uint16(r))
				}
				continue
			default:
				return nil, false
			}
			s.i += 2
			if decode {
				s.key = append(s.key, uint16(r))
			}
		case c < utf8.RuneSelf:
			s.i++
			if decode {
				s.key = append(s.key, uint16(c))
			}
		default:
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n <= 1 {
				return nil, false
			}
			s.i += n
			if decode {
				s.key = utf16.AppendRune(s.key, r)
			}
		}
	}
	return nil, false
}

func (s *jcsScanner) number() bool {
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	digits := s.i
	for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
		s.i++
	}
	if s.i == digits {
		return false
	}
	intOnly := true
	for s.i < len(s.b) {
		c := s.b[s.i]
		if ('0' <= c && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-' {
			intOnly = false
			s.i++
			continue
		}
		break
	}
	text := s.b[start:s.i]
	if intOnly {
		// Fast path: integers are canonical when they have no leading zero,
		// are not -0, and are within ±2^53.
		d := s.b[digits:s.i]
		if (len(d) > 1 && d[0] == '0') || string(text) == "-0" {
			return false
		}
		if len(d) <= 15 {
			return true
		}
	}
	if !json.Valid(text) {
		return false
	}
	c, err := canonicalNumber(json.Number(text))
	return err == nil && c == string(text)
}
