package respond

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/internal/awssim/simtest"
	"github.com/impound-ir/impound/vault"
)

// drill is a seeded demo world, the accounts to reach it, and a vault.
type drill struct {
	env    *simtest.Env
	demo   *awssim.Demo
	acc    Accounts
	store  vault.Store
	signer custody.Signer
}

func newDrill(t *testing.T, store vault.Store) *drill {
	t.Helper()
	env := simtest.Start(t, awssim.Options{})
	// 1 GiB volumes, so tests can keep whole images in a memory vault.
	demo, err := awssim.SeedDemo(env.Sim, awssim.DemoOptions{RootGiB: 1, DataGiB: 1, DataSeed: 7})
	if err != nil {
		t.Fatal(err)
	}
	skey, _, err := custody.GenerateKey("impound-test")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := custody.NewEd25519Signer(skey)
	if err != nil {
		t.Fatal(err)
	}
	return &drill{env: env, demo: demo, store: store, signer: signer, acc: Accounts{
		MemberID: demo.Member.ID(), Member: env.ClientConfig(demo.Member.Credentials()),
		ForensicsID: demo.Forensics.ID(), Forensics: env.ClientConfig(demo.Forensics.Credentials()),
		MemberCaller: demo.Member.UserARN(), ForensicsCaller: demo.Forensics.UserARN(),
	}}
}

func (d *drill) options() Options {
	o := NewOptions()
	o.CaseID = "IR-TEST-1"
	o.InstanceID = d.demo.InstanceID
	o.Region = d.env.Sim.Region()
	o.Operator = "tester"
	o.Trigger = "test"
	o.Hashes = []string{"sha256", "md5"}
	o.ForensicsKMSKey = d.demo.EvidenceKeyARN
	o.MemberKMSKey = d.demo.TransferKeyARN
	o.SnapshotPollInterval = 5 * time.Millisecond
	o.Tool = custody.Tool{Name: "impound", Version: "test"}
	return o
}

func sha256Hex(t *testing.T, r io.Reader) string {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// entryReads counts the reads of ledger entries from a store.
type entryReads struct {
	vault.Store
	n atomic.Int64
}

func (s *entryReads) Get(ctx context.Context, key, versionID string) (io.ReadCloser, error) {
	if strings.Contains(key, "/ledger/entries/") {
		s.n.Add(1)
	}
	return s.Store.Get(ctx, key, versionID)
}

func TestRespondEndToEnd(t *testing.T) {
	ctx := context.Background()
	reads := &entryReads{Store: vault.NewMemory()}
	d := newDrill(t, reads)
	c, err := Open(ctx, d.acc, d.store, d.signer, d.options())
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Run(ctx, c, c.Stages())
	if err != nil {
		t.Fatalf("respond: %v\nstages: %+v", err, sum.Stages)
	}
	// The stages rebuild the case's state before each step from the
	// ledger, reading each entry once, not the whole ledger each time (the
	// report reads it once more: it is rendered from the ledger alone).
	// Before the stages kept what they read: 276 reads for 52 entries.
	if n, size := reads.n.Load(), c.Ledger().Size(); n >= 3*size {
		t.Errorf("a run read ledger entries %d times for %d entries", n, size)
	}
	st, err := c.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.volumes) != 2 || len(st.acquired) != 2 || !st.closed || !st.collected {
		t.Fatalf("state: %d volumes, %d acquired, closed %v, collected %v", len(st.volumes), len(st.acquired), st.closed, st.collected)
	}
	for _, v := range st.volumes {
		ev := st.acquired[v.SnapshotID]
		// The image's hash is the original snapshot's, taken in the member account.
		img, err := d.env.Sim.SnapshotImage(v.OriginalSnapshotID)
		if err != nil {
			t.Fatal(err)
		}
		want := sha256Hex(t, img)
		if ev.Receipt.SHA256 != want {
			t.Errorf("volume %s: evidence SHA-256 %s, original snapshot %s", v.VolumeID, ev.Receipt.SHA256, want)
		}
		rc, err := d.store.Get(ctx, ev.Receipt.Key, ev.Receipt.VersionID)
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256Hex(t, rc); got != want {
			t.Errorf("volume %s: vault object hashes to %s, want %s", v.VolumeID, got, want)
		}
		rc.Close()
		if ev.Hashes["md5"] == "" || ev.MerkleRoot == "" || ev.Acquisition == nil || ev.Acquisition.BlockMap == nil {
			t.Errorf("volume %s: evidence record incomplete: %+v", v.VolumeID, ev)
		}
	}
	// Every stored object was verified, and the ledger verifies with evidence re-read.
	for _, e := range st.stored {
		if !st.verified[e.Receipt.Key+"@"+e.Receipt.VersionID] {
			t.Errorf("%s not verified", e.Receipt.Key)
		}
	}
	ver, err := custody.Verify(ctx, d.store, c.ID(), custody.VerifyOptions{Key: d.signer.VerifierKey(),
		CheckEvidence: func(ctx context.Context, r *vault.Receipt) error { return vault.Verify(ctx, d.store, r) }})
	if err != nil {
		t.Fatalf("ledger verify: %v", err)
	}
	if ver == nil {
		t.Fatal("verify returned nothing")
	}

	// Re-running the finished case changes nothing.
	size := c.Ledger().Size()
	c2, err := Open(ctx, d.acc, d.store, d.signer, d.options())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, c2, c2.Stages()); err != nil {
		t.Fatalf("re-run: %v", err)
	}
	if got := c2.Ledger().Size(); got != size {
		t.Errorf("re-run grew the ledger from %d to %d entries", size, got)
	}
}

func TestRespondRecordsFailureAndResumes(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	// Every GetSnapshotBlock fails: acquisition cannot succeed.
	d.env.Sim.SetFault("ebs", "GetSnapshotBlock", awssim.Fault{ServerErrorRate: 1})
	o := d.options()
	o.EBS.MaxAttempts = 2
	o.EBS.BaseDelay, o.EBS.MaxDelay = time.Millisecond, time.Millisecond
	c, err := Open(ctx, d.acc, d.store, d.signer, o)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Run(ctx, c, c.Stages())
	if !errors.Is(err, ErrIncomplete) {
		t.Fatalf("err %v, want ErrIncomplete", err)
	}
	want := map[string]bool{"collect": true, "snapshot": true, "acquire": false, "verify": true}
	for _, s := range sum.Stages {
		if ok, listed := want[s.Stage]; listed && s.OK != ok {
			t.Errorf("stage %s ok=%v, want %v (%s)", s.Stage, s.OK, ok, s.Error)
		}
		if s.Stage == "close" && !s.Skipped {
			t.Errorf("a case with a failed stage was closed")
		}
	}
	st, _ := c.state(ctx)
	if len(st.acquired) != 0 {
		t.Fatalf("%d failed acquisitions recorded as evidence", len(st.acquired))
	}
	entries, err := c.Ledger().Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, e := range entries {
		if a, ok := e.Details.(custody.AWSAction); ok && a.Action == "acquire.snapshot" && e.Outcome == custody.Failed {
			failed++
		}
	}
	if failed != 2 {
		t.Errorf("%d failed acquisitions recorded, want 2", failed)
	}

	// The fault clears; the same case resumes and completes.
	d.env.Sim.ClearFaults()
	c2, err := Open(ctx, d.acc, d.store, d.signer, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, c2, c2.Stages()); err != nil {
		t.Fatalf("resume: %v", err)
	}
	st, _ = c2.state(ctx)
	if len(st.acquired) != 2 || !st.closed {
		t.Errorf("after resume: %d acquired, closed %v", len(st.acquired), st.closed)
	}
}

// TestRespondUnknownInstance: a case about an instance that does not exist
// fails with an error naming the fix, and every failed stage is recorded.
func TestRespondUnknownInstance(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	o := d.options()
	o.InstanceID = "i-0123456789abcdef0"
	c, err := Open(ctx, d.acc, d.store, d.signer, o)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Run(ctx, c, c.Stages())
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "--region") || !strings.Contains(err.Error(), "i-0123456789abcdef0") {
		t.Fatalf("err %v: want ErrIncomplete naming the instance and the fix", err)
	}
	entries, err := c.Ledger().Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	failedStages := map[string]bool{}
	for _, e := range entries {
		if a, ok := e.Details.(custody.AWSAction); ok && strings.HasPrefix(a.Action, "stage.") {
			if e.Outcome != custody.Failed || e.Error == "" {
				t.Errorf("%s recorded as %s with error %q", a.Action, e.Outcome, e.Error)
			}
			failedStages[strings.TrimPrefix(a.Action, "stage.")] = true
		}
	}
	for _, s := range sum.Stages {
		if !s.OK && !s.Skipped && !failedStages[s.Stage] {
			t.Errorf("stage %s failed (%s) but the ledger does not say so", s.Stage, s.Error)
		}
	}
	for _, st := range []string{"collect", "snapshot", "acquire"} {
		if !failedStages[st] {
			t.Errorf("stage %s not recorded as failed; recorded: %v", st, failedStages)
		}
	}
}
