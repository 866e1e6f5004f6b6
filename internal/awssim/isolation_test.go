package awssim_test

import (
	"context"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing/types"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbv2types "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/impound-ir/impound/internal/awssim"
)

// ruleKeys summarises a group's permissions as "proto/from-to/peer".
func ruleKeys(ps []ec2types.IpPermission) []string {
	var out []string
	for _, p := range ps {
		base := aws.ToString(p.IpProtocol) + "/" + itoa(p.FromPort) + "-" + itoa(p.ToPort) + "/"
		for _, r := range p.IpRanges {
			out = append(out, base+aws.ToString(r.CidrIp))
		}
		for _, r := range p.Ipv6Ranges {
			out = append(out, base+aws.ToString(r.CidrIpv6))
		}
		for _, r := range p.PrefixListIds {
			out = append(out, base+aws.ToString(r.PrefixListId))
		}
		for _, r := range p.UserIdGroupPairs {
			out = append(out, base+aws.ToString(r.GroupId))
		}
	}
	sort.Strings(out)
	return out
}

func itoa(p *int32) string {
	if p == nil {
		return "*"
	}
	return strconv.Itoa(int(*p))
}

func TestSecurityGroupLifecycle(t *testing.T) {
	e := newDemoEnv(t)
	d := e.demo
	ctx := context.Background()
	c := ec2.NewFromConfig(e.cfg(e.member))
	sg := must[*ec2.CreateSecurityGroupOutput](t)(c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("impound-isolation"),
		Description: aws.String("isolation"), VpcId: &d.VPCID, TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSecurityGroup,
			Tags: []ec2types.Tag{{Key: aws.String("impound:managed"), Value: aws.String("true")}}}}}))
	id := aws.ToString(sg.GroupId)
	_, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("impound-isolation"), Description: aws.String("x"), VpcId: &d.VPCID})
	wantCode(t, err, "InvalidGroup.Duplicate")

	describe := func() ec2types.SecurityGroup {
		t.Helper()
		out := must[*ec2.DescribeSecurityGroupsOutput](t)(c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{ec2Filter("tag:impound:managed", "true"), ec2Filter("vpc-id", d.VPCID)}}))
		if len(out.SecurityGroups) != 1 {
			t.Fatalf("%d groups by tag", len(out.SecurityGroups))
		}
		return out.SecurityGroups[0]
	}
	g := describe()
	if got := ruleKeys(g.IpPermissionsEgress); !slices.Equal(got, []string{"-1/*-*/0.0.0.0/0"}) || len(g.IpPermissions) != 0 {
		t.Fatalf("new group: egress %v ingress %v; want AWS's default egress rule only", got, g.IpPermissions)
	}

	// Revoke the default egress, allow only HTTPS to the S3 prefix list and
	// an IPv6 range.
	must[*ec2.RevokeSecurityGroupEgressOutput](t)(c.RevokeSecurityGroupEgress(ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: &id,
		IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("-1"), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}}))
	pl := must[*ec2.DescribePrefixListsOutput](t)(c.DescribePrefixLists(ctx, &ec2.DescribePrefixListsInput{Filters: []ec2types.Filter{ec2Filter("prefix-list-name", "com.amazonaws.eu-west-1.s3")}}))
	if len(pl.PrefixLists) != 1 {
		t.Fatalf("prefix lists %+v", pl.PrefixLists)
	}
	plID := aws.ToString(pl.PrefixLists[0].PrefixListId)
	auth := must[*ec2.AuthorizeSecurityGroupEgressOutput](t)(c.AuthorizeSecurityGroupEgress(ctx, &ec2.AuthorizeSecurityGroupEgressInput{GroupId: &id,
		IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(443), ToPort: aws.Int32(443),
			PrefixListIds: []ec2types.PrefixListId{{PrefixListId: &plID}}, Ipv6Ranges: []ec2types.Ipv6Range{{CidrIpv6: aws.String("2001:db8::/32")}}}}}))
	if len(auth.SecurityGroupRules) != 2 || !aws.ToBool(auth.SecurityGroupRules[0].IsEgress) || !strings.HasPrefix(aws.ToString(auth.SecurityGroupRules[0].SecurityGroupRuleId), "sgr-") {
		t.Errorf("authorize rules %+v", auth.SecurityGroupRules)
	}
	_, err = c.AuthorizeSecurityGroupEgress(ctx, &ec2.AuthorizeSecurityGroupEgressInput{GroupId: &id,
		IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(443), ToPort: aws.Int32(443),
			PrefixListIds: []ec2types.PrefixListId{{PrefixListId: &plID}}}}})
	wantCode(t, err, "InvalidPermission.Duplicate")
	must[*ec2.AuthorizeSecurityGroupIngressOutput](t)(c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &id,
		IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22),
			UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: &d.AppGroupID}}}}}))
	g = describe()
	if got := ruleKeys(g.IpPermissionsEgress); !slices.Equal(got, []string{"tcp/443-443/2001:db8::/32", "tcp/443-443/" + plID}) {
		t.Errorf("egress %v", got)
	}
	if got := ruleKeys(g.IpPermissions); !slices.Equal(got, []string{"tcp/22-22/" + d.AppGroupID}) {
		t.Errorf("ingress %v", got)
	}
	rules := must[*ec2.DescribeSecurityGroupRulesOutput](t)(c.DescribeSecurityGroupRules(ctx, &ec2.DescribeSecurityGroupRulesInput{Filters: []ec2types.Filter{ec2Filter("group-id", id)}}))
	if len(rules.SecurityGroupRules) != 3 {
		t.Errorf("%d rules", len(rules.SecurityGroupRules))
	}
	_, err = c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: &id,
		IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}})
	wantCode(t, err, "InvalidPermission.NotFound")
	// In the default VPC, AWS answers success and lists the unknown rule.
	defVPC, _ := e.member.DefaultVPC()
	rv := must[*ec2.RevokeSecurityGroupIngressOutput](t)(c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: &defVPC.DefaultSecurityGroupID,
		IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}}))
	if got := ruleKeys(rv.UnknownIpPermissions); !slices.Equal(got, []string{"tcp/80-80/0.0.0.0/0"}) {
		t.Errorf("default VPC revoke of an unknown rule: unknown %v", got)
	}

	// Swap the instance's primary interface into the group; the group
	// cannot be deleted while in use, nor the app group it references.
	must[*ec2.ModifyNetworkInterfaceAttributeOutput](t)(c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: &d.NetworkInterfaceIDs[0], Groups: []string{id}}))
	ni := must[*ec2.DescribeNetworkInterfacesOutput](t)(c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: d.NetworkInterfaceIDs[:1]}))
	if got := groupIDs(ni.NetworkInterfaces[0].Groups); !slices.Equal(got, []string{id}) {
		t.Errorf("groups after modify %v", got)
	}
	_, err = c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &d.NetworkInterfaceIDs[0], Groups: []string{"sg-0123456789abcdef0"}})
	wantCode(t, err, "InvalidGroup.NotFound")
	_, err = c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: &id})
	wantCode(t, err, "DependencyViolation")
	must[*ec2.ModifyNetworkInterfaceAttributeOutput](t)(c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: &d.NetworkInterfaceIDs[0], Groups: []string{d.WebGroupID, d.AppGroupID}}))
	must[*ec2.DeleteSecurityGroupOutput](t)(c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: &id}))
	_, err = c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{id}})
	wantCode(t, err, "InvalidGroup.NotFound")

	// groupSet through ModifyInstanceAttribute needs a single interface.
	_, err = c.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: &d.InstanceID, Groups: []string{d.AppGroupID}})
	wantCode(t, err, "InvalidInstanceID")
	must[*ec2.ModifyInstanceAttributeOutput](t)(c.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: &d.SecondInstanceID, Groups: []string{d.AppGroupID}}))
	ga := must[*ec2.DescribeInstanceAttributeOutput](t)(c.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: &d.SecondInstanceID,
		Attribute: ec2types.InstanceAttributeNameGroupSet}))
	if got := groupIDs(ga.Groups); !slices.Equal(got, []string{d.AppGroupID}) {
		t.Errorf("groupSet %v", got)
	}
}

func TestNetworkACLs(t *testing.T) {
	e := newDemoEnv(t)
	d := e.demo
	ctx := context.Background()
	c := ec2.NewFromConfig(e.cfg(e.member))
	bySubnet := func() ec2types.NetworkAcl {
		t.Helper()
		out := must[*ec2.DescribeNetworkAclsOutput](t)(c.DescribeNetworkAcls(ctx, &ec2.DescribeNetworkAclsInput{Filters: []ec2types.Filter{ec2Filter("association.subnet-id", d.SubnetID)}}))
		if len(out.NetworkAcls) != 1 {
			t.Fatalf("%d ACLs for the subnet", len(out.NetworkAcls))
		}
		return out.NetworkAcls[0]
	}
	def := bySubnet()
	if !aws.ToBool(def.IsDefault) || len(def.Entries) != 8 {
		t.Fatalf("default ACL %+v", def)
	}
	var assoc string
	for _, a := range def.Associations {
		if aws.ToString(a.SubnetId) == d.SubnetID {
			assoc = aws.ToString(a.NetworkAclAssociationId)
		}
	}
	acl := must[*ec2.CreateNetworkAclOutput](t)(c.CreateNetworkAcl(ctx, &ec2.CreateNetworkAclInput{VpcId: &d.VPCID}))
	aclID := aws.ToString(acl.NetworkAcl.NetworkAclId)
	var deny []string
	for _, en := range acl.NetworkAcl.Entries {
		deny = append(deny, string(en.RuleAction)+"/"+itoa(en.RuleNumber)+"/"+aws.ToString(en.CidrBlock)+aws.ToString(en.Ipv6CidrBlock))
	}
	sort.Strings(deny)
	if !slices.Equal(deny, []string{"deny/32767/0.0.0.0/0", "deny/32767/0.0.0.0/0", "deny/32768/::/0", "deny/32768/::/0"}) {
		t.Errorf("new ACL entries %v", deny)
	}
	must[*ec2.CreateNetworkAclEntryOutput](t)(c.CreateNetworkAclEntry(ctx, &ec2.CreateNetworkAclEntryInput{NetworkAclId: &aclID, RuleNumber: aws.Int32(100),
		Protocol: aws.String("6"), RuleAction: ec2types.RuleActionAllow, Egress: aws.Bool(true), CidrBlock: aws.String("10.0.0.0/16"),
		PortRange: &ec2types.PortRange{From: aws.Int32(443), To: aws.Int32(443)}}))
	_, err := c.CreateNetworkAclEntry(ctx, &ec2.CreateNetworkAclEntryInput{NetworkAclId: &aclID, RuleNumber: aws.Int32(100),
		Protocol: aws.String("-1"), RuleAction: ec2types.RuleActionDeny, Egress: aws.Bool(true), CidrBlock: aws.String("0.0.0.0/0")})
	wantCode(t, err, "NetworkAclEntryAlreadyExists")
	rep := must[*ec2.ReplaceNetworkAclAssociationOutput](t)(c.ReplaceNetworkAclAssociation(ctx, &ec2.ReplaceNetworkAclAssociationInput{AssociationId: &assoc, NetworkAclId: &aclID}))
	now := bySubnet()
	if aws.ToString(now.NetworkAclId) != aclID || aws.ToString(now.Associations[0].NetworkAclAssociationId) != aws.ToString(rep.NewAssociationId) {
		t.Fatalf("subnet now in %s (%+v)", aws.ToString(now.NetworkAclId), now.Associations)
	}
	_, err = c.ReplaceNetworkAclAssociation(ctx, &ec2.ReplaceNetworkAclAssociationInput{AssociationId: &assoc, NetworkAclId: def.NetworkAclId})
	wantCode(t, err, "InvalidAssociationID.NotFound")
	must[*ec2.ReplaceNetworkAclAssociationOutput](t)(c.ReplaceNetworkAclAssociation(ctx, &ec2.ReplaceNetworkAclAssociationInput{AssociationId: rep.NewAssociationId, NetworkAclId: def.NetworkAclId}))
	if got := aws.ToString(bySubnet().NetworkAclId); got != aws.ToString(def.NetworkAclId) {
		t.Errorf("restored to %s", got)
	}
}

func TestElasticIPs(t *testing.T) {
	e := newDemoEnv(t)
	d := e.demo
	ctx := context.Background()
	c := ec2.NewFromConfig(e.cfg(e.member))
	byENI := must[*ec2.DescribeAddressesOutput](t)(c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{Filters: []ec2types.Filter{ec2Filter("network-interface-id", d.NetworkInterfaceIDs...)}}))
	if len(byENI.Addresses) != 1 || aws.ToString(byENI.Addresses[0].InstanceId) != d.InstanceID || aws.ToString(byENI.Addresses[0].PublicIp) != d.PublicIP {
		t.Fatalf("addresses %+v", byENI.Addresses)
	}
	assoc := aws.ToString(byENI.Addresses[0].AssociationId)
	must[*ec2.DisassociateAddressOutput](t)(c.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: &assoc}))
	_, err := c.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: &assoc})
	wantCode(t, err, "InvalidAssociationID.NotFound")
	inst := must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{d.InstanceID}}))
	if ip := aws.ToString(inst.Reservations[0].Instances[0].PublicIpAddress); ip != "" {
		t.Errorf("public IP %s after disassociation", ip)
	}
	// Several interfaces: AWS wants the interface, not the instance.
	_, err = c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: &d.AllocationID, InstanceId: &d.InstanceID})
	wantCode(t, err, "InvalidInstanceID")
	re := must[*ec2.AssociateAddressOutput](t)(c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: &d.AllocationID, NetworkInterfaceId: &d.NetworkInterfaceIDs[0]}))
	alloc := must[*ec2.AllocateAddressOutput](t)(c.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc}))
	_, err = c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: &d.AllocationID, InstanceId: &d.SecondInstanceID})
	wantCode(t, err, "Resource.AlreadyAssociated")
	must[*ec2.AssociateAddressOutput](t)(c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId, InstanceId: &d.SecondInstanceID}))
	all := must[*ec2.DescribeAddressesOutput](t)(c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{}))
	got := map[string]string{}
	for _, a := range all.Addresses {
		got[aws.ToString(a.AllocationId)] = aws.ToString(a.InstanceId) + "/" + aws.ToString(a.AssociationId)
	}
	if got[d.AllocationID] != d.InstanceID+"/"+aws.ToString(re.AssociationId) || !strings.HasPrefix(got[aws.ToString(alloc.AllocationId)], d.SecondInstanceID+"/eipassoc-") {
		t.Errorf("addresses %v", got)
	}
}

func TestInstanceAttributesAndTermination(t *testing.T) {
	e := newDemoEnv(t)
	d := e.demo
	ctx := context.Background()
	c := ec2.NewFromConfig(e.cfg(e.member))
	attr := func(a ec2types.InstanceAttributeName) *ec2.DescribeInstanceAttributeOutput {
		return must[*ec2.DescribeInstanceAttributeOutput](t)(c.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: &d.InstanceID, Attribute: a}))
	}
	if v := attr(ec2types.InstanceAttributeNameDisableApiTermination); aws.ToBool(v.DisableApiTermination.Value) {
		t.Error("termination protection on by default")
	}
	if v := attr(ec2types.InstanceAttributeNameInstanceInitiatedShutdownBehavior); aws.ToString(v.InstanceInitiatedShutdownBehavior.Value) != "stop" {
		t.Errorf("shutdown behaviour %v", aws.ToString(v.InstanceInitiatedShutdownBehavior.Value))
	}
	must[*ec2.ModifyInstanceAttributeOutput](t)(c.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: &d.InstanceID,
		DisableApiTermination: &ec2types.AttributeBooleanValue{Value: aws.Bool(true)}}))
	must[*ec2.ModifyInstanceAttributeOutput](t)(c.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: &d.InstanceID,
		InstanceInitiatedShutdownBehavior: &ec2types.AttributeValue{Value: aws.String("stop")}}))
	_, err := c.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: &d.InstanceID,
		InstanceInitiatedShutdownBehavior: &ec2types.AttributeValue{Value: aws.String("explode")}})
	wantCode(t, err, "InvalidParameterValue")
	// Keep the root volume if the instance is terminated.
	must[*ec2.ModifyInstanceAttributeOutput](t)(c.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: &d.InstanceID,
		BlockDeviceMappings: []ec2types.InstanceBlockDeviceMappingSpecification{{DeviceName: aws.String("/dev/xvda"), Ebs: &ec2types.EbsInstanceBlockDeviceSpecification{DeleteOnTermination: aws.Bool(false)}}}}))
	bdm := attr(ec2types.InstanceAttributeNameBlockDeviceMapping)
	for _, b := range bdm.BlockDeviceMappings {
		if aws.ToBool(b.Ebs.DeleteOnTermination) {
			t.Errorf("%s still DeleteOnTermination", aws.ToString(b.DeviceName))
		}
	}
	if v := attr(ec2types.InstanceAttributeNameDisableApiTermination); !aws.ToBool(v.DisableApiTermination.Value) {
		t.Error("termination protection not set")
	}
	_, err = c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{d.InstanceID}})
	wantCode(t, err, "OperationNotPermitted")

	// web-2 is unprotected: its root volume (DeleteOnTermination) goes,
	// it leaves its Auto Scaling group and target group.
	inst := must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{d.SecondInstanceID}}))
	rootVol := aws.ToString(inst.Reservations[0].Instances[0].BlockDeviceMappings[0].Ebs.VolumeId)
	term := must[*ec2.TerminateInstancesOutput](t)(c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{d.SecondInstanceID}}))
	if term.TerminatingInstances[0].PreviousState.Name != ec2types.InstanceStateNameRunning || term.TerminatingInstances[0].CurrentState.Name != ec2types.InstanceStateNameShuttingDown {
		t.Errorf("terminate %+v", term.TerminatingInstances[0])
	}
	_, err = c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{rootVol}})
	wantCode(t, err, "InvalidVolume.NotFound")
	inst = must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{d.SecondInstanceID}}))
	if st := inst.Reservations[0].Instances[0].State.Name; st != ec2types.InstanceStateNameTerminated {
		t.Errorf("state %s", st)
	}
	asi := must[*autoscaling.DescribeAutoScalingInstancesOutput](t)(autoscaling.NewFromConfig(e.cfg(e.member)).DescribeAutoScalingInstances(ctx,
		&autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{d.SecondInstanceID}}))
	if len(asi.AutoScalingInstances) != 0 {
		t.Errorf("terminated instance still in group: %+v", asi.AutoScalingInstances)
	}
}

func TestInstanceProfileAssociations(t *testing.T) {
	e := newDemoEnv(t)
	d := e.demo
	ctx := context.Background()
	c := ec2.NewFromConfig(e.cfg(e.member))
	list := func() []ec2types.IamInstanceProfileAssociation {
		out := must[*ec2.DescribeIamInstanceProfileAssociationsOutput](t)(c.DescribeIamInstanceProfileAssociations(ctx, &ec2.DescribeIamInstanceProfileAssociationsInput{
			Filters: []ec2types.Filter{ec2Filter("instance-id", d.InstanceID)}}))
		return out.IamInstanceProfileAssociations
	}
	as := list()
	if len(as) != 1 || aws.ToString(as[0].IamInstanceProfile.Arn) != d.InstanceProfileARN || as[0].State != ec2types.IamInstanceProfileAssociationStateAssociated {
		t.Fatalf("associations %+v", as)
	}
	_, err := c.AssociateIamInstanceProfile(ctx, &ec2.AssociateIamInstanceProfileInput{InstanceId: &d.InstanceID,
		IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Name: aws.String("web-app")}})
	wantCode(t, err, "IncorrectState")
	// Replace with a deny-all profile, then put the original back.
	if _, err := e.member.CreateRole(awssim.RoleOptions{Name: "impound-quarantine"}); err != nil {
		t.Fatal(err)
	}
	qarn, err := e.member.CreateInstanceProfile("impound-quarantine", "impound-quarantine")
	if err != nil {
		t.Fatal(err)
	}
	rep := must[*ec2.ReplaceIamInstanceProfileAssociationOutput](t)(c.ReplaceIamInstanceProfileAssociation(ctx, &ec2.ReplaceIamInstanceProfileAssociationInput{
		AssociationId: as[0].AssociationId, IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Arn: &qarn}}))
	if aws.ToString(rep.IamInstanceProfileAssociation.IamInstanceProfile.Arn) != qarn {
		t.Errorf("replace %+v", rep.IamInstanceProfileAssociation)
	}
	_, err = c.ReplaceIamInstanceProfileAssociation(ctx, &ec2.ReplaceIamInstanceProfileAssociationInput{
		AssociationId: as[0].AssociationId, IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Arn: &qarn}})
	wantCode(t, err, "InvalidAssociationID.NotFound")
	inst := must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{d.InstanceID}}))
	if aws.ToString(inst.Reservations[0].Instances[0].IamInstanceProfile.Arn) != qarn {
		t.Errorf("instance profile after replace %+v", inst.Reservations[0].Instances[0].IamInstanceProfile)
	}
	dis := must[*ec2.DisassociateIamInstanceProfileOutput](t)(c.DisassociateIamInstanceProfile(ctx, &ec2.DisassociateIamInstanceProfileInput{AssociationId: rep.IamInstanceProfileAssociation.AssociationId}))
	if dis.IamInstanceProfileAssociation.State != ec2types.IamInstanceProfileAssociationStateDisassociating || len(list()) != 0 {
		t.Errorf("disassociate %+v, left %+v", dis.IamInstanceProfileAssociation, list())
	}
	_, err = c.AssociateIamInstanceProfile(ctx, &ec2.AssociateIamInstanceProfileInput{InstanceId: &d.InstanceID,
		IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Name: aws.String("no-such-profile")}})
	wantCode(t, err, "InvalidParameterValue")
	must[*ec2.AssociateIamInstanceProfileOutput](t)(c.AssociateIamInstanceProfile(ctx, &ec2.AssociateIamInstanceProfileInput{InstanceId: &d.InstanceID,
		IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Name: aws.String("web-app")}}))
	if as := list(); len(as) != 1 || aws.ToString(as[0].IamInstanceProfile.Arn) != d.InstanceProfileARN {
		t.Errorf("re-associated %+v", as)
	}
}

func TestAutoScalingStandbyAndLoadBalancers(t *testing.T) {
	e := newDemoEnv(t)
	d := e.demo
	ctx := context.Background()
	as := autoscaling.NewFromConfig(e.cfg(e.member))
	v2 := elasticloadbalancingv2.NewFromConfig(e.cfg(e.member))
	clb := elasticloadbalancing.NewFromConfig(e.cfg(e.member))
	state := func(id string) string {
		t.Helper()
		out := must[*autoscaling.DescribeAutoScalingInstancesOutput](t)(as.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{id}}))
		if len(out.AutoScalingInstances) == 0 {
			return "detached"
		}
		return aws.ToString(out.AutoScalingInstances[0].AutoScalingGroupName) + "/" + aws.ToString(out.AutoScalingInstances[0].LifecycleState)
	}
	health := func(id string) string {
		t.Helper()
		out := must[*elasticloadbalancingv2.DescribeTargetHealthOutput](t)(v2.DescribeTargetHealth(ctx, &elasticloadbalancingv2.DescribeTargetHealthInput{
			TargetGroupArn: &d.TargetGroupARN, Targets: []elbv2types.TargetDescription{{Id: &id}}}))
		return string(out.TargetHealthDescriptions[0].TargetHealth.State)
	}
	inCLB := func(id string) bool {
		t.Helper()
		out := must[*elasticloadbalancing.DescribeLoadBalancersOutput](t)(clb.DescribeLoadBalancers(ctx, &elasticloadbalancing.DescribeLoadBalancersInput{LoadBalancerNames: []string{d.LoadBalancerName}}))
		return slices.ContainsFunc(out.LoadBalancerDescriptions[0].Instances, func(i elbtypes.Instance) bool { return aws.ToString(i.InstanceId) == id })
	}
	desired := func() int32 {
		out := must[*autoscaling.DescribeAutoScalingGroupsOutput](t)(as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{d.AutoScalingGroupName}}))
		return aws.ToInt32(out.AutoScalingGroups[0].DesiredCapacity)
	}
	if s := state(d.InstanceID); s != "web/InService" || health(d.InstanceID) != "healthy" || !inCLB(d.InstanceID) || desired() != 2 {
		t.Fatalf("seeded: %s, %s, in CLB %t, desired %d", s, health(d.InstanceID), inCLB(d.InstanceID), desired())
	}
	tgs := must[*elasticloadbalancingv2.DescribeTargetGroupsOutput](t)(v2.DescribeTargetGroups(ctx, &elasticloadbalancingv2.DescribeTargetGroupsInput{}))
	if len(tgs.TargetGroups) != 1 || aws.ToString(tgs.TargetGroups[0].TargetGroupArn) != d.TargetGroupARN || aws.ToInt32(tgs.TargetGroups[0].Port) != 443 {
		t.Errorf("target groups %+v", tgs.TargetGroups)
	}

	// (The SDK itself refuses a missing ShouldDecrementDesiredCapacity.)
	_, err := as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: &d.AutoScalingGroupName, InstanceIds: []string{"i-0123456789abcdef0"},
		ShouldDecrementDesiredCapacity: aws.Bool(true)})
	wantCode(t, err, "ValidationError")
	sb := must[*autoscaling.EnterStandbyOutput](t)(as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: &d.AutoScalingGroupName,
		InstanceIds: []string{d.InstanceID}, ShouldDecrementDesiredCapacity: aws.Bool(true)}))
	if len(sb.Activities) != 1 || !strings.Contains(aws.ToString(sb.Activities[0].Description), d.InstanceID) {
		t.Errorf("activities %+v", sb.Activities)
	}
	if s := state(d.InstanceID); s != "web/Standby" || health(d.InstanceID) != "draining" || inCLB(d.InstanceID) || desired() != 1 {
		t.Errorf("standby: %s, %s, in CLB %t, desired %d", s, health(d.InstanceID), inCLB(d.InstanceID), desired())
	}
	_, err = as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: &d.AutoScalingGroupName,
		InstanceIds: []string{d.InstanceID}, ShouldDecrementDesiredCapacity: aws.Bool(true)})
	wantCode(t, err, "ValidationError")
	must[*autoscaling.ExitStandbyOutput](t)(as.ExitStandby(ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: &d.AutoScalingGroupName, InstanceIds: []string{d.InstanceID}}))
	if s := state(d.InstanceID); s != "web/InService" || health(d.InstanceID) != "healthy" || !inCLB(d.InstanceID) || desired() != 2 {
		t.Errorf("back in service: %s, %s, in CLB %t, desired %d", s, health(d.InstanceID), inCLB(d.InstanceID), desired())
	}

	// Detach without decrementing: the group launches a replacement.
	must[*autoscaling.DetachInstancesOutput](t)(as.DetachInstances(ctx, &autoscaling.DetachInstancesInput{AutoScalingGroupName: &d.AutoScalingGroupName,
		InstanceIds: []string{d.InstanceID}, ShouldDecrementDesiredCapacity: aws.Bool(false)}))
	grp := must[*autoscaling.DescribeAutoScalingGroupsOutput](t)(as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{d.AutoScalingGroupName}}))
	var members []string
	for _, i := range grp.AutoScalingGroups[0].Instances {
		members = append(members, aws.ToString(i.InstanceId))
	}
	if state(d.InstanceID) != "detached" || len(members) != 2 || slices.Contains(members, d.InstanceID) || !slices.Contains(members, d.SecondInstanceID) {
		t.Errorf("after detach: members %v", members)
	}
	// Attaching it back exceeds nothing (max 4) and registers it again.
	must[*autoscaling.AttachInstancesOutput](t)(as.AttachInstances(ctx, &autoscaling.AttachInstancesInput{AutoScalingGroupName: &d.AutoScalingGroupName, InstanceIds: []string{d.InstanceID}}))
	if s := state(d.InstanceID); s != "web/InService" || health(d.InstanceID) != "healthy" || desired() != 3 {
		t.Errorf("re-attached: %s %s desired %d", s, health(d.InstanceID), desired())
	}

	// Target groups and classic ELB directly.
	must[*elasticloadbalancingv2.DeregisterTargetsOutput](t)(v2.DeregisterTargets(ctx, &elasticloadbalancingv2.DeregisterTargetsInput{TargetGroupArn: &d.TargetGroupARN,
		Targets: []elbv2types.TargetDescription{{Id: &d.InstanceID}}}))
	if h := health(d.InstanceID); h != "draining" {
		t.Errorf("after deregister: %s", h)
	}
	must[*elasticloadbalancingv2.RegisterTargetsOutput](t)(v2.RegisterTargets(ctx, &elasticloadbalancingv2.RegisterTargetsInput{TargetGroupArn: &d.TargetGroupARN,
		Targets: []elbv2types.TargetDescription{{Id: &d.InstanceID}}}))
	if h := health(d.InstanceID); h != "healthy" {
		t.Errorf("after register: %s", h)
	}
	_, err = v2.RegisterTargets(ctx, &elasticloadbalancingv2.RegisterTargetsInput{TargetGroupArn: aws.String(d.TargetGroupARN + "x"), Targets: []elbv2types.TargetDescription{{Id: &d.InstanceID}}})
	wantCode(t, err, "TargetGroupNotFound")
	must[*elasticloadbalancing.DeregisterInstancesFromLoadBalancerOutput](t)(clb.DeregisterInstancesFromLoadBalancer(ctx, &elasticloadbalancing.DeregisterInstancesFromLoadBalancerInput{
		LoadBalancerName: &d.LoadBalancerName, Instances: []elbtypes.Instance{{InstanceId: &d.InstanceID}}}))
	if inCLB(d.InstanceID) {
		t.Error("still in classic ELB")
	}
	reg := must[*elasticloadbalancing.RegisterInstancesWithLoadBalancerOutput](t)(clb.RegisterInstancesWithLoadBalancer(ctx, &elasticloadbalancing.RegisterInstancesWithLoadBalancerInput{
		LoadBalancerName: &d.LoadBalancerName, Instances: []elbtypes.Instance{{InstanceId: &d.InstanceID}}}))
	if !slices.ContainsFunc(reg.Instances, func(i elbtypes.Instance) bool { return aws.ToString(i.InstanceId) == d.InstanceID }) {
		t.Errorf("register answer %+v", reg.Instances)
	}
	_, err = clb.DescribeLoadBalancers(ctx, &elasticloadbalancing.DescribeLoadBalancersInput{LoadBalancerNames: []string{"nope"}})
	wantCode(t, err, "LoadBalancerNotFound")
}

func TestTagsOnEveryResourceType(t *testing.T) {
	e := newDemoEnv(t)
	d := e.demo
	ctx := context.Background()
	c := ec2.NewFromConfig(e.cfg(e.member))
	ids := []string{d.InstanceID, d.RootVolumeID, d.VPCID, d.SubnetID, d.WebGroupID, d.NetworkInterfaceIDs[1], d.AllocationID, d.VPCEndpointIDs["ssm"]}
	must[*ec2.CreateTagsOutput](t)(c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: ids, Tags: []ec2types.Tag{{Key: aws.String("impound:case"), Value: aws.String("IR-9")}}}))
	out := must[*ec2.DescribeTagsOutput](t)(c.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2types.Filter{ec2Filter("key", "impound:case")}}))
	got := map[string]string{}
	for _, tg := range out.Tags {
		got[aws.ToString(tg.ResourceId)] = string(tg.ResourceType)
	}
	want := map[string]string{d.InstanceID: "instance", d.RootVolumeID: "volume", d.VPCID: "vpc", d.SubnetID: "subnet", d.WebGroupID: "security-group",
		d.NetworkInterfaceIDs[1]: "network-interface", d.AllocationID: "elastic-ip", d.VPCEndpointIDs["ssm"]: "vpc-endpoint"}
	for id, typ := range want {
		if got[id] != typ {
			t.Errorf("%s: tagged as %q, want %q", id, got[id], typ)
		}
	}
	// A tag whose value does not match is kept; without a value it goes.
	must[*ec2.DeleteTagsOutput](t)(c.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: ids[:2], Tags: []ec2types.Tag{{Key: aws.String("impound:case"), Value: aws.String("other")}}}))
	must[*ec2.DeleteTagsOutput](t)(c.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: ids[2:], Tags: []ec2types.Tag{{Key: aws.String("impound:case")}}}))
	out = must[*ec2.DescribeTagsOutput](t)(c.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2types.Filter{ec2Filter("key", "impound:case")}}))
	var left []string
	for _, tg := range out.Tags {
		left = append(left, aws.ToString(tg.ResourceId))
	}
	sort.Strings(left)
	wantLeft := []string{d.InstanceID, d.RootVolumeID}
	sort.Strings(wantLeft)
	if !slices.Equal(left, wantLeft) {
		t.Errorf("tags left on %v, want %v", left, wantLeft)
	}
	_, err := ec2.NewFromConfig(e.cfg(e.forensics)).CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{d.WebGroupID}, Tags: []ec2types.Tag{{Key: aws.String("x"), Value: aws.String("y")}}})
	wantCode(t, err, "InvalidGroup.NotFound")
}
