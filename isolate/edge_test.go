package isolate

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// A shutdown behaviour of "terminate" is set to "stop" by isolation and
// restored by release.
func TestShutdownBehaviourRestored(t *testing.T) { forEachWorld(t, testShutdownBehaviourRestored) }

func testShutdownBehaviourRestored(t *testing.T, w world) {
	ctx := testContext(t)
	s := w.build(t, ctx, nil)
	c, ep := s.c, s.cli
	if _, err := c.EC2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: &s.instance,
		Attribute: ec2types.InstanceAttributeNameInstanceInitiatedShutdownBehavior, Value: aws.String("terminate")}); err != nil {
		t.Fatal(err)
	}
	behaviour := func() string {
		t.Helper()
		return jsonPath(cliInstanceAttribute(t, ep, s.instance, "instanceInitiatedShutdownBehavior"), "InstanceInitiatedShutdownBehavior", "Value").(string)
	}
	if b := behaviour(); b != "terminate" {
		t.Fatalf("shutdown behaviour before isolation = %q", b)
	}
	st, err := Run(ctx, c, s.instance, nil, testOptions(nil))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st.Original.ShutdownBehavior != "terminate" {
		t.Errorf("recorded shutdown behaviour = %q, want terminate", st.Original.ShutdownBehavior)
	}
	if b := behaviour(); b != "stop" {
		t.Errorf("shutdown behaviour isolated = %q, want stop", b)
	}
	rec := &recorder{}
	if _, err := Release(ctx, c, st, testOptions(rec)); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if b := behaviour(); b != "terminate" {
		t.Errorf("shutdown behaviour released = %q, want terminate", b)
	}
	if l := rec.byName(ReleasePrefix + StepProtect); l == nil || l.Status != StatusDone || !strings.Contains(string(mustJSON(t, l.After)), `"shutdown_behavior":"terminate"`) {
		t.Errorf("release:protect record = %+v", l)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := marshalRaw(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// countASG counts Auto Scaling lifecycle calls.
type countASG struct {
	AutoScalingAPI
	enter, exit int
}

func (c *countASG) EnterStandby(ctx context.Context, in *autoscaling.EnterStandbyInput, o ...func(*autoscaling.Options)) (*autoscaling.EnterStandbyOutput, error) {
	c.enter++
	return c.AutoScalingAPI.EnterStandby(ctx, in, o...)
}

func (c *countASG) ExitStandby(ctx context.Context, in *autoscaling.ExitStandbyInput, o ...func(*autoscaling.Options)) (*autoscaling.ExitStandbyOutput, error) {
	c.exit++
	return c.AutoScalingAPI.ExitStandby(ctx, in, o...)
}

// An instance already in Standby is found so; release leaves it there.
func TestAlreadyInStandby(t *testing.T) { forEachWorld(t, testAlreadyInStandby) }

func testAlreadyInStandby(t *testing.T, w world) {
	ctx := testContext(t)
	s := w.build(t, ctx, nil)
	c, ep := s.c, s.cli
	if _, err := c.AutoScaling.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: &s.asg, InstanceIds: []string{s.instance},
		ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	if _, l := cliASGLifecycle(t, ep, s.instance); l != "Standby" {
		t.Fatalf("lifecycle before isolation = %q", l)
	}
	counted := &countASG{AutoScalingAPI: c.AutoScaling}
	cc := c
	cc.AutoScaling = counted
	rec := &recorder{}
	st, err := Run(ctx, cc, s.instance, nil, testOptions(rec))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if l := rec.byName(StepAutoScaling); l.Status != StatusAlready {
		t.Errorf("auto-scaling step: %s, want already-done", l.Status)
	}
	if a := st.Original.AutoScaling; a == nil || a.LifecycleState != "Standby" {
		t.Errorf("recorded auto scaling = %+v, want Standby", a)
	}
	if gs := cliENIGroups(t, ep, s.eni0); !slices.Equal(gs, []string{st.Resources.IsolationGroup}) {
		t.Errorf("network not isolated: %v", gs)
	}
	relRec := &recorder{}
	if _, err := Release(ctx, cc, st, testOptions(relRec)); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if l := relRec.byName(ReleasePrefix + StepAutoScaling); l.Status != StatusSkipped {
		t.Errorf("release:auto-scaling: %s %q, want skipped", l.Status, l.Note)
	}
	if counted.enter != 0 || counted.exit != 0 {
		t.Errorf("EnterStandby called %d times, ExitStandby %d times; want neither", counted.enter, counted.exit)
	}
	if g, l := cliASGLifecycle(t, ep, s.instance); g != s.asg || l != "Standby" {
		t.Errorf("auto scaling after release = %s %s, want %s Standby as it was", g, l, s.asg)
	}
}

// Two instances in one VPC share one all-open and one isolation group, and
// one isolation profile.
func TestGroupsReusedPerVPC(t *testing.T) { forEachWorld(t, testGroupsReusedPerVPC) }

func testGroupsReusedPerVPC(t *testing.T, w world) {
	ctx := testContext(t)
	s := w.build(t, ctx, nil)
	c, ep := s.c, s.cli
	first, err := Run(ctx, c, s.instance, nil, testOptions(nil))
	if err != nil {
		t.Fatalf("Run %s: %v", s.instance, err)
	}
	rec := &recorder{}
	second, err := Run(ctx, c, s.other, nil, testOptions(rec))
	if err != nil {
		t.Fatalf("Run %s: %v", s.other, err)
	}
	if first.Resources.AllOpenGroup != second.Resources.AllOpenGroup || first.Resources.IsolationGroup != second.Resources.IsolationGroup ||
		first.Resources.IsolationProfile != second.Resources.IsolationProfile || first.Resources.IsolationGroup == "" {
		t.Errorf("resources differ between instances in one VPC:\n first  %+v\n second %+v", first.Resources, second.Resources)
	}
	if l := rec.byName(StepPrepare); l.Status != StatusAlready {
		t.Errorf("second prepare: %s %q, want already-done (nothing created)", l.Status, l.Note)
	}
	for _, name := range []string{AllOpenGroupName, IsolationGroupName} {
		out, err := c.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{
			{Name: aws.String("vpc-id"), Values: []string{s.vpc}}, {Name: aws.String("group-name"), Values: []string{name}}}})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.SecurityGroups) != 1 {
			t.Errorf("%d groups named %s in %s, want 1", len(out.SecurityGroups), name, s.vpc)
		}
	}
	other := second.Original.Interfaces[0].ID
	if gs := cliENIGroups(t, ep, other); !slices.Equal(gs, []string{first.Resources.IsolationGroup}) {
		t.Errorf("groups of %s = %v, want the shared isolation group", other, gs)
	}
}

// A group or instance profile named like impound's but without its managed
// tag is never adopted: prepare fails naming it, and no interface changes.
func TestUnmanagedLookalikesRefused(t *testing.T) {
	forEachWorld(t, func(t *testing.T, w world) {
		t.Run("group", func(t *testing.T) { testUnmanagedLookalike(t, w, "group") })
		t.Run("profile", func(t *testing.T) { testUnmanagedLookalike(t, w, "profile") })
	})
}

func testUnmanagedLookalike(t *testing.T, w world, kind string) {
	ctx := testContext(t)
	s := w.build(t, ctx, nil)
	c, ep := s.c, s.cli
	var name string
	switch kind {
	case "group":
		// An attacker's "isolation" group that lets everything out.
		g, err := c.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(IsolationGroupName),
			Description: aws.String("looks like impound's"), VpcId: &s.vpc})
		if err != nil {
			t.Fatal(err)
		}
		name = aws.ToString(g.GroupId)
	case "profile":
		p, err := c.IAM.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String(IsolationProfileName)})
		if err != nil {
			t.Fatal(err)
		}
		name = aws.ToString(p.InstanceProfile.Arn)
	}
	rec := &recorder{}
	_, err := Run(ctx, c, s.instance, nil, testOptions(rec))
	if !errors.Is(err, ErrPartial) {
		t.Fatalf("Run: %v, want ErrPartial", err)
	}
	p := rec.byName(StepPrepare)
	if p.Status != StatusFailed || !errors.Is(p.Err, ErrNotManaged) || !strings.Contains(p.Err.Error(), name) || !strings.Contains(p.Err.Error(), TagManaged) {
		t.Fatalf("prepare: %s %v; want failed with ErrNotManaged naming %s and the tag", p.Status, p.Err, name)
	}
	for _, n := range []string{StepNetworkPrefix + s.eni0, StepNetworkPrefix + s.eni1, StepProfile} {
		if l := rec.byName(n); l.Status != StatusSkipped {
			t.Errorf("step %s: %s, want skipped", n, l.Status)
		}
	}
	if gs := cliENIGroups(t, ep, s.eni0); !slices.Equal(gs, sorted(s.appGroup, s.adminGroup)) {
		t.Errorf("groups changed: %v", gs)
	}
	if arn := cliProfileARN(t, ep, s.instance); arn != s.profileARN {
		t.Errorf("profile changed to %s", arn)
	}
}
