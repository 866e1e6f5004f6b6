package respond

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

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
	c, err := Open(ctx, d.acc, d.store, d.signer, first)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, c, []Stage{{Name: "collect", Run: c.Collect}}); err != nil {
		t.Fatal(err)
	}

	later := d.options() // sha256+md5, no hold, compliance, no compression
	later.Isolate = false
	c2, err := Open(ctx, d.acc, d.store, d.signer, later)
	if err != nil {
		t.Fatal(err)
	}
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
	c, err := Open(ctx, d.acc, d.store, d.signer, o)
	if err != nil {
		t.Fatal(err)
	}
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
