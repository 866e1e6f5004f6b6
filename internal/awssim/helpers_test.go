package awssim_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/internal/awssim/simtest"
)

const (
	memberID    = "111111111111"
	forensicsID = "222222222222"
)

// env is a simulator with a member and a forensics account.
type env struct {
	*simtest.Env
	member, forensics *awssim.Account
}

func newEnv(t testing.TB) *env {
	e := simtest.Start(t, awssim.Options{Region: "eu-west-1"})
	return &env{Env: e, member: e.Sim.AddAccount(memberID), forensics: e.Sim.AddAccount(forensicsID)}
}

// cfg returns a client configuration without retries, so that tests see
// the first error.
func (e *env) cfg(a *awssim.Account) aws.Config {
	c := e.ClientConfig(a.Credentials())
	c.RetryMaxAttempts = 1
	return c
}

// assume returns a configuration with the role's credentials from STS.
func (e *env) assume(t testing.TB, base aws.Config, roleARN, session string) aws.Config {
	t.Helper()
	c := base.Copy()
	c.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(base), roleARN,
		func(o *stscreds.AssumeRoleOptions) { o.RoleSessionName = session }))
	return c
}

// apiCode returns the AWS error code of err, or "".
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	if got := apiCode(err); got != code {
		t.Fatalf("error = %v (code %q), want code %q", err, got, code)
	}
}

func waitCompleted(t testing.TB, c *ec2.Client, ids ...string) {
	t.Helper()
	w := ec2.NewSnapshotCompletedWaiter(c, func(o *ec2.SnapshotCompletedWaiterOptions) {
		o.MinDelay, o.MaxDelay = 10*time.Millisecond, 50*time.Millisecond
	})
	if err := w.Wait(context.Background(), &ec2.DescribeSnapshotsInput{SnapshotIds: ids}, 10*time.Second); err != nil {
		t.Fatalf("wait for %v: %v", ids, err)
	}
}

// sha256Of returns the hex SHA-256 of r.
func sha256Of(t testing.TB, r io.Reader) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

var zeros = make([]byte, awssim.BlockSize)

func writeZeros(h hash.Hash, n int64) {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		h.Write(zeros[:k])
		n -= k
	}
}

// readImage reads a snapshot through EBS direct, block by block, checking
// every block's checksum, and returns the SHA-256 of the whole image
// (unwritten blocks read as zeros) and the number of blocks read.
func readImage(ctx context.Context, c *ebs.Client, snap string) (string, int, error) {
	h := sha256.New()
	var next *string
	var pos int64 // bytes hashed so far
	var size int64
	n := 0
	for {
		out, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: &snap, NextToken: next, MaxResults: aws.Int32(100)})
		if err != nil {
			return "", n, fmt.Errorf("list blocks: %w", err)
		}
		if *out.BlockSize != awssim.BlockSize {
			return "", n, fmt.Errorf("block size %d", *out.BlockSize)
		}
		size = *out.VolumeSize << 30
		for _, b := range out.Blocks {
			off := int64(*b.BlockIndex) * awssim.BlockSize
			writeZeros(h, off-pos)
			blk, err := c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: &snap, BlockIndex: b.BlockIndex, BlockToken: b.BlockToken})
			if err != nil {
				return "", n, fmt.Errorf("get block %d: %w", *b.BlockIndex, err)
			}
			data, err := io.ReadAll(blk.BlockData)
			blk.BlockData.Close()
			if err != nil {
				return "", n, err
			}
			sum := sha256.Sum256(data)
			if got := base64.StdEncoding.EncodeToString(sum[:]); got != *blk.Checksum || blk.ChecksumAlgorithm != "SHA256" || int(*blk.DataLength) != len(data) {
				return "", n, fmt.Errorf("block %d: checksum %s (%s), data %s, length %d: %w", *b.BlockIndex, *blk.Checksum, blk.ChecksumAlgorithm, got, *blk.DataLength, errChecksum)
			}
			h.Write(data)
			pos = off + int64(len(data))
			n++
		}
		if out.NextToken == nil {
			break
		}
		next = out.NextToken
	}
	writeZeros(h, size-pos)
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

var errChecksum = errors.New("checksum mismatch")

func ioReadFull(r io.Reader, b []byte) (int, error) { return io.ReadFull(r, b) }

func volumeOpts(gib int32) awssim.VolumeOptions { return awssim.VolumeOptions{SizeGiB: gib} }

// snapshotID snapshots a member volume and waits for completion.
func snapshotID(t testing.TB, e *env, volID string) string {
	t.Helper()
	c := ec2.NewFromConfig(e.cfg(e.member))
	s, err := c.CreateSnapshot(context.Background(), &ec2.CreateSnapshotInput{VolumeId: &volID})
	if err != nil {
		t.Fatal(err)
	}
	waitCompleted(t, c, *s.SnapshotId)
	return *s.SnapshotId
}
