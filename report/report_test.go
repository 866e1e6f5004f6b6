package report

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/vault"
)

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(SchemaURI, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(SchemaURI)
	if err != nil {
		t.Fatalf("compile schema: %v", err)
	}
	return s
}

func validate(t *testing.T, s *jsonschema.Schema, b []byte) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return s.Validate(v)
}

func TestJSONValidatesAgainstSchema(t *testing.T) {
	f := newFixture(t)
	s := compileSchema(t)
	for name, opts := range map[string]Options{
		"plain": {},
		"full":  {GeneratedAt: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC), Generator: &custody.Tool{Name: "impound", Version: "v1.0.0"}, VerifyLive: true},
	} {
		t.Run(name, func(t *testing.T) {
			b := render(t, f.build(t, opts), FormatJSON)
			if err := validate(t, s, b); err != nil {
				t.Fatalf("report JSON does not validate: %v\n%s", err, b)
			}
		})
	}
	// The schema is strict: it must reject what a report is not.
	b := render(t, f.build(t, Options{}), FormatJSON)
	for name, mutate := range map[string]func(m map[string]any){
		"wrong version":   func(m map[string]any) { m["version"] = 2 },
		"unknown field":   func(m map[string]any) { m["extra"] = true },
		"bad sha256":      func(m map[string]any) { m["evidence"].([]any)[0].(map[string]any)["sha256"] = "XYZ" },
		"missing ledger":  func(m map[string]any) { delete(m, "ledger") },
		"bad severity":    func(m map[string]any) { m["problems"].([]any)[0].(map[string]any)["severity"] = "fine" },
		"bad time format": func(m map[string]any) { m["case"].(map[string]any)["start"] = "yesterday" },
		"bad block map sha256": func(m map[string]any) {
			m["evidence"].([]any)[0].(map[string]any)["block_map"].(map[string]any)["sha256"] = "XYZ"
		},
		"block map status": func(m map[string]any) {
			m["evidence"].([]any)[0].(map[string]any)["block_map"].(map[string]any)["verification"].(map[string]any)["status"] = "fine"
		},
		"by-hand command without purpose": func(m map[string]any) {
			delete(m["verification"].(map[string]any)["by_hand_commands"].([]any)[0].(map[string]any), "purpose")
		},
	} {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		mutate(m)
		if err := validate(t, s, mustJSON(t, m)); err == nil {
			t.Errorf("%s: schema accepted an invalid report", name)
		}
	}
}

func TestReportContent(t *testing.T) {
	f := newFixture(t)
	r := f.build(t, Options{})
	if r.Schema != SchemaURI || r.Version != 1 || r.GeneratedAt != "" {
		t.Errorf("schema %q version %d generated_at %q", r.Schema, r.Version, r.GeneratedAt)
	}
	c := r.Case
	if c.ID != fixtureCase || c.InstanceID != fixtureInst || c.InstanceName != hostileName || c.Account != fixtureAcct ||
		c.ForensicsAccount != fixtureForens || c.Region != "eu-west-1" || c.Trigger != "guardduty:finding/5ac1e0d7" || !c.Closed || c.ClosedReason != "evidence secured" {
		t.Errorf("case summary: %+v", c)
	}
	if c.Start != "2026-11-21T09:00:07Z" || c.End != "2026-11-21T09:01:52Z" {
		t.Errorf("start %s end %s", c.Start, c.End)
	}
	if len(c.Operators) != 2 || c.Operators[0].Name != "alice" || c.Operators[0].Entries != 15 || c.Operators[1].Name != "bob" || c.Operators[1].Entries != 1 {
		t.Errorf("operators: %+v", c.Operators)
	}
	if len(r.Timeline) != 16 || r.Ledger.Size != 16 || r.Ledger.Signed != 16 || !r.Ledger.KeyPinned || r.Ledger.VerifierKey != f.key {
		t.Errorf("timeline %d, ledger %+v", len(r.Timeline), r.Ledger)
	}
	// Every timeline hash is the entry's leaf hash.
	v, err := custody.Verify(context.Background(), f.store, fixtureCase, custody.VerifyOptions{Key: f.key})
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range r.Timeline {
		h := custody.EntryHash(v.Raw(int64(i)))
		if got := e.Hash; got != b64(h[:]) {
			t.Errorf("entry %d hash %s, ledger %s", i, got, b64(h[:]))
		}
	}
	if string(v.Checkpoint) != r.Ledger.Checkpoint {
		t.Errorf("checkpoint differs from the ledger's latest")
	}
	// Problems: two failures first (revoke-sessions, memory), then the skip, nothing else.
	var sev []string
	for _, p := range r.Problems {
		sev = append(sev, p.Severity)
	}
	if strings.Join(sev, ",") != "failed,failed,skipped" {
		t.Fatalf("problems %v: %+v", sev, r.Problems)
	}
	if *r.Problems[0].Seq != 4 || r.Problems[0].Error != hostileError || *r.Problems[1].Seq != 14 || *r.Problems[2].Seq != 3 {
		t.Errorf("problems: %+v", r.Problems)
	}
	// Isolation: before → after kept as recorded.
	if len(r.Isolation) != 4 || r.Isolation[1].Before != `{"description":"<img src=x onerror=alert(2)>","groups":["sg-web"]}` ||
		r.Isolation[1].After != `{"groups":["sg-quarantine"]}` || r.Isolation[2].Status != "skipped" || r.Isolation[2].Step != "auto-scaling" ||
		r.Isolation[2].Note != "not in an auto scaling group" || r.Isolation[3].Status != "failed" {
		t.Errorf("isolation: %+v", r.Isolation)
	}
	if len(r.Snapshots) != 4 || r.Snapshots[0].SnapshotID != "snap-0aaa" || r.Snapshots[2].From != "snap-0aaa" || r.Snapshots[1].Action != "kms.create-grant" {
		t.Errorf("snapshots: %+v", r.Snapshots)
	}
	if got := r.Methods.HashAlgorithms; strings.Join(got, ",") != "md5,sha1,sha256" {
		t.Errorf("hash algorithms %v", got)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// TestEvidenceHashesMatchLedgerAndVault: every evidence hash in the report
// equals the ledger's and the vault's.
func TestEvidenceHashesMatchLedgerAndVault(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	r := f.build(t, Options{VerifyLive: true})
	es, err := f.ledger.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[int64]custody.EvidenceStored{}
	for _, e := range es {
		if d, ok := e.Details.(custody.EvidenceStored); ok {
			stored[e.Seq] = d
		}
	}
	if len(r.Evidence) != len(stored) || len(r.Evidence) != 3 {
		t.Fatalf("report has %d evidence objects, ledger %d", len(r.Evidence), len(stored))
	}
	for _, ev := range r.Evidence {
		d := stored[ev.Seq]
		if ev.SHA256 != d.Receipt.SHA256 || ev.Size != d.Receipt.Size || ev.VersionID != d.Receipt.VersionID || ev.Key != d.Receipt.Key {
			t.Errorf("entry %d: report %s/%d/%s, ledger %s/%d/%s", ev.Seq, ev.SHA256, ev.Size, ev.VersionID, d.Receipt.SHA256, d.Receipt.Size, d.Receipt.VersionID)
		}
		for alg, h := range d.Hashes {
			if ev.Hashes[alg] != h {
				t.Errorf("entry %d %s: report %s, ledger %s", ev.Seq, alg, ev.Hashes[alg], h)
			}
		}
		if ev.MerkleRoot != d.MerkleRoot {
			t.Errorf("entry %d merkle root differs", ev.Seq)
		}
		if ev.Outcome == "failed" {
			if ev.Verification.Status != StatusNotVerified {
				t.Errorf("failed store reported %s", ev.Verification.Status)
			}
			continue
		}
		// The vault's own record and bytes.
		rc, err := f.store.Stat(ctx, ev.Key, ev.VersionID)
		if err != nil {
			t.Fatal(err)
		}
		rd, err := f.store.Get(ctx, ev.Key, ev.VersionID)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, rd); err != nil {
			t.Fatal(err)
		}
		rd.Close()
		if got := hex.EncodeToString(h.Sum(nil)); ev.SHA256 != rc.SHA256 || ev.SHA256 != got {
			t.Errorf("entry %d: report %s, vault receipt %s, vault bytes %s", ev.Seq, ev.SHA256, rc.SHA256, got)
		}
		if ev.Verification.Status != StatusVerified {
			t.Errorf("entry %d: status %s, want verified: %+v", ev.Seq, ev.Verification.Status, ev.Verification.Checks)
		}
	}
	img := r.Evidence[0]
	if len(img.Verification.Checks) != 2 || img.Verification.Checks[0].Method != "ledger" || img.Verification.Checks[1].Method != "live" {
		t.Errorf("disk image checks: %+v", img.Verification.Checks)
	}
	if !img.LegalHold || img.RetentionMode != vault.ModeCompliance || img.RetainUntil != "2027-11-21T00:00:00Z" || img.Acquisition == nil || img.Acquisition.BlockMapKey == "" {
		t.Errorf("disk image: %+v", img)
	}
	if sha256Hex(f.imageRaw) != img.SHA256 {
		t.Errorf("image sha256 %s, want %s", img.SHA256, sha256Hex(f.imageRaw))
	}
}

// corruptStore returns other bytes for one key, as a tampered vault would.
type corruptStore struct {
	vault.Store
	key string
}

func (c corruptStore) Get(ctx context.Context, key, version string) (io.ReadCloser, error) {
	if key == c.key {
		return io.NopCloser(strings.NewReader("tampered")), nil
	}
	return c.Store.Get(ctx, key, version)
}

func TestVerifyLiveDetectsMismatch(t *testing.T) {
	f := newFixture(t)
	src := f.source(t)
	src.Vault = corruptStore{Store: f.store, key: f.control.Key}
	r, err := Build(context.Background(), src, Options{VerifyLive: true})
	if err != nil {
		t.Fatal(err)
	}
	ev := r.Evidence[1]
	if ev.Key != f.control.Key || ev.Verification.Status != StatusFailed {
		t.Fatalf("control-plane evidence: %+v", ev.Verification)
	}
	want := sha256Hex([]byte("tampered"))
	if c := ev.Verification.Checks[0]; c.SHA256 != want || !strings.Contains(c.Error, "differs from its receipt") {
		t.Errorf("check %+v, want sha256 %s", c, want)
	}
	found := false
	for _, p := range r.Problems {
		found = found || (p.Severity == SeverityFailed && strings.Contains(p.Summary, f.control.Key))
	}
	if !found {
		t.Errorf("mismatch not listed as a problem: %+v", r.Problems)
	}
	if r.Evidence[0].Verification.Status != StatusVerified {
		t.Errorf("untouched image: %s", r.Evidence[0].Verification.Status)
	}
}

func TestDeterministic(t *testing.T) {
	f := newFixture(t)
	for _, format := range Formats {
		a := render(t, f.build(t, Options{}), format)
		b := render(t, f.build(t, Options{}), format)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two renderings of the same ledger differ", format)
		}
	}
}

func TestBuildRefusesBadSources(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, otherKey, err := custody.GenerateKey("mallory")
	if err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(s *Source){
		"altered entry": func(s *Source) {
			s.Entries[13] = cloneEntry(s.Entries[13])
			s.Entries[13].Details = custody.Note{Text: "nothing to see"}
		},
		"removed entry": func(s *Source) { s.Entries = append(s.Entries[:5:5], s.Entries[6:]...) },
		"truncated":     func(s *Source) { s.Entries = s.Entries[:10] },
		"wrong key":     func(s *Source) { s.Key = otherKey },
		"no checkpoint": func(s *Source) { s.Checkpoint = nil },
		"bad signature": func(s *Source) { s.Checkpoint = bytes.Replace(s.Checkpoint, []byte("\n16\n"), []byte("\n15\n"), 1) },
		"empty":         func(s *Source) { s.Entries = nil },
	} {
		t.Run(name, func(t *testing.T) {
			src := f.source(t)
			mutate(src)
			r, err := Build(ctx, src, Options{})
			if !errors.Is(err, ErrInvalidSource) || r != nil {
				t.Fatalf("Build = %v, %v; want ErrInvalidSource", r, err)
			}
		})
	}
}

func cloneEntry(e *custody.Entry) *custody.Entry {
	c := *e
	return &c
}

func TestUnpinnedKeyAndUnsignedTailAreReported(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	src := f.source(t)
	cp := src.Checkpoint
	// Entries after the checkpoint: append one and keep the old checkpoint.
	if _, err := f.ledger.Append(ctx, custody.Entry{Actor: custody.Actor{Operator: "alice"}, Details: custody.Note{Text: "late"}}); err != nil {
		t.Fatal(err)
	}
	src2, err := FromVault(ctx, f.store, fixtureCase, "")
	if err != nil {
		t.Fatal(err)
	}
	src2.Checkpoint = cp
	r, err := Build(ctx, src2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Ledger.KeyPinned || r.Ledger.Signed != 16 || r.Ledger.Size != 17 || r.Timeline[16].Signed || !r.Timeline[15].Signed {
		t.Errorf("ledger %+v", r.Ledger)
	}
	var warn []string
	for _, p := range r.Problems {
		if p.Severity == SeverityWarning {
			warn = append(warn, p.Summary)
		}
	}
	if len(warn) != 2 || !strings.Contains(warn[0], "not covered by a signature") || !strings.Contains(warn[1], "not given out of band") {
		t.Errorf("warnings %q", warn)
	}
}

// TestFromBundle regenerates the report offline from an export bundle: it
// equals the one built from the vault but for where it was read.
func TestFromBundle(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	var bundle bytes.Buffer
	if _, err := custody.Export(ctx, f.store, fixtureCase, &bundle, custody.VerifyOptions{Key: f.key}); err != nil {
		t.Fatal(err)
	}
	src, err := FromBundle(ctx, bytes.NewReader(bundle.Bytes()), f.key, f.store.URI())
	if err != nil {
		t.Fatal(err)
	}
	off, err := Build(ctx, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	on := f.build(t, Options{})
	for _, format := range Formats {
		if a, b := render(t, on, format), render(t, off, format); !bytes.Equal(a, b) {
			t.Errorf("%s: report from the bundle differs from the report from the vault", format)
		}
	}
	// With the vault to re-read the evidence, the live checks match too.
	src, err = FromBundle(ctx, bytes.NewReader(bundle.Bytes()), f.key, "")
	if err != nil {
		t.Fatal(err)
	}
	src.Vault = f.store
	off, err = Build(ctx, src, Options{VerifyLive: true})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := render(t, f.build(t, Options{VerifyLive: true}), FormatHTML), render(t, off, FormatHTML); !bytes.Equal(a, b) {
		t.Errorf("live-verified report from the bundle differs from the one from the vault")
	}
	// A tampered bundle builds nothing.
	bad := bytes.Replace(bundle.Bytes(), []byte("evidence secured"), []byte("evidence shredded"), 1)
	if _, err := FromBundle(ctx, bytes.NewReader(bad), f.key, ""); !errors.Is(err, ErrInvalidSource) {
		t.Errorf("tampered bundle: %v", err)
	}
}

func TestCommands(t *testing.T) {
	f := newFixture(t)
	r := f.build(t, Options{KeyFile: "alice.pub"})
	var all []string
	for _, c := range r.Verification.Commands {
		all = append(all, c.Command)
	}
	joined := strings.Join(all, "\n")
	for _, want := range []string{
		"impound ledger verify --case IR-2026-0042 --vault mem: --key alice.pub --checkpoint checkpoint.txt --evidence",
		"impound ledger verify --bundle IR-2026-0042.ledger.tar --key alice.pub",
		"impound ledger export --case IR-2026-0042 --vault mem: --key alice.pub --out IR-2026-0042.ledger.tar",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("no command %q in\n%s", want, joined)
		}
	}
	img := r.Evidence[0]
	if got, want := img.Commands[0].Command, "impound vault verify --vault mem: "+f.image.Key+"@"+f.image.VersionID; got != want {
		t.Errorf("vault verify command %q, want %q", got, want)
	}
	// S3 and local receipts get standard-tool commands with the real values.
	b := &builder{caseID: fixtureCase, vaultURI: "s3://evidence-bucket/ir", opts: Options{}}
	cmds := b.evidenceCommands(&Evidence{}, vault.Receipt{URI: "s3://evidence-bucket/ir/cases/C/evidence/x y.img", Key: "cases/C/evidence/x y.img", VersionID: "v1", SHA256: "abc"})
	if got, want := cmds[1].Command, "aws s3api get-object --bucket evidence-bucket --key 'ir/cases/C/evidence/x y.img' --version-id v1 'x y.img' > /dev/null && sha256sum 'x y.img'"; got != want {
		t.Errorf("aws command\n got %s\nwant %s", got, want)
	}
	cmds = b.evidenceCommands(&Evidence{}, vault.Receipt{URI: "file:///srv/vault/cases/C/evidence/d.img", Key: "cases/C/evidence/d.img", VersionID: "v1", SHA256: "abc"})
	if got := cmds[1].Command; got != "sha256sum /srv/vault/cases/C/evidence/d.img" {
		t.Errorf("local command %q", got)
	}
	if got := shellQuote("it's"); got != `'it'\''s'` {
		t.Errorf("shellQuote: %s", got)
	}
}

var tagRe = regexp.MustCompile(`<(/?)([A-Za-z][A-Za-z0-9-]*)`)

// allowedTags are the only elements the HTML template writes.
var allowedTags = map[string]bool{
	"html": true, "head": true, "meta": true, "title": true, "style": true, "body": true, "header": true, "p": true,
	"h1": true, "h2": true, "h3": true, "span": true, "div": true, "table": true, "tr": true, "th": true, "td": true,
	"section": true, "svg": true, "line": true, "text": true, "a": true, "g": true, "path": true, "rect": true,
	"circle": true, "strong": true, "code": true, "pre": true, "br": true, "footer": true,
}

func TestHTMLEscapesHostileValues(t *testing.T) {
	f := newFixture(t)
	h := string(render(t, f.build(t, Options{}), FormatHTML))
	for _, m := range tagRe.FindAllStringSubmatch(h, -1) {
		if !allowedTags[strings.ToLower(m[2])] {
			t.Errorf("HTML holds a <%s%s> element", m[1], m[2])
		}
	}
	for _, want := range []string{
		"&lt;script&gt;alert(1)&lt;/script&gt;",        // the instance name
		"&lt;img src=x onerror=alert(2)&gt;",           // a tag in a before-state
		"&lt;b&gt;not authorized&lt;/b&gt;",            // error text
		"[link](javascript:alert(4)) &lt;!-- c --&gt;", // a note
	} {
		if !strings.Contains(h, want) {
			t.Errorf("HTML lacks escaped %q", want)
		}
	}
	if strings.Contains(strings.ToLower(h), "<script") || strings.Contains(h, "javascript:alert(4)\"") {
		t.Errorf("HTML holds a script")
	}
	// Self-contained: nothing fetched from anywhere.
	if m := regexp.MustCompile(`(?i)(src|href|action|srcset|poster|data)\s*=\s*["']?\s*(https?:|//|file:|ftp:)`).FindString(h); m != "" {
		t.Errorf("HTML references an external resource: %s", m)
	}
	if strings.Contains(h, "@import") || strings.Contains(h, "url(") {
		t.Errorf("CSS fetches something")
	}
	// The timeline: one mark per entry, failures drawn as crosses.
	if n := strings.Count(h, "<g transform="); n != 16 {
		t.Errorf("%d timeline marks, want 16", n)
	}
	if n := strings.Count(h, `stroke="#b91c1c" stroke-width="3.5"`); n != 2 {
		t.Errorf("%d failure crosses, want 2", n)
	}
	if n := strings.Count(h, `<rect x="-5.5"`); n != 1 {
		t.Errorf("%d skipped squares, want 1", n)
	}
}

// mdCells counts a Markdown table row's cells: unescaped pipes minus one.
func mdCells(line string) int {
	n := 0
	for i := 0; i < len(line); i++ {
		if line[i] == '\\' {
			i++
			continue
		}
		if line[i] == '|' {
			n++
		}
	}
	return n - 1
}

func TestMarkdownEscapesHostileValues(t *testing.T) {
	f := newFixture(t)
	m := string(render(t, f.build(t, Options{}), FormatMarkdown))
	if raw := regexp.MustCompile(`(^|[^\\])<(script|img|b\b|!--)`).FindString(stripCode(m)); raw != "" {
		t.Errorf("Markdown holds raw HTML from an untrusted value: %q", raw)
	}
	if strings.Contains(m, "[link](javascript") {
		t.Errorf("Markdown holds a live link")
	}
	// Tables keep their shape: every row has its header's number of cells.
	cells := -1
	inFence := ""
	for i, line := range strings.Split(m, "\n") {
		if strings.HasPrefix(line, "```") {
			fence := strings.TrimRight(line, "`")
			_ = fence
			run := len(line) - len(strings.TrimLeft(line, "`"))
			switch {
			case inFence == "":
				inFence = line[:run]
			case line[:run] == inFence && strings.TrimLeft(line, "`") == "":
				inFence = ""
			}
			continue
		}
		if inFence != "" {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			cells = -1
			continue
		}
		if cells < 0 {
			cells = mdCells(line)
			continue
		}
		if got := mdCells(line); got != cells {
			t.Errorf("line %d has %d cells, its table %d: %s", i+1, got, cells, line)
		}
	}
	for _, want := range []string{`\<script\>alert\(1\)\</script\>`, "revoke-sessions"} {
		if !strings.Contains(m, want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
}

// stripCode removes fenced blocks and code spans, whose content Markdown
// shows literally, leaving the text Markdown interprets.
func stripCode(m string) string {
	var out strings.Builder
	fence := ""
	for _, line := range strings.Split(m, "\n") {
		run := len(line) - len(strings.TrimLeft(line, "`"))
		if run >= 3 {
			if fence == "" {
				fence = line[:run]
				continue
			}
			if line == fence {
				fence = ""
				continue
			}
		}
		if fence != "" {
			continue
		}
		for i := 0; i < len(line); i++ {
			if line[i] == '\\' {
				out.WriteString(line[i:min(i+2, len(line))])
				i++
				continue
			}
			if line[i] != '`' {
				out.WriteByte(line[i])
				continue
			}
			n := len(line[i:]) - len(strings.TrimLeft(line[i:], "`"))
			tick := line[i : i+n]
			end := strings.Index(line[i+n:], tick)
			for end >= 0 && i+n+end+n < len(line) && line[i+n+end+n] == '`' {
				next := strings.Index(line[i+n+end+n:], tick)
				if next < 0 {
					end = -1
					break
				}
				end += n + next
			}
			if end < 0 {
				out.WriteString(tick)
				i += n - 1
				continue
			}
			i += n + end + n - 1
		}
		out.WriteByte('\n')
	}
	return out.String()
}

func FuzzMarkdownEscape(f *testing.F) {
	for _, s := range []string{hostileName, hostileNote, hostileError, "a|b", "``", "\\|", "<!--", "x\r\ny"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, cell := range []string{md(s), mdCode(s)} {
			row := "| " + cell + " | x |"
			if mdCells(row) != 2 {
				t.Fatalf("%q breaks a table row: %s", s, row)
			}
			if strings.ContainsAny(cell, "\n\r") {
				t.Fatalf("%q keeps a line break", s)
			}
		}
		e := md(s)
		for i := 0; i < len(e); i++ {
			if e[i] == '\\' {
				i++
				continue
			}
			if strings.IndexByte("<>`*_[]|&", e[i]) >= 0 {
				t.Fatalf("md(%q) = %q leaves %q unescaped", s, e, e[i])
			}
		}
	})
}

func TestRenderUnknownFormat(t *testing.T) {
	f := newFixture(t)
	if err := f.build(t, Options{}).Render(io.Discard, "pdf"); !errors.Is(err, ErrUnknownFormat) {
		t.Errorf("Render(pdf) = %v", err)
	}
}
