package motocheck

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing/types"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbv2types "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// Scenarios for the operations impound's isolation and control-plane
// collection use, compared between the simulator and moto. Every
// divergence names its reason and is checked against AWS's documented
// behaviour.

// netIDs normalises the networking IDs the lead's normaliser does not know
// (sg-, eni-, subnet-, vpc-, eipalloc-, …) to "<kind#n>".
type netIDs struct {
	ids    map[string]string
	counts map[string]int
}

var netIDRe = regexp.MustCompile(`^([a-z]+(?:-[a-z]+)*)-[0-9a-f]{8,17}$`)

func newNetIDs() *netIDs { return &netIDs{ids: map[string]string{}, counts: map[string]int{}} }

func (n *netIDs) id(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := n.ids[s]; ok {
		return v
	}
	m := netIDRe.FindStringSubmatch(s)
	if m == nil {
		return "MALFORMED(" + s + ")"
	}
	n.counts[m[1]]++
	v := fmt.Sprintf("<%s#%d>", m[1], n.counts[m[1]])
	n.ids[s] = v
	return v
}

func (n *netIDs) list(ss []string) []string {
	out := []string{}
	for _, s := range ss {
		out = append(out, n.id(s))
	}
	sort.Strings(out)
	return out
}

func groupList(gs []ec2types.GroupIdentifier) []string {
	var out []string
	for _, g := range gs {
		out = append(out, aws.ToString(g.GroupId))
	}
	return out
}

// network creates a VPC, a subnet and two groups, and runs an instance in
// the subnet with both groups.
type network struct {
	vpc, subnet, web, app, instance string
}

func newNetwork(t *testing.T, tg target) network {
	t.Helper()
	ctx := context.Background()
	c := ec2.NewFromConfig(tg.member)
	var nw network
	vpc, err := c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
	if err != nil {
		t.Fatalf("%s: create VPC: %v", tg.name, err)
	}
	nw.vpc = aws.ToString(vpc.Vpc.VpcId)
	sn, err := c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: &nw.vpc, CidrBlock: aws.String("10.0.1.0/24")})
	if err != nil {
		t.Fatalf("%s: create subnet: %v", tg.name, err)
	}
	nw.subnet = aws.ToString(sn.Subnet.SubnetId)
	for _, g := range []*string{&nw.web, &nw.app} {
		name := map[bool]string{true: "web", false: "app"}[g == &nw.web]
		out, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: &name, Description: aws.String(name), VpcId: &nw.vpc})
		if err != nil {
			t.Fatalf("%s: create group %s: %v", tg.name, name, err)
		}
		*g = aws.ToString(out.GroupId)
	}
	run, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(tg.imageID), InstanceType: ec2types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: &nw.subnet, SecurityGroupIds: []string{nw.web, nw.app}})
	if err != nil {
		t.Fatalf("%s: run instance: %v", tg.name, err)
	}
	nw.instance = aws.ToString(run.Instances[0].InstanceId)
	running(t, tg, nw.instance)
	return nw
}

// running waits until the instance runs, as a client does before
// attaching it to anything.
func running(t *testing.T, tg target, id string) {
	t.Helper()
	w := ec2.NewInstanceRunningWaiter(ec2.NewFromConfig(tg.member), func(o *ec2.InstanceRunningWaiterOptions) {
		o.MinDelay, o.MaxDelay = 10*time.Millisecond, 100*time.Millisecond
	})
	if err := w.Wait(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 10*time.Second); err != nil {
		t.Fatalf("%s: wait for %s to run: %v", tg.name, id, err)
	}
}

func TestIsolationNetworkInterfaces(t *testing.T) {
	compare(t, func(t *testing.T, tg target, n *normaliser) record {
		ctx := context.Background()
		c := ec2.NewFromConfig(tg.member)
		ids := newNetIDs()
		nw := newNetwork(t, tg)
		r := record{"vpc": ids.id(nw.vpc), "subnet": ids.id(nw.subnet), "web": ids.id(nw.web), "app": ids.id(nw.app)}
		inst, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{nw.instance}})
		if err != nil {
			t.Fatalf("%s: describe instance: %v", tg.name, err)
		}
		i := inst.Reservations[0].Instances[0]
		r["instance.VpcId"] = ids.id(aws.ToString(i.VpcId))
		r["instance.SubnetId"] = ids.id(aws.ToString(i.SubnetId))
		r["instance.SecurityGroups"] = ids.list(groupList(i.SecurityGroups))
		r["instance.NetworkInterfaces"] = len(i.NetworkInterfaces)

		out, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
			{Name: aws.String("attachment.instance-id"), Values: []string{nw.instance}}}})
		if err != nil {
			t.Fatalf("%s: describe interfaces: %v", tg.name, err)
		}
		r["enis"] = len(out.NetworkInterfaces)
		ni := out.NetworkInterfaces[0]
		eni := aws.ToString(ni.NetworkInterfaceId)
		r["eni.Groups"] = ids.list(groupList(ni.Groups))
		r["eni.Status"] = string(ni.Status)
		r["eni.VpcId"] = ids.id(aws.ToString(ni.VpcId))
		r["eni.Attachment.DeviceIndex"] = aws.ToInt32(ni.Attachment.DeviceIndex)
		r["eni.Attachment.InstanceId"] = n.id(aws.ToString(ni.Attachment.InstanceId))
		r["eni.Attachment.DeleteOnTermination"] = aws.ToBool(ni.Attachment.DeleteOnTermination)
		r["eni.PrivateIpInSubnet"] = strings.HasPrefix(aws.ToString(ni.PrivateIpAddress), "10.0.1.")
		r["eni.OwnerId"] = n.account(aws.ToString(ni.OwnerId))

		byGroup, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
			{Name: aws.String("group-id"), Values: []string{nw.app}}}})
		if err != nil {
			t.Fatalf("%s: by group: %v", tg.name, err)
		}
		r["byGroup"] = len(byGroup.NetworkInterfaces)

		_, err = c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &eni, Groups: []string{nw.app}})
		r["modify groups"] = apiCode(err)
		after, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}})
		if err != nil {
			t.Fatalf("%s: describe interface: %v", tg.name, err)
		}
		r["after.Groups"] = ids.list(groupList(after.NetworkInterfaces[0].Groups))
		_, err = c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &eni, Groups: []string{"sg-0123456789abcdef0"}})
		r["modify unknown group"] = apiCode(err)
		_, err = c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{"eni-0123456789abcdef0"}})
		r["unknown eni"] = apiCode(err)
		return r
	}, map[string]divergence{
		"after.Groups":                       {reason: "moto adds the groups to the interface's set; AWS replaces the set", want: []string{"<sg#2>"}},
		"modify unknown group":               {reason: "moto accepts a group that does not exist", want: "InvalidGroup.NotFound"},
		"eni.Attachment.DeleteOnTermination": {reason: "moto reports false for the primary interface RunInstances created; AWS reports true", want: true},
	})
}

func TestIsolationSecurityGroups(t *testing.T) {
	compare(t, func(t *testing.T, tg target, n *normaliser) record {
		ctx := context.Background()
		c := ec2.NewFromConfig(tg.member)
		ids := newNetIDs()
		nw := newNetwork(t, tg)
		r := record{}
		rules := func(id string) (in, eg []string) {
			out, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{id}})
			if err != nil {
				t.Fatalf("%s: describe group: %v", tg.name, err)
			}
			flat := func(ps []ec2types.IpPermission) []string {
				s := []string{}
				for _, p := range ps {
					base := fmt.Sprintf("%s/%d-%d/", aws.ToString(p.IpProtocol), aws.ToInt32(p.FromPort), aws.ToInt32(p.ToPort))
					for _, x := range p.IpRanges {
						s = append(s, base+aws.ToString(x.CidrIp))
					}
					for _, x := range p.Ipv6Ranges {
						s = append(s, base+aws.ToString(x.CidrIpv6))
					}
					for _, x := range p.UserIdGroupPairs {
						s = append(s, base+ids.id(aws.ToString(x.GroupId)))
					}
				}
				sort.Strings(s)
				return s
			}
			g := out.SecurityGroups[0]
			return flat(g.IpPermissions), flat(g.IpPermissionsEgress)
		}
		in, eg := rules(nw.web)
		r["new.ingress"], r["new.egress"] = in, eg

		perm := []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22),
			IpRanges: []ec2types.IpRange{{CidrIp: aws.String("203.0.113.0/24")}}, Ipv6Ranges: []ec2types.Ipv6Range{{CidrIpv6: aws.String("2001:db8::/32")}}}}
		_, err := c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &nw.web, IpPermissions: perm})
		r["authorize"] = apiCode(err)
		_, err = c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &nw.web, IpPermissions: perm})
		r["authorize again"] = apiCode(err)
		_, err = c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &nw.web, IpPermissions: []ec2types.IpPermission{{
			IpProtocol: aws.String("tcp"), FromPort: aws.Int32(8080), ToPort: aws.Int32(8080), UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: &nw.app}}}}})
		r["authorize group"] = apiCode(err)
		_, err = c.RevokeSecurityGroupEgress(ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: &nw.web, IpPermissions: []ec2types.IpPermission{{
			IpProtocol: aws.String("-1"), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}})
		r["revoke default egress"] = apiCode(err)
		in, eg = rules(nw.web)
		r["after.ingress"], r["after.egress"] = in, eg
		_, err = c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: &nw.web, IpPermissions: perm})
		r["revoke"] = apiCode(err)
		in, _ = rules(nw.web)
		r["revoked.ingress"] = in

		byName, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{
			{Name: aws.String("vpc-id"), Values: []string{nw.vpc}}, {Name: aws.String("group-name"), Values: []string{"app"}}}})
		if err != nil {
			t.Fatalf("%s: by name: %v", tg.name, err)
		}
		r["byName"] = len(byName.SecurityGroups)
		g, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("spare"), Description: aws.String("spare"), VpcId: &nw.vpc})
		if err != nil {
			t.Fatalf("%s: create spare: %v", tg.name, err)
		}
		_, err = c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("spare"), Description: aws.String("spare"), VpcId: &nw.vpc})
		r["duplicate name"] = apiCode(err)
		_, err = c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: g.GroupId})
		r["delete"] = apiCode(err)
		_, err = c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{aws.ToString(g.GroupId)}})
		r["deleted"] = apiCode(err)
		_, err = c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: &nw.app})
		r["delete in use"] = apiCode(err)
		return r
	}, map[string]divergence{
		"delete in use": {reason: "moto deletes a group that interfaces and other groups' rules still use", want: "DependencyViolation"},
	})
}

func TestIsolationElasticIPAndAttributes(t *testing.T) {
	compare(t, func(t *testing.T, tg target, n *normaliser) record {
		ctx := context.Background()
		c := ec2.NewFromConfig(tg.member)
		ids := newNetIDs()
		r := record{}
		id := launch(t, tg)
		running(t, tg, id)
		alloc, err := c.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc})
		if err != nil {
			t.Fatalf("%s: allocate: %v", tg.name, err)
		}
		r["alloc.Domain"] = string(alloc.Domain)
		as, err := c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId, InstanceId: &id})
		if err != nil {
			t.Fatalf("%s: associate: %v", tg.name, err)
		}
		d, err := c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: []string{id}}}})
		if err != nil {
			t.Fatalf("%s: describe addresses: %v", tg.name, err)
		}
		r["byInstance"] = len(d.Addresses)
		r["addr.AssociationId"] = ids.id(aws.ToString(d.Addresses[0].AssociationId)) == ids.id(aws.ToString(as.AssociationId))
		r["addr.NetworkInterface"] = strings.HasPrefix(aws.ToString(d.Addresses[0].NetworkInterfaceId), "eni-")
		_, err = c.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: as.AssociationId})
		r["disassociate"] = apiCode(err)
		d, _ = c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{aws.ToString(alloc.AllocationId)}})
		r["after.InstanceId"] = aws.ToString(d.Addresses[0].InstanceId)

		attr := func(a ec2types.InstanceAttributeName) *ec2.DescribeInstanceAttributeOutput {
			out, err := c.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: &id, Attribute: a})
			if err != nil {
				t.Fatalf("%s: describe attribute %s: %v", tg.name, a, err)
			}
			return out
		}
		r["disableApiTermination"] = aws.ToBool(attr(ec2types.InstanceAttributeNameDisableApiTermination).DisableApiTermination.Value)
		r["shutdownBehavior"] = aws.ToString(attr(ec2types.InstanceAttributeNameInstanceInitiatedShutdownBehavior).InstanceInitiatedShutdownBehavior.Value)
		_, err = c.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: &id, DisableApiTermination: &ec2types.AttributeBooleanValue{Value: aws.Bool(true)}})
		r["protect"] = apiCode(err)
		r["protected"] = aws.ToBool(attr(ec2types.InstanceAttributeNameDisableApiTermination).DisableApiTermination.Value)
		_, err = c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		r["terminate protected"] = apiCode(err)
		_, err = c.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: &id, InstanceInitiatedShutdownBehavior: &ec2types.AttributeValue{Value: aws.String("terminate")}})
		r["set shutdown"] = apiCode(err)
		r["shutdownBehavior after"] = aws.ToString(attr(ec2types.InstanceAttributeNameInstanceInitiatedShutdownBehavior).InstanceInitiatedShutdownBehavior.Value)
		_, err = c.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: &id, DisableApiTermination: &ec2types.AttributeBooleanValue{Value: aws.Bool(false)}})
		r["unprotect"] = apiCode(err)
		term, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		r["terminate"] = apiCode(err)
		if err == nil {
			r["terminate.previous"] = string(term.TerminatingInstances[0].PreviousState.Name)
		}
		return r
	}, map[string]divergence{
		"shutdownBehavior after": {reason: "moto ignores a change of instanceInitiatedShutdownBehavior", want: "terminate"},
	})
}

func TestIsolationInstanceProfileAssociation(t *testing.T) {
	compare(t, func(t *testing.T, tg target, n *normaliser) record {
		ctx := context.Background()
		c := ec2.NewFromConfig(tg.member)
		ic := iam.NewFromConfig(tg.member)
		ids := newNetIDs()
		r := record{}
		var arns []string
		for _, name := range []string{"app", "quarantine"} {
			if _, err := ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String(name),
				AssumeRolePolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`)}); err != nil {
				t.Fatalf("%s: create role: %v", tg.name, err)
			}
			p, err := ic.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String(name)})
			if err != nil {
				t.Fatalf("%s: create profile: %v", tg.name, err)
			}
			if _, err := ic.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{InstanceProfileName: aws.String(name), RoleName: aws.String(name)}); err != nil {
				t.Fatalf("%s: add role: %v", tg.name, err)
			}
			arns = append(arns, aws.ToString(p.InstanceProfile.Arn))
		}
		r["profileArn"] = n.text(arns[0])
		id := launch(t, tg)
		as, err := c.AssociateIamInstanceProfile(ctx, &ec2.AssociateIamInstanceProfileInput{InstanceId: &id, IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Name: aws.String("app")}})
		if err != nil {
			t.Fatalf("%s: associate: %v", tg.name, err)
		}
		r["associate.State"] = string(as.IamInstanceProfileAssociation.State)
		r["associate.Arn"] = n.text(aws.ToString(as.IamInstanceProfileAssociation.IamInstanceProfile.Arn))
		_, err = c.AssociateIamInstanceProfile(ctx, &ec2.AssociateIamInstanceProfileInput{InstanceId: &id, IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Name: aws.String("app")}})
		r["associate again"] = apiCode(err)
		d, err := c.DescribeIamInstanceProfileAssociations(ctx, &ec2.DescribeIamInstanceProfileAssociationsInput{Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: []string{id}}}})
		if err != nil {
			t.Fatalf("%s: describe associations: %v", tg.name, err)
		}
		r["described"] = len(d.IamInstanceProfileAssociations)
		r["described.State"] = string(d.IamInstanceProfileAssociations[0].State)
		rep, err := c.ReplaceIamInstanceProfileAssociation(ctx, &ec2.ReplaceIamInstanceProfileAssociationInput{AssociationId: as.IamInstanceProfileAssociation.AssociationId,
			IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Arn: &arns[1]}})
		if err != nil {
			t.Fatalf("%s: replace: %v", tg.name, err)
		}
		r["replaced.Arn"] = n.text(aws.ToString(rep.IamInstanceProfileAssociation.IamInstanceProfile.Arn))
		r["replaced.NewId"] = ids.id(aws.ToString(rep.IamInstanceProfileAssociation.AssociationId)) != ids.id(aws.ToString(as.IamInstanceProfileAssociation.AssociationId))
		inst, _ := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if p := inst.Reservations[0].Instances[0].IamInstanceProfile; p != nil {
			r["instance.Profile"] = n.text(aws.ToString(p.Arn))
		}
		dis, err := c.DisassociateIamInstanceProfile(ctx, &ec2.DisassociateIamInstanceProfileInput{AssociationId: rep.IamInstanceProfileAssociation.AssociationId})
		if err != nil {
			t.Fatalf("%s: disassociate: %v", tg.name, err)
		}
		r["disassociate.State"] = string(dis.IamInstanceProfileAssociation.State)
		d, _ = c.DescribeIamInstanceProfileAssociations(ctx, &ec2.DescribeIamInstanceProfileAssociationsInput{Filters: []ec2types.Filter{{Name: aws.String("instance-id"), Values: []string{id}}}})
		r["after"] = len(d.IamInstanceProfileAssociations)
		return r
	}, map[string]divergence{
		"associate.State":    {reason: "moto answers associated at once; AWS answers associating", want: "associating"},
		"disassociate.State": {reason: "moto answers disassociated; AWS answers disassociating", want: "disassociating"},
		"associate again":    {reason: "moto accepts a second association for the same instance", want: "IncorrectState"},
		"instance.Profile":   {reason: "moto's DescribeInstances keeps showing the replaced profile", want: "arn:aws:iam::<member>:instance-profile/quarantine"},
		"replaced.NewId":     {reason: "moto keeps the association ID on replace; AWS issues a new association", want: true},
	})
}

func TestIsolationIAMRoles(t *testing.T) {
	compare(t, func(t *testing.T, tg target, n *normaliser) record {
		ctx := context.Background()
		ic := iam.NewFromConfig(tg.member)
		r := record{}
		role, err := ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("web"),
			AssumeRolePolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`)})
		if err != nil {
			t.Fatalf("%s: create role: %v", tg.name, err)
		}
		r["role.Arn"] = n.text(aws.ToString(role.Role.Arn))
		r["role.IdPrefix"] = aws.ToString(role.Role.RoleId)[:4]
		doc := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/*"}]}`
		_, err = ic.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String("web"), PolicyName: aws.String("s3"), PolicyDocument: &doc})
		r["put"] = apiCode(err)
		got, err := ic.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String("web"), PolicyName: aws.String("s3")})
		if err != nil {
			t.Fatalf("%s: get role policy: %v", tg.name, err)
		}
		dec, _ := url.QueryUnescape(aws.ToString(got.PolicyDocument))
		r["get.Decoded"] = dec
		r["get.URLEncoded"] = strings.HasPrefix(aws.ToString(got.PolicyDocument), "%7B")
		names, err := ic.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: aws.String("web")})
		if err != nil {
			t.Fatalf("%s: list: %v", tg.name, err)
		}
		r["inline"] = names.PolicyNames
		_, err = ic.AttachRolePolicy(ctx, &iam.AttachRolePolicyInput{RoleName: aws.String("web"), PolicyArn: aws.String("arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore")})
		r["attach"] = apiCode(err)
		att, err := ic.ListAttachedRolePolicies(ctx, &iam.ListAttachedRolePoliciesInput{RoleName: aws.String("web")})
		if err != nil {
			t.Fatalf("%s: list attached: %v", tg.name, err)
		}
		var an []string
		for _, p := range att.AttachedPolicies {
			an = append(an, aws.ToString(p.PolicyName)+" "+aws.ToString(p.PolicyArn))
		}
		r["attached"] = an
		if _, err := ic.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String("web")}); err != nil {
			t.Fatalf("%s: create profile: %v", tg.name, err)
		}
		_, err = ic.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{InstanceProfileName: aws.String("web"), RoleName: aws.String("web")})
		r["add role"] = apiCode(err)
		p, err := ic.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String("web")})
		if err != nil {
			t.Fatalf("%s: get profile: %v", tg.name, err)
		}
		r["profile.Arn"] = n.text(aws.ToString(p.InstanceProfile.Arn))
		r["profile.Roles"] = len(p.InstanceProfile.Roles)
		lp, err := ic.ListInstanceProfilesForRole(ctx, &iam.ListInstanceProfilesForRoleInput{RoleName: aws.String("web")})
		if err != nil {
			t.Fatalf("%s: profiles for role: %v", tg.name, err)
		}
		r["profilesForRole"] = len(lp.InstanceProfiles)
		_, err = ic.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: aws.String("web"), PolicyName: aws.String("s3")})
		r["delete"] = apiCode(err)
		_, err = ic.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String("web"), PolicyName: aws.String("s3")})
		r["get deleted"] = apiCode(err)
		_, err = ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("nope")})
		r["unknown role"] = apiCode(err)
		_, err = ic.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String("nope")})
		r["unknown profile"] = apiCode(err)
		_, err = ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("web"), AssumeRolePolicyDocument: aws.String("{}")})
		r["duplicate role"] = apiCode(err)
		return r
	}, map[string]divergence{
		"attach":   {reason: "moto does not load AWS managed policies by default (MOTO_IAM_LOAD_MANAGED_POLICIES)", want: ""},
		"attached": {reason: "follows from attach", want: []string{"AmazonSSMManagedInstanceCore arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"}},
	})
}

func TestIsolationAutoScalingAndTargetGroups(t *testing.T) {
	compare(t, func(t *testing.T, tg target, n *normaliser) record {
		ctx := context.Background()
		as := autoscaling.NewFromConfig(tg.member)
		v2 := elasticloadbalancingv2.NewFromConfig(tg.member)
		r := record{}
		nw := newNetwork(t, tg)
		tgo, err := v2.CreateTargetGroup(ctx, &elasticloadbalancingv2.CreateTargetGroupInput{Name: aws.String("web"), Protocol: elbv2types.ProtocolEnumHttp,
			Port: aws.Int32(80), VpcId: &nw.vpc, TargetType: elbv2types.TargetTypeEnumInstance})
		if err != nil {
			t.Fatalf("%s: create target group: %v", tg.name, err)
		}
		arn := aws.ToString(tgo.TargetGroups[0].TargetGroupArn)
		r["tg.Arn"] = strings.HasPrefix(n.text(arn), "arn:aws:elasticloadbalancing:"+region+":<member>:targetgroup/web/")
		_, err = v2.RegisterTargets(ctx, &elasticloadbalancingv2.RegisterTargetsInput{TargetGroupArn: &arn, Targets: []elbv2types.TargetDescription{{Id: &nw.instance}}})
		r["register"] = apiCode(err)
		health := func() []string {
			out, err := v2.DescribeTargetHealth(ctx, &elasticloadbalancingv2.DescribeTargetHealthInput{TargetGroupArn: &arn})
			if err != nil {
				t.Fatalf("%s: target health: %v", tg.name, err)
			}
			s := []string{}
			for _, d := range out.TargetHealthDescriptions {
				s = append(s, n.id(aws.ToString(d.Target.Id))+":"+fmt.Sprint(aws.ToInt32(d.Target.Port)))
			}
			return s
		}
		r["registered"] = health()
		dtg, err := v2.DescribeTargetGroups(ctx, &elasticloadbalancingv2.DescribeTargetGroupsInput{Names: []string{"web"}})
		if err != nil {
			t.Fatalf("%s: describe target groups: %v", tg.name, err)
		}
		r["tg.Port"] = aws.ToInt32(dtg.TargetGroups[0].Port)
		r["tg.TargetType"] = string(dtg.TargetGroups[0].TargetType)
		_, err = v2.DescribeTargetGroups(ctx, &elasticloadbalancingv2.DescribeTargetGroupsInput{Names: []string{"nope"}})
		r["unknown tg"] = apiCode(err)

		_, err = as.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{AutoScalingGroupName: aws.String("web"), InstanceId: &nw.instance,
			MinSize: aws.Int32(0), MaxSize: aws.Int32(3), DesiredCapacity: aws.Int32(0), VPCZoneIdentifier: &nw.subnet})
		if err != nil {
			t.Fatalf("%s: create group: %v", tg.name, err)
		}
		_, err = as.AttachInstances(ctx, &autoscaling.AttachInstancesInput{AutoScalingGroupName: aws.String("web"), InstanceIds: []string{nw.instance}})
		r["attach"] = apiCode(err)
		state := func() string {
			out, err := as.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{nw.instance}})
			if err != nil {
				t.Fatalf("%s: describe instances: %v", tg.name, err)
			}
			if len(out.AutoScalingInstances) == 0 {
				return "none"
			}
			return aws.ToString(out.AutoScalingInstances[0].LifecycleState)
		}
		desired := func() int32 {
			out, err := as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"web"}})
			if err != nil {
				t.Fatalf("%s: describe groups: %v", tg.name, err)
			}
			return aws.ToInt32(out.AutoScalingGroups[0].DesiredCapacity)
		}
		r["attached"], r["attached.desired"] = state(), desired()
		sb, err := as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: []string{nw.instance},
			ShouldDecrementDesiredCapacity: aws.Bool(true)})
		r["standby"] = apiCode(err)
		if err == nil {
			r["standby.activities"] = len(sb.Activities)
		}
		r["standby.state"], r["standby.desired"] = state(), desired()
		_, err = as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: []string{nw.instance},
			ShouldDecrementDesiredCapacity: aws.Bool(true)})
		r["standby again"] = apiCode(err)
		_, err = as.ExitStandby(ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: []string{nw.instance}})
		r["exit"] = apiCode(err)
		r["exit.state"], r["exit.desired"] = state(), desired()
		_, err = as.DetachInstances(ctx, &autoscaling.DetachInstancesInput{AutoScalingGroupName: aws.String("web"), InstanceIds: []string{nw.instance},
			ShouldDecrementDesiredCapacity: aws.Bool(true)})
		r["detach"] = apiCode(err)
		r["detach.state"], r["detach.desired"] = state(), desired()

		_, err = v2.DeregisterTargets(ctx, &elasticloadbalancingv2.DeregisterTargetsInput{TargetGroupArn: &arn, Targets: []elbv2types.TargetDescription{{Id: &nw.instance}}})
		r["deregister"] = apiCode(err)
		return r
	}, map[string]divergence{
		"standby again":  {reason: "moto moves an instance already in Standby to Standby again", want: "ValidationError"},
		"exit.desired":   {reason: "moto decrements the desired capacity again on ExitStandby (and goes negative); AWS increments it", want: int32(1)},
		"detach.desired": {reason: "follows from moto's exit.desired", want: int32(0)},
		"exit.state":     {reason: "moto leaves an instance leaving standby Pending; AWS reports it Pending and then InService, the simulator InService at once", want: "InService"},
	})
}

// TestIsolationNetworkACLs covers what --nacl does: find the subnet's
// association, create a tagged ACL (which holds only the implicit deny
// entries), replace the association and put it back.
func TestIsolationNetworkACLs(t *testing.T) {
	compare(t, func(t *testing.T, tg target, n *normaliser) record {
		ctx := context.Background()
		c := ec2.NewFromConfig(tg.member)
		ids := newNetIDs()
		nw := newNetwork(t, tg)
		r := record{"vpc": ids.id(nw.vpc), "subnet": ids.id(nw.subnet)}
		entries := func(acl ec2types.NetworkAcl) []string {
			out := []string{}
			for _, e := range acl.Entries {
				dir := "in"
				if aws.ToBool(e.Egress) {
					dir = "out"
				}
				out = append(out, fmt.Sprintf("%s/%d/%s/%s/%s%s", dir, aws.ToInt32(e.RuleNumber), aws.ToString(e.Protocol), e.RuleAction,
					aws.ToString(e.CidrBlock), aws.ToString(e.Ipv6CidrBlock)))
			}
			sort.Strings(out)
			return out
		}
		bySubnet := func() ec2types.NetworkAcl {
			out, err := c.DescribeNetworkAcls(ctx, &ec2.DescribeNetworkAclsInput{Filters: []ec2types.Filter{
				{Name: aws.String("association.subnet-id"), Values: []string{nw.subnet}}}})
			if err != nil {
				t.Fatalf("%s: network ACL of the subnet: %v", tg.name, err)
			}
			if len(out.NetworkAcls) != 1 {
				t.Fatalf("%s: %d network ACLs associated with the subnet", tg.name, len(out.NetworkAcls))
			}
			return out.NetworkAcls[0]
		}
		assocOf := func(acl ec2types.NetworkAcl) string {
			for _, a := range acl.Associations {
				if aws.ToString(a.SubnetId) == nw.subnet {
					return aws.ToString(a.NetworkAclAssociationId)
				}
			}
			return ""
		}
		orig := bySubnet()
		origID, origAssoc := aws.ToString(orig.NetworkAclId), assocOf(orig)
		r["orig.id"] = ids.id(origID)
		r["orig.IsDefault"] = aws.ToBool(orig.IsDefault)
		r["orig.VpcId"] = ids.id(aws.ToString(orig.VpcId))
		r["orig.entries"] = entries(orig)
		r["orig.assoc"] = strings.HasPrefix(origAssoc, "aclassoc-")

		created, err := c.CreateNetworkAcl(ctx, &ec2.CreateNetworkAclInput{VpcId: &nw.vpc, TagSpecifications: []ec2types.TagSpecification{{
			ResourceType: ec2types.ResourceTypeNetworkAcl, Tags: []ec2types.Tag{
				{Key: aws.String("impound:managed"), Value: aws.String("true")}, {Key: aws.String("Name"), Value: aws.String("impound-deny-all")}}}}})
		if err != nil {
			t.Fatalf("%s: create network ACL: %v", tg.name, err)
		}
		deny := aws.ToString(created.NetworkAcl.NetworkAclId)
		r["new.id"] = ids.id(deny)
		r["new.IsDefault"] = aws.ToBool(created.NetworkAcl.IsDefault)
		r["new.entries"] = entries(*created.NetworkAcl)
		r["new.associations"] = len(created.NetworkAcl.Associations)
		r["new.tags"] = tagMap(created.NetworkAcl.Tags)
		byTag, err := c.DescribeNetworkAcls(ctx, &ec2.DescribeNetworkAclsInput{Filters: []ec2types.Filter{
			{Name: aws.String("vpc-id"), Values: []string{nw.vpc}},
			{Name: aws.String("tag:impound:managed"), Values: []string{"true"}},
			{Name: aws.String("tag:Name"), Values: []string{"impound-deny-all"}}}})
		if err != nil {
			t.Fatalf("%s: by tag: %v", tg.name, err)
		}
		r["byTag"] = len(byTag.NetworkAcls)
		_, err = c.DescribeNetworkAcls(ctx, &ec2.DescribeNetworkAclsInput{NetworkAclIds: []string{"acl-0123456789abcdef0"}})
		r["unknown acl"] = apiCode(err)

		rep, err := c.ReplaceNetworkAclAssociation(ctx, &ec2.ReplaceNetworkAclAssociationInput{AssociationId: &origAssoc, NetworkAclId: &deny})
		r["replace"] = apiCode(err)
		if err == nil {
			r["replace.newAssoc"] = strings.HasPrefix(aws.ToString(rep.NewAssociationId), "aclassoc-")
		}
		now := bySubnet()
		r["replaced.id"] = ids.id(aws.ToString(now.NetworkAclId))
		r["replaced.assocMatches"] = err == nil && assocOf(now) == aws.ToString(rep.NewAssociationId)
		_, err = c.CreateNetworkAclEntry(ctx, &ec2.CreateNetworkAclEntryInput{NetworkAclId: &deny, RuleNumber: aws.Int32(100), Protocol: aws.String("6"),
			RuleAction: ec2types.RuleActionAllow, Egress: aws.Bool(false), CidrBlock: aws.String("203.0.113.0/24"), PortRange: &ec2types.PortRange{From: aws.Int32(443), To: aws.Int32(443)}})
		r["entry"] = apiCode(err)
		_, err = c.CreateNetworkAclEntry(ctx, &ec2.CreateNetworkAclEntryInput{NetworkAclId: &deny, RuleNumber: aws.Int32(100), Protocol: aws.String("6"),
			RuleAction: ec2types.RuleActionDeny, Egress: aws.Bool(false), CidrBlock: aws.String("198.51.100.0/24"), PortRange: &ec2types.PortRange{From: aws.Int32(22), To: aws.Int32(22)}})
		r["entry duplicate"] = apiCode(err)
		withEntry, err := c.DescribeNetworkAcls(ctx, &ec2.DescribeNetworkAclsInput{NetworkAclIds: []string{deny}})
		if err != nil {
			t.Fatalf("%s: describe ACL: %v", tg.name, err)
		}
		r["entry.entries"] = entries(withEntry.NetworkAcls[0])

		// Release: the original ACL back.
		_, err = c.ReplaceNetworkAclAssociation(ctx, &ec2.ReplaceNetworkAclAssociationInput{AssociationId: aws.String(assocOf(now)), NetworkAclId: &origID})
		r["restore"] = apiCode(err)
		restored := bySubnet()
		r["restored.id"] = ids.id(aws.ToString(restored.NetworkAclId))

		// Refused replacements (last: moto loses the association on one).
		_, err = c.ReplaceNetworkAclAssociation(ctx, &ec2.ReplaceNetworkAclAssociationInput{AssociationId: aws.String(assocOf(restored)), NetworkAclId: aws.String("acl-0123456789abcdef0")})
		r["replace with unknown acl"] = apiCode(err)
		left, err := c.DescribeNetworkAcls(ctx, &ec2.DescribeNetworkAclsInput{Filters: []ec2types.Filter{
			{Name: aws.String("association.subnet-id"), Values: []string{nw.subnet}}}})
		if err != nil {
			t.Fatalf("%s: network ACL of the subnet: %v", tg.name, err)
		}
		r["refused.stillAssociated"] = len(left.NetworkAcls) == 1 && aws.ToString(left.NetworkAcls[0].NetworkAclId) == origID
		_, err = c.ReplaceNetworkAclAssociation(ctx, &ec2.ReplaceNetworkAclAssociationInput{AssociationId: aws.String("aclassoc-0123456789abcdef0"), NetworkAclId: &origID})
		r["replace unknown assoc"] = apiCode(err)
		return r
	}, map[string]divergence{
		"new.entries": {reason: "moto lists no entries for a new network ACL; AWS shows its implicit deny-all entries (rule 32767, both directions)",
			want: []string{"in/32767/-1/deny/0.0.0.0/0", "out/32767/-1/deny/0.0.0.0/0"}},
		"entry.entries": {reason: "follows from moto's new.entries",
			want: []string{"in/100/6/allow/203.0.113.0/24", "in/32767/-1/deny/0.0.0.0/0", "out/32767/-1/deny/0.0.0.0/0"}},
		"refused.stillAssociated": {reason: "moto drops the subnet's association before finding the network ACL unknown; AWS refuses the call and changes nothing", want: true},
		"replace unknown assoc":   {reason: "moto fails with HTTP 500 on an unknown association ID", want: "InvalidAssociationID.NotFound"},
		"unknown acl":             {reason: "moto answers InvalidRouteTableID.NotFound for an unknown network ACL ID", want: "InvalidNetworkAclID.NotFound"},
	})
}

// TestIsolationClassicLoadBalancers covers the classic ELB calls isolation
// and release make: find the instance in DescribeLoadBalancers, deregister
// it, register it back.
func TestIsolationClassicLoadBalancers(t *testing.T) {
	compare(t, func(t *testing.T, tg target, n *normaliser) record {
		ctx := context.Background()
		c := elasticloadbalancing.NewFromConfig(tg.member)
		ids := newNetIDs()
		nw := newNetwork(t, tg)
		r := record{"vpc": ids.id(nw.vpc)}
		_, err := c.CreateLoadBalancer(ctx, &elasticloadbalancing.CreateLoadBalancerInput{LoadBalancerName: aws.String("legacy"), Subnets: []string{nw.subnet},
			Listeners: []elbtypes.Listener{{Protocol: aws.String("HTTP"), LoadBalancerPort: 80, InstancePort: aws.Int32(80)}}})
		if err != nil {
			t.Fatalf("%s: create load balancer: %v", tg.name, err)
		}
		instances := func(is []elbtypes.Instance) []string {
			out := []string{}
			for _, i := range is {
				out = append(out, n.id(aws.ToString(i.InstanceId)))
			}
			sort.Strings(out)
			return out
		}
		describe := func() (names []string, insts map[string][]string, vpcs []string) {
			out, err := c.DescribeLoadBalancers(ctx, &elasticloadbalancing.DescribeLoadBalancersInput{})
			if err != nil {
				t.Fatalf("%s: describe load balancers: %v", tg.name, err)
			}
			insts = map[string][]string{}
			for _, d := range out.LoadBalancerDescriptions {
				name := aws.ToString(d.LoadBalancerName)
				names = append(names, name)
				insts[name] = instances(d.Instances)
				vpcs = append(vpcs, ids.id(aws.ToString(d.VPCId)))
			}
			return names, insts, vpcs
		}
		names, insts, vpcs := describe()
		r["created.names"], r["created.instances"], r["created.vpcs"] = names, insts, vpcs

		reg, err := c.RegisterInstancesWithLoadBalancer(ctx, &elasticloadbalancing.RegisterInstancesWithLoadBalancerInput{LoadBalancerName: aws.String("legacy"),
			Instances: []elbtypes.Instance{{InstanceId: &nw.instance}}})
		r["register"] = apiCode(err)
		if err == nil {
			r["register.instances"] = instances(reg.Instances)
		}
		_, insts, _ = describe()
		r["registered.instances"] = insts
		dereg, err := c.DeregisterInstancesFromLoadBalancer(ctx, &elasticloadbalancing.DeregisterInstancesFromLoadBalancerInput{LoadBalancerName: aws.String("legacy"),
			Instances: []elbtypes.Instance{{InstanceId: &nw.instance}}})
		r["deregister"] = apiCode(err)
		if err == nil {
			r["deregister.instances"] = instances(dereg.Instances)
		}
		_, insts, _ = describe()
		r["deregistered.instances"] = insts
		// Release registers it back.
		_, err = c.RegisterInstancesWithLoadBalancer(ctx, &elasticloadbalancing.RegisterInstancesWithLoadBalancerInput{LoadBalancerName: aws.String("legacy"),
			Instances: []elbtypes.Instance{{InstanceId: &nw.instance}}})
		r["register again"] = apiCode(err)
		_, insts, _ = describe()
		r["released.instances"] = insts

		_, err = c.DescribeLoadBalancers(ctx, &elasticloadbalancing.DescribeLoadBalancersInput{LoadBalancerNames: []string{"nope"}})
		r["unknown lb"] = apiCode(err)
		_, err = c.DeregisterInstancesFromLoadBalancer(ctx, &elasticloadbalancing.DeregisterInstancesFromLoadBalancerInput{LoadBalancerName: aws.String("nope"),
			Instances: []elbtypes.Instance{{InstanceId: &nw.instance}}})
		r["deregister from unknown lb"] = apiCode(err)
		return r
	}, map[string]divergence{
		"register.instances": {reason: "moto answers RegisterInstancesWithLoadBalancer with an empty list; AWS returns the load balancer's updated instances", want: []string{"<i#1>"}},
		"deregister from unknown lb": {reason: "moto fails with HTTP 500 (an unparseable error body) for an unknown load balancer; AWS answers LoadBalancerNotFound (AccessPointNotFoundException)",
			want: "LoadBalancerNotFound"},
	})
}

func TestDeleteSnapshotAndConsole(t *testing.T) {
	compare(t, func(t *testing.T, tg target, n *normaliser) record {
		ctx := context.Background()
		c := ec2.NewFromConfig(tg.member)
		r := record{}
		id := launch(t, tg)
		running(t, tg, id)
		inst, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatalf("%s: describe: %v", tg.name, err)
		}
		vol := aws.ToString(inst.Reservations[0].Instances[0].BlockDeviceMappings[0].Ebs.VolumeId)
		sn, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: &vol})
		if err != nil {
			t.Fatalf("%s: snapshot: %v", tg.name, err)
		}
		_, err = c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: sn.SnapshotId})
		r["delete"] = apiCode(err)
		_, err = c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{aws.ToString(sn.SnapshotId)}})
		r["describe deleted"] = apiCode(err)
		_, err = c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: sn.SnapshotId})
		r["delete again"] = apiCode(err)
		out, err := c.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: &id})
		r["console"] = apiCode(err)
		if err == nil {
			r["console.InstanceId"] = n.id(aws.ToString(out.InstanceId))
		}
		_, err = c.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String("i-0123456789abcdef0")})
		r["console unknown"] = apiCode(err)
		return r
	}, map[string]divergence{})
}
