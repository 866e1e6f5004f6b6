package awssim_test

import (
	"context"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/impound-ir/impound/internal/awssim"
)

func TestSparseTebibyteVolume(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// The live heap before and after: the volume, its snapshot and the EBS
	// direct answers about them must cost what the three written blocks
	// cost, not something proportional to the volume's 2,097,152 blocks.
	heapBefore := liveHeap()
	v, err := e.member.CreateVolume(awssim.VolumeOptions{SizeGiB: 1024})
	if err != nil {
		t.Fatal(err)
	}
	last := int64(1024<<30) - awssim.BlockSize
	for _, off := range []int64{0, 700 << 30, last} {
		if _, err := v.WriteAt([]byte("evidence at the far end"), off+17); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.WrittenBlocks(); n != 3 {
		t.Fatalf("written blocks %d, want 3", n)
	}
	if _, err := v.WriteAt([]byte("x"), 1024<<30); err == nil {
		t.Fatal("write beyond the end accepted")
	}
	ec := ec2.NewFromConfig(e.cfg(e.member))
	s, err := ec.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(v.ID())})
	if err != nil {
		t.Fatal(err)
	}
	waitCompleted(t, ec, *s.SnapshotId)
	c := ebs.NewFromConfig(e.cfg(e.member))
	l, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: s.SnapshotId})
	if err != nil {
		t.Fatal(err)
	}
	if *l.VolumeSize != 1024 || len(l.Blocks) != 3 || *l.Blocks[2].BlockIndex != int32(last/awssim.BlockSize) || l.ExpiryTime == nil {
		t.Fatalf("list = size %d, %d blocks", *l.VolumeSize, len(l.Blocks))
	}
	b, err := c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: s.SnapshotId, BlockIndex: l.Blocks[2].BlockIndex, BlockToken: l.Blocks[2].BlockToken})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(b.BlockData)
	if string(data[17:17+23]) != "evidence at the far end" || data[16] != 0 || len(data) != awssim.BlockSize {
		t.Fatalf("last block content %q", data[:48])
	}

	// Any structure with an entry per block of the volume, even a bare
	// 8-byte pointer, takes 2,097,152 × 8 bytes = 16 MiB; a dense volume
	// would take 1 TiB. Three written blocks take 1.5 MiB.
	grown := liveHeap() - heapBefore
	if limit := int64(1024<<30) / awssim.BlockSize * 8; grown >= limit {
		t.Fatalf("a 1 TiB volume with 3 written blocks and its snapshot grew the live heap by %d bytes, want well under %d (one pointer per block)", grown, limit)
	}
	t.Logf("live heap grew by %d KiB", grown>>10)
	runtime.KeepAlive(e)
}

// liveHeap returns the bytes of live heap objects after a full collection.
func liveHeap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func TestListSnapshotBlocksPaginationAndTokens(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, snap := snapshotOf(t, e, 1, 250, 4)
	c := ebs.NewFromConfig(e.cfg(e.member))
	var got []int32
	p := ebs.NewListSnapshotBlocksPaginator(c, &ebs.ListSnapshotBlocksInput{SnapshotId: &snap, MaxResults: aws.Int32(100)})
	pages := 0
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, b := range out.Blocks {
			got = append(got, *b.BlockIndex)
		}
	}
	if pages != 3 || len(got) != 250 || got[0] != 0 || got[249] != 249 {
		t.Fatalf("%d pages, %d blocks", pages, len(got))
	}
	for i := range got {
		if got[i] != int32(i) {
			t.Fatalf("block order %v", got[:i+1])
		}
	}
	start, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: &snap, StartingBlockIndex: aws.Int32(240), MaxResults: aws.Int32(100)})
	if err != nil || len(start.Blocks) != 10 || *start.Blocks[0].BlockIndex != 240 {
		t.Fatalf("StartingBlockIndex: %v", err)
	}

	var ve *ebstypes.ValidationException
	_, err = c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: &snap, MaxResults: aws.Int32(99)})
	if !errors.As(err, &ve) {
		t.Fatalf("MaxResults 99: %v", err)
	}
	_, err = c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: &snap, NextToken: aws.String("bogus")})
	if !errors.As(err, &ve) || ve.Reason != ebstypes.ValidationExceptionReasonInvalidPageToken {
		t.Fatalf("bad page token: %v", err)
	}
	// A block token is good only for its own block.
	_, err = c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: &snap, BlockIndex: start.Blocks[1].BlockIndex, BlockToken: start.Blocks[0].BlockToken})
	if !errors.As(err, &ve) || ve.Reason != ebstypes.ValidationExceptionReasonInvalidBlockToken {
		t.Fatalf("token of another block: %v", err)
	}
	_, err = c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String("snap-0123456789abcdef0")})
	var nf *ebstypes.ResourceNotFoundException
	if !errors.As(err, &nf) || nf.Reason != ebstypes.ResourceNotFoundExceptionReasonSnapshotNotFound {
		t.Fatalf("unknown snapshot: %v", err)
	}
}

func TestListChangedBlocks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v, snap1 := snapshotOf(t, e, 1, 10, 5)
	// Change block 3, add block 20.
	if _, err := v.WriteAt([]byte("changed"), 3*awssim.BlockSize+5); err != nil {
		t.Fatal(err)
	}
	if _, err := v.WriteAt([]byte("new"), 20*awssim.BlockSize); err != nil {
		t.Fatal(err)
	}
	ec := ec2.NewFromConfig(e.cfg(e.member))
	s2, err := ec.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(v.ID())})
	if err != nil {
		t.Fatal(err)
	}
	waitCompleted(t, ec, *s2.SnapshotId)
	c := ebs.NewFromConfig(e.cfg(e.member))
	out, err := c.ListChangedBlocks(ctx, &ebs.ListChangedBlocksInput{FirstSnapshotId: &snap1, SecondSnapshotId: s2.SnapshotId})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.ChangedBlocks) != 2 || *out.ChangedBlocks[0].BlockIndex != 3 || *out.ChangedBlocks[1].BlockIndex != 20 {
		t.Fatalf("changed blocks %+v", out.ChangedBlocks)
	}
	cb := out.ChangedBlocks[0]
	if cb.FirstBlockToken == nil || cb.SecondBlockToken == nil || out.ChangedBlocks[1].FirstBlockToken != nil {
		t.Fatalf("tokens %+v", out.ChangedBlocks)
	}
	b, err := c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: s2.SnapshotId, BlockIndex: cb.BlockIndex, BlockToken: cb.SecondBlockToken})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(b.BlockData)
	if string(data[5:12]) != "changed" {
		t.Fatalf("second block content %q", data[:16])
	}
	b, err = c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: &snap1, BlockIndex: cb.BlockIndex, BlockToken: cb.FirstBlockToken})
	if err != nil {
		t.Fatal(err)
	}
	data, _ = io.ReadAll(b.BlockData)
	if string(data[5:12]) == "changed" {
		t.Fatal("first snapshot shows a later write")
	}
	// Without a first snapshot every written block is listed.
	all, err := c.ListChangedBlocks(ctx, &ebs.ListChangedBlocksInput{SecondSnapshotId: s2.SnapshotId})
	if err != nil || len(all.ChangedBlocks) != 11 {
		t.Fatalf("all changed: %v", err)
	}
	// Snapshots of different volumes are unrelated.
	_, other := snapshotOf(t, e, 1, 1, 6)
	_, err = c.ListChangedBlocks(ctx, &ebs.ListChangedBlocksInput{FirstSnapshotId: &other, SecondSnapshotId: s2.SnapshotId})
	var ve *ebstypes.ValidationException
	if !errors.As(err, &ve) || ve.Reason != ebstypes.ValidationExceptionReasonUnrelatedSnapshots {
		t.Fatalf("unrelated: %v", err)
	}
}
