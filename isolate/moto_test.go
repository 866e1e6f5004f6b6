package isolate

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

var fixedNow = time.Date(2026, 11, 21, 10, 30, 0, 0, time.UTC)

func testOptions(rec *recorder) Options {
	o := NewOptions()
	o.CaseID = "IR-2026-0042"
	o.Now = func() time.Time { return fixedNow }
	if rec != nil {
		o.Record = rec.record
	}
	return o
}

// cliInstanceAttribute reads one instance attribute through the AWS CLI.
func cliInstanceAttribute(t *testing.T, ep target, id, attr string) map[string]any {
	var out map[string]any
	awsCLI(t, ep, &out, "ec2", "describe-instance-attribute", "--instance-id", id, "--attribute", attr)
	return out
}

func cliDeleteOnTermination(t *testing.T, ep target, id string) []bool {
	var out struct {
		Reservations []struct {
			Instances []struct {
				BlockDeviceMappings []struct {
					DeviceName string
					Ebs        struct{ DeleteOnTermination bool }
				}
			}
		}
	}
	awsCLI(t, ep, &out, "ec2", "describe-instances", "--instance-ids", id)
	var res []bool
	for _, m := range out.Reservations[0].Instances[0].BlockDeviceMappings {
		res = append(res, m.Ebs.DeleteOnTermination)
	}
	return res
}

func cliENIGroups(t *testing.T, ep target, eni string) []string {
	var out struct {
		NetworkInterfaces []struct {
			Groups []struct{ GroupId string }
		}
	}
	awsCLI(t, ep, &out, "ec2", "describe-network-interfaces", "--network-interface-ids", eni)
	if len(out.NetworkInterfaces) != 1 {
		t.Fatalf("describe-network-interfaces %s: %d interfaces", eni, len(out.NetworkInterfaces))
	}
	var gs []string
	for _, g := range out.NetworkInterfaces[0].Groups {
		gs = append(gs, g.GroupId)
	}
	sort.Strings(gs)
	return gs
}

func cliProfileARN(t *testing.T, ep target, id string) string {
	var out struct {
		IamInstanceProfileAssociations []struct {
			InstanceId, State  string
			IamInstanceProfile struct{ Arn string }
		}
	}
	awsCLI(t, ep, &out, "ec2", "describe-iam-instance-profile-associations", "--filters", "Name=instance-id,Values="+id)
	var arns []string
	for _, a := range out.IamInstanceProfileAssociations {
		if a.InstanceId == id && (a.State == "associated" || a.State == "associating") {
			arns = append(arns, a.IamInstanceProfile.Arn)
		}
	}
	if len(arns) > 1 {
		t.Fatalf("instance %s has %d profile associations: %v", id, len(arns), arns)
	}
	if len(arns) == 0 {
		return ""
	}
	return arns[0]
}

func cliASGLifecycle(t *testing.T, ep target, id string) (group, state string) {
	var out struct {
		AutoScalingInstances []struct{ InstanceId, AutoScalingGroupName, LifecycleState string }
	}
	awsCLI(t, ep, &out, "autoscaling", "describe-auto-scaling-instances", "--instance-ids", id)
	for _, i := range out.AutoScalingInstances {
		if i.InstanceId == id {
			return i.AutoScalingGroupName, i.LifecycleState
		}
	}
	return "", ""
}

func TestIsolateAndRelease(t *testing.T) { forEachWorld(t, testIsolateAndRelease) }

func testIsolateAndRelease(t *testing.T, w world) {
	ctx := testContext(t)
	ops := newOpSet()
	s := w.build(t, ctx, ops)
	c, ep := s.c, s.cli
	ops.start()
	defer checkPolicyCovers(t, ops)
	rec := &recorder{}
	opts := testOptions(rec)
	var saved [][]byte
	opts.SaveState = func(_ context.Context, st *State) error {
		b, err := MarshalState(st)
		saved = append(saved, b)
		return err
	}

	st, err := Run(ctx, c, s.instance, nil, opts)
	for _, l := range st.Steps {
		t.Logf("%-28s %-12s %s %s\n   before %s\n   after %s", l.Name, l.Status, l.Note, l.Error, l.Before, l.After)
	}
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	// The starting state was recorded in full.
	o := st.Original
	if o.VpcID != s.vpc || len(o.Interfaces) != 2 || o.Interfaces[0].ID != s.eni0 || o.Interfaces[1].ID != s.eni1 {
		t.Fatalf("original interfaces = %+v", o.Interfaces)
	}
	if want := sorted(s.appGroup, s.adminGroup); !slices.Equal(o.Interfaces[0].Groups, want) {
		t.Errorf("original groups of %s = %v, want %v", s.eni0, o.Interfaces[0].Groups, want)
	}
	if len(o.Interfaces[1].IPv6) != 1 {
		t.Errorf("original IPv6 of %s = %v, want one address", s.eni1, o.Interfaces[1].IPv6)
	}
	if len(o.ElasticIPs) != 1 || o.ElasticIPs[0].AllocationID != s.eip || o.ElasticIPs[0].NetworkInterfaceID != s.eni1 {
		t.Errorf("original Elastic IPs = %+v", o.ElasticIPs)
	}
	if o.Profile == nil || o.Profile.ARN != s.profileARN || !slices.Equal(o.Profile.Roles, []string{s.role}) {
		t.Errorf("original profile = %+v", o.Profile)
	}
	if o.AutoScaling == nil || o.AutoScaling.GroupName != s.asg || o.AutoScaling.LifecycleState != "InService" {
		t.Errorf("original auto scaling = %+v", o.AutoScaling)
	}
	if len(o.TargetGroups) != 1 || o.TargetGroups[0].TargetGroupARN != s.tg || o.TargetGroups[0].Port != 8080 {
		t.Errorf("original target groups = %+v", o.TargetGroups)
	}
	if !slices.Equal(o.ClassicELBs, []string{s.clb}) {
		t.Errorf("original classic ELBs = %v", o.ClassicELBs)
	}
	if o.DisableAPITermination || o.ShutdownBehavior != "stop" && o.ShutdownBehavior != "terminate" || len(o.Volumes) != 2 || !o.Volumes[0].DeleteOnTermination {
		t.Errorf("original protection = %v %q %+v", o.DisableAPITermination, o.ShutdownBehavior, o.Volumes)
	}

	// Every step was recorded, in the order of the sequence.
	var names []string
	for _, r := range rec.steps {
		names = append(names, r.Name)
	}
	wantNames := []string{StepRecordState, StepAutoScaling, StepLoadBalancers, StepProtect, StepPrepare,
		StepNetworkPrefix + s.eni0, StepNetworkPrefix + s.eni1, StepElasticIPs, StepProfile, StepRevokeSessions, StepTags}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("recorded steps = %v\nwant %v", names, wantNames)
	}
	for _, r := range rec.steps {
		if r.Status != StatusDone {
			t.Errorf("step %s: status %s (%v), want done", r.Name, r.Status, r.Err)
		}
	}
	// Saved after every step, at the end, and before each interface is
	// opened to all traffic (marked pending, so a release after a crash
	// there acts on it).
	var pending []string
	for _, b := range saved {
		sv, err := UnmarshalState(b)
		if err != nil {
			t.Fatalf("saved state: %v", err)
		}
		if sv.Pending != "" {
			pending = append(pending, sv.Pending)
		}
	}
	if len(saved) != len(wantNames)+1+2 {
		t.Errorf("state saved %d times, want %d (after every step, at the end, and before each interface change)", len(saved), len(wantNames)+1+2)
	}
	if !slices.Equal(pending, []string{StepNetworkPrefix + s.eni0, StepNetworkPrefix + s.eni1}) || st.Pending != "" {
		t.Errorf("pending saves = %v, final pending %q; want one per interface, none at the end", pending, st.Pending)
	}

	// Auto Scaling: in standby.
	if g, l := cliASGLifecycle(t, ep, s.instance); g != s.asg || l != "Standby" {
		t.Errorf("auto scaling = %s %s, want %s Standby", g, l, s.asg)
	}
	// Load balancers: gone from both.
	lbs, err := readLoadBalancers(ctx, c, s.instance, o.PrivateIPs)
	if err != nil || len(lbs.Targets) != 0 || len(lbs.Classic) != 0 {
		t.Errorf("load balancers after isolation = %+v, %v", lbs, err)
	}
	// Protection, through the AWS CLI.
	if v := cliInstanceAttribute(t, ep, s.instance, "disableApiTermination"); !jsonPath(v, "DisableApiTermination", "Value").(bool) {
		t.Errorf("disableApiTermination = %v", v)
	}
	if v := cliInstanceAttribute(t, ep, s.instance, "instanceInitiatedShutdownBehavior"); jsonPath(v, "InstanceInitiatedShutdownBehavior", "Value") != "stop" {
		t.Errorf("instanceInitiatedShutdownBehavior = %v", v)
	}
	// (moto does not answer describe-instance-attribute blockDeviceMapping.)
	if got := cliDeleteOnTermination(t, ep, s.instance); !slices.Equal(got, []bool{false, false}) {
		t.Errorf("DeleteOnTermination of the volumes = %v, want [false false]", got)
	}
	// Network: every interface holds exactly the isolation group, whose
	// rules are empty; the all-open group was passed through.
	iso := st.Resources.IsolationGroup
	for _, eni := range []string{s.eni0, s.eni1} {
		if got := cliENIGroups(t, ep, eni); !slices.Equal(got, []string{iso}) {
			t.Errorf("groups of %s = %v, want [%s]", eni, got, iso)
		}
		step := rec.byName(StepNetworkPrefix + eni)
		if !strings.Contains(step.Note, "all-open "+st.Resources.AllOpenGroup) {
			t.Errorf("network step of %s does not record the all-open pass: %q", eni, step.Note)
		}
		before, after := step.Before.(ifaceView), step.After.(ifaceView)
		if slices.Equal(before.Groups, after.Groups) || !slices.Equal(after.Groups, []string{iso}) {
			t.Errorf("network step of %s: before %v after %v", eni, before.Groups, after.Groups)
		}
	}
	// Connection tracking at its minimum on every interface.
	for _, eni := range []string{s.eni0, s.eni1} {
		v, err := readIface(ctx, c, eni)
		if err != nil || v.TCPEstablishedTimeout != MinTCPEstablishedTimeout || v.UDPStreamTimeout != MinUDPStreamTimeout || v.UDPTimeout != MinUDPTimeout {
			t.Errorf("connection tracking of %s = %+v (%v), want %d/%d/%d", eni, v, err, MinTCPEstablishedTimeout, MinUDPStreamTimeout, MinUDPTimeout)
		}
	}
	groupRulesOf(t, ctx, c, s.vpc, IsolationGroupName, nil)
	groupRulesOf(t, ctx, c, s.vpc, AllOpenGroupName, []string{
		"egress all v4:0.0.0.0/0", "egress all v6:::/0", "ingress all v4:0.0.0.0/0", "ingress all v6:::/0"})
	// Elastic IP disassociated.
	if e, _ := readEIPs(ctx, c, []string{s.eni0, s.eni1}); len(e) != 0 {
		t.Errorf("Elastic IPs still associated: %+v", e)
	}
	// Credentials: the isolation profile, and a deny on the shared role.
	if arn := cliProfileARN(t, ep, s.instance); arn != st.Resources.IsolationProfile || !strings.HasSuffix(arn, "/"+IsolationProfileName) {
		t.Errorf("profile = %q, want the isolation profile %q", arn, st.Resources.IsolationProfile)
	}
	if arn := cliProfileARN(t, ep, s.other); arn != s.profileARN {
		t.Errorf("the other instance's profile changed: %q", arn)
	}
	pol, err := c.IAM.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: &s.role, PolicyName: aws.String(DenyPolicyName(opts.CaseID))})
	if err != nil {
		t.Fatalf("deny policy: %v", err)
	}
	if got := policyCutoff(aws.ToString(pol.PolicyDocument)); got != "2026-11-21T10:30:01Z" {
		t.Errorf("deny cut-off = %q", got)
	}
	// Tags on the instance and both volumes.
	tags, err := readTags(ctx, c, append([]string{s.instance}, s.volumes...))
	if err != nil {
		t.Fatal(err)
	}
	for id, tv := range tags {
		if tv[TagCase] != opts.CaseID || tv[TagStatus] != "isolated" || tv[TagTime] != "2026-11-21T10:30:00Z" {
			t.Errorf("tags of %s = %v", id, tv)
		}
	}

	// The last saved state parses back to what Run returned.
	back, err := UnmarshalState(saved[len(saved)-1])
	if err != nil {
		t.Fatal(err)
	}
	if !sameJSON(back, st) {
		t.Errorf("saved state differs from the returned one")
	}

	// A second run finds everything done and changes nothing.
	rec2 := &recorder{}
	st2, err := Run(ctx, c, s.instance, back, testOptions(rec2))
	if err != nil {
		t.Fatalf("re-run: %v", err)
	}
	for _, r := range rec2.steps {
		if r.Status != StatusAlready {
			t.Errorf("re-run step %s: %s, want already-done", r.Name, r.Status)
		}
	}

	// Isolating again without the state is refused: the starting state would be lost.
	if _, err := Run(ctx, c, s.instance, nil, testOptions(nil)); !errors.Is(err, ErrAlreadyIsolated) {
		t.Errorf("run without state on an isolated instance: %v, want ErrAlreadyIsolated", err)
	}

	// Release puts everything back.
	relRec := &recorder{}
	ropts := testOptions(relRec)
	rst, err := Release(ctx, c, st2, ropts)
	for _, l := range rst.Release {
		t.Logf("%-36s %-12s %s %s", l.Name, l.Status, l.Note, l.Error)
	}
	if err != nil {
		t.Fatalf("Release: %v", err)
	}
	if !rst.Released {
		t.Error("state not marked released")
	}
	if g, l := cliASGLifecycle(t, ep, s.instance); g != s.asg || l != "InService" {
		t.Errorf("auto scaling after release = %s %s, want %s InService", g, l, s.asg)
	}
	lbs, err = readLoadBalancers(ctx, c, s.instance, o.PrivateIPs)
	if err != nil || !sameJSON(lbs.Targets, o.TargetGroups) || !slices.Equal(lbs.Classic, o.ClassicELBs) {
		t.Errorf("load balancers after release = %+v, %v; want %+v %v", lbs, err, o.TargetGroups, o.ClassicELBs)
	}
	if v := cliInstanceAttribute(t, ep, s.instance, "disableApiTermination"); jsonPath(v, "DisableApiTermination", "Value").(bool) {
		t.Errorf("disableApiTermination after release = %v", v)
	}
	p, err := readProtection(ctx, c, s.instance)
	if err != nil || !sameJSON(p.Volumes, o.Volumes) || p.ShutdownBehavior != o.ShutdownBehavior {
		t.Errorf("protection after release = %+v, %v; want %+v", p, err, o)
	}
	for i, eni := range []string{s.eni0, s.eni1} {
		if got := cliENIGroups(t, ep, eni); !slices.Equal(got, o.Interfaces[i].Groups) {
			t.Errorf("groups of %s after release = %v, want %v", eni, got, o.Interfaces[i].Groups)
		}
	}
	if e, _ := readEIPs(ctx, c, []string{s.eni0, s.eni1}); len(e) != 1 || e[0].AllocationID != s.eip || e[0].NetworkInterfaceID != s.eni1 {
		t.Errorf("Elastic IPs after release = %+v", e)
	}
	for _, eni := range []string{s.eni0, s.eni1} {
		if v, err := readIface(ctx, c, eni); err != nil || v.TCPEstablishedTimeout != DefaultTCPEstablishedTimeout || v.UDPStreamTimeout != DefaultUDPStreamTimeout || v.UDPTimeout != DefaultUDPTimeout {
			t.Errorf("connection tracking of %s after release = %+v (%v), want AWS's defaults", eni, v, err)
		}
	}
	if arn := cliProfileARN(t, ep, s.instance); arn != s.profileARN {
		t.Errorf("profile after release = %q, want %q", arn, s.profileARN)
	}
	// The deny stays unless asked.
	if _, err := c.IAM.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: &s.role, PolicyName: aws.String(DenyPolicyName(opts.CaseID))}); err != nil {
		t.Errorf("deny policy gone after release without RevokeDeny: %v", err)
	}
	tags, _ = readTags(ctx, c, append([]string{s.instance}, s.volumes...))
	for id, tv := range tags {
		if tv[TagStatus] != "released" || tv[TagCase] != opts.CaseID {
			t.Errorf("tags of %s after release = %v", id, tv)
		}
	}
	// Release with RevokeDeny deletes the deny and finds the rest done.
	ropts.RevokeDeny = true
	if _, err := Release(ctx, c, st2, ropts); err != nil {
		t.Fatalf("release --revoke-deny: %v", err)
	}
	if _, err := c.IAM.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: &s.role, PolicyName: aws.String(DenyPolicyName(opts.CaseID))}); apiCode(err) != "NoSuchEntity" {
		t.Errorf("deny policy after release --revoke-deny: %v, want NoSuchEntity", err)
	}
}

func sorted(s ...string) []string { sort.Strings(s); return s }

func jsonPath(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func groupRulesOf(t *testing.T, ctx context.Context, c Clients, vpc, name string, want []string) {
	t.Helper()
	g, err := findGroup(ctx, c, vpc, name)
	if err != nil || g == nil {
		t.Fatalf("group %s: %v (found %v)", name, err, g != nil)
	}
	var got []string
	for _, r := range groupRules(g) {
		got = append(got, r.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("rules of %s = %v, want %v", name, got, want)
	}
	managed := false
	for _, tg := range g.Tags {
		managed = managed || aws.ToString(tg.Key) == TagManaged
	}
	if !managed {
		t.Errorf("group %s is not tagged %s", name, TagManaged)
	}
}
