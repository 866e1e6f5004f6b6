package awssim_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/impound-ir/impound/internal/awssim"
)

func TestInstancesVolumesAndTags(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ec := ec2.NewFromConfig(e.cfg(e.member))
	run, err := ec.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		BlockDeviceMappings: []types.BlockDeviceMapping{
			{DeviceName: aws.String("/dev/xvda"), Ebs: &types.EbsBlockDevice{VolumeSize: aws.Int32(8)}},
			{DeviceName: aws.String("/dev/sdf"), Ebs: &types.EbsBlockDevice{VolumeSize: aws.Int32(20), Encrypted: aws.Bool(true), DeleteOnTermination: aws.Bool(false)}},
		},
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("web")}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := *run.Instances[0].InstanceId
	if run.Instances[0].State.Name != types.InstanceStateNamePending || *run.OwnerId != memberID {
		t.Fatalf("run = %+v", run.Instances[0].State)
	}
	w := ec2.NewInstanceRunningWaiter(ec, func(o *ec2.InstanceRunningWaiterOptions) {
		o.MinDelay, o.MaxDelay = 10*time.Millisecond, 20*time.Millisecond
	})
	if err := w.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	di, err := ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("tag:Name"), Values: []string{"web"}}}})
	if err != nil {
		t.Fatal(err)
	}
	inst := di.Reservations[0].Instances[0]
	if *inst.InstanceId != id || len(inst.BlockDeviceMappings) != 2 || *inst.RootDeviceName != "/dev/xvda" || *inst.Placement.AvailabilityZone != "eu-west-1a" {
		t.Fatalf("instance %+v", inst)
	}
	_, err = ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
	wantCode(t, err, "InvalidInstanceID.NotFound")

	dv, err := ec.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{id}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(dv.Volumes) != 2 {
		t.Fatalf("volumes %+v", dv.Volumes)
	}
	for _, v := range dv.Volumes {
		a := v.Attachments[0]
		if *a.Device == "/dev/sdf" && (!*v.Encrypted || *v.KmsKeyId != e.member.EBSDefaultKeyARN() || *v.Size != 20 || *a.DeleteOnTermination) {
			t.Fatalf("data volume %+v", v)
		}
		if v.State != types.VolumeStateInUse || *a.InstanceId != id {
			t.Fatalf("volume %+v", v)
		}
	}

	// Tags on snapshots, filters by tag, DescribeTags.
	dataVol := *dv.Volumes[0].VolumeId
	s1, err := ec.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: &dataVol, Description: aws.String("first")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ec.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: &dataVol, Description: aws.String("second")}); err != nil {
		t.Fatal(err)
	}
	if _, err := ec.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{*s1.SnapshotId, id}, Tags: []types.Tag{{Key: aws.String("impound:case"), Value: aws.String("c1")}}}); err != nil {
		t.Fatal(err)
	}
	for _, f := range [][]types.Filter{
		{{Name: aws.String("tag:impound:case"), Values: []string{"c1"}}},
		{{Name: aws.String("tag-key"), Values: []string{"impound:case"}}},
		{{Name: aws.String("description"), Values: []string{"fir*"}}, {Name: aws.String("volume-id"), Values: []string{dataVol}}},
		{{Name: aws.String("owner-id"), Values: []string{memberID}}, {Name: aws.String("status"), Values: []string{"completed"}}, {Name: aws.String("tag:impound:case"), Values: []string{"c1", "c2"}}},
	} {
		d, err := ec.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{Filters: f})
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Snapshots) != 1 || *d.Snapshots[0].SnapshotId != *s1.SnapshotId {
			t.Fatalf("filter %s: %d snapshots", *f[0].Name, len(d.Snapshots))
		}
	}
	dt, err := ec.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []types.Filter{{Name: aws.String("key"), Values: []string{"impound:case"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(dt.Tags) != 2 {
		t.Fatalf("tags %+v", dt.Tags)
	}
	types_ := map[types.ResourceType]string{}
	for _, tg := range dt.Tags {
		types_[tg.ResourceType] = *tg.ResourceId
	}
	if types_[types.ResourceTypeSnapshot] != *s1.SnapshotId || types_[types.ResourceTypeInstance] != id {
		t.Fatalf("tag resources %v", types_)
	}
	_, err = ec.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{"snap-0123456789abcdef0"}, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}})
	wantCode(t, err, "InvalidSnapshot.NotFound")

	// Pagination of DescribeSnapshots.
	for range 5 {
		if _, err := ec.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: &dataVol}); err != nil {
			t.Fatal(err)
		}
	}
	n, pages := 0, 0
	p := ec2.NewDescribeSnapshotsPaginator(ec, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, MaxResults: aws.Int32(5)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(out.Snapshots)
		pages++
	}
	if n != 7 || pages != 2 {
		t.Fatalf("paginated %d snapshots over %d pages", n, pages)
	}
}

func TestSeedingIDsAndImages(t *testing.T) {
	sim := awssim.New(awssim.Options{})
	a := sim.AddAccount(memberID)
	if sim.AddAccount(memberID) != a {
		t.Fatal("AddAccount of an existing ID made a new account")
	}
	v, err := a.CreateVolume(awssim.VolumeOptions{SizeGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(v.ID()) != len("vol-")+17 {
		t.Fatalf("volume ID %q", v.ID())
	}
	if err := v.WriteRandom(100, 1<<20, 42); err != nil {
		t.Fatal(err)
	}
	img, _ := v.Image()
	buf := make([]byte, 100+1<<20)
	if _, err := img.Read(buf[:100]); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 1<<20)
	if _, err := awssim.RandomReader(42, 1<<20).Read(want); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	n := 0
	for n < len(got) {
		k, err := img.Read(got[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += k
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("byte %d differs", i)
		}
	}
	if _, err := a.CreateVolume(awssim.VolumeOptions{SizeGiB: 1, Encryption: awssim.EncryptionCMK, KMSKeyID: "nope"}); err == nil {
		t.Fatal("volume under an unknown key accepted")
	}
}

func TestMalformedIDs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ec := ec2.NewFromConfig(e.cfg(e.member))
	_, err := ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"malformed-id"}})
	wantCode(t, err, "InvalidInstanceID.Malformed")
	_, err = ec.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{"snap-xyz"}})
	wantCode(t, err, "InvalidSnapshotID.Malformed")
	_, err = ec.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{"snap-12345678"}})
	wantCode(t, err, "InvalidSnapshot.NotFound")
	_, err = ec.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String("vol-1")})
	wantCode(t, err, "InvalidVolumeID.Malformed")
	// A malformed filter value matches nothing; it is not an error.
	out, err := ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("instance-id"), Values: []string{"malformed-id"}}}})
	if err != nil || len(out.Reservations) != 0 {
		t.Fatalf("filter on malformed id: %v %v", out, err)
	}
}

// TestUnknownFilterRefused: a filter name an operation does not know is
// refused with EC2's InvalidParameterValue, not answered with an empty
// list; tag filters and wildcards across "/" work.
func TestUnknownFilterRefused(t *testing.T) {
	e := newDemoEnv(t)
	ctx := context.Background()
	c := ec2.NewFromConfig(e.cfg(e.member))
	_, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
		Filters: []types.Filter{{Name: aws.String("tag-name"), Values: []string{"x"}}}})
	wantCode(t, err, "InvalidParameterValue")
	_, err = c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{
		Filters: []types.Filter{{Name: aws.String("instance-state"), Values: []string{"running"}}}})
	wantCode(t, err, "InvalidParameterValue")
	if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{e.demo.InstanceID},
		Tags: []types.Tag{{Key: aws.String("path"), Value: aws.String("a/b/c")}}}); err != nil {
		t.Fatal(err)
	}
	out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{
		Filters: []types.Filter{{Name: aws.String("tag:path"), Values: []string{"a*c"}}}})
	if err != nil || len(out.Reservations) != 1 || aws.ToString(out.Reservations[0].Instances[0].InstanceId) != e.demo.InstanceID {
		t.Fatalf("tag:path=a*c: %+v, %v; want the instance tagged a/b/c", out, err)
	}
}
