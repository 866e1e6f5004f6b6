package isolate

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// --nacl, --asg-detach and --allow-ssm together, then release.
func TestNACLDetachAllowSSM(t *testing.T) { forEachWorld(t, testNACLDetachAllowSSM) }

func testNACLDetachAllowSSM(t *testing.T, w world) {
	ctx := testContext(t)
	ops := newOpSet()
	s := w.build(t, ctx, ops)
	c, ep := s.c, s.cli
	if err := s.addSSMEndpoints(ctx); err != nil {
		t.Fatalf("create the VPC's SSM and S3 endpoints: %v", err)
	}
	ops.start()
	defer checkPolicyCovers(t, ops)
	before, err := readNACLs(ctx, c, []string{s.subnet})
	if err != nil {
		t.Fatal(err)
	}

	rec := &recorder{}
	opts := testOptions(rec)
	opts.NACL, opts.ASGDetach, opts.AllowSSM = true, true, true
	st, err := Run(ctx, c, s.instance, nil, opts)
	for _, l := range st.Steps {
		t.Logf("%-36s %-12s %s %s", l.Name, l.Status, l.Note, l.Error)
	}
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The subnet's original network ACL is part of the recorded starting
	// state, captured before any step ran.
	if rs := rec.byName(StepRecordState); rs == nil {
		t.Error("record-state not recorded")
	} else if o, ok := rs.After.(Original); !ok || len(o.NetworkACLs) != 1 || o.NetworkACLs[0] != before[0] {
		t.Errorf("recorded starting state network ACLs = %+v, want %+v", rs.After, before)
	}
	// Detached from the group.
	if g, l := cliASGLifecycle(t, ep, s.instance); g != "" {
		t.Errorf("still in auto scaling group %s (%s)", g, l)
	}
	// The subnet's ACL is impound's deny-all one, with a warning recorded.
	now, err := readNACLs(ctx, c, []string{s.subnet})
	if err != nil || now[0].NetworkACLID != st.Resources.DenyNACL || now[0].NetworkACLID == before[0].NetworkACLID {
		t.Errorf("subnet ACL = %+v (%v), want %s", now, err, st.Resources.DenyNACL)
	}
	acl, err := c.EC2.DescribeNetworkAcls(ctx, &ec2.DescribeNetworkAclsInput{NetworkAclIds: []string{st.Resources.DenyNACL}})
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range acl.NetworkAcls[0].Entries {
		if en.RuleAction == ec2types.RuleActionAllow {
			t.Errorf("deny-all ACL holds an allow rule: %+v", en)
		}
	}
	if n := rec.byName(StepNACLPrefix + s.subnet); n == nil || !strings.Contains(n.Note, "WARNING") {
		t.Errorf("no warning recorded for the network ACL: %+v", n)
	}
	// The SSM isolation group allows only HTTPS out, to the endpoints.
	g, err := findGroup(ctx, c, s.vpc, IsolationSSMGroupName)
	if err != nil || g == nil {
		t.Fatalf("ssm isolation group: %v", err)
	}
	rules := groupRules(g)
	pl, endpoint := false, false
	for _, r := range rules {
		if !r.Egress || r.Protocol != "tcp" || r.From != 443 || r.To != 443 || strings.HasSuffix(r.Target, "/0") {
			t.Errorf("ssm isolation group rule %v is not HTTPS egress to an endpoint", r)
		}
		pl = pl || strings.HasPrefix(r.Target, "pl:")
		endpoint = endpoint || strings.HasSuffix(r.Target, "/32") || strings.HasPrefix(r.Target, "sg:")
	}
	if !pl || !endpoint {
		t.Errorf("ssm isolation group rules = %v, want HTTPS to the interface endpoints and to the S3 prefix list", rules)
	}
	if gs := cliENIGroups(t, ep, s.eni0); !slices.Equal(gs, []string{aws.ToString(g.GroupId)}) {
		t.Errorf("groups = %v, want the ssm isolation group", gs)
	}

	ropts := testOptions(nil)
	if _, err := Release(ctx, c, st, ropts); err != nil {
		t.Fatalf("Release: %v", err)
	}
	after, err := readNACLs(ctx, c, []string{s.subnet})
	if err != nil || after[0].NetworkACLID != before[0].NetworkACLID {
		t.Errorf("subnet ACL after release = %+v (%v), want %s", after, err, before[0].NetworkACLID)
	}
	if g, l := cliASGLifecycle(t, ep, s.instance); g != s.asg || l != "InService" {
		t.Errorf("auto scaling after release = %q %q, want %s InService", g, l, s.asg)
	}
}

func TestAllowSSMWithoutEndpoints(t *testing.T) { forEachWorld(t, testAllowSSMWithoutEndpoints) }

// --allow-ssm in a VPC without SSM endpoints: prepare fails with
// ErrNoSSMEndpoints and no interface is touched.
func testAllowSSMWithoutEndpoints(t *testing.T, w world) {
	ctx := testContext(t)
	s := w.build(t, ctx, nil)
	c, ep := s.c, s.cli
	rec := &recorder{}
	opts := testOptions(rec)
	opts.AllowSSM = true
	_, err := Run(ctx, c, s.instance, nil, opts)
	if !errors.Is(err, ErrPartial) {
		t.Fatalf("Run: %v, want ErrPartial", err)
	}
	if p := rec.byName(StepPrepare); p.Status != StatusFailed || !errors.Is(p.Err, ErrNoSSMEndpoints) {
		t.Errorf("prepare: %s %v, want failed with ErrNoSSMEndpoints", p.Status, p.Err)
	}
	for _, n := range []string{StepNetworkPrefix + s.eni0, StepNetworkPrefix + s.eni1, StepProfile} {
		if st := rec.byName(n); st.Status != StatusSkipped || !strings.Contains(st.Note, "prepare failed") {
			t.Errorf("step %s: %s %q, want skipped because prepare failed", n, st.Status, st.Note)
		}
	}
	if gs := cliENIGroups(t, ep, s.eni0); !slices.Equal(gs, sorted(s.appGroup, s.adminGroup)) {
		t.Errorf("groups changed: %v", gs)
	}
}
