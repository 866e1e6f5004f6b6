package isolate

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/rs/zerolog"
)

// ReleasePrefix starts the name of every step Release records.
const ReleasePrefix = "release:"

// Release puts back the starting state recorded in st for every step that
// isolation attempted (done, found done, or failed halfway), in the reverse
// order: credentials and network first, Auto Scaling last, so the instance
// is healthy again before the group and the load balancers see it. The
// inline deny stays on the roles unless opts.RevokeDeny.
//
// It returns st updated (Release log, Released when every step succeeded).
func Release(ctx context.Context, c Clients, st *State, opts Options) (*State, error) {
	if st == nil {
		return nil, fmt.Errorf("%w: no isolation state to release from", ErrStateMismatch)
	}
	if opts.CaseID != "" && opts.CaseID != st.CaseID {
		return nil, fmt.Errorf("%w: state is for case %s, not %s", ErrStateMismatch, st.CaseID, opts.CaseID)
	}
	opts.CaseID = st.CaseID
	ctx = zerolog.Ctx(ctx).With().Str("instance_id", st.InstanceID).Str("case_id", st.CaseID).Logger().WithContext(ctx)
	st, err := st.clone()
	if err != nil {
		return nil, err
	}
	r := &runner{c: c, opts: opts, state: st, log: &st.Release, blocked: map[string]string{}}

	if _, _, err := describeInstance(ctx, c, st.InstanceID); err != nil {
		s := Step{Name: ReleasePrefix + StepRecordState, Resources: []string{r.arn("ec2", "instance/"+st.InstanceID)}, Status: StatusFailed, Err: err}
		return st, errors.Join(err, r.emit(ctx, s))
	}
	o := &st.Original
	steps := []func() stepDef{r.releaseProfile, r.releaseRevoke, r.releaseEIPs}
	for _, n := range o.NetworkACLs {
		steps = append(steps, func() stepDef { return r.releaseNACL(n) })
	}
	for _, ni := range o.Interfaces {
		steps = append(steps, func() stepDef { return r.releaseNetwork(ni) })
	}
	steps = append(steps, r.releaseLoadBalancers, r.releaseAutoScaling, r.releaseProtect, r.releaseTags)
	for _, d := range steps {
		def := d()
		def.name = ReleasePrefix + def.name
		if err := r.do(ctx, def); err != nil {
			return st, err
		}
	}
	res := r.result("release")
	if !opts.DryRun {
		outcome := "released"
		if res != nil {
			outcome = "partial"
		} else {
			st.Released = true
		}
		st.History = append(st.History, RunEntry{Action: "release", At: opts.now(), Result: outcome})
		if opts.SaveState != nil {
			if err := opts.SaveState(ctx, st); err != nil {
				return st, fmt.Errorf("save isolation state: %w", err)
			}
		}
	}
	return st, res
}

// attempted says whether isolation touched the named step (even if it
// failed halfway), so release has something to put back.
func (s *State) attempted(name string) bool {
	if s.Pending == name {
		return true
	}
	for _, l := range s.Steps {
		if l.Name == name && (l.Status == StatusDone || l.Status == StatusFailed) {
			return true
		}
	}
	return false
}

func (r *runner) releaseProfile() stepDef {
	id := r.state.InstanceID
	o := &r.state.Original
	d := stepDef{name: StepProfile}
	if o.Profile == nil || !r.state.attempted(StepProfile) {
		d.notApplicable = "instance profile was not replaced"
		return d
	}
	d.resources = []string{o.Profile.ARN}
	d.read = func(ctx context.Context) (any, error) { return readProfileView(ctx, r.c, id) }
	d.want = func() any { return profileView{ARN: o.Profile.ARN} }
	d.done = func(cur any) bool { return cur.(profileView).ARN == o.Profile.ARN }
	d.apply = func(ctx context.Context, cur any) (string, error) {
		return "", setProfile(ctx, r.c, id, cur.(profileView), o.Profile.ARN)
	}
	return d
}

func (r *runner) releaseRevoke() stepDef {
	o := &r.state.Original
	d := stepDef{name: StepRevokeSessions}
	if o.Profile == nil || len(o.Profile.Roles) == 0 || !r.state.attempted(StepRevokeSessions) {
		d.notApplicable = "no inline deny was added"
		return d
	}
	if !r.opts.RevokeDeny {
		d.notApplicable = "inline deny kept on the role (release with --revoke-deny to delete it)"
		return d
	}
	name := DenyPolicyName(r.state.CaseID)
	d.resources = o.Profile.RoleARNs
	d.read = func(ctx context.Context) (any, error) { return readDeny(ctx, r.c, o.Profile.Roles, name) }
	d.want = func() any {
		v := denyView{}
		for _, role := range o.Profile.Roles {
			v[role] = ""
		}
		return v
	}
	d.done = func(cur any) bool {
		for _, t := range cur.(denyView) {
			if t != "" {
				return false
			}
		}
		return true
	}
	d.apply = func(ctx context.Context, cur any) (string, error) {
		var errs []error
		for role, t := range cur.(denyView) {
			if t == "" {
				continue
			}
			if _, err := r.c.IAM.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String(role), PolicyName: aws.String(name)}); err != nil && apiCode(err) != "NoSuchEntity" {
				errs = append(errs, fmt.Errorf("delete inline deny %s from role %s: %w", name, role, classify(err)))
			}
		}
		return "", errors.Join(errs...)
	}
	return d
}

func eipKey(e EIPState) string {
	return e.AllocationID + "|" + e.NetworkInterfaceID + "|" + e.PrivateIP
}

func (r *runner) releaseEIPs() stepDef {
	o := &r.state.Original
	d := stepDef{name: StepElasticIPs}
	if len(o.ElasticIPs) == 0 || !r.state.attempted(StepElasticIPs) {
		d.notApplicable = "no Elastic IP was disassociated"
		return d
	}
	for _, e := range o.ElasticIPs {
		d.resources = append(d.resources, r.arn("ec2", "elastic-ip/"+e.AllocationID))
	}
	enis := make([]string, len(o.Interfaces))
	for i, ni := range o.Interfaces {
		enis[i] = ni.ID
	}
	has := func(cur []EIPState, e EIPState) bool {
		return slices.ContainsFunc(cur, func(c EIPState) bool { return eipKey(c) == eipKey(e) })
	}
	d.read = func(ctx context.Context) (any, error) {
		e, err := readEIPs(ctx, r.c, enis)
		if e == nil {
			e = []EIPState{}
		}
		return e, err
	}
	d.want = func() any { return o.ElasticIPs }
	d.done = func(cur any) bool {
		for _, e := range o.ElasticIPs {
			if !has(cur.([]EIPState), e) {
				return false
			}
		}
		return true
	}
	d.apply = func(ctx context.Context, cur any) (string, error) {
		var errs []error
		for _, e := range o.ElasticIPs {
			if has(cur.([]EIPState), e) {
				continue
			}
			if _, err := r.c.EC2.AssociateAddress(ctx, &ec2.AssociateAddressInput{
				AllocationId: aws.String(e.AllocationID), NetworkInterfaceId: aws.String(e.NetworkInterfaceID),
				PrivateIpAddress: aws.String(e.PrivateIP), AllowReassociation: aws.Bool(false),
			}); err != nil {
				errs = append(errs, fmt.Errorf("associate Elastic IP %s with %s: %w", e.PublicIP, e.NetworkInterfaceID, classify(err)))
			}
		}
		return "", errors.Join(errs...)
	}
	return d
}

func (r *runner) releaseNACL(orig NACLState) stepDef {
	d := stepDef{name: StepNACLPrefix + orig.SubnetID, resources: []string{r.arn("ec2", "subnet/"+orig.SubnetID)}}
	read := func(ctx context.Context) (any, error) {
		s, err := readNACLs(ctx, r.c, []string{orig.SubnetID})
		if err != nil {
			return NACLState{}, err
		}
		return s[0], nil
	}
	d.read = read
	d.want = func() any { return NACLState{SubnetID: orig.SubnetID, NetworkACLID: orig.NetworkACLID} }
	d.done = func(cur any) bool { return cur.(NACLState).NetworkACLID == orig.NetworkACLID }
	d.apply = func(ctx context.Context, cur any) (string, error) {
		if _, err := r.c.EC2.ReplaceNetworkAclAssociation(ctx, &ec2.ReplaceNetworkAclAssociationInput{
			AssociationId: aws.String(cur.(NACLState).AssociationID), NetworkAclId: aws.String(orig.NetworkACLID),
		}); err != nil {
			return "", fmt.Errorf("subnet %s: restore network ACL %s: %w", orig.SubnetID, orig.NetworkACLID, classify(err))
		}
		return "", nil
	}
	return d
}

// orDefault gives the value AWS applies when a timeout is not set.
func orDefault(v, def int32) int32 {
	if v == 0 {
		return def
	}
	return v
}

func (r *runner) releaseNetwork(ni InterfaceState) stepDef {
	name := StepNetworkPrefix + ni.ID
	d := stepDef{name: name, resources: []string{r.arn("ec2", "network-interface/"+ni.ID)}}
	if !r.state.attempted(name) {
		d.notApplicable = "interface was not changed"
		return d
	}
	want := ifaceView{Groups: ni.Groups,
		TCPEstablishedTimeout: orDefault(ni.TCPEstablishedTimeout, DefaultTCPEstablishedTimeout),
		UDPStreamTimeout:      orDefault(ni.UDPStreamTimeout, DefaultUDPStreamTimeout),
		UDPTimeout:            orDefault(ni.UDPTimeout, DefaultUDPTimeout)}
	norm := func(v ifaceView) ifaceView {
		v.TCPEstablishedTimeout = orDefault(v.TCPEstablishedTimeout, DefaultTCPEstablishedTimeout)
		v.UDPStreamTimeout = orDefault(v.UDPStreamTimeout, DefaultUDPStreamTimeout)
		v.UDPTimeout = orDefault(v.UDPTimeout, DefaultUDPTimeout)
		return v
	}
	d.read = func(ctx context.Context) (any, error) { return readIface(ctx, r.c, ni.ID) }
	d.want = func() any { return want }
	d.done = func(cur any) bool { return sameJSON(norm(cur.(ifaceView)), want) }
	d.apply = func(ctx context.Context, cur any) (string, error) {
		v := norm(cur.(ifaceView))
		if !slices.Equal(v.Groups, want.Groups) {
			if _, err := r.c.EC2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
				NetworkInterfaceId: aws.String(ni.ID), Groups: want.Groups,
			}); err != nil {
				return "", fmt.Errorf("interface %s: restore groups %v: %w", ni.ID, want.Groups, classify(err))
			}
		}
		if v.TCPEstablishedTimeout != want.TCPEstablishedTimeout || v.UDPStreamTimeout != want.UDPStreamTimeout || v.UDPTimeout != want.UDPTimeout {
			if _, err := r.c.EC2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
				NetworkInterfaceId: aws.String(ni.ID),
				ConnectionTrackingSpecification: &ec2types.ConnectionTrackingSpecificationRequest{
					TcpEstablishedTimeout: aws.Int32(want.TCPEstablishedTimeout), UdpStreamTimeout: aws.Int32(want.UDPStreamTimeout), UdpTimeout: aws.Int32(want.UDPTimeout),
				},
			}); err != nil {
				return "", fmt.Errorf("interface %s: restore connection-tracking timeouts: %w", ni.ID, classify(err))
			}
		}
		note := ""
		if ni.TCPEstablishedTimeout == 0 {
			note = fmt.Sprintf("timeouts were unset and cannot be unset again: set to AWS's defaults %d/%d/%d s (Nitro v6 types default to %d s for TCP)",
				DefaultTCPEstablishedTimeout, DefaultUDPStreamTimeout, DefaultUDPTimeout, NitroV6TCPEstablishedTimeout)
		}
		return note, nil
	}
	return d
}

func targetKey(t TargetState) string { return fmt.Sprintf("%s|%s|%d", t.TargetGroupARN, t.ID, t.Port) }

func (r *runner) releaseLoadBalancers() stepDef {
	o := &r.state.Original
	id := r.state.InstanceID
	d := stepDef{name: StepLoadBalancers}
	if (len(o.TargetGroups) == 0 && len(o.ClassicELBs) == 0) || !r.state.attempted(StepLoadBalancers) {
		d.notApplicable = "was not deregistered from a load balancer"
		return d
	}
	for _, t := range o.TargetGroups {
		if !slices.Contains(d.resources, t.TargetGroupARN) {
			d.resources = append(d.resources, t.TargetGroupARN)
		}
	}
	for _, n := range o.ClassicELBs {
		d.resources = append(d.resources, r.arn("elasticloadbalancing", "loadbalancer/"+n))
	}
	d.read = func(ctx context.Context) (any, error) { return readLoadBalancers(ctx, r.c, id, o.PrivateIPs) }
	d.want = func() any { return lbView{Targets: o.TargetGroups, Classic: o.ClassicELBs} }
	missing := func(v lbView) ([]TargetState, []string) {
		var ts []TargetState
		for _, t := range o.TargetGroups {
			if !slices.ContainsFunc(v.Targets, func(c TargetState) bool { return targetKey(c) == targetKey(t) }) {
				ts = append(ts, t)
			}
		}
		var cl []string
		for _, n := range o.ClassicELBs {
			if !slices.Contains(v.Classic, n) {
				cl = append(cl, n)
			}
		}
		return ts, cl
	}
	d.done = func(cur any) bool { ts, cl := missing(cur.(lbView)); return len(ts) == 0 && len(cl) == 0 }
	d.apply = func(ctx context.Context, cur any) (string, error) {
		ts, cl := missing(cur.(lbView))
		var errs []error
		for arn, tds := range groupTargets(ts) {
			if _, err := r.c.ELBv2.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: tds}); err != nil {
				errs = append(errs, fmt.Errorf("register with target group %s: %w", arn, classify(err)))
			}
		}
		for _, n := range cl {
			if _, err := r.c.ELB.RegisterInstancesWithLoadBalancer(ctx, &elb.RegisterInstancesWithLoadBalancerInput{
				LoadBalancerName: aws.String(n), Instances: []elbtypes.Instance{{InstanceId: aws.String(id)}},
			}); err != nil {
				errs = append(errs, fmt.Errorf("register with classic load balancer %s: %w", n, classify(err)))
			}
		}
		return "", errors.Join(errs...)
	}
	return d
}

func (r *runner) releaseAutoScaling() stepDef {
	id := r.state.InstanceID
	a := r.state.Original.AutoScaling
	d := stepDef{name: StepAutoScaling}
	if a == nil || !r.state.attempted(StepAutoScaling) {
		d.notApplicable = "was not taken out of an Auto Scaling group"
		return d
	}
	d.resources = []string{r.arn("autoscaling", "autoScalingGroup:*:autoScalingGroupName/"+a.GroupName)}
	d.read = func(ctx context.Context) (any, error) { return readASGView(ctx, r.c, id) }
	d.want = func() any { return asgView{GroupName: a.GroupName, LifecycleState: a.LifecycleState} }
	d.done = func(cur any) bool {
		v := cur.(asgView)
		if v.GroupName != a.GroupName {
			return false
		}
		if a.LifecycleState == "Standby" {
			return v.LifecycleState == "Standby"
		}
		return v.LifecycleState != "Standby" && v.LifecycleState != "EnteringStandby"
	}
	d.apply = func(ctx context.Context, cur any) (string, error) {
		v := cur.(asgView)
		note := ""
		if !a.Decremented {
			note = "desired capacity was not lowered at isolation; returning the instance raises it by one"
		}
		if v.GroupName == "" {
			if _, err := r.c.AutoScaling.AttachInstances(ctx, &autoscaling.AttachInstancesInput{AutoScalingGroupName: aws.String(a.GroupName), InstanceIds: []string{id}}); err != nil {
				return note, fmt.Errorf("attach %s to auto scaling group %s: %w", id, a.GroupName, classify(err))
			}
			return note, nil
		}
		if _, err := r.c.AutoScaling.ExitStandby(ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: aws.String(a.GroupName), InstanceIds: []string{id}}); err != nil {
			return note, fmt.Errorf("move %s out of standby in auto scaling group %s: %w", id, a.GroupName, classify(err))
		}
		return note, nil
	}
	return d
}

func (r *runner) releaseProtect() stepDef {
	id := r.state.InstanceID
	o := &r.state.Original
	d := stepDef{name: StepProtect, resources: []string{r.arn("ec2", "instance/"+id)}}
	if !r.state.attempted(StepProtect) {
		d.notApplicable = "protection was not changed"
		return d
	}
	want := protection{DisableAPITermination: o.DisableAPITermination, ShutdownBehavior: o.ShutdownBehavior, Volumes: o.Volumes}
	d.read = func(ctx context.Context) (any, error) { return readProtection(ctx, r.c, id) }
	d.want = func() any { return want }
	d.done = func(cur any) bool { return sameJSON(cur, want) }
	d.apply = func(ctx context.Context, cur any) (string, error) {
		return "", applyProtection(ctx, r.c, id, want, cur.(protection))
	}
	return d
}

func (r *runner) releaseTags() stepDef {
	d, ids := r.tagTargets()
	status := "released"
	if r.failed > 0 {
		status = "partially-released"
	}
	d = r.tagStep(d, ids, status, r.opts.now())
	// The release time changes each run; only the status must match.
	d.done = func(cur any) bool {
		for _, id := range ids {
			if cur.(tagView)[id][TagStatus] != status {
				return false
			}
		}
		return true
	}
	return d
}
