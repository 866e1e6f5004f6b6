package respond

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/impound-ir/impound/acquire/snapshot"
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
	c := d.open(t, d.options())
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
	c2 := d.open(t, d.options())
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
	c := d.open(t, o)
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
	c2 := d.open(t, o)
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
	c := d.open(t, o)
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

// failOnce is a vault whose first write of a ledger entry containing every
// one of match fails, as a transient vault error would.
type failOnce struct {
	vault.Store
	match   []string
	tripped atomic.Bool
}

func (s *failOnce) Create(ctx context.Context, key string, o vault.PutOptions) (vault.Writer, error) {
	w, err := s.Store.Create(ctx, key, o)
	if err != nil || !strings.Contains(key, "/ledger/entries/") {
		return w, err
	}
	return &failOnceWriter{Writer: w, s: s}, nil
}

type failOnceWriter struct {
	vault.Writer
	s *failOnce
}

func (w *failOnceWriter) Write(b []byte) (int, error) {
	for _, m := range w.s.match {
		if !bytes.Contains(b, []byte(m)) {
			return w.Writer.Write(b)
		}
	}
	if w.s.tripped.CompareAndSwap(false, true) {
		return 0, errors.New("simulated transient vault error")
	}
	return w.Writer.Write(b)
}

func awsActions(t *testing.T, c *Case, action string) []*custody.Entry {
	t.Helper()
	entries, err := c.Ledger().Entries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []*custody.Entry
	for _, e := range entries {
		if a, ok := e.Details.(custody.AWSAction); ok && a.Action == action {
			out = append(out, e)
		}
	}
	return out
}

// TestRespondForensicsCopyRecordLost: the ledger write of a forensics copy
// fails once after CopySnapshot succeeded. The case does not close without
// that volume; the re-run records the copy it finds, acquires the volume,
// deletes the intermediate copy the failed run left, and only then closes.
func TestRespondForensicsCopyRecordLost(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, nil)
	store := &failOnce{Store: vault.NewMemory(), match: []string{`"purpose":"forensics account copy"`, d.demo.DataVolumeID}}
	d.store = store
	c := d.open(t, d.options())
	sum, err := Run(ctx, c, c.Stages())
	if !errors.Is(err, ErrIncomplete) || !store.tripped.Load() {
		t.Fatalf("first run: err %v, fault tripped %v; want the snapshot stage to fail", err, store.tripped.Load())
	}
	for _, s := range sum.Stages {
		if s.Stage == "snapshot" && s.OK || s.Stage == "close" && !s.Skipped {
			t.Errorf("first run: stage %s %+v", s.Stage, s)
		}
	}
	st, err := c.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.volumes) != 1 || st.volumes[0].VolumeID != d.demo.RootVolumeID || len(st.inventory) != 2 {
		t.Fatalf("after the lost record: copies %+v, inventory %v; want only the root volume's copy and both volumes listed", st.volumes, st.inventory)
	}

	// Closing now is refused, naming the volume, and the refusal is recorded.
	_, err = Run(ctx, c, []Stage{{Name: "close", Run: c.Close}})
	if !errors.Is(err, ErrVolumesMissing) || !strings.Contains(err.Error(), d.demo.DataVolumeID) || !strings.Contains(err.Error(), "re-run") {
		t.Fatalf("close: %v; want ErrVolumesMissing naming %s and the fix", err, d.demo.DataVolumeID)
	}
	if fails := awsActions(t, c, "stage.close"); len(fails) != 1 || fails[0].Outcome != custody.Failed || !strings.Contains(fails[0].Error, d.demo.DataVolumeID) {
		t.Errorf("close refusal recorded as %+v", fails)
	}
	if st, _ := c.state(ctx); st.closed {
		t.Fatal("the case closed without the data volume")
	}

	c2 := d.open(t, d.options())
	if sum, err := Run(ctx, c2, c2.Stages()); err != nil {
		t.Fatalf("re-run: %v\n%+v", err, sum.Stages)
	}
	st, err = c2.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.volumes) != 2 || !st.closed {
		t.Fatalf("after the re-run: %d copies, closed %v", len(st.volumes), st.closed)
	}
	images := map[string]int{}
	for _, e := range st.stored {
		if e.Acquisition != nil {
			images[e.Acquisition.VolumeID]++
		}
	}
	if images[d.demo.RootVolumeID] != 1 || images[d.demo.DataVolumeID] != 1 || len(images) != 2 {
		t.Errorf("images per volume %v; want one of each", images)
	}
	if found := awsActions(t, c2, snapshot.ActionFound); len(found) != 1 || found[0].Details.(custody.AWSAction).Details["volume_id"] != d.demo.DataVolumeID {
		t.Errorf("snapshot.found entries %+v; want the data volume's unrecorded copy only", found)
	}
	// The failed run kept its intermediate copy; the re-run deleted it.
	if deleted := awsActions(t, c2, snapshot.ActionDeleteIntermediate); len(deleted) != 1 || deleted[0].Outcome == custody.Failed {
		t.Errorf("intermediate deletions %+v; want one", deleted)
	}
	left, err := ec2.NewFromConfig(d.acc.Member).DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("tag:" + snapshot.TagRole), Values: []string{snapshot.RoleIntermediate}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(left.Snapshots) != 0 {
		t.Errorf("%d intermediate snapshots left in the member account", len(left.Snapshots))
	}
}

// TestStatePicksLatestUsableCopy: a forensics copy recorded as ended in the
// error state is not acquired; the volume's later copy is.
func TestStatePicksLatestUsableCopy(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	c := d.open(t, d.options())
	copied := func(snap, vol string) {
		t.Helper()
		if _, err := c.append(ctx, d.acc.ForensicsCaller, nil, &custody.SnapshotCopied{SourceSnapshotID: "snap-src" + vol, SnapshotID: snap,
			Account: d.acc.ForensicsID, VolumeID: vol, Purpose: snapshot.PurposeForensics}, nil); err != nil {
			t.Fatal(err)
		}
	}
	copied("snap-dead", "vol-a")
	if _, err := c.append(ctx, d.acc.ForensicsCaller, nil, &custody.AWSAction{Action: snapshot.ActionState, Account: d.acc.ForensicsID,
		Details: map[string]string{"snapshot": "snap-dead", "state": "error", "volume_id": "vol-a"}}, errors.New("copy failed")); err != nil {
		t.Fatal(err)
	}
	copied("snap-b", "vol-b")
	st, err := c.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.volumes) != 1 || st.volumes[0].SnapshotID != "snap-b" {
		t.Fatalf("with vol-a's only copy failed: %+v; want only snap-b", st.volumes)
	}
	copied("snap-new", "vol-a")
	st, err = c.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range st.volumes {
		got = append(got, v.VolumeID+"="+v.SnapshotID)
	}
	sort.Strings(got)
	if strings.Join(got, ",") != "vol-a=snap-new,vol-b=snap-b" {
		t.Errorf("copies to acquire %v; want vol-a=snap-new,vol-b=snap-b", got)
	}

	// Once a volume's copy is acquired, a later copy of it is not acquired again.
	if _, err := c.append(ctx, d.acc.ForensicsCaller, nil, &custody.EvidenceStored{
		Receipt: vault.Receipt{URI: "mem:cases/IR-TEST-1/evidence/snap-b.img", Key: "cases/IR-TEST-1/evidence/snap-b.img", VersionID: "1", Size: 1, SHA256: strings.Repeat("ab", 32)},
		Source:  "ebs-snapshot:snap-b", Evidence: custody.EvidenceDiskImage,
		Acquisition: &custody.Acquisition{SnapshotID: "snap-b", VolumeID: "vol-b"}}, nil); err != nil {
		t.Fatal(err)
	}
	copied("snap-b2", "vol-b")
	st, err = c.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.volumes {
		if v.VolumeID == "vol-b" && v.SnapshotID != "snap-b" {
			t.Errorf("vol-b: copy %s to acquire; want the acquired snap-b", v.SnapshotID)
		}
	}
}

// snapshotStageFailure runs a case expected to fail at the snapshot stage
// and returns the recorded error of that stage and the case.
func snapshotStageFailure(t *testing.T, d *drill, o Options) (string, *Case) {
	t.Helper()
	ctx := context.Background()
	c := d.open(t, o)
	if _, err := Run(ctx, c, c.Stages()); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("run: %v; want ErrIncomplete", err)
	}
	fails := awsActions(t, c, "stage.snapshot")
	if len(fails) != 1 || fails[0].Outcome != custody.Failed {
		t.Fatalf("snapshot stage recorded as %+v; want one failure", fails)
	}
	if st, _ := c.state(ctx); st.closed {
		t.Fatal("the case closed")
	}
	return fails[0].Error, c
}

// TestRespondInstanceInAnotherRegion: the instance lives in us-east-1, the
// case looks in eu-west-1: an error naming the Region and --region, recorded.
func TestRespondInstanceInAnotherRegion(t *testing.T) {
	d := newDrill(t, vault.NewMemory())
	eu := simtest.Start(t, awssim.Options{Region: "eu-west-1"})
	m, f := eu.Sim.AddAccount(d.acc.MemberID), eu.Sim.AddAccount(d.acc.ForensicsID)
	d.acc.Member, d.acc.Forensics = eu.ClientConfig(m.Credentials()), eu.ClientConfig(f.Credentials())
	o := d.options()
	o.Region = "eu-west-1"
	o.Isolate = false
	msg, c := snapshotStageFailure(t, d, o)
	for _, want := range []string{d.demo.InstanceID, "Region eu-west-1", "--region"} {
		if !strings.Contains(msg, want) {
			t.Errorf("recorded error %q does not say %q", msg, want)
		}
	}
	if inv := awsActions(t, c, snapshot.ActionInventory); len(inv) != 1 || inv[0].Outcome != custody.Failed || !strings.Contains(inv[0].Error, "--region") {
		t.Errorf("inventory recorded as %+v; want a failure naming --region", inv)
	}
}

// TestRespondForensicsKeyUnusable: a forensics key the forensics account
// cannot use fails every copy, each recorded with the fix.
func TestRespondForensicsKeyUnusable(t *testing.T) {
	d := newDrill(t, vault.NewMemory())
	stray, err := d.demo.Member.CreateKey(awssim.KeyOptions{Description: "a member key the forensics account may not use"})
	if err != nil {
		t.Fatal(err)
	}
	o := d.options()
	o.ForensicsKMSKey = stray.ARN()
	msg, c := snapshotStageFailure(t, d, o)
	if !strings.Contains(msg, "--forensics-kms-key") || !strings.Contains(msg, stray.ARN()) {
		t.Errorf("recorded error %q does not name the key and --forensics-kms-key", msg)
	}
	copies := 0
	for _, e := range awsActions(t, c, snapshot.ActionCopy) {
		if e.Outcome == custody.Failed && strings.Contains(e.Error, "--forensics-kms-key") {
			copies++
		}
	}
	if copies != 2 {
		t.Errorf("%d failed forensics copies recorded with the fix; want 2", copies)
	}
}

// TestRespondSnapshotNeverCompletes: snapshots that stay pending past the
// timeout fail the stage with every snapshot made listed, and the timeout
// is in the ledger.
func TestRespondSnapshotNeverCompletes(t *testing.T) {
	d := newDrill(t, vault.NewMemory())
	d.env.Sim.SetPendingPolls(1 << 30)
	o := d.options()
	o.SnapshotTimeout = func(int32) time.Duration { return 50 * time.Millisecond }
	msg, c := snapshotStageFailure(t, d, o)
	st, err := c.state(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.created) != 2 {
		t.Fatalf("%d snapshots recorded as created, want 2", len(st.created))
	}
	if !strings.Contains(msg, "did not complete within") || !strings.Contains(msg, "created so far") {
		t.Errorf("recorded error %q; want the timeout and what was created", msg)
	}
	for snap := range st.created {
		if !strings.Contains(msg, snap) {
			t.Errorf("recorded error %q does not list snapshot %s", msg, snap)
		}
	}
	timeouts := awsActions(t, c, snapshot.ActionState)
	if len(timeouts) != 1 || timeouts[0].Outcome != custody.Failed || timeouts[0].Details.(custody.AWSAction).Details["state"] != "pending" {
		t.Errorf("state entries %+v; want the timeout recorded as failed, state pending", timeouts)
	}
}

// open opens (or resumes) a case of the drill's world with o.
func (d *drill) open(t *testing.T, o Options) *Case {
	t.Helper()
	c, err := Open(context.Background(), d.acc, d.store, d.signer, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
