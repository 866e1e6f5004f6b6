package isolate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbv2types "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/rs/zerolog"
)

// Step names.
const (
	StepRecordState    = "record-state"
	StepAutoScaling    = "auto-scaling"
	StepLoadBalancers  = "load-balancers"
	StepProtect        = "protect"
	StepPrepare        = "prepare"
	StepNetworkPrefix  = "network:"     // + interface ID
	StepNACLPrefix     = "network-acl:" // + subnet ID
	StepElasticIPs     = "elastic-ips"
	StepProfile        = "instance-profile"
	StepRevokeSessions = "revoke-sessions"
	StepTags           = "tags"
)

// Run isolates instanceID. prior is the State of an earlier run for the same
// instance and case (nil for the first run): its starting state is kept, and
// steps already done are found done and not repeated.
//
// It returns the State to persist, also when some steps failed (the error
// then wraps ErrPartial). With opts.DryRun the State's Steps are the plan:
// each step's current state and, when it would change, the intended one.
func Run(ctx context.Context, c Clients, instanceID string, prior *State, opts Options) (*State, error) {
	if opts.CaseID == "" {
		return nil, errors.New("isolate: a case ID is required")
	}
	log := zerolog.Ctx(ctx).With().Str("instance_id", instanceID).Str("case_id", opts.CaseID).Logger()
	ctx = log.WithContext(ctx)

	now := opts.now()
	st := &State{
		Version: StateVersion, CaseID: opts.CaseID, InstanceID: instanceID, Region: c.Region,
		StartedAt: now, IsolatedAt: now,
		Options: RunFlags{AllowSSM: opts.AllowSSM, NACL: opts.NACL, ASGDetach: opts.ASGDetach, AllowDefaultVPC: opts.AllowDefaultVPC},
	}
	if prior != nil && prior.Original.VpcID == "" {
		log.Warn().Msg("prior isolation state holds no starting state; recording it afresh")
		prior = nil
	}
	if prior != nil && !prior.Released {
		if prior.InstanceID != instanceID || prior.CaseID != opts.CaseID {
			return nil, fmt.Errorf("%w: state is for instance %s case %s, not %s case %s", ErrStateMismatch, prior.InstanceID, prior.CaseID, instanceID, opts.CaseID)
		}
		cp, err := prior.clone()
		if err != nil {
			return nil, err
		}
		cp.Options = st.Options
		st = cp
	}
	r := &runner{c: c, opts: opts, state: st, log: &st.Steps, blocked: map[string]string{}}
	if _, err := r.recordState(ctx, prior != nil && !prior.Released); err != nil {
		return st, err
	}
	steps := r.isolationSteps()
	for _, d := range steps {
		if err := r.do(ctx, d()); err != nil {
			return st, err
		}
	}
	res := r.result("isolate")
	if !opts.DryRun {
		outcome := "isolated"
		if res != nil {
			outcome = "partial"
		}
		st.History = append(st.History, RunEntry{Action: "isolate", At: opts.now(), Result: outcome})
		if opts.SaveState != nil {
			if err := opts.SaveState(ctx, st); err != nil {
				return st, fmt.Errorf("save isolation state: %w", err)
			}
		}
	}
	return st, res
}

// recordState is step 1: find the instance, refuse what cannot be isolated,
// and capture (or, on a re-run, keep) its starting state.
func (r *runner) recordState(ctx context.Context, rerun bool) (*ec2types.Instance, error) {
	id := r.state.InstanceID
	s := Step{Name: StepRecordState, Resources: []string{r.arn("ec2", "instance/"+id)}}
	fail := func(err error) (*ec2types.Instance, error) {
		s.Status, s.Err = StatusFailed, err
		if e := r.emit(ctx, s); e != nil {
			return nil, errors.Join(err, e)
		}
		return nil, err
	}
	inst, owner, err := describeInstance(ctx, r.c, id)
	if err != nil {
		return fail(err)
	}
	if r.state.AccountID == "" {
		r.state.AccountID = owner
		s.Resources = []string{r.arn("ec2", "instance/"+id)}
	}
	if inst.State != nil {
		switch inst.State.Name {
		case ec2types.InstanceStateNameShuttingDown, ec2types.InstanceStateNameTerminated:
			return fail(fmt.Errorf("instance %s is %s: %w; nothing to isolate, acquire what remains of its snapshots instead", id, inst.State.Name, ErrInstanceTerminated))
		}
	}
	if aws.ToString(inst.VpcId) == "" {
		return fail(fmt.Errorf("instance %s: %w; impound isolates VPC instances only", id, ErrNotInVPC))
	}
	if rerun {
		s.Status, s.Note = StatusAlready, fmt.Sprintf("starting state kept from the run of %s", r.state.StartedAt.Format(time.RFC3339))
		s.After = r.state.Original
		return inst, r.emit(ctx, s)
	}
	for _, t := range inst.Tags {
		if aws.ToString(t.Key) == TagStatus {
			switch v := aws.ToString(t.Value); v {
			case "isolated", "partially-isolated":
				return fail(fmt.Errorf("instance %s is tagged %s=%s: %w; pass the state of that run (the CLI reads it from the vault for the same --case) so the original state is not lost", id, TagStatus, v, ErrAlreadyIsolated))
			}
		}
	}
	o, err := capture(ctx, r.c, inst, r.opts.NACL)
	if err != nil {
		return fail(fmt.Errorf("record starting state of %s: %w", id, err))
	}
	if o.DefaultVPC {
		s.Before = o // what was read, for the record of the refusal
		if r.opts.NACL {
			return fail(fmt.Errorf("instance %s is in default VPC %s: %w; every default-subnet instance would be cut off: isolate without --nacl", id, o.VpcID, ErrDefaultVPCNACL))
		}
		if !r.opts.AllowDefaultVPC {
			return fail(fmt.Errorf("instance %s is in default VPC %s: %w: its default subnets are shared by every instance launched without a subnet, "+
				"and they auto-assign public IPv4 addresses, which isolation cannot remove (only Elastic IPs can be disassociated), so the instance keeps a public address; "+
				"nothing was changed. To contain it anyway with its security groups, instance profile and the other steps, run again with --allow-default-vpc "+
				"(security-group isolation still cuts its traffic, public address or not)", id, o.VpcID, ErrDefaultVPC))
		}
	}
	r.state.Original = o
	s.After = o
	if o.DefaultVPC {
		s.Note = "instance is in a default VPC: isolated as asked with --allow-default-vpc; a public IPv4 address auto-assigned by the default subnet stays (security-group isolation still applies)"
	}
	s.Status = StatusDone
	if r.opts.DryRun {
		s.Status = StatusPlanned
	}
	return inst, r.emit(ctx, s)
}

func (r *runner) arn(service, resource string) string {
	return fmt.Sprintf("arn:%s:%s:%s:%s:%s", partition(r.c.Region), service, r.c.Region, r.state.AccountID, resource)
}

func partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

// isolationSteps lists steps 2 to 8 in order. Each is built just before it
// runs, so it sees what earlier steps learned.
func (r *runner) isolationSteps() []func() stepDef {
	o := &r.state.Original
	steps := []func() stepDef{r.stepAutoScaling, r.stepLoadBalancers, r.stepProtect, r.stepPrepare}
	for _, ni := range o.Interfaces {
		steps = append(steps, func() stepDef { return r.stepNetwork(ni) })
	}
	if r.opts.NACL || r.state.Resources.DenyNACL != "" {
		for _, sn := range subnets(o.Interfaces) {
			steps = append(steps, func() stepDef { return r.stepNACL(sn) })
		}
	}
	steps = append(steps, r.stepElasticIPs, r.stepProfile, r.stepRevokeSessions, r.stepTags)
	return steps
}

func subnets(ifs []InterfaceState) []string {
	var out []string
	for _, i := range ifs {
		if !slices.Contains(out, i.SubnetID) {
			out = append(out, i.SubnetID)
		}
	}
	return out
}

func (r *runner) stepAutoScaling() stepDef {
	id := r.state.InstanceID
	a := r.state.Original.AutoScaling
	d := stepDef{name: StepAutoScaling}
	if a == nil {
		d.notApplicable = "not in an Auto Scaling group"
		return d
	}
	d.resources = []string{r.arn("autoscaling", "autoScalingGroup:*:autoScalingGroupName/"+a.GroupName)}
	d.read = func(ctx context.Context) (any, error) { return readASGView(ctx, r.c, id) }
	if r.opts.ASGDetach {
		d.want = func() any { return asgView{} }
		d.done = func(cur any) bool {
			v := cur.(asgView)
			return v.GroupName == "" || v.LifecycleState == "Detaching" || v.LifecycleState == "Detached"
		}
		d.apply = func(ctx context.Context, _ any) (string, error) {
			dec := a.DesiredCapacity > a.MinSize
			a.Decremented = dec
			_, err := r.c.AutoScaling.DetachInstances(ctx, &autoscaling.DetachInstancesInput{
				AutoScalingGroupName: &a.GroupName, InstanceIds: []string{id}, ShouldDecrementDesiredCapacity: aws.Bool(dec),
			})
			if err != nil {
				return "", fmt.Errorf("detach %s from auto scaling group %s: %w", id, a.GroupName, classify(err))
			}
			return capacityNote(dec, a), nil
		}
		return d
	}
	d.want = func() any { return asgView{GroupName: a.GroupName, LifecycleState: "Standby"} }
	d.done = func(cur any) bool {
		v := cur.(asgView)
		return v.LifecycleState == "Standby" || v.LifecycleState == "EnteringStandby"
	}
	d.apply = func(ctx context.Context, _ any) (string, error) {
		dec := a.DesiredCapacity > a.MinSize
		a.Decremented = dec
		_, err := r.c.AutoScaling.EnterStandby(ctx, &autoscaling.EnterStandbyInput{
			AutoScalingGroupName: &a.GroupName, InstanceIds: []string{id}, ShouldDecrementDesiredCapacity: aws.Bool(dec),
		})
		if err != nil {
			return "", fmt.Errorf("move %s to standby in auto scaling group %s: %w", id, a.GroupName, classify(err))
		}
		return capacityNote(dec, a), nil
	}
	return d
}

func capacityNote(dec bool, a *ASGState) string {
	if dec {
		return fmt.Sprintf("desired capacity lowered from %d", a.DesiredCapacity)
	}
	return fmt.Sprintf("desired capacity kept at %d (the minimum): the group launches a replacement", a.DesiredCapacity)
}

func (r *runner) stepLoadBalancers() stepDef {
	o := &r.state.Original
	id := r.state.InstanceID
	d := stepDef{name: StepLoadBalancers}
	for _, t := range o.TargetGroups {
		if !slices.Contains(d.resources, t.TargetGroupARN) {
			d.resources = append(d.resources, t.TargetGroupARN)
		}
	}
	for _, n := range o.ClassicELBs {
		d.resources = append(d.resources, r.arn("elasticloadbalancing", "loadbalancer/"+n))
	}
	if len(d.resources) == 0 {
		d.notApplicable = "behind no load balancer"
		return d
	}
	d.read = func(ctx context.Context) (any, error) { return readLoadBalancers(ctx, r.c, id, o.PrivateIPs) }
	d.want = func() any { return lbView{Targets: []TargetState{}, Classic: []string{}} }
	d.done = func(cur any) bool { v := cur.(lbView); return len(v.Targets) == 0 && len(v.Classic) == 0 }
	d.apply = func(ctx context.Context, cur any) (string, error) {
		v := cur.(lbView)
		var errs []error
		for arn, ts := range groupTargets(v.Targets) {
			if _, err := r.c.ELBv2.DeregisterTargets(ctx, &elbv2.DeregisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: ts}); err != nil {
				errs = append(errs, fmt.Errorf("deregister from target group %s: %w", arn, classify(err)))
			}
		}
		for _, n := range v.Classic {
			if _, err := r.c.ELB.DeregisterInstancesFromLoadBalancer(ctx, &elb.DeregisterInstancesFromLoadBalancerInput{
				LoadBalancerName: aws.String(n), Instances: []elbtypes.Instance{{InstanceId: aws.String(id)}},
			}); err != nil {
				errs = append(errs, fmt.Errorf("deregister from classic load balancer %s: %w", n, classify(err)))
			}
		}
		return "", errors.Join(errs...)
	}
	return d
}

func groupTargets(ts []TargetState) map[string][]elbv2types.TargetDescription {
	m := map[string][]elbv2types.TargetDescription{}
	for _, t := range ts {
		td := elbv2types.TargetDescription{Id: aws.String(t.ID)}
		if t.Port != 0 {
			td.Port = aws.Int32(t.Port)
		}
		if t.AvailabilityZone != "" {
			td.AvailabilityZone = aws.String(t.AvailabilityZone)
		}
		m[t.TargetGroupARN] = append(m[t.TargetGroupARN], td)
	}
	return m
}

func (r *runner) stepProtect() stepDef {
	id := r.state.InstanceID
	d := stepDef{name: StepProtect, resources: []string{r.arn("ec2", "instance/"+id)}}
	for _, v := range r.state.Original.Volumes {
		d.resources = append(d.resources, r.arn("ec2", "volume/"+v.VolumeID))
	}
	d.read = func(ctx context.Context) (any, error) { return readProtection(ctx, r.c, id) }
	d.done = func(cur any) bool {
		p := cur.(protection)
		if !p.DisableAPITermination || p.ShutdownBehavior != "stop" {
			return false
		}
		for _, v := range p.Volumes {
			if v.DeleteOnTermination {
				return false
			}
		}
		return true
	}
	d.want = func() any {
		p := protection{DisableAPITermination: true, ShutdownBehavior: "stop"}
		for _, v := range r.state.Original.Volumes {
			v.DeleteOnTermination = false
			p.Volumes = append(p.Volumes, v)
		}
		return p
	}
	d.apply = func(ctx context.Context, cur any) (string, error) {
		return "", applyProtection(ctx, r.c, id, d.want().(protection), cur.(protection))
	}
	return d
}

// applyProtection sets the instance attributes and volume flags to want.
func applyProtection(ctx context.Context, c Clients, id string, want, cur protection) error {
	var errs []error
	if cur.DisableAPITermination != want.DisableAPITermination {
		if _, err := c.EC2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{
			InstanceId: &id, DisableApiTermination: &ec2types.AttributeBooleanValue{Value: aws.Bool(want.DisableAPITermination)},
		}); err != nil {
			errs = append(errs, fmt.Errorf("set disableApiTermination=%t: %w", want.DisableAPITermination, classify(err)))
		}
	}
	if cur.ShutdownBehavior != want.ShutdownBehavior && want.ShutdownBehavior != "" {
		// The Attribute/Value form (which AWS documents for this
		// attribute): moto 5.2 ignores InstanceInitiatedShutdownBehavior.Value
		// and takes the call for a security-group change.
		if _, err := c.EC2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{
			InstanceId: &id, Attribute: ec2types.InstanceAttributeNameInstanceInitiatedShutdownBehavior, Value: aws.String(want.ShutdownBehavior),
		}); err != nil {
			errs = append(errs, fmt.Errorf("set instanceInitiatedShutdownBehavior=%s: %w", want.ShutdownBehavior, classify(err)))
		}
	}
	var bdm []ec2types.InstanceBlockDeviceMappingSpecification
	for _, w := range want.Volumes {
		for _, c := range cur.Volumes {
			if c.DeviceName == w.DeviceName && c.DeleteOnTermination != w.DeleteOnTermination {
				bdm = append(bdm, ec2types.InstanceBlockDeviceMappingSpecification{
					DeviceName: aws.String(w.DeviceName),
					Ebs:        &ec2types.EbsInstanceBlockDeviceSpecification{VolumeId: aws.String(w.VolumeID), DeleteOnTermination: aws.Bool(w.DeleteOnTermination)},
				})
			}
		}
	}
	if len(bdm) > 0 {
		if _, err := c.EC2.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: &id, BlockDeviceMappings: bdm}); err != nil {
			errs = append(errs, fmt.Errorf("set deleteOnTermination on %d volume(s): %w", len(bdm), classify(err)))
		}
	}
	return errors.Join(errs...)
}

// prepared is what the prepare step reads and ensures.
type prepared struct {
	AllOpenGroup     string   `json:"all_open_group"`
	IsolationGroup   string   `json:"isolation_group"`
	IsolationProfile string   `json:"isolation_profile,omitempty"`
	DenyNACL         string   `json:"deny_nacl,omitempty"`
	Changes          []string `json:"changes,omitempty"`
}

// stepPrepare finds or creates the groups, profile and network ACL the
// later steps attach. It runs every time: the groups' rules are put back to
// exactly impound's if someone edited them.
func (r *runner) stepPrepare() stepDef {
	o := &r.state.Original
	d := stepDef{name: StepPrepare, resources: []string{r.arn("ec2", "vpc/"+o.VpcID)}}
	isoName := IsolationGroupName
	if r.opts.AllowSSM {
		isoName = IsolationSSMGroupName
	}
	var isoRules []rule
	ensure := func(ctx context.Context, dry bool) (prepared, error) {
		var p prepared
		var ch []string
		var err error
		if p.AllOpenGroup, ch, err = ensureGroup(ctx, r.c, o.VpcID, AllOpenGroupName, r.opts.CaseID, allOpenRules(), dry); err != nil {
			return p, err
		}
		p.Changes = append(p.Changes, ch...)
		if r.opts.AllowSSM && isoRules == nil {
			if isoRules, err = ssmRules(ctx, r.c, o.VpcID); err != nil {
				return p, err
			}
		}
		if p.IsolationGroup, ch, err = ensureGroup(ctx, r.c, o.VpcID, isoName, r.opts.CaseID, isoRules, dry); err != nil {
			return p, err
		}
		p.Changes = append(p.Changes, ch...)
		if o.Profile != nil {
			if p.IsolationProfile, ch, err = ensureProfile(ctx, r.c, dry); err != nil {
				return p, err
			}
			p.Changes = append(p.Changes, ch...)
		}
		if r.opts.NACL {
			if p.DenyNACL, ch, err = ensureNACL(ctx, r.c, o.VpcID, r.opts.CaseID, dry); err != nil {
				return p, err
			}
			p.Changes = append(p.Changes, ch...)
		}
		return p, nil
	}
	d.read = func(ctx context.Context) (any, error) { return ensure(ctx, true) }
	d.done = func(cur any) bool {
		p := cur.(prepared)
		if len(p.Changes) == 0 && !r.opts.DryRun {
			r.setResources(p)
		}
		return len(p.Changes) == 0
	}
	d.apply = func(ctx context.Context, _ any) (string, error) {
		p, err := ensure(ctx, false)
		if err != nil {
			return "", err
		}
		r.setResources(p)
		return strings.Join(p.Changes, "; "), nil
	}
	if r.opts.DryRun {
		// Later steps of the plan name what would be created.
		d.want = func() any { return nil }
		orig := d.done
		d.done = func(cur any) bool { r.setResources(cur.(prepared)); return orig(cur) }
	}
	return d
}

func (r *runner) setResources(p prepared) {
	res := &r.state.Resources
	res.AllOpenGroup, res.IsolationGroup = p.AllOpenGroup, p.IsolationGroup
	if p.IsolationProfile != "" {
		res.IsolationProfile = p.IsolationProfile
	}
	if p.DenyNACL != "" {
		res.DenyNACL = p.DenyNACL
	}
}

// ifaceView is what the network step changes on one interface.
type ifaceView struct {
	Groups                []string `json:"groups"`
	TCPEstablishedTimeout int32    `json:"tcp_established_timeout,omitempty"`
	UDPStreamTimeout      int32    `json:"udp_stream_timeout,omitempty"`
	UDPTimeout            int32    `json:"udp_timeout,omitempty"`
}

func readIface(ctx context.Context, c Clients, id string) (ifaceView, error) {
	is, err := readInterfaces(ctx, c, []string{id})
	if err != nil {
		return ifaceView{}, err
	}
	i := is[0]
	return ifaceView{Groups: i.Groups, TCPEstablishedTimeout: i.TCPEstablishedTimeout, UDPStreamTimeout: i.UDPStreamTimeout, UDPTimeout: i.UDPTimeout}, nil
}

func (r *runner) stepNetwork(ni InterfaceState) stepDef {
	d := stepDef{
		name:      StepNetworkPrefix + ni.ID,
		resources: []string{r.arn("ec2", "network-interface/"+ni.ID)},
		requires:  []string{StepAutoScaling, StepPrepare},
	}
	want := func() ifaceView {
		return ifaceView{Groups: []string{r.state.Resources.IsolationGroup},
			TCPEstablishedTimeout: MinTCPEstablishedTimeout, UDPStreamTimeout: MinUDPStreamTimeout, UDPTimeout: MinUDPTimeout}
	}
	d.want = func() any { return want() }
	d.read = func(ctx context.Context) (any, error) { return readIface(ctx, r.c, ni.ID) }
	d.done = func(cur any) bool { return sameJSON(cur, want()) }
	d.apply = func(ctx context.Context, cur any) (string, error) {
		v := cur.(ifaceView)
		w := want()
		var note string
		if !slices.Equal(v.Groups, w.Groups) {
			// Should the process die while the interface is open to all,
			// the saved State must let release and a re-run act on it.
			if err := r.savePending(ctx, d.name); err != nil {
				return "", err
			}
			// Untrack established flows first: only while inbound and
			// outbound allow everything from 0.0.0.0/0 and ::/0 are they
			// untracked, so the isolation group then cuts them.
			if _, err := r.c.EC2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
				NetworkInterfaceId: aws.String(ni.ID), Groups: []string{r.state.Resources.AllOpenGroup},
			}); err != nil {
				// A call cancelled or timed out on our side may still have
				// been applied: only go on as if it failed when AWS shows
				// the interface without the all-open group.
				sctx, cancel := settleContext(ctx)
				defer cancel()
				now, rerr := readIface(sctx, r.c, ni.ID)
				if rerr != nil {
					// Unknown: the interface may be open to all. The
					// isolation group is safe whatever it holds, so it is
					// applied now; flows may stay tracked, and the step
					// is recorded as failed saying so.
					if _, ierr := r.c.EC2.ModifyNetworkInterfaceAttribute(sctx, &ec2.ModifyNetworkInterfaceAttributeInput{
						NetworkInterfaceId: aws.String(ni.ID), Groups: w.Groups,
					}); ierr != nil {
						return "INTERFACE MAY BE OPEN TO ALL TRAFFIC", fmt.Errorf("interface %s: set all-open group %s: %w; reading it back failed (%v) and so did setting the isolation group (%v): check it at once and re-run", ni.ID, r.state.Resources.AllOpenGroup, classify(err), rerr, ierr)
					}
					return "all-open call failed and could not be read back: isolation group applied without untracking flows",
						fmt.Errorf("interface %s: set all-open group %s: %w; it could not be read back (%v), so the isolation group was applied at once: tracked flows may survive", ni.ID, r.state.Resources.AllOpenGroup, classify(err), rerr)
				}
				if !slices.Equal(now.Groups, []string{r.state.Resources.AllOpenGroup}) {
					return "", fmt.Errorf("interface %s: set all-open group %s: %w", ni.ID, r.state.Resources.AllOpenGroup, classify(err))
				}
				zerolog.Ctx(ctx).Warn().Str("network_interface_id", ni.ID).Err(err).Msg("all-open group applied although the call failed; isolating the interface")
			}
			note = fmt.Sprintf("groups %v -> all-open %s -> isolation %s", v.Groups, r.state.Resources.AllOpenGroup, r.state.Resources.IsolationGroup)
			if r.opts.UntrackWait > 0 {
				t := time.NewTimer(r.opts.UntrackWait)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
			// The interface is open to all traffic now: whatever happens to
			// ctx, it gets the isolation group (containment wins over
			// cancellation), or failing that its previous groups.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
			defer cancel()
			if _, err := r.c.EC2.ModifyNetworkInterfaceAttribute(fctx, &ec2.ModifyNetworkInterfaceAttributeInput{
				NetworkInterfaceId: aws.String(ni.ID), Groups: w.Groups,
			}); err != nil {
				if _, berr := r.c.EC2.ModifyNetworkInterfaceAttribute(fctx, &ec2.ModifyNetworkInterfaceAttributeInput{
					NetworkInterfaceId: aws.String(ni.ID), Groups: v.Groups,
				}); berr != nil {
					zerolog.Ctx(ctx).Error().Str("network_interface_id", ni.ID).Err(berr).Msg("interface left in the all-open group")
					return note + "; INTERFACE LEFT OPEN TO ALL TRAFFIC", fmt.Errorf("interface %s: set isolation group %s: %w; putting back its groups %v failed too (%v): it is open to all traffic, fix it at once", ni.ID, w.Groups[0], classify(err), v.Groups, berr)
				}
				return note + "; isolation group refused, previous groups put back", fmt.Errorf("interface %s: set isolation group %s: %w", ni.ID, w.Groups[0], classify(err))
			}
			if err := ctx.Err(); err != nil {
				return note + "; cancelled while flows were being untracked: isolation group applied at once, connection-tracking timeouts not lowered",
					fmt.Errorf("interface %s: cancelled after the all-open group was set (the isolation group was applied): %w", ni.ID, err)
			}
		}
		if v.TCPEstablishedTimeout != w.TCPEstablishedTimeout || v.UDPStreamTimeout != w.UDPStreamTimeout || v.UDPTimeout != w.UDPTimeout {
			if _, err := r.c.EC2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
				NetworkInterfaceId: aws.String(ni.ID),
				ConnectionTrackingSpecification: &ec2types.ConnectionTrackingSpecificationRequest{
					TcpEstablishedTimeout: aws.Int32(w.TCPEstablishedTimeout), UdpStreamTimeout: aws.Int32(w.UDPStreamTimeout), UdpTimeout: aws.Int32(w.UDPTimeout),
				},
			}); err != nil {
				return note, fmt.Errorf("interface %s: lower connection-tracking timeouts: %w", ni.ID, classify(err))
			}
		}
		return note, nil
	}
	return d
}

func (r *runner) stepNACL(subnet string) stepDef {
	d := stepDef{
		name:      StepNACLPrefix + subnet,
		resources: []string{r.arn("ec2", "subnet/"+subnet)},
		requires:  []string{StepAutoScaling, StepPrepare},
	}
	read := func(ctx context.Context) (NACLState, error) {
		s, err := readNACLs(ctx, r.c, []string{subnet})
		if err != nil {
			return NACLState{}, err
		}
		return s[0], nil
	}
	d.read = func(ctx context.Context) (any, error) { return read(ctx) }
	d.want = func() any { return NACLState{SubnetID: subnet, NetworkACLID: r.state.Resources.DenyNACL} }
	d.done = func(cur any) bool { return cur.(NACLState).NetworkACLID == r.state.Resources.DenyNACL }
	d.apply = func(ctx context.Context, cur any) (string, error) {
		c := cur.(NACLState)
		o := &r.state.Original
		if !slices.ContainsFunc(o.NetworkACLs, func(n NACLState) bool { return n.SubnetID == subnet }) {
			o.NetworkACLs = append(o.NetworkACLs, c)
		}
		if _, err := r.c.EC2.ReplaceNetworkAclAssociation(ctx, &ec2.ReplaceNetworkAclAssociationInput{
			AssociationId: aws.String(c.AssociationID), NetworkAclId: aws.String(r.state.Resources.DenyNACL),
		}); err != nil {
			return "", fmt.Errorf("subnet %s: associate deny-all network ACL %s: %w", subnet, r.state.Resources.DenyNACL, classify(err))
		}
		zerolog.Ctx(ctx).Warn().Str("subnet_id", subnet).Msg("deny-all network ACL now cuts every instance in this subnet")
		return fmt.Sprintf("WARNING: network ACL %s -> deny-all %s cuts every instance in subnet %s", c.NetworkACLID, r.state.Resources.DenyNACL, subnet), nil
	}
	return d
}

func (r *runner) stepElasticIPs() stepDef {
	o := &r.state.Original
	d := stepDef{name: StepElasticIPs, requires: []string{StepAutoScaling}}
	for _, e := range o.ElasticIPs {
		d.resources = append(d.resources, r.arn("ec2", "elastic-ip/"+e.AllocationID))
	}
	if len(o.ElasticIPs) == 0 {
		d.notApplicable = "no Elastic IPs"
		return d
	}
	enis := make([]string, len(o.Interfaces))
	for i, ni := range o.Interfaces {
		enis[i] = ni.ID
	}
	d.read = func(ctx context.Context) (any, error) {
		e, err := readEIPs(ctx, r.c, enis)
		if e == nil {
			e = []EIPState{}
		}
		return e, err
	}
	d.want = func() any { return []EIPState{} }
	d.done = func(cur any) bool { return len(cur.([]EIPState)) == 0 }
	d.apply = func(ctx context.Context, cur any) (string, error) {
		var errs []error
		for _, e := range cur.([]EIPState) {
			if _, err := r.c.EC2.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: aws.String(e.AssociationID)}); err != nil {
				errs = append(errs, fmt.Errorf("disassociate Elastic IP %s: %w", e.PublicIP, classify(err)))
			}
		}
		return "", errors.Join(errs...)
	}
	return d
}

// profileView is the current instance-profile association.
type profileView struct {
	AssociationID string `json:"association_id,omitempty"`
	ARN           string `json:"arn,omitempty"`
}

func readProfileView(ctx context.Context, c Clients, id string) (profileView, error) {
	p, err := readProfile(ctx, c, id)
	if err != nil || p == nil {
		return profileView{}, err
	}
	return profileView{AssociationID: p.AssociationID, ARN: p.ARN}, nil
}

func (r *runner) stepProfile() stepDef {
	id := r.state.InstanceID
	o := &r.state.Original
	d := stepDef{name: StepProfile, requires: []string{StepPrepare}}
	if o.Profile == nil {
		d.notApplicable = "no instance profile"
		return d
	}
	d.resources = []string{o.Profile.ARN}
	d.read = func(ctx context.Context) (any, error) { return readProfileView(ctx, r.c, id) }
	d.want = func() any { return profileView{ARN: r.state.Resources.IsolationProfile} }
	d.done = func(cur any) bool { return cur.(profileView).ARN == r.state.Resources.IsolationProfile }
	d.apply = func(ctx context.Context, cur any) (string, error) {
		if err := setProfile(ctx, r.c, id, cur.(profileView), r.state.Resources.IsolationProfile); err != nil {
			return "", err
		}
		// Taken after AWS accepted the replacement: revoke-sessions denies
		// every session issued before it.
		r.state.ProfileReplacedAt = r.opts.now()
		return "", nil
	}
	return d
}

// revokeCutoff is the earliest cut-off the inline deny may hold: the moment
// the profile association was replaced, or zero while it is not.
func (r *runner) revokeCutoff() time.Time {
	if t := r.state.ProfileReplacedAt; !t.IsZero() {
		return t
	}
	// Found replaced without impound recording when: the first time it
	// was seen so is after the replacement.
	for _, l := range r.state.Steps {
		if l.Name == StepProfile && (l.Status == StatusDone || l.Status == StatusAlready) {
			return l.At
		}
	}
	return time.Time{}
}

// setProfile makes arn the instance's profile ("" removes it).
func setProfile(ctx context.Context, c Clients, id string, cur profileView, arn string) error {
	var err error
	switch {
	case arn == "" && cur.AssociationID != "":
		_, err = c.EC2.DisassociateIamInstanceProfile(ctx, &ec2.DisassociateIamInstanceProfileInput{AssociationId: aws.String(cur.AssociationID)})
	case cur.AssociationID != "":
		_, err = c.EC2.ReplaceIamInstanceProfileAssociation(ctx, &ec2.ReplaceIamInstanceProfileAssociationInput{
			AssociationId: aws.String(cur.AssociationID), IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Arn: aws.String(arn)},
		})
	case arn != "":
		_, err = c.EC2.AssociateIamInstanceProfile(ctx, &ec2.AssociateIamInstanceProfileInput{
			InstanceId: aws.String(id), IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Arn: aws.String(arn)},
		})
	}
	if err != nil {
		return fmt.Errorf("instance %s: set instance profile %q: %w", id, arn, classify(err))
	}
	return nil
}

var policyNameDisallowed = regexp.MustCompile(`[^\w+=,.@-]`)

// DenyPolicyName is the inline policy impound puts on a role for a case.
func DenyPolicyName(caseID string) string {
	n := "impound-revoke-older-sessions-" + policyNameDisallowed.ReplaceAllString(caseID, "-")
	if len(n) > 128 {
		n = n[:128]
	}
	return n
}

// denyPolicy is the AWSRevokeOlderSessions pattern: deny everything to
// sessions whose token was issued before cutoff.
func denyPolicy(cutoff time.Time) string {
	doc := map[string]any{
		"Version": "2012-10-17",
		"Statement": []any{map[string]any{
			"Sid":       "ImpoundRevokeOlderSessions",
			"Effect":    "Deny",
			"Action":    []string{"*"},
			"Resource":  []string{"*"},
			"Condition": map[string]any{"DateLessThan": map[string]string{"aws:TokenIssueTime": cutoff.UTC().Format(time.RFC3339)}},
		}},
	}
	b, _ := json.Marshal(doc)
	return string(b)
}

// denyView says, per role, which cut-off its deny policy holds ("" = none).
type denyView map[string]string

func readDeny(ctx context.Context, c Clients, roles []string, name string) (denyView, error) {
	v := denyView{}
	for _, role := range roles {
		out, err := c.IAM.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String(role), PolicyName: aws.String(name)})
		if apiCode(err) == "NoSuchEntity" {
			v[role] = ""
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get inline policy %s of role %s: %w", name, role, classify(err))
		}
		v[role] = policyCutoff(aws.ToString(out.PolicyDocument))
	}
	return v, nil
}

// policyCutoff extracts aws:TokenIssueTime from a (possibly URL-encoded)
// policy document, or "present" when it holds none.
func policyCutoff(doc string) string {
	if strings.HasPrefix(doc, "%7B") || strings.HasPrefix(doc, "%7b") {
		if u, err := urlUnescape(doc); err == nil {
			doc = u
		}
	}
	var p struct {
		Statement []struct {
			Condition map[string]map[string]any
		}
	}
	if json.Unmarshal([]byte(doc), &p) == nil {
		for _, s := range p.Statement {
			if t, ok := s.Condition["DateLessThan"]["aws:TokenIssueTime"].(string); ok {
				return t
			}
		}
	}
	return "present"
}

func (r *runner) stepRevokeSessions() stepDef {
	o := &r.state.Original
	d := stepDef{name: StepRevokeSessions}
	if o.Profile == nil || len(o.Profile.Roles) == 0 {
		d.notApplicable = "no role to revoke sessions of"
		return d
	}
	name := DenyPolicyName(r.opts.CaseID)
	// A deny counts only if its cut-off is at or after the profile
	// replacement: until then the instance kept obtaining fresh credentials
	// for the old role, and an earlier cut-off (from a run in which the
	// profile step failed) would leave those valid.
	replaced := r.revokeCutoff()
	covers := func(t string) bool {
		if t == "" {
			return false
		}
		if replaced.IsZero() {
			return true
		}
		c, err := time.Parse(time.RFC3339, t)
		return err == nil && !c.Before(replaced)
	}
	d.resources = o.Profile.RoleARNs
	d.read = func(ctx context.Context) (any, error) { return readDeny(ctx, r.c, o.Profile.Roles, name) }
	d.done = func(cur any) bool {
		for _, t := range cur.(denyView) {
			if !covers(t) {
				return false
			}
		}
		return true
	}
	d.want = func() any {
		v := denyView{}
		for _, role := range o.Profile.Roles {
			v[role] = "(time the step runs, not before the instance profile was replaced)"
		}
		return v
	}
	d.apply = func(ctx context.Context, cur any) (string, error) {
		// The cut-off is taken after the profile was replaced, so every
		// credential the instance obtained from the old role is older.
		at := r.opts.now()
		if replaced.After(at) {
			at = replaced
		}
		cutoff := at.Truncate(time.Second).Add(time.Second)
		doc := denyPolicy(cutoff)
		var errs []error
		for role, t := range cur.(denyView) {
			if covers(t) {
				continue
			}
			if _, err := r.c.IAM.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String(role), PolicyName: aws.String(name), PolicyDocument: aws.String(doc)}); err != nil {
				errs = append(errs, fmt.Errorf("put inline deny %s on role %s: %w", name, role, classify(err)))
			}
		}
		r.state.Resources.DenyPolicyName = name
		note := fmt.Sprintf("sessions issued before %s denied (this machine's clock); other instances sharing the role are denied too until their metadata service hands them credentials issued after it, usually within minutes", cutoff.Format(time.RFC3339))
		if replaced.IsZero() {
			note += "; WARNING: the instance profile is not replaced yet, so the instance can still obtain new credentials for the role: a re-run that replaces it moves this cut-off forward"
		}
		return note, errors.Join(errs...)
	}
	return d
}

// tagTargets is the tags step over the instance and its volumes, with their IDs.
func (r *runner) tagTargets() (stepDef, []string) {
	id := r.state.InstanceID
	ids := []string{id}
	d := stepDef{name: StepTags, resources: []string{r.arn("ec2", "instance/"+id)}}
	for _, v := range r.state.Original.Volumes {
		ids = append(ids, v.VolumeID)
		d.resources = append(d.resources, r.arn("ec2", "volume/"+v.VolumeID))
	}
	return d, ids
}

func (r *runner) stepTags() stepDef {
	d, ids := r.tagTargets()
	status := "isolated"
	if r.failed > 0 || len(r.blocked) > 0 {
		status = "partially-isolated"
	}
	return r.tagStep(d, ids, status, r.state.IsolatedAt)
}

func (r *runner) tagStep(d stepDef, ids []string, status string, at time.Time) stepDef {
	want := tagView{}
	for _, id := range ids {
		want[id] = map[string]string{TagCase: r.state.CaseID, TagStatus: status, TagTime: at.UTC().Format(time.RFC3339)}
	}
	d.read = func(ctx context.Context) (any, error) { return readTags(ctx, r.c, ids) }
	d.want = func() any { return want }
	d.done = func(cur any) bool {
		v := cur.(tagView)
		for id, w := range want {
			for k, val := range w {
				if v[id][k] != val {
					return false
				}
			}
		}
		return true
	}
	d.apply = func(ctx context.Context, _ any) (string, error) {
		tags := []ec2types.Tag{}
		for k, v := range want[ids[0]] {
			tags = append(tags, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		slices.SortFunc(tags, func(a, b ec2types.Tag) int { return strings.Compare(*a.Key, *b.Key) })
		if _, err := r.c.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: ids, Tags: tags}); err != nil {
			return "", fmt.Errorf("tag %s: %w", strings.Join(ids, ","), classify(err))
		}
		return "", nil
	}
	return d
}
