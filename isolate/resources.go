package isolate

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
)

// This file finds or creates impound's own resources: the all-open and
// isolation security groups (per VPC), the empty isolation instance profile
// (per account) and the deny-all network ACL (per VPC).

// rule is one flattened security-group rule.
type rule struct {
	Egress   bool
	Protocol string // "-1" for all
	From, To int32
	Target   string // "v4:cidr", "v6:cidr", "pl:id", "sg:id"
}

func (r rule) String() string {
	dir := "ingress"
	if r.Egress {
		dir = "egress"
	}
	if r.Protocol == "-1" {
		return fmt.Sprintf("%s all %s", dir, r.Target)
	}
	return fmt.Sprintf("%s %s/%d-%d %s", dir, r.Protocol, r.From, r.To, r.Target)
}

func (r rule) permission() ec2types.IpPermission {
	p := ec2types.IpPermission{IpProtocol: aws.String(r.Protocol)}
	if r.Protocol != "-1" {
		p.FromPort, p.ToPort = aws.Int32(r.From), aws.Int32(r.To)
	}
	kind, v, _ := strings.Cut(r.Target, ":")
	switch kind {
	case "v4":
		p.IpRanges = []ec2types.IpRange{{CidrIp: aws.String(v)}}
	case "v6":
		p.Ipv6Ranges = []ec2types.Ipv6Range{{CidrIpv6: aws.String(v)}}
	case "pl":
		p.PrefixListIds = []ec2types.PrefixListId{{PrefixListId: aws.String(v)}}
	case "sg":
		p.UserIdGroupPairs = []ec2types.UserIdGroupPair{{GroupId: aws.String(v)}}
	}
	return p
}

func flatten(egress bool, perms []ec2types.IpPermission) []rule {
	var out []rule
	for _, p := range perms {
		base := rule{Egress: egress, Protocol: aws.ToString(p.IpProtocol)}
		if base.Protocol != "-1" {
			base.From, base.To = aws.ToInt32(p.FromPort), aws.ToInt32(p.ToPort)
		}
		add := func(t string) { r := base; r.Target = t; out = append(out, r) }
		for _, x := range p.IpRanges {
			add("v4:" + aws.ToString(x.CidrIp))
		}
		for _, x := range p.Ipv6Ranges {
			add("v6:" + aws.ToString(x.CidrIpv6))
		}
		for _, x := range p.PrefixListIds {
			add("pl:" + aws.ToString(x.PrefixListId))
		}
		for _, x := range p.UserIdGroupPairs {
			add("sg:" + aws.ToString(x.GroupId))
		}
	}
	return out
}

// allOpenRules lets every protocol in and out from 0.0.0.0/0 and ::/0: the
// only rule set under which established flows become untracked.
func allOpenRules() []rule {
	var rs []rule
	for _, eg := range []bool{false, true} {
		rs = append(rs, rule{Egress: eg, Protocol: "-1", Target: "v4:0.0.0.0/0"}, rule{Egress: eg, Protocol: "-1", Target: "v6:::/0"})
	}
	return rs
}

// ssmServices are the endpoints SSM Run Command and Session Manager need.
var ssmServices = []string{"ssm", "ec2messages", "ssmmessages", "s3"}

// ssmRules returns HTTPS egress to the VPC's SSM interface endpoints (by
// their private addresses) and to S3 (its interface endpoint addresses, or
// its prefix list when S3 is reached through a gateway endpoint).
func ssmRules(ctx context.Context, c Clients, vpc string) ([]rule, error) {
	names := make([]string, len(ssmServices))
	for i, s := range ssmServices {
		names[i] = "com.amazonaws." + c.Region + "." + s
	}
	out, err := c.EC2.DescribeVpcEndpoints(ctx, &ec2.DescribeVpcEndpointsInput{Filters: []ec2types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{vpc}},
		{Name: aws.String("service-name"), Values: names},
	}})
	if err != nil {
		return nil, fmt.Errorf("describe VPC endpoints of %s: %w", vpc, classify(err))
	}
	var rs []rule
	ssmReachable := false
	for _, ep := range out.VpcEndpoints {
		svc := aws.ToString(ep.ServiceName)
		if ep.State != "" && !strings.EqualFold(string(ep.State), "available") {
			continue
		}
		isSSM := svc == "com.amazonaws."+c.Region+".ssm"
		if ep.VpcEndpointType == ec2types.VpcEndpointTypeGateway {
			pl, err := c.EC2.DescribePrefixLists(ctx, &ec2.DescribePrefixListsInput{Filters: []ec2types.Filter{{Name: aws.String("prefix-list-name"), Values: []string{svc}}}})
			if err != nil {
				return nil, fmt.Errorf("describe prefix list %s: %w", svc, classify(err))
			}
			for _, p := range pl.PrefixLists {
				rs = append(rs, rule{Egress: true, Protocol: "tcp", From: 443, To: 443, Target: "pl:" + aws.ToString(p.PrefixListId)})
			}
			continue
		}
		// An interface endpoint: HTTPS to the private addresses of its
		// network interfaces, or, when it lists none, to its security
		// groups (traffic to the endpoint reaches interfaces that hold them).
		var targets []string
		if len(ep.NetworkInterfaceIds) > 0 {
			ni, err := c.EC2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: ep.NetworkInterfaceIds})
			if err != nil {
				return nil, fmt.Errorf("describe network interfaces of endpoint %s: %w", aws.ToString(ep.VpcEndpointId), classify(err))
			}
			for _, n := range ni.NetworkInterfaces {
				for _, a := range n.PrivateIpAddresses {
					if ip, err := netip.ParseAddr(aws.ToString(a.PrivateIpAddress)); err == nil {
						targets = append(targets, "v4:"+netip.PrefixFrom(ip, 32).String())
					}
				}
			}
		} else {
			for _, g := range ep.Groups {
				targets = append(targets, "sg:"+aws.ToString(g.GroupId))
			}
		}
		for _, tg := range targets {
			rs = append(rs, rule{Egress: true, Protocol: "tcp", From: 443, To: 443, Target: tg})
		}
		if isSSM && len(targets) > 0 {
			ssmReachable = true
		}
	}
	if !ssmReachable {
		return nil, fmt.Errorf("VPC %s: %w; create interface endpoints for ssm, ec2messages and ssmmessages (and S3), or isolate without --allow-ssm", vpc, ErrNoSSMEndpoints)
	}
	return dedupe(rs), nil
}

func dedupe(rs []rule) []rule {
	seen := map[rule]bool{}
	var out []rule
	for _, r := range rs {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// findGroup returns impound's group name in vpc, or nil when there is none.
// A group of that name without impound's managed tag is an error wrapping
// ErrNotManaged: it is never adopted.
func findGroup(ctx context.Context, c Clients, vpc, name string) (*ec2types.SecurityGroup, error) {
	out, err := c.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{vpc}},
		{Name: aws.String("group-name"), Values: []string{name}},
	}})
	if err != nil {
		return nil, fmt.Errorf("describe security group %s in %s: %w", name, vpc, classify(err))
	}
	for i := range out.SecurityGroups {
		g := &out.SecurityGroups[i]
		if aws.ToString(g.GroupName) != name {
			continue
		}
		if !managedEC2(g.Tags) {
			return nil, fmt.Errorf("security group %s named %s in %s is not tagged %s=true: %w; anyone allowed to create groups in the account could have made it to let traffic through: delete or rename it, then run again",
				aws.ToString(g.GroupId), name, vpc, TagManaged, ErrNotManaged)
		}
		return g, nil
	}
	return nil, nil
}

func managedEC2(tags []ec2types.Tag) bool {
	for _, t := range tags {
		if aws.ToString(t.Key) == TagManaged && aws.ToString(t.Value) == "true" {
			return true
		}
	}
	return false
}

// groupRules returns a group's current rules.
func groupRules(g *ec2types.SecurityGroup) []rule {
	return dedupe(append(flatten(false, g.IpPermissions), flatten(true, g.IpPermissionsEgress)...))
}

// ensureGroup finds or creates the named group in vpc and makes its rules
// exactly want. It returns the group ID and what it changed.
func ensureGroup(ctx context.Context, c Clients, vpc, name, caseID string, want []rule, dryRun bool) (string, []string, error) {
	g, err := findGroup(ctx, c, vpc, name)
	if err != nil {
		return "", nil, err
	}
	var changes []string
	var id string
	var have []rule
	if g == nil {
		changes = append(changes, "create "+name)
		if dryRun {
			return "(new " + name + ")", changes, nil
		}
		out, err := c.EC2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
			GroupName:   aws.String(name),
			Description: aws.String("impound incident-response containment; do not edit"),
			VpcId:       aws.String(vpc),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSecurityGroup, Tags: []ec2types.Tag{
				{Key: aws.String(TagManaged), Value: aws.String("true")},
				{Key: aws.String("Name"), Value: aws.String(name)},
				{Key: aws.String(TagCase), Value: aws.String(caseID)},
			}}},
		})
		if err != nil {
			return "", changes, fmt.Errorf("create security group %s in %s: %w", name, vpc, classify(err))
		}
		id = aws.ToString(out.GroupId)
		// A new group allows all IPv4 egress; read back what it holds.
		if g, err = findGroup(ctx, c, vpc, name); err != nil {
			return id, changes, err
		}
		if g != nil {
			have = groupRules(g)
		}
	} else {
		id = aws.ToString(g.GroupId)
		have = groupRules(g)
	}
	wantSet := map[rule]bool{}
	for _, r := range want {
		wantSet[r] = true
	}
	haveSet := map[rule]bool{}
	for _, r := range have {
		haveSet[r] = true
	}
	for _, r := range have {
		if wantSet[r] {
			continue
		}
		changes = append(changes, "revoke "+r.String())
		if dryRun {
			continue
		}
		p := []ec2types.IpPermission{r.permission()}
		if r.Egress {
			_, err = c.EC2.RevokeSecurityGroupEgress(ctx, &ec2.RevokeSecurityGroupEgressInput{GroupId: &id, IpPermissions: p})
		} else {
			_, err = c.EC2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: &id, IpPermissions: p})
		}
		if err != nil {
			return id, changes, fmt.Errorf("security group %s: revoke %s: %w", id, r, classify(err))
		}
	}
	for _, r := range want {
		if haveSet[r] {
			continue
		}
		changes = append(changes, "authorize "+r.String())
		if dryRun {
			continue
		}
		p := []ec2types.IpPermission{r.permission()}
		if r.Egress {
			_, err = c.EC2.AuthorizeSecurityGroupEgress(ctx, &ec2.AuthorizeSecurityGroupEgressInput{GroupId: &id, IpPermissions: p})
		} else {
			_, err = c.EC2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &id, IpPermissions: p})
		}
		if err != nil && apiCode(err) != "InvalidPermission.Duplicate" {
			return id, changes, fmt.Errorf("security group %s: authorize %s: %w", id, r, classify(err))
		}
	}
	if dryRun {
		return id, changes, nil
	}
	// Verify: the group must now hold exactly want.
	g, err = findGroup(ctx, c, vpc, name)
	if err != nil {
		return id, changes, err
	}
	if g == nil {
		return id, changes, fmt.Errorf("security group %s: %w: it vanished", name, ErrNotApplied)
	}
	got := groupRules(g)
	if fmt.Sprint(got) != fmt.Sprint(dedupe(want)) {
		return id, changes, fmt.Errorf("security group %s: %w: rules are %v, want %v", id, ErrNotApplied, got, dedupe(want))
	}
	return id, changes, nil
}

// ensureProfile finds or creates the empty isolation instance profile.
func ensureProfile(ctx context.Context, c Clients, dryRun bool) (string, []string, error) {
	out, err := c.IAM.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(IsolationProfileName)})
	if err == nil {
		p := out.InstanceProfile
		managed := false
		for _, t := range p.Tags {
			managed = managed || (aws.ToString(t.Key) == TagManaged && aws.ToString(t.Value) == "true")
		}
		if !managed {
			return "", nil, fmt.Errorf("instance profile %s (%s) is not tagged %s=true: %w; anyone allowed to create instance profiles could have made it to hand the instance a role: delete it, then run again",
				IsolationProfileName, aws.ToString(p.Arn), TagManaged, ErrNotManaged)
		}
		if len(p.Roles) > 0 {
			return "", nil, fmt.Errorf("instance profile %s holds role %s; impound's isolation profile must be empty: remove the role", IsolationProfileName, aws.ToString(p.Roles[0].RoleName))
		}
		return aws.ToString(p.Arn), nil, nil
	}
	if apiCode(err) != "NoSuchEntity" {
		return "", nil, fmt.Errorf("get instance profile %s: %w", IsolationProfileName, classify(err))
	}
	changes := []string{"create instance profile " + IsolationProfileName}
	if dryRun {
		return "(new " + IsolationProfileName + ")", changes, nil
	}
	cr, err := c.IAM.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{
		InstanceProfileName: aws.String(IsolationProfileName),
		Path:                aws.String("/impound/"),
		Tags:                []iamtypes.Tag{{Key: aws.String(TagManaged), Value: aws.String("true")}},
	})
	if err != nil {
		return "", changes, fmt.Errorf("create instance profile %s: %w", IsolationProfileName, classify(err))
	}
	return aws.ToString(cr.InstanceProfile.Arn), changes, nil
}

// ensureNACL finds or creates the deny-all network ACL of vpc. A new custom
// network ACL holds only its default deny-all rules.
func ensureNACL(ctx context.Context, c Clients, vpc, caseID string, dryRun bool) (string, []string, error) {
	out, err := c.EC2.DescribeNetworkAcls(ctx, &ec2.DescribeNetworkAclsInput{Filters: []ec2types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{vpc}},
		{Name: aws.String("tag:" + TagManaged), Values: []string{"true"}},
		{Name: aws.String("tag:Name"), Values: []string{DenyNACLName}},
	}})
	if err != nil {
		return "", nil, fmt.Errorf("describe network ACLs of %s: %w", vpc, classify(err))
	}
	for _, acl := range out.NetworkAcls {
		for _, e := range acl.Entries {
			if e.RuleAction == ec2types.RuleActionAllow {
				return "", nil, fmt.Errorf("network ACL %s (%s) has an allow rule; impound's deny-all ACL must hold none: delete the rule", aws.ToString(acl.NetworkAclId), DenyNACLName)
			}
		}
		return aws.ToString(acl.NetworkAclId), nil, nil
	}
	changes := []string{"create network ACL " + DenyNACLName}
	if dryRun {
		return "(new " + DenyNACLName + ")", changes, nil
	}
	cr, err := c.EC2.CreateNetworkAcl(ctx, &ec2.CreateNetworkAclInput{
		VpcId: aws.String(vpc),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeNetworkAcl, Tags: []ec2types.Tag{
			{Key: aws.String(TagManaged), Value: aws.String("true")},
			{Key: aws.String("Name"), Value: aws.String(DenyNACLName)},
			{Key: aws.String(TagCase), Value: aws.String(caseID)},
		}}},
	})
	if err != nil {
		return "", changes, fmt.Errorf("create network ACL in %s: %w", vpc, classify(err))
	}
	return aws.ToString(cr.NetworkAcl.NetworkAclId), changes, nil
}

func urlUnescape(s string) (string, error) { return url.QueryUnescape(s) }
