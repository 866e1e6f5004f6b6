package respond

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/impound-ir/impound/acquire/controlplane"
	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/vault"
)

// controlPlaneStored counts the succeeded control-plane evidence-stored
// entries by item, and returns the keys by item.
func controlPlaneStored(t *testing.T, c *Case) (map[string]int, map[string][]vault.Receipt) {
	t.Helper()
	entries, err := c.Ledger().Entries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n, receipts := map[string]int{}, map[string][]vault.Receipt{}
	for _, e := range entries {
		if d, ok := e.Details.(custody.EvidenceStored); ok && e.Outcome != custody.Failed && d.Evidence == custody.EvidenceControlPlane {
			item := d.Receipt.Key[strings.LastIndexByte(d.Receipt.Key, '/')+1:]
			n[item]++
			receipts[item] = append(receipts[item], d.Receipt)
		}
	}
	return n, receipts
}

// collectActions returns the collect.<item> entries.
func collectActions(t *testing.T, c *Case, item string) []*custody.Entry {
	t.Helper()
	entries, err := c.Ledger().Entries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []*custody.Entry
	for _, e := range entries {
		if a, ok := e.Details.(custody.AWSAction); ok && a.Action == "collect."+item {
			out = append(out, e)
		}
	}
	return out
}

func stageResult(sum *Summary, name string) StageResult {
	for _, s := range sum.Stages {
		if s.Stage == name {
			return s
		}
	}
	return StageResult{Stage: name, Error: "not in the summary"}
}

// TestCollectRetriesFailedItems: a control-plane item that fails for a
// while fails the collect stage (so the case is not closed without it), and
// the re-run collects it, and only it, again.
func TestCollectRetriesFailedItems(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	d.env.Sim.SetFault("ec2", "GetConsoleScreenshot", awssim.Fault{ServerErrorRate: 1})
	d.env.Sim.SetFault("ec2", "DescribeTags", awssim.Fault{ServerErrorRate: 1})
	o := d.options()
	o.Finding = d.demo.Finding
	c := d.open(t, o)
	sum, err := Run(ctx, c, c.Stages())
	if err == nil {
		t.Fatal("the run succeeded with the screenshot and tags failing")
	}
	if s := stageResult(sum, "collect"); s.OK || !strings.Contains(s.Error, controlplane.ItemScreenshot) || !strings.Contains(s.Error, controlplane.ItemTags) {
		t.Errorf("collect stage %+v: want failed, naming the screenshot and the tags", s)
	}
	if s := stageResult(sum, "close"); !s.Skipped {
		t.Errorf("close stage %+v: want skipped while an item is missing", s)
	}
	for _, item := range []string{controlplane.ItemScreenshot, controlplane.ItemTags} {
		fails := collectActions(t, c, item)
		if len(fails) != 1 || fails[0].Outcome != custody.Failed || !strings.Contains(fails[0].Error, "InternalError") {
			t.Errorf("%s: %d collect entries %+v, want one failed with the API's error", item, len(fails), fails)
		}
	}
	stored, first := controlPlaneStored(t, c)
	if stored[controlplane.ItemScreenshot] != 0 || stored[controlplane.ItemTags] != 0 || stored[controlplane.ItemInstance] != 1 {
		t.Fatalf("stored after the first run: %v", stored)
	}
	st, err := c.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.missingItems(true); strings.Join(m, ",") != controlplane.ItemTags+","+controlplane.ItemScreenshot {
		t.Errorf("missing items %q, want the tags and the screenshot", m)
	}

	// The faults clear; a re-run collects the two items, and closes.
	d.env.Sim.ClearFaults()
	c2 := d.open(t, o)
	sum, err = Run(ctx, c2, c2.Stages())
	if err != nil {
		t.Fatalf("re-run: %v\nstages %+v", err, sum.Stages)
	}
	if s := stageResult(sum, "collect"); !s.OK {
		t.Errorf("collect stage %+v on re-run", s)
	}
	stored, second := controlPlaneStored(t, c2)
	for _, item := range controlplane.Items() {
		if stored[item] != 1 {
			t.Errorf("%s stored %d times, want once", item, stored[item])
		}
	}
	// Under a new prefix: keys are write-once.
	prefix := func(k string) string { return k[:strings.LastIndexByte(k, '/')] }
	if p1, p2 := prefix(first[controlplane.ItemInstance][0].Key), prefix(second[controlplane.ItemScreenshot][0].Key); p1 == p2 ||
		prefix(second[controlplane.ItemTags][0].Key) != p2 {
		t.Errorf("re-collected items under %s, the first collection under %s: want a new prefix", p2, p1)
	}
	rc, err := d.store.Get(ctx, second[controlplane.ItemScreenshot][0].Key, second[controlplane.ItemScreenshot][0].VersionID)
	if err != nil {
		t.Fatal(err)
	}
	shot, _ := io.ReadAll(rc)
	rc.Close()
	if len(shot) < 3 || shot[0] != 0xff || shot[1] != 0xd8 {
		t.Errorf("the screenshot stored is not a JPEG")
	}
	st, err = c2.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.closed || len(st.missingItems(true)) != 0 {
		t.Errorf("closed %v, missing %q", st.closed, st.missingItems(true))
	}

	// Nothing is missing: collect adds nothing.
	size := c2.Ledger().Size()
	if err := c2.Collect(ctx); err != nil || c2.Ledger().Size() != size {
		t.Errorf("collect on a collected case: err %v, %d entries added", err, c2.Ledger().Size()-size)
	}
}

// TestCollectScreenshotUnavailable: an instance type without screenshots
// gets a succeeded collect entry saying so, and no re-run tries again.
func TestCollectScreenshotUnavailable(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	inst, err := d.demo.Member.RunInstance(awssim.InstanceOptions{InstanceType: "m5.metal", ConsoleOutput: "bare metal\n"})
	if err != nil {
		t.Fatal(err)
	}
	o := d.options()
	o.InstanceID = inst.ID()
	c := d.open(t, o)
	if err := c.Collect(ctx); err != nil {
		t.Fatalf("collect: %v", err)
	}
	acts := collectActions(t, c, controlplane.ItemScreenshot)
	if len(acts) != 1 || acts[0].Outcome == custody.Failed {
		t.Fatalf("screenshot entries %+v: want one succeeded", acts)
	}
	if why := acts[0].Details.(custody.AWSAction).Details["unavailable"]; !strings.Contains(why, "UnsupportedOperation") {
		t.Errorf("unavailable %q: want the API's answer", why)
	}
	stored, _ := controlPlaneStored(t, c)
	if stored[controlplane.ItemScreenshot] != 0 || stored[controlplane.ItemInstance] != 1 || stored[controlplane.ItemConsoleOutput] != 1 {
		t.Errorf("stored %v", stored)
	}
	st, err := c.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if it := st.items[controlplane.ItemScreenshot]; !it.done() || it.stored {
		t.Errorf("screenshot state %+v: want done, not stored", it)
	}
	size := c.Ledger().Size()
	if err := c.Collect(ctx); err != nil || c.Ledger().Size() != size {
		t.Errorf("re-run: err %v, %d entries added; want none", err, c.Ledger().Size()-size)
	}
}

// TestCollectStoresTheFindingAsGiven: the finding's bytes are stored
// unchanged, & and layout included, and hash to the record's given_sha256.
func TestCollectStoresTheFindingAsGiven(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	given := []byte("{ \"version\":\"0\",\r\n\t\"detail-type\" : \"GuardDuty Finding\", \"source\":\"aws.guardduty\",\"resources\":[\"a&b<c>\"],\n\"detail\":" +
		string(d.demo.Finding) + "}\n\n")
	o := d.options()
	o.Finding = given
	c := d.open(t, o)
	if err := c.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	stored, receipts := controlPlaneStored(t, c)
	if stored[controlplane.ItemFindingGiven] != 1 || stored[controlplane.ItemFinding] != 1 {
		t.Fatalf("stored %v: want the finding as given and its record", stored)
	}
	read := func(r vault.Receipt) []byte { return readAll(t, d.store, r.Key, r.VersionID) }
	g := receipts[controlplane.ItemFindingGiven][0]
	if b := read(g); string(b) != string(given) {
		t.Errorf("stored %q, given %q", b, given)
	}
	sum := sha256.Sum256(given)
	var env struct {
		Data controlplane.FindingRecord `json:"data"`
	}
	if err := json.Unmarshal(read(receipts[controlplane.ItemFinding][0]), &env); err != nil {
		t.Fatal(err)
	}
	if g.SHA256 != hex.EncodeToString(sum[:]) || env.Data.GivenSHA256 != g.SHA256 || env.Data.Shape != controlplane.FindingShapeEvent {
		t.Errorf("given receipt %s, record given_sha256 %s (shape %s), bytes given %x", g.SHA256, env.Data.GivenSHA256, env.Data.Shape, sum)
	}
}
