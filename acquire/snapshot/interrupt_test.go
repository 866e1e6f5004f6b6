package snapshot

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// liveRecorder records steps with whether the context they were recorded
// on was still live, as the custody ledger requires; after is called after
// each step is recorded.
type liveRecorder struct {
	recorder
	dead  []Step // recorded on a cancelled context
	after func(Step)
}

func (r *liveRecorder) record(ctx context.Context, s Step) error {
	if ctx.Err() != nil {
		r.mu.Lock()
		r.dead = append(r.dead, s)
		r.mu.Unlock()
		return ctx.Err() // what custody.Ledger.Append does
	}
	_ = r.recorder.record(ctx, s)
	if r.after != nil {
		r.after(s)
	}
	return nil
}

func (r *liveRecorder) leftovers(action string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.steps {
		if s.Action == action && s.Err == nil && s.Details["leftover"] == "true" {
			n++
		}
	}
	return n
}

// assertNothingLeft checks that no grant is live on the member keys, no
// member snapshot is shared, and the member account holds only originals.
func assertNothingLeft(t *testing.T, w *world) {
	t.Helper()
	ctx := context.Background()
	mkms := kms.NewFromConfig(w.member)
	for _, k := range []string{w.memberKey, w.volKey} {
		g, err := mkms.ListGrants(ctx, &kms.ListGrantsInput{KeyId: aws.String(k)})
		must(t, err)
		for _, gr := range g.Grants {
			t.Errorf("key %s: grant %s (%s) still live", k, aws.ToString(gr.GrantId), aws.ToString(gr.Name))
		}
	}
	mec2 := ec2.NewFromConfig(w.member)
	own, err := mec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	must(t, err)
	for _, s := range own.Snapshots {
		if r := tagMap(s.Tags)[TagRole]; r != RoleOriginal {
			t.Errorf("member snapshot %s with role %q left", aws.ToString(s.SnapshotId), r)
		}
		a, err := mec2.DescribeSnapshotAttribute(ctx, &ec2.DescribeSnapshotAttributeInput{SnapshotId: s.SnapshotId,
			Attribute: ec2types.SnapshotAttributeNameCreateVolumePermission})
		must(t, err)
		if len(a.CreateVolumePermissions) != 0 {
			t.Errorf("member snapshot %s still shared: %+v", aws.ToString(s.SnapshotId), a.CreateVolumePermissions)
		}
	}
}

// TestInterruptedTransfer: cancelling the context (Ctrl-C, a stopped task)
// right after a forensics copy is recorded still retires the grants and
// unshares, and records it; a re-run finishes the case and leaves nothing.
func TestInterruptedTransfer(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &liveRecorder{}
	// Interrupt right after the copy of the volume encrypted with its own
	// key is recorded: its share and grant are live at that moment.
	cmkVolume := w.volumes["/dev/sdg"].ID()
	rec.after = func(s Step) {
		if s.Action == ActionCopy && s.Details["purpose"] == PurposeForensics && s.Details["volume_id"] == cmkVolume {
			cancel()
		}
	}
	m := w.mover(t, &recorder{}, func(o *Options) { o.Record = rec.record })
	_, err := m.Run(ctx, w.instance)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v; want context.Canceled", err)
	}
	if len(rec.dead) != 0 {
		t.Errorf("steps recorded on a cancelled context (the ledger refuses them): %+v", rec.dead)
	}
	granted, retired := rec.count(ActionGrant, false), rec.count(ActionRetireGrant, false)
	if granted == 0 || retired < granted {
		t.Errorf("interrupted run: %d grants made, %d retirements recorded; want every grant retired", granted, retired)
	}
	if rec.count(ActionShare, false) == 0 || rec.count(ActionUnshare, false) < rec.count(ActionShare, false) {
		t.Errorf("interrupted run: %d shares, %d unshares recorded", rec.count(ActionShare, false), rec.count(ActionUnshare, false))
	}
	var cleaned []string
	for _, st := range rec.steps {
		if (st.Action == ActionRetireGrant && st.Details["kms_key"] == w.volKey || st.Action == ActionUnshare && st.Details["kms_key"] == w.volKey) && st.Err == nil {
			cleaned = append(cleaned, st.Action)
		}
	}
	if len(cleaned) != 2 {
		t.Errorf("interrupted run recorded %v for volume %s; want its unshare and its grant's retirement", cleaned, cmkVolume)
	}
	g, err := kms.NewFromConfig(w.member).ListGrants(context.Background(), &kms.ListGrantsInput{KeyId: aws.String(w.volKey)})
	must(t, err)
	if len(g.Grants) != 0 {
		t.Errorf("interrupted run left %d grants on %s", len(g.Grants), w.volKey)
	}

	rec2 := &liveRecorder{}
	res, err := w.mover(t, &recorder{}, func(o *Options) { o.Record = rec2.record }).Run(context.Background(), w.instance)
	must(t, err)
	for _, v := range res.Volumes {
		if v.Forensics == "" {
			t.Errorf("volume %s: no forensics copy after the re-run", v.VolumeID)
		}
	}
	for _, s := range rec2.steps {
		if s.Err != nil {
			t.Errorf("re-run: step %s failed: %v", s.Action, s.Err)
		}
	}
	if rec2.count(ActionRetireGrant, false) != rec2.count(ActionGrant, false)+rec2.leftovers(ActionRetireGrant) {
		t.Errorf("re-run: %d grants, %d retired", rec2.count(ActionGrant, false), rec2.count(ActionRetireGrant, false))
	}
	assertNothingLeft(t, w)
}

// failingCleanup makes the clean-up fail: RetireGrant (forensics KMS) and
// removing a share (member EC2), as when the process is killed before it.
type failingCleanup struct {
	ec2API
	kmsAPI
	mu sync.Mutex
	on bool
}

func (f *failingCleanup) failing() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.on
}

func (f *failingCleanup) ModifySnapshotAttribute(ctx context.Context, in *ec2.ModifySnapshotAttributeInput, o ...func(*ec2.Options)) (*ec2.ModifySnapshotAttributeOutput, error) {
	if in.OperationType == ec2types.OperationTypeRemove && f.failing() {
		return nil, errors.New("simulated: process killed before unsharing")
	}
	return f.ec2API.ModifySnapshotAttribute(ctx, in, o...)
}

func (f *failingCleanup) RetireGrant(ctx context.Context, in *kms.RetireGrantInput, o ...func(*kms.Options)) (*kms.RetireGrantOutput, error) {
	if f.failing() {
		return nil, errors.New("simulated: process killed before retiring")
	}
	return f.kmsAPI.RetireGrant(ctx, in, o...)
}

// TestLeftoverGrantsAndSharesCleaned: grants and shares an earlier run
// could not remove are listed in its error, and the next run finds them
// (ListGrants by name and grantee, DescribeSnapshotAttribute), removes them
// and records each as a leftover.
func TestLeftoverGrantsAndSharesCleaned(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	memberEC2 := &failingCleanup{ec2API: ec2.NewFromConfig(w.member), on: true}
	forensicsKMS := &failingCleanup{kmsAPI: kms.NewFromConfig(w.forensics), on: true}
	mover := func(rec *liveRecorder) *Mover {
		o := NewOptions()
		o.CaseID, o.Region, o.ForensicsKMSKey, o.MemberKMSKey = "IR-7", w.sim.Region(), w.forensicsKey, w.memberKey
		o.PollInterval, o.Record = 5*time.Millisecond, rec.record
		m, err := New(Account{ID: memberID, EC2: memberEC2, KMS: kms.NewFromConfig(w.member)},
			Account{ID: forensicsID, EC2: ec2.NewFromConfig(w.forensics), KMS: forensicsKMS}, o)
		must(t, err)
		return m
	}
	rec := &liveRecorder{}
	_, err := mover(rec).Run(ctx, w.instance)
	var ce *CreatedError
	if !errors.As(err, &ce) {
		t.Fatalf("run with failing clean-up: %v; want a CreatedError", err)
	}
	var grants, shares int
	for _, c := range ce.Created {
		switch {
		case strings.HasPrefix(c, "grant "):
			grants++
		case strings.Contains(c, "shared with account "+forensicsID):
			shares++
		}
	}
	// The aws/ebs volume's intermediate was deleted, which ends its share;
	// the other two originals stay shared, and both grants stay live.
	if grants != 2 || shares != 3 {
		t.Errorf("error lists %d grants and %d shares, want 2 and 3: %v", grants, shares, ce.Created)
	}
	// Each grant tried twice: by its volume's clean-up, then by the sweep
	// for leftovers at the end of the run.
	if rec.count(ActionRetireGrant, true) != 4 || rec.leftovers(ActionRetireGrant) != 0 {
		t.Errorf("%d failed retirements recorded, want 4", rec.count(ActionRetireGrant, true))
	}
	g, err := kms.NewFromConfig(w.member).ListGrants(ctx, &kms.ListGrantsInput{KeyId: aws.String(w.volKey)})
	must(t, err)
	if len(g.Grants) != 1 {
		t.Fatalf("before the re-run: %d grants on the volume key, want the 1 left", len(g.Grants))
	}

	memberEC2.mu.Lock()
	memberEC2.on = false
	memberEC2.mu.Unlock()
	forensicsKMS.mu.Lock()
	forensicsKMS.on = false
	forensicsKMS.mu.Unlock()
	rec2 := &liveRecorder{}
	_, err = mover(rec2).Run(ctx, w.instance)
	must(t, err)
	if n := rec2.leftovers(ActionRetireGrant); n != 2 {
		t.Errorf("re-run retired %d leftover grants, want 2: %+v", n, rec2.steps)
	}
	if n := rec2.leftovers(ActionUnshare); n != 2 {
		t.Errorf("re-run unshared %d leftover snapshots, want the 2 originals: %+v", n, rec2.steps)
	}
	for _, s := range rec2.steps {
		if s.Err != nil || s.Action == ActionGrant || s.Action == ActionShare || s.Action == ActionCopy {
			t.Errorf("re-run recorded %s (err %v); want only what it found and cleaned", s.Action, s.Err)
		}
		if s.Action == ActionRetireGrant && (s.Details["grant_name"] != "impound-IR-7" || s.Details["grant_id"] == "") {
			t.Errorf("leftover retirement recorded as %v", s.Details)
		}
	}
	assertNothingLeft(t, w)

	// A third run finds nothing left to clean.
	rec3 := &liveRecorder{}
	_, err = mover(rec3).Run(ctx, w.instance)
	must(t, err)
	if rec3.count(ActionRetireGrant, false)+rec3.count(ActionUnshare, false)+rec3.count(ActionDeleteIntermediate, false) != 0 {
		t.Errorf("third run cleaned again: %+v", rec3.steps)
	}
}

// failingOriginal reports the original snapshot of one volume, made by
// CreateSnapshots while on, in the error state.
type failingOriginal struct {
	ec2API
	mu       sync.Mutex
	volume   string
	on       bool
	failed   map[string]bool
	excluded [][]string // ExcludeDataVolumeIds of each CreateSnapshots
	noBoot   []bool     // ExcludeBootVolume of each CreateSnapshots
}

func (f *failingOriginal) CreateSnapshots(ctx context.Context, in *ec2.CreateSnapshotsInput, o ...func(*ec2.Options)) (*ec2.CreateSnapshotsOutput, error) {
	out, err := f.ec2API.CreateSnapshots(ctx, in, o...)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.excluded = append(f.excluded, in.InstanceSpecification.ExcludeDataVolumeIds)
	f.noBoot = append(f.noBoot, aws.ToBool(in.InstanceSpecification.ExcludeBootVolume))
	if err == nil && f.on {
		for _, s := range out.Snapshots {
			if aws.ToString(s.VolumeId) == f.volume {
				f.failed[aws.ToString(s.SnapshotId)] = true
			}
		}
	}
	return out, err
}

func (f *failingOriginal) DescribeSnapshots(ctx context.Context, in *ec2.DescribeSnapshotsInput, o ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error) {
	out, err := f.ec2API.DescribeSnapshots(ctx, in, o...)
	return markFailed(&f.mu, f.failed, "simulated snapshot failure", out, err)
}

// TestOriginalInErrorState: the volumes whose originals completed are
// transferred in the same run; the re-run snapshots only the failed volume
// again, records that, and completes the case.
func TestOriginalInErrorState(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	bad := w.volumes["/dev/sdg"].ID()
	me := &failingOriginal{ec2API: ec2.NewFromConfig(w.member), volume: bad, on: true, failed: map[string]bool{}}
	mover := func(rec *recorder) *Mover {
		o := NewOptions()
		o.CaseID, o.Region, o.ForensicsKMSKey, o.MemberKMSKey = "IR-7", w.sim.Region(), w.forensicsKey, w.memberKey
		o.PollInterval, o.Record = 5*time.Millisecond, rec.record
		m, err := New(Account{ID: memberID, EC2: me, KMS: kms.NewFromConfig(w.member)}, NewAccount(forensicsID, w.forensics), o)
		must(t, err)
		return m
	}
	rec := &recorder{}
	res, err := mover(rec).Run(ctx, w.instance)
	if !errors.Is(err, ErrSnapshotFailed) || !strings.Contains(err.Error(), "snapshots volume "+bad+" again") {
		t.Fatalf("error %v; want the failed original and what the re-run does", err)
	}
	dead := res.volume(bad).Original
	for _, v := range res.Volumes {
		if (v.Forensics != "") == (v.VolumeID == bad) {
			t.Errorf("volume %s: forensics copy %q; want one for every volume but %s", v.VolumeID, v.Forensics, bad)
		}
	}
	if n := rec.count(ActionState, true); n != 1 {
		t.Errorf("%d failed state steps, want the failed original's", n)
	}

	me.mu.Lock()
	me.on = false
	me.mu.Unlock()
	rec2 := &recorder{}
	res2, err := mover(rec2).Run(ctx, w.instance)
	must(t, err)
	v := res2.volume(bad)
	if v.Original == dead || v.Original == "" || v.Forensics == "" {
		t.Fatalf("re-run: volume %s original %q (failed one %s), forensics %q", bad, v.Original, dead, v.Forensics)
	}
	if rec2.count(ActionCreate, false) != 1 || rec2.count(ActionCopy, false) != 1 {
		t.Errorf("re-run: %d snapshots and %d copies made, want 1 each", rec2.count(ActionCreate, false), rec2.count(ActionCopy, false))
	}
	for _, s := range rec2.steps {
		if s.Action == ActionCreate && (s.Details["snapshot"] != v.Original || s.Details["retake"] != "true" ||
			!strings.Contains(s.Details["not_crash_consistent_with"], w.volumes["/dev/xvda"].ID())) {
			t.Errorf("re-take recorded as %v", s.Details)
		}
	}
	me.mu.Lock()
	if len(me.excluded) != 2 || !me.noBoot[1] || len(me.excluded[1]) != 1 || me.excluded[1][0] != w.volumes["/dev/sdf"].ID() {
		t.Errorf("re-run CreateSnapshots excluded %v, boot %v; want the boot volume and %s", me.excluded, me.noBoot, w.volumes["/dev/sdf"].ID())
	}
	me.mu.Unlock()
	// Exactly one new original: the failed one and three good ones.
	own, err := ec2.NewFromConfig(w.member).DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("tag:" + TagRole), Values: []string{RoleOriginal}}}})
	must(t, err)
	if len(own.Snapshots) != 4 {
		t.Errorf("member account holds %d originals, want 4", len(own.Snapshots))
	}
	assertNothingLeft(t, w)
}
