package awssim_test

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/impound-ir/impound/internal/awssim"
)

// A member account with one written volume, snapshotted and read back
// through the real SDK clients.
func Example() {
	ctx := context.Background()
	sim := awssim.New(awssim.Options{Region: "eu-west-1"})
	member := sim.AddAccount("111111111111")
	vol, _ := member.CreateVolume(awssim.VolumeOptions{SizeGiB: 1024}) // 1 TiB, sparse
	_, _ = vol.WriteAt([]byte("evidence"), 3*awssim.BlockSize)

	srv, err := awssim.Listen(ctx, "127.0.0.1:0", sim)
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	cfg := srv.ClientConfig(member.Credentials())

	id, _ := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	fmt.Println(*id.Arn)

	snap, _ := ec2.NewFromConfig(cfg).CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol.ID())})
	fmt.Println(snap.State)
	d, _ := ec2.NewFromConfig(cfg).DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{*snap.SnapshotId}})
	fmt.Println(d.Snapshots[0].State)

	blocks, _ := ebs.NewFromConfig(cfg).ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: snap.SnapshotId})
	fmt.Println(*blocks.VolumeSize, *blocks.BlockSize, len(blocks.Blocks), *blocks.Blocks[0].BlockIndex)
	// Output:
	// arn:aws:iam::111111111111:user/impound-sim
	// pending
	// completed
	// 1024 524288 1 3
}
