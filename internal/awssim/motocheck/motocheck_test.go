package motocheck

import (
	"context"
	"errors"
	"fmt"
	"github.com/impound-ir/impound/internal/testenv"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/impound-ir/impound/internal/awssim"
)

// target is one implementation of the AWS APIs under test.
type target struct {
	name                  string
	member, forensics     aws.Config
	memberID, forensicsID string
	imageID               string
}

const (
	region      = "us-east-1"
	forensicsID = "222222222222"
	sessionName = "impound-alice-IR-1"
	// An AMI moto ships; the simulator accepts any well-formed image ID.
	imageID = "ami-03cf127a"
)

// clientConfig keeps the SDK's standard retryer: moto's development server
// closes kept-alive connections, and a request on such a connection fails
// with a transport error the SDK retries. API errors (4xx), which the
// scenarios compare, are not retried.
func clientConfig(endpoint string, creds aws.CredentialsProvider) aws.Config {
	return aws.Config{
		Region:       region,
		Credentials:  creds,
		BaseEndpoint: aws.String(endpoint),
		Retryer:      func() aws.Retryer { return retry.NewStandard() },
	}
}

// assume returns a config for role in account id, assumed through STS with base.
func assume(t *testing.T, base aws.Config, id string) aws.Config {
	t.Helper()
	out, err := sts.NewFromConfig(base).AssumeRole(context.Background(), &sts.AssumeRoleInput{
		RoleArn:         aws.String("arn:aws:iam::" + id + ":role/forensics"),
		RoleSessionName: aws.String(sessionName),
	})
	if err != nil {
		t.Fatalf("assume role in %s: %v", id, err)
	}
	c := out.Credentials
	cfg := base.Copy()
	cfg.Credentials = credentials.NewStaticCredentialsProvider(aws.ToString(c.AccessKeyId), aws.ToString(c.SecretAccessKey), aws.ToString(c.SessionToken))
	return cfg
}

func simTarget(t *testing.T) target {
	sim := awssim.New(awssim.Options{Region: region})
	m := sim.AddAccount("111111111111")
	sim.AddAccount(forensicsID)
	srv, err := awssim.Listen(context.Background(), "127.0.0.1:0", sim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c := m.Credentials()
	member := clientConfig(srv.URL(), credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, ""))
	return target{name: "awssim", member: member, forensics: assume(t, member, forensicsID),
		memberID: "111111111111", forensicsID: forensicsID, imageID: imageID}
}

func motoTarget(t *testing.T) target {
	// This package's own moto_server, reset for each test: the reset
	// cannot touch other packages' tests on the shared server, nor theirs
	// this package's resources.
	ep := testenv.Moto(t)
	resetMoto(t, ep)
	member := clientConfig(ep, credentials.NewStaticCredentialsProvider("testing", "testing", ""))
	return target{name: "moto", member: member, forensics: assume(t, member, forensicsID),
		memberID: "123456789012", forensicsID: forensicsID, imageID: imageID}
}

// normaliser replaces values that legitimately differ between targets
// (generated IDs, account IDs, times) by stable symbols, so that what remains
// can be compared exactly.
type normaliser struct {
	t      target
	ids    map[string]string
	counts map[string]int
}

func newNormaliser(t target) *normaliser {
	return &normaliser{t: t, ids: map[string]string{}, counts: map[string]int{}}
}

var idPattern = regexp.MustCompile(`^(i|vol|snap|ami|r)-[0-9a-f]{8,17}$`)

// id maps a generated ID to "<kind#n>" in order of first appearance.
func (n *normaliser) id(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := n.ids[s]; ok {
		return v
	}
	if !idPattern.MatchString(s) {
		return "MALFORMED(" + s + ")"
	}
	kind := s[:strings.IndexByte(s, '-')]
	n.counts[kind]++
	v := fmt.Sprintf("<%s#%d>", kind, n.counts[kind])
	n.ids[s] = v
	return v
}

func (n *normaliser) account(s string) string {
	switch s {
	case n.t.memberID:
		return "<member>"
	case n.t.forensicsID:
		return "<forensics>"
	}
	return s
}

func (n *normaliser) text(s string) string {
	s = strings.ReplaceAll(s, n.t.memberID, "<member>")
	return strings.ReplaceAll(s, n.t.forensicsID, "<forensics>")
}

// record is one scenario's observations: field name to normalised value.
type record map[string]any

// scenario runs against one target and returns what it observed.
type scenario func(t *testing.T, tg target, n *normaliser) record

// divergence documents a field where moto is known to differ from AWS.
type divergence struct {
	reason string
	// want is AWS's documented value; the simulator is checked against it.
	want any
}

// compare runs sc on both targets and compares every field, except the
// documented divergences, where the simulator must give AWS's value.
func compare(t *testing.T, sc scenario, known map[string]divergence) {
	t.Helper()
	mt := motoTarget(t)
	st := simTarget(t)
	got := sc(t, st, newNormaliser(st))
	want := sc(t, mt, newNormaliser(mt))
	keys := map[string]bool{}
	for k := range got {
		keys[k] = true
	}
	for k := range want {
		keys[k] = true
	}
	var names []string
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if d, ok := known[k]; ok {
			if !reflect.DeepEqual(got[k], d.want) {
				t.Errorf("%s: simulator %#v, AWS documents %#v (moto diverges: %s; moto says %#v)", k, got[k], d.want, d.reason, want[k])
			}
			if reflect.DeepEqual(want[k], d.want) {
				t.Logf("%s: moto now agrees with AWS (%#v): the divergence %q may be gone", k, want[k], d.reason)
			} else {
				t.Logf("%s: known divergence (%s): moto %#v, AWS and the simulator %#v", k, d.reason, want[k], d.want)
			}
			continue
		}
		if !reflect.DeepEqual(got[k], want[k]) {
			t.Errorf("%s: simulator %#v, moto %#v", k, got[k], want[k])
		}
	}
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	if err != nil {
		return "non-API error: " + err.Error()
	}
	return ""
}

func tagMap(tags []ec2types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func TestSTS(t *testing.T) {
	compare(t, func(t *testing.T, tg target, n *normaliser) record {
		ctx := context.Background()
		r := record{}
		me, err := sts.NewFromConfig(tg.member).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil {
			t.Fatalf("%s: get caller identity: %v", tg.name, err)
		}
		r["member.Account"] = n.account(aws.ToString(me.Account))
		r["member.ArnIsIAM"] = strings.HasPrefix(aws.ToString(me.Arn), "arn:aws:iam::"+tg.memberID+":")
		f, err := sts.NewFromConfig(tg.forensics).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil {
			t.Fatalf("%s: get caller identity (assumed): %v", tg.name, err)
		}
		r["assumed.Account"] = n.account(aws.ToString(f.Account))
		r["assumed.Arn"] = n.text(aws.ToString(f.Arn))
		r["assumed.UserIdSuffix"] = aws.ToString(f.UserId)[strings.IndexByte(aws.ToString(f.UserId), ':')+1:]
		r["assumed.UserIdPrefix"] = aws.ToString(f.UserId)[:4]

		out, err := sts.NewFromConfig(tg.member).AssumeRole(ctx, &sts.AssumeRoleInput{
			RoleArn: aws.String("arn:aws:iam::" + tg.forensicsID + ":role/forensics"), RoleSessionName: aws.String("xy"), DurationSeconds: aws.Int32(900)})
		if err != nil {
			t.Fatalf("%s: assume role: %v", tg.name, err)
		}
		r["assume.AssumedRoleUser.Arn"] = n.text(aws.ToString(out.AssumedRoleUser.Arn))
		r["assume.Credentials.KeyPrefix"] = aws.ToString(out.Credentials.AccessKeyId)[:4]
		r["assume.Credentials.HasToken"] = aws.ToString(out.Credentials.SessionToken) != ""
		left := time.Until(aws.ToTime(out.Credentials.Expiration))
		r["assume.Credentials.ExpiresIn15m"] = left > 14*time.Minute && left <= 15*time.Minute+5*time.Second

		// RoleSessionName must be 2 to 64 characters of [\w+=,.@-].
		for name, session := range map[string]string{"one char": "x", "65 chars": strings.Repeat("s", 65), "space": "a b"} {
			_, err := sts.NewFromConfig(tg.member).AssumeRole(ctx, &sts.AssumeRoleInput{
				RoleArn: aws.String("arn:aws:iam::" + tg.forensicsID + ":role/forensics"), RoleSessionName: aws.String(session)})
			r["bad session name: "+name] = apiCode(err)
		}
		return r
	}, map[string]divergence{
		// moto answers GetCallerIdentity for long-term keys with arn:aws:sts::ACCOUNT:user/moto;
		// AWS gives the IAM user's ARN, arn:aws:iam::ACCOUNT:user/NAME.
		"member.ArnIsIAM":            {reason: "moto reports an sts: ARN for IAM users", want: true},
		"bad session name: one char": {reason: "moto does not check RoleSessionName's minimum length", want: "ValidationError"},
		"bad session name: 65 chars": {reason: "moto does not check RoleSessionName's maximum length", want: "ValidationError"},
		"bad session name: space":    {reason: "moto does not check RoleSessionName's characters", want: "ValidationError"},
	})
}

// launch runs an instance with a root volume and one data volume, tagged.
func launch(t *testing.T, tg target) string {
	out, err := ec2.NewFromConfig(tg.member).RunInstances(context.Background(), &ec2.RunInstancesInput{
		ImageId: aws.String(tg.imageID), InstanceType: ec2types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{{DeviceName: aws.String("/dev/sdf"),
			Ebs: &ec2types.EbsBlockDevice{VolumeSize: aws.Int32(10), DeleteOnTermination: aws.Bool(false)}}},
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance,
			Tags: []ec2types.Tag{{Key: aws.String("Name"), Value: aws.String("web-1")}}}},
	})
	if err != nil {
		t.Fatalf("%s: run instances: %v", tg.name, err)
	}
	if len(out.Instances) != 1 {
		t.Fatalf("%s: run instances returned %d instances", tg.name, len(out.Instances))
	}
	return aws.ToString(out.Instances[0].InstanceId)
}

func TestInstancesAndVolumes(t *testing.T) {
	compare(t, func(t *testing.T, tg target, n *normaliser) record {
		ctx := context.Background()
		c := ec2.NewFromConfig(tg.member)
		id := launch(t, tg)
		r := record{"instance": n.id(id)}
		out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatalf("%s: describe instances: %v", tg.name, err)
		}
		inst := out.Reservations[0].Instances[0]
		r["OwnerId"] = n.account(aws.ToString(out.Reservations[0].OwnerId))
		r["ImageId"] = aws.ToString(inst.ImageId)
		r["InstanceType"] = string(inst.InstanceType)
		r["State"] = string(inst.State.Name)
		r["Placement.Region"] = strings.HasPrefix(aws.ToString(inst.Placement.AvailabilityZone), region)
		r["Tags"] = tagMap(inst.Tags)
		var dataVol string
		for _, b := range inst.BlockDeviceMappings {
			if aws.ToString(b.DeviceName) == "/dev/sdf" {
				dataVol = aws.ToString(b.Ebs.VolumeId)
				r["sdf.Status"] = string(b.Ebs.Status)
				r["sdf.DeleteOnTermination"] = aws.ToBool(b.Ebs.DeleteOnTermination)
			}
		}
		if dataVol == "" {
			t.Fatalf("%s: no /dev/sdf mapping", tg.name)
		}
		v, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{dataVol}})
		if err != nil {
			t.Fatalf("%s: describe volumes: %v", tg.name, err)
		}
		vol := v.Volumes[0]
		r["vol.Size"] = aws.ToInt32(vol.Size)
		r["vol.State"] = string(vol.State)
		r["vol.Encrypted"] = aws.ToBool(vol.Encrypted)
		r["vol.Attachments"] = len(vol.Attachments)
		r["vol.Attachment.Instance"] = n.id(aws.ToString(vol.Attachments[0].InstanceId))
		r["vol.Attachment.Device"] = aws.ToString(vol.Attachments[0].Device)
		r["vol.Attachment.State"] = string(vol.Attachments[0].State)

		_, err = c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
		r["unknown instance"] = apiCode(err)
		return r
	}, map[string]divergence{
		// moto reports a just-launched instance as running; AWS reports pending first.
		// Both are what RunInstances allows; the simulator's seeded instances run at once,
		// and an instance launched through the API is pending until first described.
		"State": {reason: "moto starts instances in running state", want: "running"},
	})
}

func TestSnapshots(t *testing.T) {
	compare(t, func(t *testing.T, tg target, n *normaliser) record {
		ctx := context.Background()
		c := ec2.NewFromConfig(tg.member)
		fc := ec2.NewFromConfig(tg.forensics)
		id := launch(t, tg)
		r := record{}

		cs, err := c.CreateSnapshots(ctx, &ec2.CreateSnapshotsInput{
			InstanceSpecification: &ec2types.InstanceSpecification{InstanceId: aws.String(id)},
			Description:           aws.String("impound case IR-1"),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSnapshot,
				Tags: []ec2types.Tag{{Key: aws.String("impound:case"), Value: aws.String("IR-1")}}}},
		})
		if err != nil {
			t.Fatalf("%s: create snapshots: %v", tg.name, err)
		}
		r["CreateSnapshots.count"] = len(cs.Snapshots)
		var snap, vol string
		for _, s := range cs.Snapshots {
			if aws.ToInt32(s.VolumeSize) == 10 {
				snap, vol = aws.ToString(s.SnapshotId), aws.ToString(s.VolumeId)
			}
		}
		if snap == "" {
			t.Fatalf("%s: no snapshot of the 10 GiB data volume in %+v", tg.name, cs.Snapshots)
		}
		r["snap"] = n.id(snap)

		d, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
		if err != nil {
			t.Fatalf("%s: describe snapshots: %v", tg.name, err)
		}
		s := d.Snapshots[0]
		r["State"] = string(s.State)
		r["Progress"] = aws.ToString(s.Progress)
		r["OwnerId"] = n.account(aws.ToString(s.OwnerId))
		r["VolumeId"] = n.id(aws.ToString(s.VolumeId)) == n.id(vol)
		r["VolumeSize"] = aws.ToInt32(s.VolumeSize)
		r["Description"] = aws.ToString(s.Description)
		r["Encrypted"] = aws.ToBool(s.Encrypted)
		r["Tags"] = tagMap(s.Tags)
		r["StartTimeSet"] = s.StartTime != nil && !s.StartTime.IsZero()

		// Filters.
		byFilter := func(name, value string) []string {
			out, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
				Filters: []ec2types.Filter{{Name: aws.String(name), Values: []string{value}}}})
			if err != nil {
				t.Fatalf("%s: describe snapshots %s=%s: %v", tg.name, name, value, err)
			}
			var ids []string
			for _, s := range out.Snapshots {
				ids = append(ids, n.id(aws.ToString(s.SnapshotId)))
			}
			sort.Strings(ids)
			return ids
		}
		r["filter tag:impound:case"] = len(byFilter("tag:impound:case", "IR-1"))
		r["filter tag-key"] = len(byFilter("tag-key", "impound:case"))
		r["filter volume-id"] = byFilter("volume-id", vol)
		r["filter tag miss"] = len(byFilter("tag:impound:case", "IR-2"))

		// Tags.
		if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{snap},
			Tags: []ec2types.Tag{{Key: aws.String("impound:status"), Value: aws.String("evidence")}}}); err != nil {
			t.Fatalf("%s: create tags: %v", tg.name, err)
		}
		dt, err := c.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2types.Filter{{Name: aws.String("resource-id"), Values: []string{snap}}}})
		if err != nil {
			t.Fatalf("%s: describe tags: %v", tg.name, err)
		}
		tags := map[string]string{}
		for _, td := range dt.Tags {
			tags[aws.ToString(td.Key)] = aws.ToString(td.Value) + "@" + string(td.ResourceType)
		}
		r["DescribeTags"] = tags

		// Sharing with the forensics account.
		_, err = fc.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
		r["unshared visible to forensics"] = apiCode(err)
		if _, err := c.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{SnapshotId: aws.String(snap),
			Attribute: ec2types.SnapshotAttributeNameCreateVolumePermission, OperationType: ec2types.OperationTypeAdd,
			UserIds: []string{tg.forensicsID}}); err != nil {
			t.Fatalf("%s: share: %v", tg.name, err)
		}
		attr, err := c.DescribeSnapshotAttribute(ctx, &ec2.DescribeSnapshotAttributeInput{SnapshotId: aws.String(snap),
			Attribute: ec2types.SnapshotAttributeNameCreateVolumePermission})
		if err != nil {
			t.Fatalf("%s: describe snapshot attribute: %v", tg.name, err)
		}
		var users []string
		for _, p := range attr.CreateVolumePermissions {
			users = append(users, n.account(aws.ToString(p.UserId)))
		}
		r["CreateVolumePermissions"] = users
		r["attr.SnapshotId"] = n.id(aws.ToString(attr.SnapshotId))
		// Once shared, the forensics account sees the snapshot, owned by the member account.
		shared, err := fc.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
		r["shared visible to forensics"] = apiCode(err)
		if err == nil && len(shared.Snapshots) == 1 {
			r["shared.OwnerId"] = n.account(aws.ToString(shared.Snapshots[0].OwnerId))
		}
		rb, err := fc.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{RestorableByUserIds: []string{"self"}})
		if err != nil {
			t.Fatalf("%s: restorable-by self: %v", tg.name, err)
		}
		r["restorable-by self count"] = len(rb.Snapshots)
		_, err = fc.CopySnapshot(ctx, &ec2.CopySnapshotInput{SourceSnapshotId: aws.String(snap), SourceRegion: aws.String(region),
			Encrypted: aws.Bool(true), Description: aws.String("forensics copy")})
		r["forensics copy of shared snapshot"] = apiCode(err)

		// An encrypted copy (compared in the member account, where moto supports it).
		cp, err := c.CopySnapshot(ctx, &ec2.CopySnapshotInput{SourceSnapshotId: aws.String(snap), SourceRegion: aws.String(region),
			Encrypted: aws.Bool(true), Description: aws.String("encrypted copy")})
		if err != nil {
			t.Fatalf("%s: copy snapshot: %v", tg.name, err)
		}
		r["copy"] = n.id(aws.ToString(cp.SnapshotId))
		cd, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{aws.ToString(cp.SnapshotId)}})
		if err != nil {
			t.Fatalf("%s: describe copy: %v", tg.name, err)
		}
		r["copy.OwnerId"] = n.account(aws.ToString(cd.Snapshots[0].OwnerId))
		r["copy.Encrypted"] = aws.ToBool(cd.Snapshots[0].Encrypted)
		r["copy.VolumeSize"] = aws.ToInt32(cd.Snapshots[0].VolumeSize)
		r["copy.Description"] = aws.ToString(cd.Snapshots[0].Description)
		r["copy.KmsKeyIdSet"] = aws.ToString(cd.Snapshots[0].KmsKeyId) != ""

		// Unshare: invisible again.
		if _, err := c.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{SnapshotId: aws.String(snap),
			Attribute: ec2types.SnapshotAttributeNameCreateVolumePermission, OperationType: ec2types.OperationTypeRemove,
			UserIds: []string{tg.forensicsID}}); err != nil {
			t.Fatalf("%s: unshare: %v", tg.name, err)
		}
		_, err = fc.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
		r["unshared again visible to forensics"] = apiCode(err)

		_, err = c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{"snap-0123456789abcdef0"}})
		r["unknown snapshot"] = apiCode(err)
		return r
	}, map[string]divergence{
		// moto keeps each account's snapshots in its own backend: a shared
		// snapshot stays invisible to the account it was shared with, so it can
		// be neither described nor copied there. AWS shows it, owned by the sharer.
		"shared visible to forensics":       {reason: "moto does not show shared snapshots to other accounts", want: ""},
		"shared.OwnerId":                    {reason: "moto does not show shared snapshots to other accounts", want: "<member>"},
		"restorable-by self count":          {reason: "moto does not show shared snapshots to other accounts", want: 1},
		"forensics copy of shared snapshot": {reason: "moto cannot copy a snapshot shared from another account", want: ""},
		// moto leaves KmsKeyId empty on an encrypted copy without KmsKeyId; AWS
		// encrypts it with the account's default EBS key and reports that key.
		"copy.KmsKeyIdSet": {reason: "moto omits the default key on encrypted copies", want: true},
		// moto ignores Encrypted on CopySnapshot; AWS encrypts the copy.
		"copy.Encrypted": {reason: "moto ignores CopySnapshot's Encrypted flag", want: true},
	})
}
