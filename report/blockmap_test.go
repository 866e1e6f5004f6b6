package report

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/vault"
)

// imageCase is a case holding one disk image and its block map, as respond
// records them: the block map's receipt is in the image's evidence-stored
// entry, and respond re-reads and records both.
type imageCase struct {
	store  vault.Store
	ledger *custody.Ledger
	key    string
	image  *vault.Receipt
	bmap   *vault.Receipt
	seq    int64 // next entry
}

func newImageCase(t *testing.T) *imageCase {
	t.Helper()
	ctx := context.Background()
	skey, vkey, err := custody.GenerateKey("ir.example.com/bm")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := custody.NewEd25519Signer(skey)
	if err != nil {
		t.Fatal(err)
	}
	st := vault.NewMemory()
	l, err := custody.Open(ctx, st, "BM-1", signer, custody.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := &imageCase{store: st, ledger: l, key: vkey}
	c.add(t, custody.Entry{Details: custody.CaseOpened{InstanceID: "i-0123", Account: fixtureAcct, Region: "eu-west-1"}})
	if c.image, err = vault.PutBytes(ctx, st, "cases/BM-1/evidence/snap-1.img", []byte("the disk image"), vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if c.bmap, err = vault.PutBytes(ctx, st, "cases/BM-1/evidence/snap-1.img.blockmap", []byte(`{"written":[0]}`), vault.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	c.add(t, custody.Entry{Details: custody.EvidenceStored{Receipt: *c.image, Source: "snap-1", Evidence: custody.EvidenceDiskImage,
		Acquisition: &custody.Acquisition{SnapshotID: "snap-1", Size: c.image.Size, BlockSize: 512, Blocks: 1, WrittenBlocks: 1, BlockMap: c.bmap}}})
	return c
}

func (c *imageCase) add(t *testing.T, e custody.Entry) int64 {
	t.Helper()
	e.Actor = custody.Actor{Operator: "alice"}
	if _, err := c.ledger.Append(context.Background(), e); err != nil {
		t.Fatalf("append %s: %v", e.Details.Kind(), err)
	}
	c.seq++
	return c.seq - 1
}

// verify records a re-read of rc, as respond's Verify stage does.
func (c *imageCase) verify(t *testing.T, rc *vault.Receipt) int64 {
	return c.add(t, custody.Entry{Resources: []string{rc.URI}, Details: custody.EvidenceVerified{URI: rc.URI, Key: rc.Key, VersionID: rc.VersionID, Size: rc.Size, SHA256: rc.SHA256}})
}

func (c *imageCase) build(t *testing.T, store vault.Store, opts Options) *Report {
	t.Helper()
	src, err := FromVault(context.Background(), c.store, "BM-1", c.key)
	if err != nil {
		t.Fatal(err)
	}
	src.Vault = store
	r, err := Build(context.Background(), src, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestBlockMapVerificationIsTheImages: the evidence-verified entry of an
// image's block map is attached to that image's block map, not reported as
// a verification of an unknown object; a clean case has no problem at all.
func TestBlockMapVerificationIsTheImages(t *testing.T) {
	c := newImageCase(t)
	imgSeq := c.verify(t, c.image)
	bmSeq := c.verify(t, c.bmap)
	r := c.build(t, c.store, Options{VerifyLive: true})
	if len(r.Problems) != 0 {
		t.Fatalf("a clean case has problems: %+v", r.Problems)
	}
	if len(r.Evidence) != 1 {
		t.Fatalf("evidence %+v", r.Evidence)
	}
	ev := r.Evidence[0]
	bm := ev.BlockMap
	if bm == nil {
		t.Fatal("no block map in the evidence")
	}
	if bm.Key != c.bmap.Key || bm.VersionID != c.bmap.VersionID || bm.SHA256 != c.bmap.SHA256 || bm.Size != c.bmap.Size || bm.URI != c.bmap.URI {
		t.Errorf("block map %+v, receipt %+v", bm, c.bmap)
	}
	checkSeqs := func(name string, ec EvidenceCheck, seq int64, sha string) {
		t.Helper()
		if ec.Status != StatusVerified || len(ec.Checks) != 2 || ec.Checks[0].Method != "ledger" || ec.Checks[0].Seq == nil ||
			*ec.Checks[0].Seq != seq || ec.Checks[0].SHA256 != sha || ec.Checks[1].Method != "live" || ec.Checks[1].Outcome != "succeeded" || ec.Checks[1].SHA256 != sha {
			t.Errorf("%s checks: %s %+v, want ledger #%d and live, SHA-256 %s", name, ec.Status, ec.Checks, seq, sha)
		}
	}
	checkSeqs("image", ev.Verification, imgSeq, c.image.SHA256)
	checkSeqs("block map", bm.Verification, bmSeq, c.bmap.SHA256)
	if len(bm.Commands) != 1 || bm.Commands[0].Command != "impound vault verify --vault mem: "+c.bmap.Key+"@"+c.bmap.VersionID {
		t.Errorf("block map commands %+v", bm.Commands)
	}
	// In a local vault, the block map also gets its sha256sum command.
	lb := &builder{caseID: "BM-1", vaultURI: "file:///srv/vault"}
	if cmds := lb.objectCommands(vault.Receipt{URI: "file:///srv/vault/cases/BM-1/evidence/snap-1.img.blockmap", Key: "cases/BM-1/evidence/snap-1.img.blockmap", VersionID: "v1"}); len(cmds) != 2 ||
		cmds[1].Command != "sha256sum /srv/vault/cases/BM-1/evidence/snap-1.img.blockmap" {
		t.Errorf("local block map commands %+v", cmds)
	}

	// JSON: the schema's shape, and the block map's own checks.
	b := render(t, r, FormatJSON)
	if err := validate(t, compileSchema(t), b); err != nil {
		t.Fatalf("JSON does not validate: %v", err)
	}
	var j struct {
		Problems []any `json:"problems"`
		Evidence []struct {
			BlockMap struct {
				Key          string `json:"key"`
				SHA256       string `json:"sha256"`
				Verification struct {
					Status string `json:"status"`
					Checks []struct {
						Method string `json:"method"`
						Seq    *int64 `json:"seq"`
					} `json:"checks"`
				} `json:"verification"`
			} `json:"block_map"`
		} `json:"evidence"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	jb := j.Evidence[0].BlockMap
	if len(j.Problems) != 0 || jb.Key != c.bmap.Key || jb.SHA256 != c.bmap.SHA256 || jb.Verification.Status != "verified" ||
		len(jb.Verification.Checks) != 2 || jb.Verification.Checks[0].Seq == nil || *jb.Verification.Checks[0].Seq != bmSeq {
		t.Errorf("JSON problems %v, block map %+v", j.Problems, jb)
	}

	// HTML and Markdown: the block map's row names its entry.
	h := string(render(t, r, FormatHTML))
	i := strings.Index(h, "<th>Block map verification</th>")
	if i < 0 {
		t.Fatal("HTML has no block map verification row")
	}
	row := h[i:]
	row = row[:strings.Index(row, "</tr>")]
	for _, want := range []string{`<span class="badge ok">✔ verified</span>`, fmt.Sprintf(`href="#entry-%d">#%d</a>`, bmSeq, bmSeq), c.bmap.SHA256, "re-read while rendering this report"} {
		if !strings.Contains(row, want) {
			t.Errorf("HTML block map row lacks %q:\n%s", want, row)
		}
	}
	if !strings.Contains(h, "✔ Every recorded step succeeded. 1 of 1 evidence object(s) verified.</div>") || !strings.Contains(h, "<p>None: every recorded step succeeded") {
		t.Errorf("HTML banner or problems section not clean")
	}
	m := string(render(t, r, FormatMarkdown))
	for _, want := range []string{
		fmt.Sprintf("| Block map verification | VERIFIED<br>succeeded: re-read recorded in entry #%d at ", bmSeq),
		"> **✔ Every recorded step succeeded.**\n",
		"None: every recorded step succeeded, and nothing was skipped.",
		"Check its block map yourself:",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
}

// TestOrphanVerificationIsAProblem: a re-read of an object that no
// evidence-stored entry records (neither as evidence nor as a block map)
// stays a warning, even when only its version differs from a known one.
func TestOrphanVerificationIsAProblem(t *testing.T) {
	c := newImageCase(t)
	c.verify(t, c.bmap)
	other := *c.bmap
	other.VersionID = "another-version"
	orphan := c.verify(t, &other)
	stray := c.verify(t, &vault.Receipt{URI: "mem:cases/BM-1/evidence/stray", Key: "cases/BM-1/evidence/stray", VersionID: "v9", Size: 1, SHA256: strings.Repeat("0", 64)})
	r := c.build(t, nil, Options{})
	if len(r.Problems) != 2 {
		t.Fatalf("problems %+v, want the two orphan verifications", r.Problems)
	}
	for i, want := range []struct {
		seq int64
		key string
	}{{orphan, c.bmap.Key + " version another-version"}, {stray, "cases/BM-1/evidence/stray version v9"}} {
		p := r.Problems[i]
		if p.Severity != SeverityWarning || p.Seq == nil || *p.Seq != want.seq || !strings.Contains(p.Summary, want.key) || !strings.Contains(p.Summary, "no evidence-stored entry") {
			t.Errorf("problem %d: %+v, want a warning about %s at #%d", i, p, want.key, want.seq)
		}
	}
	if bm := r.Evidence[0].BlockMap; bm.Verification.Status != StatusVerified || len(bm.Verification.Checks) != 1 {
		t.Errorf("block map checks %+v", bm.Verification)
	}
	if !strings.Contains(string(render(t, r, FormatMarkdown)), "> **✔ Every recorded step succeeded.** ▲ 2 warning(s)") {
		t.Errorf("Markdown banner does not mention the warnings")
	}
}

// TestBlockMapMismatchIsAFailure: a block map whose recorded or live
// re-read differs from its receipt is a failure, and leaves the image's own
// status alone.
func TestBlockMapMismatchIsAFailure(t *testing.T) {
	c := newImageCase(t)
	c.verify(t, c.image)
	bad := *c.bmap
	bad.SHA256 = strings.Repeat("f", 64)
	seq := c.verify(t, &bad)
	r := c.build(t, nil, Options{})
	bm := r.Evidence[0].BlockMap
	if bm.Verification.Status != StatusFailed || r.Evidence[0].Verification.Status != StatusVerified {
		t.Fatalf("block map %s, image %s", bm.Verification.Status, r.Evidence[0].Verification.Status)
	}
	if len(r.Problems) != 1 || r.Problems[0].Severity != SeverityFailed || *r.Problems[0].Seq != seq ||
		!strings.Contains(r.Problems[0].Summary, "block map "+c.bmap.Key) || !strings.Contains(r.Problems[0].Error, "block map's receipt says") {
		t.Errorf("problems %+v", r.Problems)
	}

	// Live: the vault returns other bytes for the block map.
	c2 := newImageCase(t)
	r = c2.build(t, corruptStore{Store: c2.store, key: c2.bmap.Key}, Options{VerifyLive: true})
	bm = r.Evidence[0].BlockMap
	if bm.Verification.Status != StatusFailed || len(bm.Verification.Checks) != 1 || bm.Verification.Checks[0].Method != "live" ||
		bm.Verification.Checks[0].SHA256 != sha256Hex([]byte("tampered")) || r.Evidence[0].Verification.Status != StatusVerified {
		t.Errorf("block map %+v, image %s", bm.Verification, r.Evidence[0].Verification.Status)
	}
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0].Summary, "block map "+c2.bmap.Key) || !strings.Contains(r.Problems[0].Summary, "live check") {
		t.Errorf("problems %+v", r.Problems)
	}
	if h := string(render(t, r, FormatHTML)); !strings.Contains(h, `<tr class="bad"><th>Block map verification</th>`) {
		t.Errorf("HTML does not flag the block map row")
	}
}

// TestBlockMapLegalHold: a legal hold placed on a block map shows on it.
func TestBlockMapLegalHold(t *testing.T) {
	c := newImageCase(t)
	c.add(t, custody.Entry{Details: custody.LegalHoldChanged{URI: c.bmap.URI, Key: c.bmap.Key, VersionID: c.bmap.VersionID, On: true}})
	r := c.build(t, nil, Options{})
	if !r.Evidence[0].BlockMap.LegalHold || r.Evidence[0].LegalHold {
		t.Errorf("block map hold %v, image hold %v", r.Evidence[0].BlockMap.LegalHold, r.Evidence[0].LegalHold)
	}
}

// TestUnavailableItemIsSkipped: control-plane evidence AWS could not give
// (recorded as a succeeded collect.<item> with an unavailable detail) is
// listed prominently as skipped, with AWS's answer.
func TestUnavailableItemIsSkipped(t *testing.T) {
	c := newImageCase(t)
	c.verify(t, c.image)
	c.verify(t, c.bmap)
	seq := c.add(t, custody.Entry{Details: custody.AWSAction{Action: "collect.console-screenshot.jpg", Account: fixtureAcct,
		Details: map[string]string{"unavailable": "UnsupportedOperation: screenshots are not supported on m5.metal"}}})
	r := c.build(t, c.store, Options{})
	if len(r.Problems) != 1 {
		t.Fatalf("problems %+v, want the skipped screenshot", r.Problems)
	}
	p := r.Problems[0]
	if p.Severity != SeveritySkipped || p.Seq == nil || *p.Seq != seq || !strings.Contains(p.Summary, "console-screenshot.jpg") || !strings.Contains(p.Error, "m5.metal") {
		t.Errorf("problem %+v", p)
	}
}
