package awssim_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"image/jpeg"
	"io"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail"
	cttypes "github.com/aws/aws-sdk-go-v2/service/cloudtrail/types"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"

	"github.com/impound-ir/impound/internal/awssim"
)

// demoEnv is a simulator seeded with SeedDemo (1 GiB volumes).
type demoEnv struct {
	*env
	demo *awssim.Demo
}

func newDemoEnv(t *testing.T) *demoEnv {
	t.Helper()
	e := newEnv(t)
	d, err := awssim.SeedDemo(e.Sim, awssim.DemoOptions{MemberAccountID: memberID, ForensicsAccountID: forensicsID, RootGiB: 1, DataGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	return &demoEnv{env: e, demo: d}
}

// ec2Filter is the EC2 filter name = any of values.
func ec2Filter(name string, values ...string) ec2types.Filter {
	return ec2types.Filter{Name: aws.String(name), Values: values}
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func groupIDs(gs []ec2types.GroupIdentifier) []string {
	var out []string
	for _, g := range gs {
		out = append(out, aws.ToString(g.GroupId))
	}
	return out
}

func TestDemoInstanceNetworkAndProfile(t *testing.T) {
	e := newDemoEnv(t)
	d := e.demo
	ctx := context.Background()
	c := ec2.NewFromConfig(e.cfg(e.member))
	out := must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{d.InstanceID}}))
	inst := out.Reservations[0].Instances[0]
	if aws.ToString(inst.VpcId) != d.VPCID || aws.ToString(inst.SubnetId) != d.SubnetID {
		t.Errorf("instance VPC %s subnet %s, want %s %s", aws.ToString(inst.VpcId), aws.ToString(inst.SubnetId), d.VPCID, d.SubnetID)
	}
	if got := groupIDs(inst.SecurityGroups); !slices.Equal(got, []string{d.WebGroupID, d.AppGroupID}) {
		t.Errorf("instance groups %v", got)
	}
	if inst.IamInstanceProfile == nil || aws.ToString(inst.IamInstanceProfile.Arn) != d.InstanceProfileARN {
		t.Errorf("instance profile %+v, want %s", inst.IamInstanceProfile, d.InstanceProfileARN)
	}
	if aws.ToString(inst.PublicIpAddress) != d.PublicIP || !strings.HasPrefix(aws.ToString(inst.PrivateIpAddress), "10.0.1.") {
		t.Errorf("public %s private %s", aws.ToString(inst.PublicIpAddress), aws.ToString(inst.PrivateIpAddress))
	}
	if len(inst.NetworkInterfaces) != 2 {
		t.Fatalf("%d interfaces, want 2", len(inst.NetworkInterfaces))
	}
	for i, ni := range inst.NetworkInterfaces {
		if aws.ToString(ni.NetworkInterfaceId) != d.NetworkInterfaceIDs[i] || aws.ToInt32(ni.Attachment.DeviceIndex) != int32(i) {
			t.Errorf("interface %d: %s index %d", i, aws.ToString(ni.NetworkInterfaceId), aws.ToInt32(ni.Attachment.DeviceIndex))
		}
	}
	if len(inst.NetworkInterfaces[0].Ipv6Addresses) != 1 || !strings.HasPrefix(aws.ToString(inst.NetworkInterfaces[0].Ipv6Addresses[0].Ipv6Address), "2600:1f18:4a3:6a01:") {
		t.Errorf("primary IPv6 %+v", inst.NetworkInterfaces[0].Ipv6Addresses)
	}
	if len(inst.NetworkInterfaces[1].Ipv6Addresses) != 0 {
		t.Errorf("second interface has IPv6 %+v", inst.NetworkInterfaces[1].Ipv6Addresses)
	}

	// DescribeNetworkInterfaces by attachment, by group, by VPC.
	nis := must[*ec2.DescribeNetworkInterfacesOutput](t)(c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{ec2Filter("attachment.instance-id", d.InstanceID)}}))
	if len(nis.NetworkInterfaces) != 2 {
		t.Fatalf("%d interfaces by attachment.instance-id", len(nis.NetworkInterfaces))
	}
	var primary ec2types.NetworkInterface
	for _, ni := range nis.NetworkInterfaces {
		if aws.ToString(ni.NetworkInterfaceId) == d.NetworkInterfaceIDs[0] {
			primary = ni
		}
	}
	if primary.Association == nil || aws.ToString(primary.Association.PublicIp) != d.PublicIP || aws.ToString(primary.Association.AllocationId) != d.AllocationID {
		t.Errorf("primary association %+v", primary.Association)
	}
	if primary.ConnectionTrackingConfiguration != nil {
		t.Errorf("unset connection tracking shows as %+v", primary.ConnectionTrackingConfiguration)
	}
	if primary.Status != ec2types.NetworkInterfaceStatusInUse || aws.ToString(primary.Attachment.InstanceId) != d.InstanceID ||
		aws.ToString(primary.Attachment.InstanceOwnerId) != memberID || !aws.ToBool(primary.Attachment.DeleteOnTermination) {
		t.Errorf("status %s, attachment %+v", primary.Status, primary.Attachment)
	}
	byGroup := must[*ec2.DescribeNetworkInterfacesOutput](t)(c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{ec2Filter("group-id", d.WebGroupID)}}))
	var ids []string
	for _, ni := range byGroup.NetworkInterfaces {
		ids = append(ids, aws.ToString(ni.NetworkInterfaceId))
	}
	if len(ids) != 2 || !slices.Contains(ids, d.NetworkInterfaceIDs[0]) || slices.Contains(ids, d.NetworkInterfaceIDs[1]) {
		t.Errorf("interfaces in web group %v (web-1 primary and web-2 expected)", ids)
	}
	_, err := c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{"eni-0123456789abcdef0"}})
	wantCode(t, err, "InvalidNetworkInterfaceID.NotFound")

	// Connection tracking: validated, then visible.
	_, err = c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &d.NetworkInterfaceIDs[0],
		ConnectionTrackingSpecification: &ec2types.ConnectionTrackingSpecificationRequest{TcpEstablishedTimeout: aws.Int32(59)}})
	wantCode(t, err, "InvalidParameterValue")
	must[*ec2.ModifyNetworkInterfaceAttributeOutput](t)(c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &d.NetworkInterfaceIDs[0],
		ConnectionTrackingSpecification: &ec2types.ConnectionTrackingSpecificationRequest{TcpEstablishedTimeout: aws.Int32(60), UdpTimeout: aws.Int32(30)}}))
	one := must[*ec2.DescribeNetworkInterfacesOutput](t)(c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: d.NetworkInterfaceIDs[:1]}))
	ct := one.NetworkInterfaces[0].ConnectionTrackingConfiguration
	if ct == nil || aws.ToInt32(ct.TcpEstablishedTimeout) != 60 || aws.ToInt32(ct.UdpStreamTimeout) != awssim.DefaultUDPStreamTimeout || aws.ToInt32(ct.UdpTimeout) != 30 {
		t.Errorf("connection tracking %+v", ct)
	}

	// Security groups with their rules.
	sgs := must[*ec2.DescribeSecurityGroupsOutput](t)(c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{d.WebGroupID, d.AppGroupID}}))
	if len(sgs.SecurityGroups) != 2 {
		t.Fatalf("%d groups", len(sgs.SecurityGroups))
	}
	for _, g := range sgs.SecurityGroups {
		switch aws.ToString(g.GroupId) {
		case d.WebGroupID:
			if len(g.IpPermissions) != 2 {
				t.Fatalf("web ingress %+v", g.IpPermissions)
			}
			p := g.IpPermissions[0]
			if aws.ToString(p.IpProtocol) != "tcp" || aws.ToInt32(p.FromPort) != 443 || len(p.IpRanges) != 1 || len(p.Ipv6Ranges) != 1 ||
				aws.ToString(p.IpRanges[0].CidrIp) != "0.0.0.0/0" || aws.ToString(p.Ipv6Ranges[0].CidrIpv6) != "::/0" {
				t.Errorf("web 443 rule %+v", p)
			}
			if len(g.IpPermissionsEgress) != 1 || aws.ToString(g.IpPermissionsEgress[0].IpProtocol) != "-1" || g.IpPermissionsEgress[0].FromPort != nil ||
				len(g.IpPermissionsEgress[0].IpRanges) != 1 || len(g.IpPermissionsEgress[0].Ipv6Ranges) != 1 {
				t.Errorf("web egress %+v", g.IpPermissionsEgress)
			}
		case d.AppGroupID:
			if len(g.IpPermissions) != 1 || len(g.IpPermissions[0].UserIdGroupPairs) != 1 ||
				aws.ToString(g.IpPermissions[0].UserIdGroupPairs[0].GroupId) != d.WebGroupID || aws.ToString(g.IpPermissions[0].UserIdGroupPairs[0].UserId) != memberID {
				t.Errorf("app ingress %+v", g.IpPermissions)
			}
		}
	}
	byName := must[*ec2.DescribeSecurityGroupsOutput](t)(c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{ec2Filter("vpc-id", d.VPCID), ec2Filter("group-name", "app")}}))
	if len(byName.SecurityGroups) != 1 || aws.ToString(byName.SecurityGroups[0].GroupId) != d.AppGroupID {
		t.Errorf("filter vpc-id+group-name: %+v", byName.SecurityGroups)
	}

	// The forensics account sees none of it.
	fc := ec2.NewFromConfig(e.cfg(e.forensics))
	_, err = fc.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{d.WebGroupID}})
	wantCode(t, err, "InvalidGroup.NotFound")
	fn := must[*ec2.DescribeNetworkInterfacesOutput](t)(fc.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{}))
	if len(fn.NetworkInterfaces) != 0 {
		t.Errorf("forensics account sees %d interfaces", len(fn.NetworkInterfaces))
	}

	// IAM: the instance profile, its role, inline and attached policies.
	ic := iam.NewFromConfig(e.cfg(e.member))
	prof := must[*iam.GetInstanceProfileOutput](t)(ic.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String("web-app")}))
	if aws.ToString(prof.InstanceProfile.Arn) != d.InstanceProfileARN || len(prof.InstanceProfile.Roles) != 1 || aws.ToString(prof.InstanceProfile.Roles[0].RoleName) != d.RoleName {
		t.Fatalf("instance profile %+v", prof.InstanceProfile)
	}
	role := must[*iam.GetRoleOutput](t)(ic.GetRole(ctx, &iam.GetRoleInput{RoleName: &d.RoleName}))
	trust, _ := url.QueryUnescape(aws.ToString(role.Role.AssumeRolePolicyDocument))
	if aws.ToString(role.Role.Arn) != "arn:aws:iam::"+memberID+":role/web-app" || !strings.Contains(trust, "ec2.amazonaws.com") || role.Role.CreateDate == nil {
		t.Errorf("role %+v (trust %s)", role.Role, trust)
	}
	names := must[*iam.ListRolePoliciesOutput](t)(ic.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: &d.RoleName}))
	if !slices.Equal(names.PolicyNames, []string{"s3-read"}) {
		t.Errorf("inline policies %v", names.PolicyNames)
	}
	pol := must[*iam.GetRolePolicyOutput](t)(ic.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: &d.RoleName, PolicyName: aws.String("s3-read")}))
	raw := aws.ToString(pol.PolicyDocument)
	doc, err := url.QueryUnescape(raw)
	if err != nil || !strings.HasPrefix(raw, "%7B") || !json.Valid([]byte(doc)) || !strings.Contains(doc, `"s3:GetObject"`) {
		t.Errorf("policy document %q (decoded %q, %v): want URL-encoded JSON", raw, doc, err)
	}
	att := must[*iam.ListAttachedRolePoliciesOutput](t)(ic.ListAttachedRolePolicies(ctx, &iam.ListAttachedRolePoliciesInput{RoleName: &d.RoleName}))
	if len(att.AttachedPolicies) != 1 || aws.ToString(att.AttachedPolicies[0].PolicyName) != "AmazonSSMManagedInstanceCore" {
		t.Errorf("attached %+v", att.AttachedPolicies)
	}
	_, err = ic.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("nope")})
	wantCode(t, err, "NoSuchEntity")
	_, err = iam.NewFromConfig(e.cfg(e.forensics)).GetRole(ctx, &iam.GetRoleInput{RoleName: &d.RoleName})
	wantCode(t, err, "NoSuchEntity")
	prs := must[*iam.ListInstanceProfilesForRoleOutput](t)(ic.ListInstanceProfilesForRole(ctx, &iam.ListInstanceProfilesForRoleInput{RoleName: &d.RoleName}))
	if len(prs.InstanceProfiles) != 1 {
		t.Errorf("profiles for role %+v", prs.InstanceProfiles)
	}

	// VPC endpoints.
	eps := must[*ec2.DescribeVpcEndpointsOutput](t)(c.DescribeVpcEndpoints(ctx, &ec2.DescribeVpcEndpointsInput{Filters: []ec2types.Filter{ec2Filter("vpc-id", d.VPCID)}}))
	var svcs []string
	for _, ep := range eps.VpcEndpoints {
		svcs = append(svcs, aws.ToString(ep.ServiceName)+"/"+string(ep.VpcEndpointType))
	}
	sort.Strings(svcs)
	want := []string{"com.amazonaws.eu-west-1.ec2messages/Interface", "com.amazonaws.eu-west-1.s3/Gateway", "com.amazonaws.eu-west-1.ssm/Interface", "com.amazonaws.eu-west-1.ssmmessages/Interface"}
	if !slices.Equal(svcs, want) {
		t.Errorf("endpoints %v, want %v", svcs, want)
	}
	vpcs := must[*ec2.DescribeVpcsOutput](t)(c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{d.VPCID}}))
	if len(vpcs.Vpcs) != 1 || aws.ToBool(vpcs.Vpcs[0].IsDefault) || aws.ToString(vpcs.Vpcs[0].CidrBlock) != "10.0.0.0/16" {
		t.Errorf("VPC %+v", vpcs.Vpcs)
	}
}

func TestConsoleOutputAndScreenshot(t *testing.T) {
	e := newDemoEnv(t)
	ctx := context.Background()
	c := ec2.NewFromConfig(e.cfg(e.member))
	out := must[*ec2.GetConsoleOutputOutput](t)(c.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: &e.demo.InstanceID, Latest: aws.Bool(true)}))
	text, err := base64.StdEncoding.DecodeString(aws.ToString(out.Output))
	if err != nil || string(text) != awssim.DemoConsoleOutput || !bytes.Contains(text, []byte("<script>alert(1)</script>")) {
		t.Fatalf("console output %q (%v)", text, err)
	}
	if out.Timestamp == nil {
		t.Error("no timestamp")
	}
	shot := must[*ec2.GetConsoleScreenshotOutput](t)(c.GetConsoleScreenshot(ctx, &ec2.GetConsoleScreenshotInput{InstanceId: &e.demo.InstanceID}))
	img, err := base64.StdEncoding.DecodeString(aws.ToString(shot.ImageData))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(img))
	if err != nil || cfg.Width != 160 || cfg.Height != 100 {
		t.Fatalf("screenshot is not the seeded 160x100 JPEG: %+v %v", cfg, err)
	}

	// Instance types AWS refuses.
	old := must[*awssim.Instance](t)(e.member.RunInstance(awssim.InstanceOptions{InstanceType: "m4.large", ConsoleOutput: "x"}))
	id := old.ID()
	_, err = c.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: &id, Latest: aws.Bool(true)})
	wantCode(t, err, "UnsupportedOperation")
	if o, err := c.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: &id}); err != nil || aws.ToString(o.Output) != base64.StdEncoding.EncodeToString([]byte("x")) {
		t.Errorf("non-latest output on Xen: %v %v", o, err)
	}
	metal := must[*awssim.Instance](t)(e.member.RunInstance(awssim.InstanceOptions{InstanceType: "c5.metal"}))
	id = metal.ID()
	_, err = c.GetConsoleScreenshot(ctx, &ec2.GetConsoleScreenshotInput{InstanceId: &id})
	wantCode(t, err, "UnsupportedOperation")
	_, err = ec2.NewFromConfig(e.cfg(e.forensics)).GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: &e.demo.InstanceID})
	wantCode(t, err, "InvalidInstanceID.NotFound")
}

func TestCloudTrailLookupEvents(t *testing.T) {
	e := newDemoEnv(t)
	d := e.demo
	ctx := context.Background()
	// impound's own call, under the operator's session name.
	session := "impound-alice-IR-7"
	cfg := e.assume(t, e.cfg(e.member), e.member.RoleARN("impound-responder"), session)
	must[*ec2.CreateTagsOutput](t)(ec2.NewFromConfig(cfg).CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{d.InstanceID},
		Tags: []ec2types.Tag{{Key: aws.String("impound:case"), Value: aws.String("IR-7")}}}))
	// A failed mutating call is recorded with its error.
	_, err := ec2.NewFromConfig(cfg).ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{NetworkInterfaceId: &d.NetworkInterfaceIDs[0],
		ConnectionTrackingSpecification: &ec2types.ConnectionTrackingSpecificationRequest{TcpEstablishedTimeout: aws.Int32(1)}})
	wantCode(t, err, "InvalidParameterValue")

	ct := cloudtrail.NewFromConfig(e.cfg(e.member))
	var events []cttypes.Event
	p := cloudtrail.NewLookupEventsPaginator(ct, &cloudtrail.LookupEventsInput{MaxResults: aws.Int32(1),
		LookupAttributes: []cttypes.LookupAttribute{{AttributeKey: cttypes.LookupAttributeKeyResourceName, AttributeValue: &d.InstanceID}}})
	pages := 0
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		events = append(events, out.Events...)
	}
	var names []string
	for _, ev := range events {
		names = append(names, aws.ToString(ev.EventName))
	}
	// Newest first: our CreateTags, then the seeded history.
	if !slices.Equal(names, []string{"CreateTags", "ModifyInstanceAttribute", "RunInstances"}) || pages != 3 {
		t.Fatalf("events %v in %d pages", names, pages)
	}
	tag := events[0]
	if aws.ToString(tag.Username) != session || aws.ToString(tag.EventSource) != "ec2.amazonaws.com" || aws.ToString(tag.ReadOnly) != "false" {
		t.Errorf("CreateTags event %+v", tag)
	}
	var doc struct {
		UserIdentity struct {
			Type, Arn string
		} `json:"userIdentity"`
		EventName         string         `json:"eventName"`
		RequestParameters map[string]any `json:"requestParameters"`
		ErrorCode         string         `json:"errorCode"`
		SourceIPAddress   string         `json:"sourceIPAddress"`
		RecipientAccount  string         `json:"recipientAccountId"`
	}
	if err := json.Unmarshal([]byte(aws.ToString(tag.CloudTrailEvent)), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.UserIdentity.Type != "AssumedRole" || doc.UserIdentity.Arn != "arn:aws:sts::"+memberID+":assumed-role/impound-responder/"+session ||
		doc.EventName != "CreateTags" || doc.RequestParameters["Tag.1.Key"] != "impound:case" || doc.SourceIPAddress != "127.0.0.1" ||
		doc.RecipientAccount != memberID || doc.ErrorCode != "" {
		t.Errorf("CloudTrailEvent %+v", doc)
	}

	// By event name, including the failed call with its error code.
	out := must[*cloudtrail.LookupEventsOutput](t)(ct.LookupEvents(ctx, &cloudtrail.LookupEventsInput{
		LookupAttributes: []cttypes.LookupAttribute{{AttributeKey: cttypes.LookupAttributeKeyEventName, AttributeValue: aws.String("ModifyNetworkInterfaceAttribute")}}}))
	if len(out.Events) != 1 || !strings.Contains(aws.ToString(out.Events[0].CloudTrailEvent), `"errorCode":"InvalidParameterValue"`) {
		t.Errorf("failed call events %+v", out.Events)
	}
	// By user name; and a time window that excludes the seeded launch.
	out = must[*cloudtrail.LookupEventsOutput](t)(ct.LookupEvents(ctx, &cloudtrail.LookupEventsInput{StartTime: aws.Time(time.Now().Add(-24 * time.Hour)),
		LookupAttributes: []cttypes.LookupAttribute{{AttributeKey: cttypes.LookupAttributeKeyResourceName, AttributeValue: &d.InstanceID}}}))
	if len(out.Events) != 2 {
		t.Errorf("last 24 h: %d events, want 2", len(out.Events))
	}
	// The forensics account's trail holds none of the member's events.
	fo := must[*cloudtrail.LookupEventsOutput](t)(cloudtrail.NewFromConfig(e.cfg(e.forensics)).LookupEvents(ctx, &cloudtrail.LookupEventsInput{
		LookupAttributes: []cttypes.LookupAttribute{{AttributeKey: cttypes.LookupAttributeKeyResourceName, AttributeValue: &d.InstanceID}}}))
	if len(fo.Events) != 0 {
		t.Errorf("forensics sees %d member events", len(fo.Events))
	}
	// AssumeRole is recorded in the role's account.
	out = must[*cloudtrail.LookupEventsOutput](t)(ct.LookupEvents(ctx, &cloudtrail.LookupEventsInput{
		LookupAttributes: []cttypes.LookupAttribute{{AttributeKey: cttypes.LookupAttributeKeyEventName, AttributeValue: aws.String("AssumeRole")}}}))
	if len(out.Events) != 1 || aws.ToString(out.Events[0].EventSource) != "sts.amazonaws.com" {
		t.Errorf("AssumeRole events %+v", out.Events)
	}

	// RunInstances names the instances it launched, found only in its answer.
	run := must[*ec2.RunInstancesOutput](t)(ec2.NewFromConfig(cfg).RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-0abcdef1234567890"),
		InstanceType: ec2types.InstanceTypeT3Micro, MinCount: aws.Int32(2), MaxCount: aws.Int32(2)}))
	for _, inst := range run.Instances {
		out = must[*cloudtrail.LookupEventsOutput](t)(ct.LookupEvents(ctx, &cloudtrail.LookupEventsInput{
			LookupAttributes: []cttypes.LookupAttribute{{AttributeKey: cttypes.LookupAttributeKeyResourceName, AttributeValue: inst.InstanceId}}}))
		if len(out.Events) != 1 || aws.ToString(out.Events[0].EventName) != "RunInstances" || aws.ToString(out.Events[0].Username) != session ||
			!slices.ContainsFunc(out.Events[0].Resources, func(r cttypes.Resource) bool {
				return aws.ToString(r.ResourceType) == "AWS::EC2::Instance" && aws.ToString(r.ResourceName) == aws.ToString(inst.InstanceId)
			}) {
			t.Errorf("events about %s: %+v, want its RunInstances", aws.ToString(inst.InstanceId), out.Events)
		}
	}

	_, err = ct.LookupEvents(ctx, &cloudtrail.LookupEventsInput{MaxResults: aws.Int32(51)})
	wantCode(t, err, "InvalidMaxResultsException")
	_, err = ct.LookupEvents(ctx, &cloudtrail.LookupEventsInput{LookupAttributes: []cttypes.LookupAttribute{
		{AttributeKey: cttypes.LookupAttributeKeyEventName, AttributeValue: aws.String("a")}, {AttributeKey: cttypes.LookupAttributeKeyUsername, AttributeValue: aws.String("b")}}})
	wantCode(t, err, "InvalidLookupAttributesException")
	_, err = ct.LookupEvents(ctx, &cloudtrail.LookupEventsInput{StartTime: aws.Time(time.Now()), EndTime: aws.Time(time.Now().Add(-time.Hour))})
	wantCode(t, err, "InvalidTimeRangeException")
}

func TestDeleteSnapshot(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	vol := must[*awssim.Volume](t)(e.member.CreateVolume(volumeOpts(1)))
	if err := vol.WriteRandom(0, 3*awssim.BlockSize, 7); err != nil {
		t.Fatal(err)
	}
	key := must[*awssim.Key](t)(e.member.CreateKey(awssim.KeyOptions{AllowAccounts: []string{forensicsID}}))
	mc := ec2.NewFromConfig(e.cfg(e.member))
	fc := ec2.NewFromConfig(e.cfg(e.forensics))
	src := snapshotID(t, e, vol.ID())
	want := sha256Of(t, must[io.Reader](t)(vol.Image()))

	// An intermediate re-encrypted copy, shared, copied by forensics, then
	// deleted while the forensics copy is still pending.
	mid := must[*ec2.CopySnapshotOutput](t)(mc.CopySnapshot(ctx, &ec2.CopySnapshotInput{SourceSnapshotId: &src, SourceRegion: aws.String("eu-west-1"),
		Encrypted: aws.Bool(true), KmsKeyId: aws.String(key.ARN())}))
	waitCompleted(t, mc, *mid.SnapshotId)
	must[*ec2.ModifySnapshotAttributeOutput](t)(mc.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{SnapshotId: mid.SnapshotId,
		Attribute: ec2types.SnapshotAttributeNameCreateVolumePermission, CreateVolumePermission: &ec2types.CreateVolumePermissionModifications{
			Add: []ec2types.CreateVolumePermission{{UserId: aws.String(forensicsID)}}}}))
	fcopy := must[*ec2.CopySnapshotOutput](t)(fc.CopySnapshot(ctx, &ec2.CopySnapshotInput{SourceSnapshotId: mid.SnapshotId, SourceRegion: aws.String("eu-west-1")}))

	// Only the owner may delete.
	_, err := fc.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: mid.SnapshotId})
	wantCode(t, err, "UnauthorizedOperation")
	must[*ec2.DeleteSnapshotOutput](t)(mc.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: mid.SnapshotId}))
	_, err = mc.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{*mid.SnapshotId}})
	wantCode(t, err, "InvalidSnapshot.NotFound")
	_, err = mc.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: mid.SnapshotId})
	wantCode(t, err, "InvalidSnapshot.NotFound")
	_, err = mc.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String("snap-bad")})
	wantCode(t, err, "InvalidSnapshotID.Malformed")

	waitCompleted(t, fc, *fcopy.SnapshotId)
	got, n, err := readImage(ctx, ebs.NewFromConfig(e.cfg(e.forensics)), *fcopy.SnapshotId)
	if err != nil || got != want || n != 3 {
		t.Fatalf("forensics copy after source deletion: %s (%d blocks, %v), want %s", got, n, err, want)
	}
}
