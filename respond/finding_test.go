package respond

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/impound-ir/impound/acquire/controlplane"
	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/vault"
)

func readFinding(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "guardduty", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseFindingTestdata(t *testing.T) {
	tests := []struct {
		file  string
		want  Finding
		event bool
	}{
		{"backdoor-cc-activity.json", Finding{ID: "b2c7a3e4b5d6478e9a0b1c2d3e4f5a6b", Type: "Backdoor:EC2/C&CActivity.B", Severity: 8,
			AccountID: "123456789012", Region: "us-east-1", Partition: "aws", ResourceType: "Instance", InstanceID: "i-0f1e2d3c4b5a69788",
			Count: 4, UpdatedAt: "2026-11-21T13:51:59.904Z"}, true},
		{"sample-backdoor-cc-activity.json", Finding{ID: "16afba5c5c43e07c9e3e5e2e544e95df", Type: "Backdoor:EC2/C&CActivity.B", Severity: 8,
			AccountID: "123456789012", Region: "us-east-1", Partition: "aws", ResourceType: "Instance", InstanceID: "i-99999999",
			Sample: true, Count: 1, UpdatedAt: "2026-11-21T13:51:59.904Z"}, true},
		{"iam-credential-exfiltration.json", Finding{ID: "6ec5b2a1f0e94d3c8b7a6f5e4d3c2b1a", Type: "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
			Severity: 8, AccountID: "123456789012", Region: "us-east-1", Partition: "aws", ResourceType: "AccessKey",
			Count: 2, UpdatedAt: "2026-11-21T12:45:03.544Z"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b := readFinding(t, tt.file)
			f, err := ParseFinding(b)
			if err != nil {
				t.Fatal(err)
			}
			got := *f
			got.Detail, got.Event = nil, nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parsed\n%+v\nwant\n%+v", got, tt.want)
			}
			// The detail is kept byte for byte: it is what becomes evidence.
			if tt.event {
				if !bytes.Equal(f.Event, bytes.TrimSpace(b)) {
					t.Error("Event is not the input")
				}
				var ev struct{ Detail json.RawMessage }
				if err := json.Unmarshal(b, &ev); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(f.Detail, ev.Detail) {
					t.Errorf("Detail is not the event's detail as delivered:\n%s", f.Detail)
				}
			} else {
				if f.Event != nil {
					t.Error("a bare detail has an Event")
				}
				if !bytes.Equal(f.Detail, bytes.TrimSpace(b)) {
					t.Error("Detail is not the input")
				}
			}
		})
	}
}

func TestParseFindingErrors(t *testing.T) {
	good := `"id":"x1","type":"Backdoor:EC2/C&CActivity.B","severity":8,"accountId":"123456789012","region":"us-east-1"`
	tests := []struct {
		name, in, want string
	}{
		{"empty", ``, "not a JSON object"},
		{"array", `[1]`, "not a JSON object"},
		{"broken", `{"id":`, "not a JSON object"},
		{"other source", `{"source":"aws.securityhub","detail-type":"GuardDuty Finding","detail":{` + good + `}}`, `source is "aws.securityhub"`},
		{"no source", `{"detail-type":"GuardDuty Finding","detail":{` + good + `}}`, `source is ""`},
		{"other detail type", `{"source":"aws.guardduty","detail-type":"GuardDuty Malware Protection Object Scan Result","detail":{` + good + `}}`, `detail-type is "GuardDuty Malware Protection Object Scan Result"`},
		{"detail not object", `{"source":"aws.guardduty","detail-type":"GuardDuty Finding","detail":"x"}`, "detail is not a JSON object"},
		{"no detail", `{"source":"aws.guardduty","detail-type":"GuardDuty Finding"}`, "detail is not a JSON object"},
		{"no id", `{"type":"T","severity":8,"accountId":"123456789012","region":"r"}`, "no id"},
		{"no type", `{"id":"x","severity":8,"accountId":"123456789012","region":"r"}`, "no type"},
		{"bad account", `{"id":"x","type":"T","severity":8,"accountId":"12345","region":"r"}`, `accountId "12345"`},
		{"no region", `{"id":"x","type":"T","severity":8,"accountId":"123456789012"}`, "no region"},
		{"no severity", `{"id":"x","type":"T","accountId":"123456789012","region":"r"}`, "severity (none)"},
		{"string severity", `{"id":"x","type":"T","severity":"8","accountId":"123456789012","region":"r"}`, `severity "8"`},
		{"severity too high", `{"id":"x","type":"T","severity":11,"accountId":"123456789012","region":"r"}`, "severity 11"},
		{"bad count", `{` + good + `,"service":{"count":"many"}}`, "service.count"},
		{"negative count", `{` + good + `,"service":{"count":-1}}`, "service.count"},
		{"bad sample", `{` + good + `,"service":{"additionalInfo":{"sample":1}}}`, "sample 1 is not a boolean"},
		{"wrong field type", `{` + good + `,"resource":{"resourceType":7}}`, "detail:"},
		{"too large", `{"id":"` + strings.Repeat("a", MaxFindingSize) + `"}`, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseFinding([]byte(tt.in))
			if err == nil {
				t.Fatalf("parsed %+v, want an error", f)
			}
			if !errors.Is(err, ErrNotFinding) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want one wrapping ErrNotFinding saying %q", err, tt.want)
			}
		})
	}
}

func TestParseFindingSampleAsString(t *testing.T) {
	f, err := ParseFinding([]byte(`{"id":"x","type":"T","severity":5.5,"accountId":"123456789012","region":"r","service":{"additionalInfo":{"sample":"true"},"count":null}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !f.Sample || f.Severity != 5.5 || f.Count != 0 {
		t.Fatalf("%+v", f)
	}
}

func TestFindingActionable(t *testing.T) {
	real, err := ParseFinding(readFinding(t, "backdoor-cc-activity.json"))
	if err != nil {
		t.Fatal(err)
	}
	sample, err := ParseFinding(readFinding(t, "sample-backdoor-cc-activity.json"))
	if err != nil {
		t.Fatal(err)
	}
	iam, err := ParseFinding(readFinding(t, "iam-credential-exfiltration.json"))
	if err != nil {
		t.Fatal(err)
	}
	with := func(f *Finding, edit func(*Finding)) *Finding {
		c := *f
		edit(&c)
		return &c
	}
	pol := NewFindingPolicy("us-east-1")
	polWith := func(edit func(*FindingPolicy)) FindingPolicy {
		p := NewFindingPolicy("us-east-1")
		edit(&p)
		return p
	}
	tests := []struct {
		name string
		f    *Finding
		p    FindingPolicy
		ok   bool
		why  string
	}{
		{"backdoor", real, pol, true, ""},
		{"sample", sample, pol, false, "sample finding"},
		{"sample even if lowered bar", sample, polWith(func(p *FindingPolicy) { p.MinSeverity = 0 }), false, "sample finding"},
		{"access key", iam, pol, false, `resource type is "AccessKey"`},
		{"no instance", with(real, func(f *Finding) { f.InstanceID = "" }), pol, false, "names no instance"},
		{"bad instance", with(real, func(f *Finding) { f.InstanceID = "i-../../x" }), pol, false, "not an EC2 instance ID"},
		{"medium", with(real, func(f *Finding) { f.Severity = 5 }), pol, false, "severity 5 is below 7"},
		{"just high", with(real, func(f *Finding) { f.Severity = 7 }), pol, true, ""},
		{"medium allowed", with(real, func(f *Finding) { f.Severity = 5 }), polWith(func(p *FindingPolicy) { p.MinSeverity = 4 }), true, ""},
		{"other region", real, NewFindingPolicy("eu-west-1"), false, "Region us-east-1, this deployment responds in eu-west-1"},
		{"no region", real, NewFindingPolicy(""), false, "no deployment Region"},
		{"type allowed", real, polWith(func(p *FindingPolicy) { p.TypePrefixes = []string{"CryptoCurrency:EC2/", "Backdoor:EC2/"} }), true, ""},
		{"type not allowed", real, polWith(func(p *FindingPolicy) { p.TypePrefixes = []string{"CryptoCurrency:EC2/"} }), false, "matches none of CryptoCurrency:EC2/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, why := tt.f.Actionable(tt.p)
			if ok != tt.ok || !strings.Contains(why, tt.why) || (ok && why != "") {
				t.Fatalf("Actionable = %v, %q; want %v, %q", ok, why, tt.ok, tt.why)
			}
		})
	}
}

func TestFindingCaseID(t *testing.T) {
	ctx := context.Background()
	store := vault.NewMemory()
	skey, _, err := custody.GenerateKey("impound-test")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := custody.NewEd25519Signer(skey)
	if err != nil {
		t.Fatal(err)
	}
	const inst = "i-0f1e2d3c4b5a69788"
	open := func(id string, closed bool) {
		t.Helper()
		l, err := custody.Open(ctx, store, id, signer, custody.NewOptions())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Append(ctx, custody.Entry{Actor: custody.Actor{Operator: "t"}, Details: &custody.CaseOpened{InstanceID: inst}}); err != nil {
			t.Fatal(err)
		}
		if closed {
			if _, err := l.Append(ctx, custody.Entry{Actor: custody.Actor{Operator: "t"}, Details: &custody.CaseClosed{Reason: "done"}}); err != nil {
				t.Fatal(err)
			}
			// A note after closing does not reopen the case.
			if _, err := l.Append(ctx, custody.Entry{Actor: custody.Actor{Operator: "t"}, Details: &custody.Note{Text: "handed over"}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(wantID string, wantExisting bool) {
		t.Helper()
		id, existing, err := FindingCaseID(ctx, store, signer, inst)
		if err != nil {
			t.Fatal(err)
		}
		if id != wantID || existing != wantExisting {
			t.Fatalf("case %s (existing %v), want %s (existing %v)", id, existing, wantID, wantExisting)
		}
		if err := vault.CheckCaseID(id); err != nil {
			t.Fatal(err)
		}
	}
	check("gd-"+inst, false)
	open("gd-"+inst, false)
	check("gd-"+inst, true)
	store2 := vault.NewMemory()
	store = store2
	open("gd-"+inst, true)
	check("gd-"+inst+"-2", false)
	open("gd-"+inst+"-2", true)
	check("gd-"+inst+"-3", false)
	open("gd-"+inst+"-3", false)
	check("gd-"+inst+"-3", true)

	if _, _, err := FindingCaseID(ctx, store, signer, "i-../x"); err == nil {
		t.Fatal("a malformed instance ID was accepted")
	}
	// A case opened with another key is not silently skipped.
	other, _, _ := custody.GenerateKey("other")
	otherSigner, _ := custody.NewEd25519Signer(other)
	if _, _, err := FindingCaseID(ctx, store, otherSigner, inst); !errors.Is(err, custody.ErrWrongKey) {
		t.Fatalf("another key: %v, want ErrWrongKey", err)
	}
}

// findingEvidence returns the finding objects recorded as evidence.
func findingEvidence(t *testing.T, c *Case) []*custody.EvidenceStored {
	t.Helper()
	st, err := c.state(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []*custody.EvidenceStored
	for _, e := range st.stored {
		if strings.HasSuffix(e.Receipt.Key, "/"+controlplane.ItemFinding) {
			out = append(out, e)
		}
	}
	return out
}

func TestRecordFinding(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	f, err := ParseFinding(d.demo.Finding)
	if err != nil {
		t.Fatal(err)
	}
	// A case collected without the finding (opened by hand) gets it once.
	c := d.open(t, d.options())
	// Before collect: noted, not stored (collect stores Options.Finding).
	if err := c.RecordFinding(ctx, f); err != nil {
		t.Fatal(err)
	}
	if got := findingEvidence(t, c); len(got) != 0 {
		t.Fatalf("finding stored before collect: %d", len(got))
	}
	if _, err := Run(ctx, c, []Stage{{Name: "collect", Run: c.Collect}}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := c.RecordFinding(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	ev := findingEvidence(t, c)
	if len(ev) != 1 {
		t.Fatalf("%d finding objects, want 1", len(ev))
	}
	rc, err := d.store.Get(ctx, ev[0].Receipt.Key, ev[0].Receipt.VersionID)
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256Hex(t, rc); got != ev[0].Receipt.SHA256 {
		t.Errorf("stored object hashes to %s, receipt says %s", got, ev[0].Receipt.SHA256)
	}
	rc.Close()
	rc, _ = d.store.Get(ctx, ev[0].Receipt.Key, ev[0].Receipt.VersionID)
	var env struct {
		Item string
		Data controlplane.FindingRecord
	}
	if err := json.NewDecoder(rc).Decode(&env); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	sum := sha256.Sum256(f.Detail)
	if r := env.Data; env.Item != controlplane.ItemFinding || r.Shape != controlplane.FindingShapeDetail || r.GivenSHA256 != hex.EncodeToString(sum[:]) ||
		r.GivenSize != len(f.Detail) || r.ID != f.ID || r.Type != f.Type || r.InstanceID != d.demo.InstanceID || !jsonEqual(t, r.Given, f.Detail) {
		t.Errorf("stored finding %s: %+v", env.Item, r)
	}
	entries, err := c.Ledger().Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var notes int
	for _, e := range entries {
		if a, ok := e.Details.(custody.AWSAction); ok && a.Action == FindingAction {
			notes++
			if a.Details["finding_id"] != f.ID || a.Details["type"] != f.Type || a.Details["severity"] != "8" || a.Details["count"] != "3" {
				t.Errorf("finding entry %+v", a.Details)
			}
		}
	}
	if notes != 3 {
		t.Errorf("%d finding entries, want 3", notes)
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

func FuzzParseFinding(f *testing.F) {
	for _, name := range []string{"backdoor-cc-activity.json", "sample-backdoor-cc-activity.json", "iam-credential-exfiltration.json"} {
		f.Add(readFinding(f, name))
	}
	f.Add([]byte(`{"source":"aws.guardduty","detail-type":"GuardDuty Finding","detail":{"id":"x","type":"T","severity":8,"accountId":"123456789012","region":"r"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fd, err := ParseFinding(b)
		if err != nil {
			if !errors.Is(err, ErrNotFinding) {
				t.Fatalf("error %v does not wrap ErrNotFinding", err)
			}
			return
		}
		// What was parsed is in the input, byte for byte, and parses again the same.
		if !bytes.Contains(b, fd.Detail) || (fd.Event != nil && !bytes.Equal(fd.Event, bytes.TrimSpace(b))) {
			t.Fatal("Detail or Event is not the input's")
		}
		var again Finding
		if err := parseFindingDetail(fd.Detail, &again); err != nil {
			t.Fatalf("the detail of a parsed finding does not parse: %v", err)
		}
		a, g := *fd, again
		a.Detail, a.Event, g.Detail, g.Event = nil, nil, nil, nil
		if !reflect.DeepEqual(a, g) {
			t.Fatalf("detail parses to %+v, event to %+v", g, a)
		}
		if fd.Severity < 0 || fd.Severity > 10 || fd.Count < 0 || fd.ID == "" || fd.Type == "" {
			t.Fatalf("out of range: %+v", fd)
		}
	})
}

// TestRecordAnotherFinding: a second, different finding about the same
// instance reaching an open, collected case is evidence too; an update of
// it (GuardDuty re-sends a finding as its count grows) is recorded, not
// stored again.
func TestRecordAnotherFinding(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	first, err := ParseFinding(d.demo.Finding)
	if err != nil {
		t.Fatal(err)
	}
	o := d.options()
	o.Finding = first.Detail
	c := d.open(t, o)
	if err := c.RecordFinding(ctx, first); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, c, []Stage{{Name: "collect", Run: c.Collect}}); err != nil {
		t.Fatal(err)
	}
	if got := findingEvidence(t, c); len(got) != 1 {
		t.Fatalf("after collect: %d finding objects, want 1", len(got))
	}
	var detail map[string]any
	if err := json.Unmarshal(first.Detail, &detail); err != nil {
		t.Fatal(err)
	}
	detail["id"], detail["type"] = "f00dfeedf00dfeedf00dfeedf00dfeed", "CryptoCurrency:EC2/BitcoinTool.B!DNS"
	b, err := json.Marshal(detail)
	if err != nil {
		t.Fatal(err)
	}
	second, err := ParseFinding(b)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second finding, then an update of it
		if err := c.RecordFinding(ctx, second); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.RecordFinding(ctx, first); err != nil { // the first one, updated
		t.Fatal(err)
	}
	ev := findingEvidence(t, c)
	if len(ev) != 2 {
		t.Fatalf("%d finding objects, want 2 (one per finding)", len(ev))
	}
	rc, err := d.store.Get(ctx, ev[1].Receipt.Key, ev[1].Receipt.VersionID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var env struct{ Data controlplane.FindingRecord }
	if err := json.NewDecoder(rc).Decode(&env); err != nil {
		t.Fatal(err)
	}
	if env.Data.ID != second.ID || env.Data.Type != second.Type {
		t.Errorf("second object holds finding %s (%s), want %s", env.Data.ID, env.Data.Type, second.ID)
	}
	// Its bytes as received are stored beside it: their SHA-256 is the
	// record's given_sha256.
	st, err := c.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var given int
	for _, e := range st.stored {
		if strings.HasSuffix(e.Receipt.Key, "/"+controlplane.ItemFindingGiven) && e.Receipt.SHA256 == env.Data.GivenSHA256 {
			given++
		}
	}
	if sum := sha256.Sum256(second.Detail); given != 1 || env.Data.GivenSHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("%d objects of the second finding's bytes as given with SHA-256 %s (of the bytes: %x)", given, env.Data.GivenSHA256, sum)
	}
}
