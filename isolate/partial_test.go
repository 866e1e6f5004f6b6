package isolate

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// defaultVPCOf returns the VPC of instance id.
func defaultVPCOf(t *testing.T, ctx context.Context, c Clients, id string) string {
	t.Helper()
	inst, _, err := describeInstance(ctx, c, id)
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(inst.VpcId)
}

func statuses(rec *recorder) map[string]Status {
	m := map[string]Status{}
	for _, s := range rec.steps {
		m[s.Name] = s.Status
	}
	return m
}

// A step denied halfway is recorded as failed, the safe steps after it run,
// and a re-run with the state continues from it.
func TestPartialFailureAndRerun(t *testing.T) { forEachWorld(t, testPartialFailureAndRerun) }

func testPartialFailureAndRerun(t *testing.T, w world) {
	ctx := testContext(t)
	s := w.build(t, ctx, nil)
	c, ep := s.c, s.cli
	deny := &denyEC2{EC2API: c.EC2, denyReplaceProfile: true, calls: map[string]int{}}
	faulty := c
	faulty.EC2 = deny

	rec := &recorder{}
	st, err := Run(ctx, faulty, s.instance, nil, testOptions(rec))
	if !errors.Is(err, ErrPartial) {
		t.Fatalf("Run with ReplaceIamInstanceProfileAssociation denied: %v, want ErrPartial", err)
	}
	if !strings.Contains(err.Error(), StepProfile) {
		t.Errorf("error does not name the failed step: %v", err)
	}
	if deny.calls["ReplaceIamInstanceProfileAssociation"] != 1 {
		t.Errorf("denied call made %d times", deny.calls["ReplaceIamInstanceProfileAssociation"])
	}
	got := statuses(rec)
	if got[StepProfile] != StatusFailed || got[StepRevokeSessions] != StatusDone || got[StepTags] != StatusDone ||
		got[StepNetworkPrefix+s.eni0] != StatusDone || got[StepElasticIPs] != StatusDone {
		t.Errorf("statuses = %v", got)
	}
	if f := rec.byName(StepProfile); !errors.Is(f.Err, ErrAccessDenied) || f.Before == nil || f.After == nil {
		t.Errorf("failed step record = %+v, want AccessDenied with before and after", f)
	}
	if !slices.Equal(st.Failed(), []string{StepProfile}) {
		t.Errorf("State.Failed() = %v", st.Failed())
	}
	if arn := cliProfileARN(t, ep, s.instance); arn != s.profileARN {
		t.Errorf("profile after the denied step = %q, want unchanged %q", arn, s.profileARN)
	}
	tags, _ := readTags(ctx, c, []string{s.instance})
	if tags[s.instance][TagStatus] != "partially-isolated" {
		t.Errorf("status tag = %v, want partially-isolated", tags[s.instance])
	}

	// Without the profile replaced the deny still goes on (stolen
	// credentials are cut), with a warning that it must move forward.
	if r := rec.byName(StepRevokeSessions); !strings.Contains(r.Note, "not replaced yet") {
		t.Errorf("revoke-sessions note %q does not warn that the profile is not replaced", r.Note)
	}
	firstCutoff := roleCutoff(t, ctx, c, s.role)

	// Re-run an hour later with the permission back: the profile step
	// runs, and the deny's cut-off moves to after the replacement (the
	// instance obtained fresh credentials for the old role meanwhile);
	// the rest is found done.
	rerunAt := fixedNow.Add(time.Hour)
	rec2 := &recorder{}
	opts2 := testOptions(rec2)
	opts2.Now = func() time.Time { return rerunAt }
	st2, err := Run(ctx, c, s.instance, st, opts2)
	if err != nil {
		t.Fatalf("re-run: %v", err)
	}
	for name, status := range statuses(rec2) {
		want := StatusAlready
		if name == StepProfile || name == StepRevokeSessions || name == StepTags {
			want = StatusDone
		}
		if status != want {
			t.Errorf("re-run step %s: %s, want %s", name, status, want)
		}
	}
	if arn := cliProfileARN(t, ep, s.instance); arn != st2.Resources.IsolationProfile {
		t.Errorf("profile after re-run = %q, want %q", arn, st2.Resources.IsolationProfile)
	}
	cutoff := roleCutoff(t, ctx, c, s.role)
	if !st2.ProfileReplacedAt.Equal(rerunAt) || cutoff.Before(st2.ProfileReplacedAt) || !cutoff.After(firstCutoff) {
		t.Errorf("deny cut-off %s (first run %s), profile replaced at %s: the cut-off must not be before the replacement",
			cutoff, firstCutoff, st2.ProfileReplacedAt)
	}
	if !sameJSON(st2.Original, st.Original) {
		t.Error("re-run changed the recorded starting state")
	}
	if len(st2.Failed()) != 0 {
		t.Errorf("failed after re-run: %v", st2.Failed())
	}
	tags, _ = readTags(ctx, c, []string{s.instance})
	if tags[s.instance][TagStatus] != "isolated" {
		t.Errorf("status tag after re-run = %v", tags[s.instance])
	}

	// A third run, later still, finds everything done: the cut-off stays.
	rec3 := &recorder{}
	opts3 := testOptions(rec3)
	opts3.Now = func() time.Time { return rerunAt.Add(time.Hour) }
	if _, err := Run(ctx, c, s.instance, st2, opts3); err != nil {
		t.Fatalf("third run: %v", err)
	}
	for name, status := range statuses(rec3) {
		if status != StatusAlready {
			t.Errorf("third run step %s: %s, want already-done", name, status)
		}
	}
	if again := roleCutoff(t, ctx, c, s.role); !again.Equal(cutoff) {
		t.Errorf("third run moved the cut-off from %s to %s", cutoff, again)
	}
}

// roleCutoff returns the cut-off of impound's inline deny on role.
func roleCutoff(t *testing.T, ctx context.Context, c Clients, role string) time.Time {
	t.Helper()
	v, err := readDeny(ctx, c, []string{role}, DenyPolicyName("IR-2026-0042"))
	if err != nil {
		t.Fatal(err)
	}
	at, err := time.Parse(time.RFC3339, v[role])
	if err != nil {
		t.Fatalf("deny on role %s: cut-off %q: %v", role, v[role], err)
	}
	return at
}

// When the instance cannot be taken out of its Auto Scaling group, nothing
// that would fail its health checks runs; the steps that are safe do.
func TestAutoScalingDeniedBlocksNetwork(t *testing.T) {
	forEachWorld(t, testAutoScalingDeniedBlocksNetwork)
}

func testAutoScalingDeniedBlocksNetwork(t *testing.T, w world) {
	ctx := testContext(t)
	s := w.build(t, ctx, nil)
	c, ep := s.c, s.cli
	faulty := c
	faulty.AutoScaling = &denyASG{AutoScalingAPI: c.AutoScaling}
	rec := &recorder{}
	_, err := Run(ctx, faulty, s.instance, nil, testOptions(rec))
	if !errors.Is(err, ErrPartial) {
		t.Fatalf("Run: %v, want ErrPartial", err)
	}
	got := statuses(rec)
	for _, n := range []string{StepNetworkPrefix + s.eni0, StepNetworkPrefix + s.eni1, StepElasticIPs} {
		if got[n] != StatusSkipped || !strings.Contains(rec.byName(n).Note, "not safe: auto-scaling failed") {
			t.Errorf("step %s: %s %q, want skipped as unsafe", n, got[n], rec.byName(n).Note)
		}
	}
	for _, n := range []string{StepLoadBalancers, StepProtect, StepProfile, StepRevokeSessions, StepTags} {
		if got[n] != StatusDone {
			t.Errorf("step %s: %s, want done", n, got[n])
		}
	}
	if gs := cliENIGroups(t, ep, s.eni0); !slices.Equal(gs, sorted(s.appGroup, s.adminGroup)) {
		t.Errorf("groups changed although unsafe: %v", gs)
	}
}

// Release after a partial failure restores what was changed, including a
// step that failed halfway.
func TestReleaseAfterPartialFailure(t *testing.T) { forEachWorld(t, testReleaseAfterPartialFailure) }

func testReleaseAfterPartialFailure(t *testing.T, w world) {
	ctx := testContext(t)
	s := w.build(t, ctx, nil)
	c, ep := s.c, s.cli
	faulty := c
	faulty.EC2 = &denyEC2{EC2API: c.EC2, denyModifyInstance: true, calls: map[string]int{}}
	rec := &recorder{}
	st, err := Run(ctx, faulty, s.instance, nil, testOptions(rec))
	if !errors.Is(err, ErrPartial) || !slices.Equal(st.Failed(), []string{StepProtect}) {
		t.Fatalf("Run: %v, failed %v; want only protect failed", err, st.Failed())
	}
	if gs := cliENIGroups(t, ep, s.eni1); !slices.Equal(gs, []string{st.Resources.IsolationGroup}) {
		t.Fatalf("network not isolated after protect failed: %v", gs)
	}
	relRec := &recorder{}
	opts := testOptions(relRec)
	opts.RevokeDeny = true
	rst, err := Release(ctx, c, st, opts)
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	rel := statuses(relRec)
	if rel[ReleasePrefix+StepProtect] != StatusAlready {
		t.Errorf("release of the failed protect step: %s, want already-done (nothing had changed)", rel[ReleasePrefix+StepProtect])
	}
	for i, eni := range []string{s.eni0, s.eni1} {
		if gs := cliENIGroups(t, ep, eni); !slices.Equal(gs, st.Original.Interfaces[i].Groups) {
			t.Errorf("groups of %s after release = %v, want %v", eni, gs, st.Original.Interfaces[i].Groups)
		}
	}
	if g, l := cliASGLifecycle(t, ep, s.instance); g != s.asg || l != "InService" {
		t.Errorf("auto scaling after release = %s %s", g, l)
	}
	if arn := cliProfileARN(t, ep, s.instance); arn != s.profileARN {
		t.Errorf("profile after release = %q", arn)
	}
	if _, err := c.IAM.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: &s.role, PolicyName: aws.String(DenyPolicyName(st.CaseID))}); apiCode(err) != "NoSuchEntity" {
		t.Errorf("deny policy after release --revoke-deny: %v", err)
	}
	if !rst.Released {
		t.Error("not marked released")
	}
	// Isolating again after a release starts from a fresh starting state.
	st3, err := Run(ctx, c, s.instance, rst, testOptions(nil))
	if err != nil {
		t.Fatalf("isolate after release: %v", err)
	}
	if st3.Released || !slices.Equal(st3.Original.Interfaces[0].Groups, st.Original.Interfaces[0].Groups) {
		t.Errorf("second isolation state: released=%v groups %v", st3.Released, st3.Original.Interfaces[0].Groups)
	}
}

func TestBadInput(t *testing.T) { forEachWorld(t, testBadInput) }

func testBadInput(t *testing.T, w world) {
	ctx := testContext(t)
	s := w.build(t, ctx, nil)
	c := s.c

	check := func(name string, cl Clients, id string, opts Options, want error) {
		t.Helper()
		rec := &recorder{}
		opts.Record = rec.record
		_, err := Run(ctx, cl, id, nil, opts)
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
			return
		}
		if len(rec.steps) != 1 || rec.steps[0].Name != StepRecordState || rec.steps[0].Status != StatusFailed || !errors.Is(rec.steps[0].Err, want) {
			t.Errorf("%s: recorded %+v, want one failed record-state step", name, rec.steps)
		}
		t.Logf("%s: %v", name, err)
	}
	check("unknown instance", c, "i-0123456789abcdef0", testOptions(nil), ErrInstanceNotFound)

	denied := c
	denied.EC2 = &denyEC2{EC2API: c.EC2, denyDescribe: true, calls: map[string]int{}}
	check("missing permission", denied, s.instance, testOptions(nil), ErrAccessDenied)

	if err := s.terminate(ctx, s.other); err != nil {
		t.Fatal(err)
	}
	check("terminated instance", c, s.other, testOptions(nil), ErrInstanceTerminated)

	// An instance in a default VPC is refused unless allowed, and never
	// with --nacl; each refusal is recorded and changes nothing.
	def, err := s.defaultVPCInstance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check("default VPC", c, def, testOptions(nil), ErrDefaultVPC)
	nacl := testOptions(nil)
	nacl.NACL, nacl.AllowDefaultVPC = true, true
	check("default VPC with --nacl and --allow-default-vpc", c, def, nacl, ErrDefaultVPCNACL)
	rec := &recorder{}
	opts := testOptions(rec)
	opts.Record = rec.record
	_, err = Run(ctx, c, def, nil, opts)
	refusal := rec.byName(StepRecordState)
	for _, want := range []string{"--allow-default-vpc", "public IPv4", "shared by every instance", "nothing was changed"} {
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(refusal.Err.Error(), want) {
			t.Errorf("default VPC refusal %v does not say %q", err, want)
		}
	}
	if o, ok := refusal.Before.(Original); !ok || !o.DefaultVPC || refusal.After != nil {
		t.Errorf("refusal record: before %+v after %+v, want the starting state read and nothing after", refusal.Before, refusal.After)
	}
	if tags, _ := readTags(ctx, c, []string{def}); len(tags[def]) != 0 {
		t.Errorf("refused instance was tagged: %v", tags[def])
	}
	if g, _ := findGroup(ctx, c, defaultVPCOf(t, ctx, c, def), IsolationGroupName); g != nil {
		t.Errorf("refusal created isolation group %s", aws.ToString(g.GroupId))
	}

	// With the override it is isolated, and the record says so.
	rec = &recorder{}
	opts = testOptions(rec)
	opts.AllowDefaultVPC = true
	st, err := Run(ctx, c, def, nil, opts)
	if err != nil {
		t.Fatalf("default VPC with --allow-default-vpc: %v", err)
	}
	if !st.Original.DefaultVPC || !st.Options.AllowDefaultVPC || !strings.Contains(rec.steps[0].Note, "--allow-default-vpc") {
		t.Errorf("default VPC not recorded: %+v %+v %q", st.Original.DefaultVPC, st.Options, rec.steps[0].Note)
	}
	if n := rec.byName(StepNetworkPrefix + st.Original.Interfaces[0].ID); n == nil || n.Status != StatusDone {
		t.Errorf("network step with the override: %+v", n)
	}

	// A state for another instance is refused.
	if _, err := Run(ctx, c, s.instance, st, testOptions(nil)); !errors.Is(err, ErrStateMismatch) {
		t.Errorf("foreign state: %v, want ErrStateMismatch", err)
	}
}

// A dry run reads everything, records nothing and changes nothing.
func TestDryRun(t *testing.T) { forEachWorld(t, testDryRun) }

func testDryRun(t *testing.T, w world) {
	ctx := testContext(t)
	s := w.build(t, ctx, nil)
	c, ep := s.c, s.cli
	rec := &recorder{}
	opts := testOptions(rec)
	opts.DryRun = true
	saves := 0
	opts.SaveState = func(context.Context, *State) error { saves++; return nil }
	st, err := Run(ctx, c, s.instance, nil, opts)
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if len(rec.steps) != 0 || saves != 0 {
		t.Errorf("dry run recorded %d steps and saved %d times", len(rec.steps), saves)
	}
	plan := map[string]StepLog{}
	for _, l := range st.Steps {
		plan[l.Name] = l
	}
	for _, n := range []string{StepAutoScaling, StepLoadBalancers, StepProtect, StepPrepare, StepNetworkPrefix + s.eni0, StepElasticIPs, StepProfile, StepRevokeSessions, StepTags} {
		if plan[n].Status != StatusPlanned {
			t.Errorf("plan step %s: %s, want planned", n, plan[n].Status)
		}
	}
	if l := plan[StepNetworkPrefix+s.eni0]; !strings.Contains(string(l.Before), s.appGroup) || !strings.Contains(string(l.After), "(new "+IsolationGroupName+")") {
		t.Errorf("network plan: before %s after %s", l.Before, l.After)
	}
	if gs := cliENIGroups(t, ep, s.eni0); !slices.Equal(gs, sorted(s.appGroup, s.adminGroup)) {
		t.Errorf("dry run changed groups: %v", gs)
	}
	if g, _ := findGroup(ctx, c, s.vpc, IsolationGroupName); g != nil {
		t.Error("dry run created the isolation group")
	}
	if g, l := cliASGLifecycle(t, ep, s.instance); l != "InService" {
		t.Errorf("dry run changed auto scaling: %s %s", g, l)
	}
}

// If the isolation group is refused after the all-open one was set, the
// interface gets its previous groups back rather than staying open.
func TestIsolationGroupRefusedRollsBack(t *testing.T) {
	forEachWorld(t, testIsolationGroupRefusedRollsBack)
}

func testIsolationGroupRefusedRollsBack(t *testing.T, w world) {
	ctx := testContext(t)
	s := w.build(t, ctx, nil)
	c, ep := s.c, s.cli
	deny := &denyEC2{EC2API: c.EC2, calls: map[string]int{}}
	faulty := c
	faulty.EC2 = deny
	var iso string
	deny.denyENI = func(in *ec2.ModifyNetworkInterfaceAttributeInput) bool {
		if iso == "" {
			if g, _ := findGroup(ctx, c, s.vpc, IsolationGroupName); g != nil {
				iso = aws.ToString(g.GroupId)
			}
		}
		return aws.ToString(in.NetworkInterfaceId) == s.eni1 && slices.Equal(in.Groups, []string{iso})
	}
	rec := &recorder{}
	st, err := Run(ctx, faulty, s.instance, nil, testOptions(rec))
	if !errors.Is(err, ErrPartial) || !slices.Equal(st.Failed(), []string{StepNetworkPrefix + s.eni1}) {
		t.Fatalf("Run: %v, failed %v", err, st.Failed())
	}
	step := rec.byName(StepNetworkPrefix + s.eni1)
	if !errors.Is(step.Err, ErrAccessDenied) || !strings.Contains(step.Note, "previous groups put back") {
		t.Errorf("step: err %v note %q", step.Err, step.Note)
	}
	// The groups it held when the step began (with moto's union view of
	// attached interfaces, they include what eni0 holds by then).
	before := step.Before.(ifaceView).Groups
	if gs := cliENIGroups(t, ep, s.eni1); slices.Contains(gs, st.Resources.AllOpenGroup) || !slices.Equal(gs, before) {
		t.Errorf("groups of %s = %v, want those before the step %v, never the all-open group", s.eni1, gs, before)
	}
	if after := step.After.(ifaceView); !slices.Equal(after.Groups, before) {
		t.Errorf("recorded after-state %v, want %v", after.Groups, before)
	}
	if gs := cliENIGroups(t, ep, s.eni0); !slices.Equal(gs, []string{st.Resources.IsolationGroup}) {
		t.Errorf("the other interface was not isolated: %v", gs)
	}
}

// A recorder error stops the run at once: nothing unrecorded is done.
func TestRecorderErrorStops(t *testing.T) { forEachWorld(t, testRecorderErrorStops) }

func testRecorderErrorStops(t *testing.T, w world) {
	ctx := testContext(t)
	s := w.build(t, ctx, nil)
	c, ep := s.c, s.cli
	ledgerDown := errors.New("ledger unavailable")
	var seen []string
	opts := testOptions(nil)
	opts.Record = func(_ context.Context, st Step) error {
		seen = append(seen, st.Name)
		if st.Name == StepProtect {
			return ledgerDown
		}
		return nil
	}
	var saved *State
	opts.SaveState = func(_ context.Context, st *State) error {
		b, _ := MarshalState(st)
		saved, _ = UnmarshalState(b)
		return nil
	}
	_, err := Run(ctx, c, s.instance, nil, opts)
	// The state saved before recording knows protect was done, so a
	// release can undo it.
	if saved == nil || !saved.Applied(StepProtect) {
		t.Errorf("saved state does not show protect done: %+v", saved)
	}
	if !errors.Is(err, ledgerDown) || errors.Is(err, ErrPartial) {
		t.Fatalf("Run: %v, want the recorder's error and not ErrPartial", err)
	}
	if !slices.Equal(seen, []string{StepRecordState, StepAutoScaling, StepLoadBalancers, StepProtect}) {
		t.Errorf("steps attempted = %v, want to stop after protect", seen)
	}
	if gs := cliENIGroups(t, ep, s.eni0); !slices.Equal(gs, sorted(s.appGroup, s.adminGroup)) {
		t.Errorf("network changed after the recorder failed: %v", gs)
	}
	if g, _ := findGroup(ctx, c, s.vpc, IsolationGroupName); g != nil {
		t.Error("isolation group created after the recorder failed")
	}
}
