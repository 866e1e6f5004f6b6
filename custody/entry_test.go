package custody

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/impound-ir/impound/vault"
)

var testTime = time.Date(2026, 11, 21, 10, 2, 56, 123456789, time.UTC)

func sampleEntries() []*Entry {
	prev := tlog.RecordHash([]byte("previous"))
	return []*Entry{
		{Case: "CASE-1", Seq: 0, Time: testTime, Actor: Actor{Operator: "alice"}, Outcome: Succeeded,
			Details: CaseOpened{VerifierKey: "impound+12345678+AQ==", Title: "GuardDuty: Backdoor:EC2/C&CActivity.B", Trigger: "finding-1"}},
		{Case: "CASE-1", Seq: 1, Time: testTime, Actor: Actor{Operator: "Jane Doe", CallerARN: "arn:aws:sts::111122223333:assumed-role/IR/jane"},
			Resources: []string{"arn:aws:ec2:eu-west-1:111122223333:instance/i-0abc"}, Outcome: Failed,
			Error: "isolate i-0abc: AccessDenied:\n\"not authorized\" \u0001 é", Prev: prev,
			Details: IsolationStep{Step: "swap-security-groups", Target: "eni-1", Before: json.RawMessage(`{"groups":["sg-1","sg-2"]}`), After: json.RawMessage(`{"groups":["sg-iso"]}`)}},
		{Case: "CASE-1", Seq: 2, Time: testTime.Add(time.Second), Actor: Actor{Operator: "alice"}, Outcome: Succeeded, Prev: prev,
			Resources: []string{"s3://evidence/cases/CASE-1/vol-1.raw"},
			Details: EvidenceStored{Source: "snap-0123", Hashes: map[string]string{"sha1": "aa", "md5": "bb"},
				Receipt: vault.Receipt{URI: "s3://evidence/cases/CASE-1/vol-1.raw", Key: "cases/CASE-1/vol-1.raw", VersionID: "3HL4kqtJlcpXroDTDmJ", Size: 8 << 30, SHA256: strings.Repeat("ab", 32),
					RetentionMode: vault.ModeCompliance, RetainUntil: testTime.AddDate(1, 0, 0).Truncate(time.Second), StoredAt: testTime}}},
		{Case: "CASE-1", Seq: 3, Time: testTime.Add(time.Hour), Actor: Actor{Operator: "bob"}, Outcome: Succeeded, Prev: prev,
			Details: Note{Text: "Suspect binary at /tmp/.x — see ticket IR-42.\nSecond line."}},
		{Case: "CASE-1", Seq: 4, Time: testTime, Actor: Actor{Operator: "bob"}, Outcome: Succeeded, Prev: prev,
			Details: RawDetails{EntryKind: "future-kind", JSON: json.RawMessage(`{"a":1,"b":[true,null,"x"]}`)}},
	}
}

func TestEntryRoundTrip(t *testing.T) {
	for _, e := range sampleEntries() {
		b, err := FormatEntry(e)
		if err != nil {
			t.Fatalf("format %d: %v", e.Seq, err)
		}
		got, err := ParseEntry(b)
		if err != nil {
			t.Fatalf("parse %d: %v\n%s", e.Seq, err, b)
		}
		b2, err := FormatEntry(got)
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("entry %d: format(parse(b)) differs (%v):\n%s\n%s", e.Seq, err, b, b2)
		}
		if got.Kind() != e.Kind() || got.Seq != e.Seq || !got.Time.Equal(e.Time) || got.Error != e.Error || got.Actor != e.Actor || got.Prev != e.Prev {
			t.Errorf("entry %d: fields changed: %+v", e.Seq, got)
		}
		if fmt.Sprintf("%#v", got.Details) != fmt.Sprintf("%#v", e.Details) {
			t.Errorf("entry %d: details\n got %#v\nwant %#v", e.Seq, got.Details, e.Details)
		}
	}
}

func TestEntryGolden(t *testing.T) {
	b, err := FormatEntry(sampleEntries()[1])
	if err != nil {
		t.Fatal(err)
	}
	want := `impound-custody-entry/v1
case CASE-1
seq 1
time 2026-11-21T10:02:56.123456789Z
operator Jane Doe
caller arn:aws:sts::111122223333:assumed-role/IR/jane
kind isolation-step
resource arn:aws:ec2:eu-west-1:111122223333:instance/i-0abc
outcome failed
error "isolate i-0abc: AccessDenied:\n\"not authorized\" \u0001 é"
prev mv+B9nMXhZv0PQRI9Au0iBJwH8lym1p4x4CusEXIM1Q=
details {"after":{"groups":["sg-iso"]},"before":{"groups":["sg-1","sg-2"]},"step":"swap-security-groups","target":"eni-1"}
`
	if string(b) != want {
		t.Errorf("encoding changed; v1 entries must keep their bytes:\n%s\nwant:\n%s", b, want)
	}
}

// TestParseEntryRejects: each mutation of a valid entry is a non-canonical
// or invalid form that must be rejected with ErrMalformed.
func TestParseEntryRejects(t *testing.T) {
	good, err := FormatEntry(sampleEntries()[2])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseEntry(good); err != nil {
		t.Fatal(err)
	}
	g := string(good)
	muts := map[string]string{
		"no final newline":    strings.TrimSuffix(g, "\n"),
		"extra final newline": g + "\n",
		"CRLF":                strings.ReplaceAll(g, "\n", "\r\n"),
		"version":             strings.Replace(g, "entry/v1", "entry/v2", 1),
		"leading zero seq":    strings.Replace(g, "seq 2", "seq 02", 1),
		"plus seq":            strings.Replace(g, "seq 2", "seq +2", 1),
		"two spaces":          strings.Replace(g, "seq 2", "seq  2", 1),
		"time zone":           strings.Replace(g, "time 2026-11-21T10:02:57.123456789Z", "time 2026-11-21T10:02:57.123456789+00:00", 1),
		"short time":          strings.Replace(g, "57.123456789Z", "57.123Z", 1),
		"field order":         strings.Replace(strings.Replace(g, "operator alice\n", "", 1), "time ", "operator alice\ntime ", 1),
		"unknown field":       strings.Replace(g, "outcome ", "color blue\noutcome ", 1),
		"duplicate field":     strings.Replace(g, "outcome succeeded\n", "outcome succeeded\noutcome succeeded\n", 1),
		"outcome":             strings.Replace(g, "outcome succeeded", "outcome ok", 1),
		"error on success":    strings.Replace(g, "outcome succeeded\n", "outcome succeeded\nerror \"x\"\n", 1),
		"details spacing":     strings.Replace(g, `{"hashes"`, `{ "hashes"`, 1),
		"details key order":   strings.Replace(g, `"md5":"bb","sha1":"aa"`, `"sha1":"aa","md5":"bb"`, 1),
		"details dup key":     strings.Replace(g, `"md5":"bb"`, `"md5":"bb","md5":"bb"`, 1),
		"details escape":      strings.Replace(g, `"snap-0123"`, `"snap\u002d0123"`, 1),
		"details number":      strings.Replace(g, `"Size":8589934592`, `"Size":8589934592.0`, 1),
		"details exponent":    strings.Replace(g, `"Size":8589934592`, `"Size":8.589934592e9`, 1),
		"details not object":  strings.Replace(g, "details {", "details [{", 1) + "]",
		"prev missing":        strings.Replace(g, "prev ", "xprev ", 1),
		"prev not canonical":  strings.Replace(g, "=\ndetails", "\ndetails", 1),
		"prev short":          strings.Replace(g, "prev mv+B", "prev mv+", 1),
		"case id":             strings.Replace(g, "case CASE-1", "case CASE/1", 1),
		"empty operator":      strings.Replace(g, "operator alice", "operator ", 1),
		"trailing space":      strings.Replace(g, "operator alice", "operator alice ", 1),
		"resource space":      strings.Replace(g, "resource s3://evidence", "resource s3:// evidence", 1),
		"kind upper":          strings.Replace(g, "kind evidence-stored", "kind Evidence-stored", 1),
		"control char":        strings.Replace(g, "operator alice", "operator al\x7fice", 1),
		"invalid utf8":        strings.Replace(g, "operator alice", "operator al\xffice", 1),
		"bom":                 "\ufeff" + g,
	}
	for name, m := range muts {
		if m == g {
			t.Errorf("%s: mutation did not change the entry", name)
			continue
		}
		if _, err := ParseEntry([]byte(m)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: ParseEntry = %v, want ErrMalformed", name, err)
		}
	}
	if _, err := ParseEntry(bytes.Repeat([]byte("a"), MaxEntrySize+1)); !errors.Is(err, ErrMalformed) {
		t.Errorf("oversized entry: %v", err)
	}
}

func TestFormatEntryRefuses(t *testing.T) {
	base := *sampleEntries()[3]
	cases := map[string]func(e *Entry){
		"no details":        func(e *Entry) { e.Details = nil },
		"local time":        func(e *Entry) { e.Time = e.Time.In(time.FixedZone("X", 3600)) },
		"newline operator":  func(e *Entry) { e.Actor.Operator = "a\nb" },
		"failed no error":   func(e *Entry) { e.Outcome = Failed },
		"huge integer":      func(e *Entry) { e.Details = SnapshotCreated{SizeGiB: 1<<53 + 1} },
		"entry 0 with prev": func(e *Entry) { e.Seq = 0 },
		"bad case":          func(e *Entry) { e.Case = "../x" },
	}
	for name, mut := range cases {
		e := base
		mut(&e)
		if b, err := FormatEntry(&e); err == nil {
			t.Errorf("%s: FormatEntry accepted:\n%s", name, b)
		}
	}
}

func TestCanonicalJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{"b":1,"a":2}`:                  `{"a":2,"b":1}`,
		`{"€":1,"\ud83d\ude00":2,"a":3}`: `{"a":3,"€":1,"😀":2}`, // UTF-16 order: € (U+20AC) before 😀 (D83D)
		`[1.0, 1e2, -0, 0.1, 1e21]`:      `[1,100,0,0.1,1e+21]`,
		`"\u00e9\/\u001f"`:               `"é/\u001f"`,
	} {
		got, err := canonicalJSON([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("canonical(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{`{"a":1}x`, `9007199254740993`, `{`, `"\ud800"x`} {
		if _, err := canonicalJSON([]byte(in)); err == nil {
			t.Errorf("canonical(%s) accepted", in)
		}
	}
}

func FuzzParseEntry(f *testing.F) {
	for _, e := range sampleEntries() {
		b, err := FormatEntry(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("impound-custody-entry/v1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEntry(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		out, err := FormatEntry(e)
		if err != nil {
			t.Fatalf("parsed entry does not format: %v\n%q", err, b)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("format(parse(b)) != b:\n%q\n%q", b, out)
		}
	})
}

func FuzzCanonicalJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5,"x"],"b":null}`, `"\u2028"`, `{"":{}}`, `[1e300]`, `-0.0`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := canonicalJSON(b)
		// The one-pass scanner agrees with decode-and-re-encode.
		if want := err == nil && bytes.Equal(c, b); scanCanonical(b) != want {
			t.Fatalf("scanCanonical(%q) = %v, canonical form %q (%v)", b, !want, c, err)
		}
		if err != nil {
			return
		}
		if !json.Valid(c) {
			t.Fatalf("canonical form is not JSON: %q", c)
		}
		c2, err := canonicalJSON(c)
		if err != nil || !bytes.Equal(c, c2) {
			t.Fatalf("canonical form not stable: %q -> %q (%v)", c, c2, err)
		}
		if checkCanonicalJSON(c) != nil {
			t.Fatalf("canonical form rejected: %q", c)
		}
	})
}
