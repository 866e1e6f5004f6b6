package awssim_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"
	"github.com/impound-ir/impound/internal/awssim"
)

// snapshotOf seeds a volume with n written blocks and returns a completed
// snapshot of it.
func snapshotOf(t *testing.T, e *env, sizeGiB int32, blocks int, seed uint64) (*awssim.Volume, string) {
	t.Helper()
	v, err := e.member.CreateVolume(awssim.VolumeOptions{SizeGiB: sizeGiB})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteRandom(0, int64(blocks)*awssim.BlockSize, seed); err != nil {
		t.Fatal(err)
	}
	c := ec2.NewFromConfig(e.cfg(e.member))
	s, err := c.CreateSnapshot(context.Background(), &ec2.CreateSnapshotInput{VolumeId: aws.String(v.ID())})
	if err != nil {
		t.Fatal(err)
	}
	waitCompleted(t, c, *s.SnapshotId)
	return v, *s.SnapshotId
}

func TestThrottleAnswersAWSThrottlingErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, snap := snapshotOf(t, e, 1, 4, 1)
	c := ebs.NewFromConfig(e.cfg(e.member))
	list, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: &snap})
	if err != nil {
		t.Fatal(err)
	}
	b := list.Blocks[0]

	e.Sim.SetFault("ebs", "GetSnapshotBlock", awssim.Fault{SnapshotRate: 0.001, SnapshotBurst: 2})
	for i := range 2 {
		if _, err := c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: &snap, BlockIndex: b.BlockIndex, BlockToken: b.BlockToken}); err != nil {
			t.Fatalf("request %d within burst: %v", i, err)
		}
	}
	_, err = c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: &snap, BlockIndex: b.BlockIndex, BlockToken: b.BlockToken})
	var thr *ebstypes.RequestThrottledException
	if !errors.As(err, &thr) || thr.Reason != ebstypes.RequestThrottledExceptionReasonResourceLevelThrottle {
		t.Fatalf("over the per-snapshot rate: %v, want RequestThrottledException RESOURCE_LEVEL_THROTTLE", err)
	}
	var re interface{ HTTPStatusCode() int }
	if !errors.As(err, &re) || re.HTTPStatusCode() != 400 {
		t.Fatalf("throttle status: %v", err)
	}
	// Another snapshot has its own bucket.
	_, snap2 := snapshotOf(t, e, 1, 1, 2)
	l2, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: &snap2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: &snap2, BlockIndex: l2.Blocks[0].BlockIndex, BlockToken: l2.Blocks[0].BlockToken}); err != nil {
		t.Fatalf("other snapshot throttled: %v", err)
	}

	// Per-account limits, in each service's own throttling error.
	e.Sim.SetFault("ebs", "ListSnapshotBlocks", awssim.Fault{AccountRate: 0.001})
	_, _ = c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: &snap})
	_, err = c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: &snap})
	if !errors.As(err, &thr) || thr.Reason != ebstypes.RequestThrottledExceptionReasonAccountThrottled {
		t.Fatalf("account throttle: %v", err)
	}
	// The other account is not throttled by this one's bucket.
	if _, err := ebs.NewFromConfig(e.cfg(e.forensics)).ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: &snap}); apiCode(err) == "RequestThrottledException" {
		t.Fatalf("forensics throttled by member's bucket: %v", err)
	}
	e.Sim.SetFault("ec2", "DescribeSnapshots", awssim.Fault{AccountRate: 0.001})
	ec := ec2.NewFromConfig(e.cfg(e.member))
	_, _ = ec.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{})
	_, err = ec.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{})
	wantCode(t, err, "RequestLimitExceeded")
	e.Sim.SetFault("kms", "DescribeKey", awssim.Fault{AccountRate: 0.001})
	kc := kms.NewFromConfig(e.cfg(e.member))
	_, _ = kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/aws/ebs")})
	_, err = kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/aws/ebs")})
	wantCode(t, err, "ThrottlingException")

	// The SDK's standard retryer treats it as throttling and retries until
	// the bucket refills.
	e.Sim.ClearFaults()
	e.Sim.SetFault("ebs", "GetSnapshotBlock", awssim.Fault{SnapshotRate: 20, SnapshotBurst: 1})
	retrying := ebs.NewFromConfig(e.ClientConfig(e.member.Credentials()))
	for i := range 3 {
		if _, err := retrying.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: &snap, BlockIndex: b.BlockIndex, BlockToken: b.BlockToken}); err != nil {
			t.Fatalf("retried request %d: %v", i, err)
		}
	}
}

func TestCorruptChecksumFault(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, snap := snapshotOf(t, e, 1, 8, 3)
	c := ebs.NewFromConfig(e.cfg(e.member))
	good, n, err := readImage(ctx, c, snap)
	if err != nil || n != 8 {
		t.Fatalf("clean read: %d blocks, %v", n, err)
	}
	e.Sim.SetFault("ebs", "GetSnapshotBlock", awssim.Fault{CorruptBlocks: []int64{5}})
	_, n, err = readImage(ctx, c, snap)
	if !errors.Is(err, errChecksum) || n != 5 {
		t.Fatalf("corrupt block 5: read %d blocks, err %v; want checksum mismatch at block 5", n, err)
	}
	e.Sim.SetFault("ebs", "GetSnapshotBlock", awssim.Fault{CorruptBlocks: []int64{2}, CorruptData: true})
	_, n, err = readImage(ctx, c, snap)
	if !errors.Is(err, errChecksum) || n != 2 {
		t.Fatalf("corrupt data of block 2: read %d blocks, err %v", n, err)
	}
	e.Sim.SetFault("ebs", "GetSnapshotBlock", awssim.Fault{CorruptChecksumRate: 1})
	if _, _, err = readImage(ctx, c, snap); !errors.Is(err, errChecksum) {
		t.Fatalf("corrupt rate 1: %v", err)
	}
	e.Sim.ClearFaults()
	again, _, err := readImage(ctx, c, snap)
	if err != nil || again != good {
		t.Fatalf("after clearing faults: %s %v, want %s", again, err, good)
	}
}

func TestServerErrorResetAndLatencyFaults(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ec := ec2.NewFromConfig(e.cfg(e.member))
	e.Sim.SetFault("ec2", "DescribeVolumes", awssim.Fault{ServerErrorRate: 1})
	_, err := ec.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
	wantCode(t, err, "InternalError")
	var re interface{ HTTPStatusCode() int }
	if !errors.As(err, &re) || re.HTTPStatusCode() != 500 {
		t.Fatalf("5xx fault status: %v", err)
	}
	e.Sim.SetFault("ebs", "ListSnapshotBlocks", awssim.Fault{ServerErrorRate: 1})
	_, err = ebs.NewFromConfig(e.cfg(e.member)).ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String("snap-00000000000000000")})
	var ise *ebstypes.InternalServerException
	if !errors.As(err, &ise) {
		t.Fatalf("ebs 5xx: %v", err)
	}

	e.Sim.SetFault("ec2", "DescribeInstances", awssim.Fault{ResetRate: 1})
	_, err = ec.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	var oe *smithy.OperationError
	if err == nil || apiCode(err) != "" || !errors.As(err, &oe) {
		t.Fatalf("reset: %v, want a transport error", err)
	}

	e.Sim.SetFault("ec2", "DescribeTags", awssim.Fault{Latency: 150 * time.Millisecond})
	start := time.Now()
	if _, err := ec.DescribeTags(ctx, &ec2.DescribeTagsInput{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("latency fault: answered in %v", d)
	}
}

func TestPendingSnapshots(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v, _ := e.member.CreateVolume(awssim.VolumeOptions{SizeGiB: 1})
	_ = v.WriteRandom(0, 1, 1)
	e.Sim.SetPendingPolls(3)
	ec := ec2.NewFromConfig(e.cfg(e.member))
	s, err := ec.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(v.ID())})
	if err != nil {
		t.Fatal(err)
	}
	c := ebs.NewFromConfig(e.cfg(e.member))
	_, err = c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: s.SnapshotId})
	var ve *ebstypes.ValidationException
	if !errors.As(err, &ve) {
		t.Fatalf("EBS read of a pending snapshot: %v, want ValidationException", err)
	}
	var states []types.SnapshotState
	for range 4 {
		d, err := ec.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{*s.SnapshotId}})
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, d.Snapshots[0].State)
	}
	want := []types.SnapshotState{"pending", "pending", "pending", "completed"}
	for i := range want {
		if states[i] != want[i] {
			t.Fatalf("states over polls = %v, want %v", states, want)
		}
	}
	if _, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: s.SnapshotId}); err != nil {
		t.Fatal(err)
	}
}

func TestAWSQuotas(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, snap := snapshotOf(t, e, 1, 1, 1)
	e.Sim.ApplyAWSQuotas()
	c := ebs.NewFromConfig(e.cfg(e.member))
	throttled := 0
	for range awssim.ListBlocksPerAccountRate + 20 {
		_, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: &snap})
		var thr *ebstypes.RequestThrottledException
		switch {
		case errors.As(err, &thr):
			throttled++
		case err != nil:
			t.Fatal(err)
		}
	}
	// 70 requests in well under a second against 50/s with a burst of 50:
	// at least a few must be throttled, and never the first 50.
	if throttled == 0 || throttled > 20 {
		t.Fatalf("%d of %d ListSnapshotBlocks throttled", throttled, awssim.ListBlocksPerAccountRate+20)
	}
}
