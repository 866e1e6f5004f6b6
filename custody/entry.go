package custody

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/tlog"
)

// EntryVersion is the first line of every entry.
const EntryVersion = "impound-custody-entry/v1"

// TimeLayout is how entry times are written: UTC, nanoseconds, fixed width.
const TimeLayout = "2006-01-02T15:04:05.000000000Z"

// Outcome says whether the recorded action succeeded.
type Outcome string

// Outcomes.
const (
	Succeeded Outcome = "succeeded"
	Failed    Outcome = "failed"
)

// Actor is who acted: the operator's name and, when AWS was used, the STS
// caller ARN of the credentials.
type Actor struct {
	Operator  string `json:"operator"`
	CallerARN string `json:"caller_arn,omitempty"`
}

// Entry is one record of the ledger.
//
// The encoding is line-based, one field per line, in this order:
//
//	impound-custody-entry/v1
//	case <case ID>
//	seq <decimal, no leading zeros>
//	time <TimeLayout>
//	operator <text>
//	caller <ARN>                  (only when known)
//	kind <kind>
//	resource <ARN or URI>         (zero or more)
//	outcome succeeded|failed
//	error <JSON string>           (only when failed)
//	prev <base64 leaf hash of entry seq-1>   (not in entry 0)
//	details <canonical JSON object>
type Entry struct {
	Case      string
	Seq       int64
	Time      time.Time
	Actor     Actor
	Resources []string // ARNs, s3:// URIs or IDs acted on
	Outcome   Outcome  // empty means Succeeded on Append
	Error     string   // why it failed; required when Outcome is Failed
	Details   Details
	Prev      tlog.Hash // leaf hash of entry Seq-1; zero for entry 0
}

// Kind is the kind of the entry's details.
func (e *Entry) Kind() Kind {
	if e.Details == nil {
		return ""
	}
	return e.Details.Kind()
}

// EntryHash is an encoded entry's leaf hash in the ledger's Merkle tree
// (RFC 6962: SHA-256 of 0x00 and the entry). The next entry records it as prev.
func EntryHash(encoded []byte) tlog.Hash { return tlog.RecordHash(encoded) }

// FormatEntry returns the one encoding of e.
func FormatEntry(e *Entry) ([]byte, error) {
	if e.Details == nil {
		return nil, fmt.Errorf("custody: entry has no details")
	}
	details, err := encodeDetails(e.Details)
	if err != nil {
		return nil, err
	}
	return formatEntry(e, details)
}

func formatEntry(e *Entry, details []byte) ([]byte, error) {
	f := entryFields{
		caseID: e.Case, seq: e.Seq, time: e.Time, operator: e.Actor.Operator, caller: e.Actor.CallerARN,
		kind: e.Kind(), resources: e.Resources, outcome: e.Outcome, errText: e.Error, prev: e.Prev, details: details,
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	return f.format(), nil
}

// ParseEntry parses an encoded entry, rejecting every non-canonical form:
// ParseEntry(b) succeeds only if FormatEntry of the result returns b.
func ParseEntry(b []byte) (*Entry, error) {
	f, err := parseEntryFields(b)
	if err != nil {
		return nil, err
	}
	return f.entry(), nil
}

// entryFields is an entry with its details still canonical JSON.
type entryFields struct {
	caseID    string
	seq       int64
	time      time.Time
	operator  string
	caller    string
	kind      Kind
	resources []string
	outcome   Outcome
	errText   string
	prev      tlog.Hash
	details   []byte
}

func (f *entryFields) entry() *Entry {
	return &Entry{
		Case: f.caseID, Seq: f.seq, Time: f.time,
		Actor:     Actor{Operator: f.operator, CallerARN: f.caller},
		Resources: f.resources, Outcome: f.outcome, Error: f.errText,
		Details: decodeDetails(f.kind, f.details), Prev: f.prev,
	}
}

func (f *entryFields) check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: entry: "+format, append([]any{ErrMalformed}, a...)...)
	}
	if err := CheckCaseID(f.caseID); err != nil {
		return bad("%v", err)
	}
	if f.seq < 0 {
		return bad("negative sequence number")
	}
	if f.time.Location() != time.UTC || f.time.Year() < 1 || f.time.Year() > 9999 {
		return bad("time must be UTC between years 1 and 9999")
	}
	if err := checkText("operator", f.operator, true); err != nil {
		return bad("%v", err)
	}
	if f.caller != "" {
		if err := checkToken("caller", f.caller); err != nil {
			return bad("%v", err)
		}
	}
	if err := checkKind(f.kind); err != nil {
		return bad("%v", err)
	}
	if len(f.resources) > MaxResources {
		return bad("more than %d resources", MaxResources)
	}
	for _, r := range f.resources {
		if err := checkToken("resource", r); err != nil {
			return bad("%v", err)
		}
	}
	switch f.outcome {
	case Succeeded:
		if f.errText != "" {
			return bad("a succeeded entry has no error")
		}
	case Failed:
		if f.errText == "" {
			return bad("a failed entry needs its error")
		}
		if len(f.errText) > MaxErrorSize || !utf8.ValidString(f.errText) {
			return bad("error text: invalid UTF-8 or longer than %d bytes", MaxErrorSize)
		}
	default:
		return bad("outcome %q: want %q or %q", f.outcome, Succeeded, Failed)
	}
	if (f.seq == 0) != (f.prev == tlog.Hash{}) {
		return bad("entry 0 and only entry 0 has no previous hash")
	}
	if len(f.details) > MaxDetailsSize || len(f.details) == 0 || f.details[0] != '{' {
		return bad("details must be a JSON object of at most %d bytes", MaxDetailsSize)
	}
	return nil
}

func (f *entryFields) format() []byte {
	var b bytes.Buffer
	f.formatTo(&b)
	return b.Bytes()
}

// formatTo writes the encoding of f to b.
func (f *entryFields) formatTo(b *bytes.Buffer) {
	b.Grow(256 + len(f.details))
	line := func(name, v string) {
		b.WriteString(name)
		b.WriteByte(' ')
		b.WriteString(v)
		b.WriteByte('\n')
	}
	b.WriteString(EntryVersion + "\n")
	line("case", f.caseID)
	b.WriteString("seq ")
	b.Write(strconv.AppendInt(b.AvailableBuffer(), f.seq, 10))
	b.WriteString("\ntime ")
	b.Write(f.time.AppendFormat(b.AvailableBuffer(), TimeLayout))
	b.WriteByte('\n')
	line("operator", f.operator)
	if f.caller != "" {
		line("caller", f.caller)
	}
	line("kind", string(f.kind))
	for _, r := range f.resources {
		line("resource", r)
	}
	line("outcome", string(f.outcome))
	if f.outcome == Failed {
		b.WriteString("error ")
		_ = appendJSONString(b, f.errText)
		b.WriteByte('\n')
	}
	if f.seq > 0 {
		b.WriteString("prev ")
		b.Write(base64.StdEncoding.AppendEncode(b.AvailableBuffer(), f.prev[:]))
		b.WriteByte('\n')
	}
	b.WriteString("details ")
	b.Write(f.details)
	b.WriteByte('\n')
}

var formatPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// parseEntryFields parses and checks an entry, its details' canonical form
// included, without decoding the details into their type.
func parseEntryFields(b []byte) (*entryFields, error) {
	bad := func(format string, a ...any) (*entryFields, error) {
		return nil, fmt.Errorf("%w: entry: "+format, append([]any{ErrMalformed}, a...)...)
	}
	if len(b) > MaxEntrySize {
		return bad("longer than %d bytes", MaxEntrySize)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return bad("does not end in a newline")
	}
	if !utf8.Valid(b) {
		return bad("invalid UTF-8")
	}
	lines := strings.Split(string(b[:len(b)-1]), "\n")
	if len(lines) > MaxResources+16 {
		return bad("too many lines")
	}
	if lines[0] != EntryVersion {
		return bad("first line is not %q", EntryVersion)
	}
	i := 1
	field := func(name string, optional bool) (string, bool, error) {
		if i >= len(lines) {
			if optional {
				return "", false, nil
			}
			return "", false, fmt.Errorf("%w: entry: missing %q line", ErrMalformed, name)
		}
		v, ok := strings.CutPrefix(lines[i], name+" ")
		if !ok {
			if optional {
				return "", false, nil
			}
			return "", false, fmt.Errorf("%w: entry: line %d: want %q", ErrMalformed, i+1, name)
		}
		i++
		return v, true, nil
	}
	var f entryFields
	var v string
	var err error
	if f.caseID, _, err = field("case", false); err != nil {
		return nil, err
	}
	if v, _, err = field("seq", false); err != nil {
		return nil, err
	}
	if f.seq, err = strconv.ParseInt(v, 10, 64); err != nil || strconv.FormatInt(f.seq, 10) != v {
		return bad("seq %q is not a canonical decimal", v)
	}
	if v, _, err = field("time", false); err != nil {
		return nil, err
	}
	if f.time, err = time.Parse(TimeLayout, v); err != nil || f.time.Format(TimeLayout) != v {
		return bad("time %q is not %s", v, TimeLayout)
	}
	if f.operator, _, err = field("operator", false); err != nil {
		return nil, err
	}
	if f.caller, _, err = field("caller", true); err != nil {
		return nil, err
	}
	if v, _, err = field("kind", false); err != nil {
		return nil, err
	}
	f.kind = Kind(v)
	for {
		r, ok, err := field("resource", true)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		f.resources = append(f.resources, r)
	}
	if v, _, err = field("outcome", false); err != nil {
		return nil, err
	}
	f.outcome = Outcome(v)
	if f.outcome == Failed {
		if v, _, err = field("error", false); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(v), &f.errText); err != nil || !strings.HasPrefix(v, `"`) {
			return bad("error is not a JSON string")
		}
		var c bytes.Buffer
		_ = appendJSONString(&c, f.errText)
		if c.String() != v {
			return bad("error is not a canonical JSON string")
		}
	}
	if f.seq > 0 {
		if v, _, err = field("prev", false); err != nil {
			return nil, err
		}
		h, err := parseHash(v)
		if err != nil {
			return bad("prev: %v", err)
		}
		f.prev = h
	}
	if v, _, err = field("details", false); err != nil {
		return nil, err
	}
	f.details = []byte(v)
	if i != len(lines) {
		return bad("line %d: unexpected %q", i+1, truncate(lines[i], 40))
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	if err := checkCanonicalJSON(f.details); err != nil {
		return nil, err
	}
	// Belt and braces: the fields must format back to the input.
	buf := formatPool.Get().(*bytes.Buffer)
	buf.Reset()
	f.formatTo(buf)
	same := bytes.Equal(buf.Bytes(), b)
	formatPool.Put(buf)
	if !same {
		return bad("not in canonical form")
	}
	return &f, nil
}

func parseHash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	raw, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(raw) != tlog.HashSize || base64.StdEncoding.EncodeToString(raw) != s {
		return h, fmt.Errorf("%q is not a base64 SHA-256 hash", truncate(s, 60))
	}
	copy(h[:], raw)
	return h, nil
}

// checkText accepts printable UTF-8 without control characters, of at most
// maxTextSize bytes, not starting or ending with a space.
func checkText(name, s string, required bool) error {
	if s == "" {
		if required {
			return fmt.Errorf("%s is empty", name)
		}
		return nil
	}
	if len(s) > maxTextSize || !utf8.ValidString(s) {
		return fmt.Errorf("%s: invalid UTF-8 or longer than %d bytes", name, maxTextSize)
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return fmt.Errorf("%s %q starts or ends with a space", name, s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return fmt.Errorf("%s %q contains a control character", name, s)
		}
	}
	return nil
}

// checkToken accepts non-empty text without spaces (ARNs, URIs, IDs).
func checkToken(name, s string) error {
	if err := checkText(name, s, true); err != nil {
		return err
	}
	if strings.ContainsAny(s, " \u00a0") {
		return fmt.Errorf("%s %q contains a space", name, s)
	}
	return nil
}

func checkKind(k Kind) error {
	if k == "" || len(k) > 64 {
		return fmt.Errorf("kind %q: want 1 to 64 characters", k)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' && i > 0) {
			return fmt.Errorf("kind %q: use lower-case letters, digits and '-'", k)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
