package respond

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/impound-ir/impound/acquire/controlplane"
	"github.com/impound-ir/impound/vault"
)

// TestResumeKeepsRecordedConfiguration: a case opened with md5, legal hold,
// governance retention and zstd, resumed by a run that gives none of them,
// keeps them: its images are stored and hashed as the first entry says.
func TestResumeKeepsRecordedConfiguration(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	first := d.options()
	first.Hashes = []string{"sha256", "md5", "sha1"}
	first.Put.LegalHold, first.Put.RetentionMode, first.RetentionDays = true, vault.ModeGovernance, 400
	first.Compression = "zstd"
	first.Isolate = false
	c := d.open(t, first)
	if _, err := Run(ctx, c, []Stage{{Name: "collect", Run: c.Collect}}); err != nil {
		t.Fatal(err)
	}

	later := d.options() // sha256+md5, no hold, compliance, no compression
	later.Isolate = false
	c2 := d.open(t, later)
	if _, err := Run(ctx, c2, c2.Stages()); err != nil {
		t.Fatal(err)
	}
	st, err := c2.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.acquired) != 2 {
		t.Fatalf("%d images", len(st.acquired))
	}
	minUntil := time.Now().AddDate(0, 0, 399)
	for id, ev := range st.acquired {
		r := ev.Receipt
		if !r.LegalHold || r.RetentionMode != vault.ModeGovernance || r.RetainUntil.Before(minUntil) {
			t.Errorf("%s: hold %v, mode %s, until %v; want the recorded hold, GOVERNANCE, 400 days", id, r.LegalHold, r.RetentionMode, r.RetainUntil)
		}
		if ev.Hashes["md5"] == "" || ev.Hashes["sha1"] == "" || ev.Acquisition.Compression != "zstd" {
			t.Errorf("%s: hashes %v, compression %q; want md5, sha1 and zstd as recorded", id, ev.Hashes, ev.Acquisition.Compression)
		}
	}
}

// TestCloseRefusesWithoutControlPlane: a case whose stages ran apart, with
// every volume acquired but the control plane never collected, is not
// closed.
func TestCloseRefusesWithoutControlPlane(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	o := d.options()
	o.Isolate = false
	c := d.open(t, o)
	stages, err := SelectStages(c.Stages(), []string{"snapshot", "acquire", "close"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(ctx, c, stages)
	if !errors.Is(err, ErrEvidenceMissing) || !strings.Contains(err.Error(), "instance.json") {
		t.Fatalf("close without collect: %v, want ErrEvidenceMissing naming instance.json", err)
	}
	st, err := c.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.closed || len(st.acquired) != 2 {
		t.Errorf("closed %v with %d images", st.closed, len(st.acquired))
	}
}

// failCreateOnce fails the first Create of a key with the given suffix.
type failCreateOnce struct {
	vault.Store
	suffix string
	failed atomic.Bool
}

func (s *failCreateOnce) Create(ctx context.Context, key string, opts vault.PutOptions) (vault.Writer, error) {
	if strings.HasSuffix(key, s.suffix) && s.failed.CompareAndSwap(false, true) {
		return nil, errors.New("vault unreachable")
	}
	return s.Store.Create(ctx, key, opts)
}

// TestFindingRecordCollectedAgain: the finding's record failed to store,
// its bytes as given were stored; a later run without --finding reads them
// back and stores the record, and the case closes.
func TestFindingRecordCollectedAgain(t *testing.T) {
	ctx := context.Background()
	st := &failCreateOnce{Store: vault.NewMemory(), suffix: "/" + controlplane.ItemFinding}
	d := newDrill(t, st)
	o := d.options()
	o.Isolate = false
	o.Finding = d.demo.Finding
	c := d.open(t, o)
	if _, err := Run(ctx, c, c.Stages()); err == nil || !strings.Contains(err.Error(), controlplane.ItemFinding) {
		t.Fatalf("first run: %v, want the finding's record failed", err)
	}
	later := d.options()
	later.Isolate = false // and no finding given
	c2 := d.open(t, later)
	if _, err := Run(ctx, c2, c2.Stages()); err != nil {
		t.Fatalf("re-run without --finding: %v", err)
	}
	s2, err := c2.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec, given := s2.items[controlplane.ItemFinding], s2.items[controlplane.ItemFindingGiven]
	if !rec.done() || !given.done() || !s2.closed {
		t.Fatalf("record stored %v, given stored %v, closed %v", rec.done(), given.done(), s2.closed)
	}
	var env struct{ Data controlplane.FindingRecord }
	if err := json.Unmarshal(readAll(t, d.store, rec.receipt.Key, rec.receipt.VersionID), &env); err != nil {
		t.Fatal(err)
	}
	if env.Data.GivenSHA256 != given.receipt.SHA256 {
		t.Errorf("the record's given_sha256 %s is not the stored bytes' %s", env.Data.GivenSHA256, given.receipt.SHA256)
	}
}

// TestCloseRefusesUnverified: a case whose evidence was stored but never
// read back, or never reported, is not closed.
func TestCloseRefusesUnverified(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	o := d.options()
	o.Isolate = false
	c := d.open(t, o)
	run := func(names ...string) error {
		stages, err := SelectStages(c.Stages(), names)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Run(ctx, c, stages)
		return err
	}
	if err := run("collect", "snapshot", "acquire", "close"); !errors.Is(err, ErrNotVerified) || !strings.Contains(err.Error(), "not read back") {
		t.Fatalf("close without verify: %v, want ErrNotVerified", err)
	}
	if err := run("verify", "close"); !errors.Is(err, ErrNotVerified) || !strings.Contains(err.Error(), "no report") {
		t.Fatalf("close without a report: %v, want ErrNotVerified", err)
	}
	if err := run("report", "close"); err != nil {
		t.Fatalf("close after verify and report: %v", err)
	}
	st, err := c.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.closed {
		t.Error("the case is not closed")
	}
}
