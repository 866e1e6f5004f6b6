package isolate

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbv2types "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// This file reads the current state of everything isolation touches. Every
// step reads before and after it acts, through these functions.

// describeInstance returns the instance and its owner account.
func describeInstance(ctx context.Context, c Clients, id string) (*ec2types.Instance, string, error) {
	out, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		switch apiCode(err) {
		case "InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed":
			return nil, "", fmt.Errorf("instance %s: %w in Region %s (check --region and the account of --role-arn)", id, ErrInstanceNotFound, c.Region)
		}
		return nil, "", fmt.Errorf("describe instance %s: %w", id, classify(err))
	}
	for _, r := range out.Reservations {
		for i := range r.Instances {
			if aws.ToString(r.Instances[i].InstanceId) == id {
				return &r.Instances[i], aws.ToString(r.OwnerId), nil
			}
		}
	}
	return nil, "", fmt.Errorf("instance %s: %w in Region %s (check --region and the account of --role-arn)", id, ErrInstanceNotFound, c.Region)
}

// capture reads the instance's starting state; with nacl, also the network
// ACL association of each of its subnets.
func capture(ctx context.Context, c Clients, inst *ec2types.Instance, nacl bool) (Original, error) {
	id := aws.ToString(inst.InstanceId)
	o := Original{
		State:    string(inst.State.Name),
		VpcID:    aws.ToString(inst.VpcId),
		SubnetID: aws.ToString(inst.SubnetId),
		Tags:     map[string]string{},
	}
	for _, t := range inst.Tags {
		o.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	vpcs, err := c.EC2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{o.VpcID}})
	if err != nil {
		return o, fmt.Errorf("describe vpc %s: %w", o.VpcID, classify(err))
	}
	for _, v := range vpcs.Vpcs {
		o.DefaultVPC = aws.ToBool(v.IsDefault)
	}
	p, err := readProtection(ctx, c, id)
	if err != nil {
		return o, err
	}
	o.DisableAPITermination, o.ShutdownBehavior, o.Volumes = p.DisableAPITermination, p.ShutdownBehavior, p.Volumes

	for _, ni := range inst.NetworkInterfaces {
		for _, a := range ni.PrivateIpAddresses {
			o.PrivateIPs = append(o.PrivateIPs, aws.ToString(a.PrivateIpAddress))
		}
		for _, a := range ni.Ipv6Addresses {
			o.PrivateIPs = append(o.PrivateIPs, aws.ToString(a.Ipv6Address))
		}
	}
	enis := interfaceIDs(inst)
	ifs, err := readInterfaces(ctx, c, enis)
	if err != nil {
		return o, err
	}
	o.Interfaces = ifs
	if nacl {
		if o.NetworkACLs, err = readNACLs(ctx, c, subnets(ifs)); err != nil {
			return o, err
		}
	}
	if o.ElasticIPs, err = readEIPs(ctx, c, enis); err != nil {
		return o, err
	}
	if o.Profile, err = readProfile(ctx, c, id); err != nil {
		return o, err
	}
	if o.Profile != nil {
		if err := profileRoles(ctx, c, o.Profile); err != nil {
			return o, err
		}
	}
	if o.AutoScaling, err = readASG(ctx, c, id); err != nil {
		return o, err
	}
	lbs, err := readLoadBalancers(ctx, c, id, o.PrivateIPs)
	if err != nil {
		return o, err
	}
	o.TargetGroups, o.ClassicELBs = lbs.Targets, lbs.Classic
	return o, nil
}

func interfaceIDs(inst *ec2types.Instance) []string {
	type att struct {
		idx int32
		id  string
	}
	var as []att
	for _, ni := range inst.NetworkInterfaces {
		var idx int32
		if ni.Attachment != nil {
			idx = aws.ToInt32(ni.Attachment.DeviceIndex)
		}
		as = append(as, att{idx, aws.ToString(ni.NetworkInterfaceId)})
	}
	sort.Slice(as, func(i, j int) bool { return as[i].idx < as[j].idx })
	ids := make([]string, len(as))
	for i, a := range as {
		ids[i] = a.id
	}
	return ids
}

// protection is what the protect step changes.
type protection struct {
	DisableAPITermination bool          `json:"disable_api_termination"`
	ShutdownBehavior      string        `json:"shutdown_behavior"`
	Volumes               []VolumeState `json:"volumes"`
}

func readProtection(ctx context.Context, c Clients, id string) (protection, error) {
	var p protection
	dat, err := c.EC2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: &id, Attribute: ec2types.InstanceAttributeNameDisableApiTermination})
	if err != nil {
		return p, fmt.Errorf("describe instance %s attribute disableApiTermination: %w", id, classify(err))
	}
	if dat.DisableApiTermination != nil {
		p.DisableAPITermination = aws.ToBool(dat.DisableApiTermination.Value)
	}
	sb, err := c.EC2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: &id, Attribute: ec2types.InstanceAttributeNameInstanceInitiatedShutdownBehavior})
	if err != nil {
		return p, fmt.Errorf("describe instance %s attribute instanceInitiatedShutdownBehavior: %w", id, classify(err))
	}
	if sb.InstanceInitiatedShutdownBehavior != nil {
		p.ShutdownBehavior = aws.ToString(sb.InstanceInitiatedShutdownBehavior.Value)
	}
	inst, _, err := describeInstance(ctx, c, id)
	if err != nil {
		return p, err
	}
	for _, m := range inst.BlockDeviceMappings {
		if m.Ebs == nil {
			continue
		}
		p.Volumes = append(p.Volumes, VolumeState{
			DeviceName:          aws.ToString(m.DeviceName),
			VolumeID:            aws.ToString(m.Ebs.VolumeId),
			DeleteOnTermination: aws.ToBool(m.Ebs.DeleteOnTermination),
		})
	}
	sort.Slice(p.Volumes, func(i, j int) bool { return p.Volumes[i].DeviceName < p.Volumes[j].DeviceName })
	return p, nil
}

func readInterfaces(ctx context.Context, c Clients, ids []string) ([]InterfaceState, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	out, err := c.EC2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: ids})
	if err != nil {
		return nil, fmt.Errorf("describe network interfaces %s: %w", strings.Join(ids, ","), classify(err))
	}
	byID := map[string]InterfaceState{}
	for _, ni := range out.NetworkInterfaces {
		s := InterfaceState{ID: aws.ToString(ni.NetworkInterfaceId), SubnetID: aws.ToString(ni.SubnetId)}
		for _, g := range ni.Groups {
			s.Groups = append(s.Groups, aws.ToString(g.GroupId))
		}
		sort.Strings(s.Groups)
		for _, a := range ni.Ipv6Addresses {
			s.IPv6 = append(s.IPv6, aws.ToString(a.Ipv6Address))
		}
		if ct := ni.ConnectionTrackingConfiguration; ct != nil {
			s.TCPEstablishedTimeout = aws.ToInt32(ct.TcpEstablishedTimeout)
			s.UDPStreamTimeout = aws.ToInt32(ct.UdpStreamTimeout)
			s.UDPTimeout = aws.ToInt32(ct.UdpTimeout)
		}
		byID[s.ID] = s
	}
	res := make([]InterfaceState, 0, len(ids))
	for _, id := range ids {
		s, ok := byID[id]
		if !ok {
			return nil, fmt.Errorf("network interface %s: not found", id)
		}
		res = append(res, s)
	}
	return res, nil
}

func readEIPs(ctx context.Context, c Clients, enis []string) ([]EIPState, error) {
	if len(enis) == 0 {
		return nil, nil
	}
	out, err := c.EC2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{Filters: []ec2types.Filter{{Name: aws.String("network-interface-id"), Values: enis}}})
	if err != nil {
		return nil, fmt.Errorf("describe addresses: %w", classify(err))
	}
	var res []EIPState
	for _, a := range out.Addresses {
		eni := aws.ToString(a.NetworkInterfaceId)
		if eni == "" || !slices.Contains(enis, eni) {
			continue
		}
		res = append(res, EIPState{
			AllocationID:       aws.ToString(a.AllocationId),
			AssociationID:      aws.ToString(a.AssociationId),
			PublicIP:           aws.ToString(a.PublicIp),
			NetworkInterfaceID: eni,
			PrivateIP:          aws.ToString(a.PrivateIpAddress),
		})
	}
	sort.Slice(res, func(i, j int) bool { return res[i].AllocationID < res[j].AllocationID })
	return res, nil
}

func readProfile(ctx context.Context, c Clients, id string) (*ProfileState, error) {
	out, err := c.EC2.DescribeIamInstanceProfileAssociations(ctx, &ec2.DescribeIamInstanceProfileAssociationsInput{
		Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: []string{id}}},
	})
	if err != nil {
		return nil, fmt.Errorf("describe instance-profile associations of %s: %w", id, classify(err))
	}
	for _, a := range out.IamInstanceProfileAssociations {
		if aws.ToString(a.InstanceId) != id {
			continue
		}
		switch a.State {
		case ec2types.IamInstanceProfileAssociationStateAssociated, ec2types.IamInstanceProfileAssociationStateAssociating:
		default:
			continue
		}
		p := &ProfileState{AssociationID: aws.ToString(a.AssociationId)}
		if a.IamInstanceProfile != nil {
			p.ARN = aws.ToString(a.IamInstanceProfile.Arn)
		}
		return p, nil
	}
	return nil, nil
}

// profileName returns the name in an instance-profile ARN
// (arn:aws:iam::123:instance-profile/path/name).
func profileName(arn string) string {
	return arn[strings.LastIndex(arn, "/")+1:]
}

func profileRoles(ctx context.Context, c Clients, p *ProfileState) error {
	out, err := c.IAM.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(profileName(p.ARN))})
	if err != nil {
		return fmt.Errorf("get instance profile %s: %w", p.ARN, classify(err))
	}
	for _, r := range out.InstanceProfile.Roles {
		p.Roles = append(p.Roles, aws.ToString(r.RoleName))
		p.RoleARNs = append(p.RoleARNs, aws.ToString(r.Arn))
	}
	return nil
}

// asgView is the instance's current Auto Scaling membership.
type asgView struct {
	GroupName      string `json:"group_name,omitempty"`
	LifecycleState string `json:"lifecycle_state,omitempty"`
}

func readASG(ctx context.Context, c Clients, id string) (*ASGState, error) {
	v, err := readASGView(ctx, c, id)
	if err != nil || v.GroupName == "" {
		return nil, err
	}
	s := &ASGState{GroupName: v.GroupName, LifecycleState: v.LifecycleState}
	out, err := c.AutoScaling.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{v.GroupName}})
	if err != nil {
		return nil, fmt.Errorf("describe auto scaling group %s: %w", v.GroupName, classify(err))
	}
	for _, g := range out.AutoScalingGroups {
		s.MinSize = aws.ToInt32(g.MinSize)
		s.DesiredCapacity = aws.ToInt32(g.DesiredCapacity)
	}
	return s, nil
}

func readASGView(ctx context.Context, c Clients, id string) (asgView, error) {
	out, err := c.AutoScaling.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return asgView{}, fmt.Errorf("describe auto scaling instance %s: %w", id, classify(err))
	}
	for _, i := range out.AutoScalingInstances {
		if aws.ToString(i.InstanceId) == id {
			return asgView{GroupName: aws.ToString(i.AutoScalingGroupName), LifecycleState: aws.ToString(i.LifecycleState)}, nil
		}
	}
	return asgView{}, nil
}

// lbView lists the load balancers that route to the instance now.
type lbView struct {
	Targets []TargetState `json:"target_groups"`
	Classic []string      `json:"classic_elbs"`
}

// readLoadBalancers finds every registration of the instance: instance
// targets by ID, IP targets by any of its addresses, and classic ELBs.
// Targets already draining count as deregistered.
func readLoadBalancers(ctx context.Context, c Clients, id string, ips []string) (lbView, error) {
	v := lbView{Targets: []TargetState{}, Classic: []string{}}
	p := elbv2.NewDescribeTargetGroupsPaginator(c.ELBv2, &elbv2.DescribeTargetGroupsInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return v, fmt.Errorf("describe target groups: %w", classify(err))
		}
		for _, tg := range page.TargetGroups {
			switch tg.TargetType {
			case elbv2types.TargetTypeEnumInstance, elbv2types.TargetTypeEnumIp, "":
			default:
				continue
			}
			arn := aws.ToString(tg.TargetGroupArn)
			h, err := c.ELBv2.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: &arn})
			if err != nil {
				return v, fmt.Errorf("describe target health of %s: %w", arn, classify(err))
			}
			for _, d := range h.TargetHealthDescriptions {
				if d.Target == nil {
					continue
				}
				tid := aws.ToString(d.Target.Id)
				if tid != id && !slices.Contains(ips, tid) {
					continue
				}
				if d.TargetHealth != nil {
					switch d.TargetHealth.State {
					case elbv2types.TargetHealthStateEnumDraining, elbv2types.TargetHealthStateEnumUnused:
						continue
					}
				}
				v.Targets = append(v.Targets, TargetState{
					TargetGroupARN: arn, ID: tid, Port: aws.ToInt32(d.Target.Port),
					AvailabilityZone: aws.ToString(d.Target.AvailabilityZone),
				})
			}
		}
	}
	cp := elb.NewDescribeLoadBalancersPaginator(c.ELB, &elb.DescribeLoadBalancersInput{})
	for cp.HasMorePages() {
		page, err := cp.NextPage(ctx)
		if err != nil {
			return v, fmt.Errorf("describe classic load balancers: %w", classify(err))
		}
		for _, lb := range page.LoadBalancerDescriptions {
			for _, i := range lb.Instances {
				if aws.ToString(i.InstanceId) == id {
					v.Classic = append(v.Classic, aws.ToString(lb.LoadBalancerName))
				}
			}
		}
	}
	sort.Slice(v.Targets, func(i, j int) bool {
		a, b := v.Targets[i], v.Targets[j]
		if a.TargetGroupARN != b.TargetGroupARN {
			return a.TargetGroupARN < b.TargetGroupARN
		}
		return a.ID+fmt.Sprint(a.Port) < b.ID+fmt.Sprint(b.Port)
	})
	sort.Strings(v.Classic)
	return v, nil
}

// readNACLs returns the network ACL association of each subnet.
func readNACLs(ctx context.Context, c Clients, subnets []string) ([]NACLState, error) {
	out, err := c.EC2.DescribeNetworkAcls(ctx, &ec2.DescribeNetworkAclsInput{
		Filters: []ec2types.Filter{{Name: aws.String("association.subnet-id"), Values: subnets}},
	})
	if err != nil {
		return nil, fmt.Errorf("describe network ACLs: %w", classify(err))
	}
	var res []NACLState
	for _, sn := range subnets {
		found := false
		for _, acl := range out.NetworkAcls {
			for _, a := range acl.Associations {
				if aws.ToString(a.SubnetId) == sn {
					res = append(res, NACLState{SubnetID: sn, NetworkACLID: aws.ToString(acl.NetworkAclId), AssociationID: aws.ToString(a.NetworkAclAssociationId)})
					found = true
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("subnet %s: no network ACL association found", sn)
		}
	}
	return res, nil
}

// tagView holds impound's tags on each resource.
type tagView map[string]map[string]string

func readTags(ctx context.Context, c Clients, ids []string) (tagView, error) {
	v := tagView{}
	for _, id := range ids {
		v[id] = map[string]string{}
	}
	// DescribeTags is not needed: instances and volumes carry their tags.
	inst, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids[:1]})
	if err != nil {
		return nil, fmt.Errorf("describe instance tags: %w", classify(err))
	}
	for _, r := range inst.Reservations {
		for _, i := range r.Instances {
			for _, t := range i.Tags {
				if strings.HasPrefix(aws.ToString(t.Key), "impound:") {
					v[aws.ToString(i.InstanceId)][aws.ToString(t.Key)] = aws.ToString(t.Value)
				}
			}
		}
	}
	if len(ids) > 1 {
		vols, err := c.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: ids[1:]})
		if err != nil {
			return nil, fmt.Errorf("describe volume tags: %w", classify(err))
		}
		for _, vol := range vols.Volumes {
			for _, t := range vol.Tags {
				if strings.HasPrefix(aws.ToString(t.Key), "impound:") {
					v[aws.ToString(vol.VolumeId)][aws.ToString(t.Key)] = aws.ToString(t.Value)
				}
			}
		}
	}
	return v, nil
}
