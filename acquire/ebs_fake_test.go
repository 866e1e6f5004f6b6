package acquire

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"golang.org/x/time/rate"
)

// fakeEBS is an in-memory EBS direct service for one snapshot: written
// blocks with their real SHA-256 checksums and block tokens, pagination,
// and injectable faults. It enforces what EBS enforces: valid tokens,
// MaxResults bounds, a per-snapshot request rate (throttling beyond it).
type fakeEBS struct {
	id     string
	sizeGi int64
	blocks map[int32][]byte

	mu      sync.Mutex
	corrupt map[int32]int // block -> number of corrupt answers still to give
	fail5xx map[int32]int // block -> number of 500 answers still to give
	expired map[int32]int // block -> number of ExpiredToken answers still to give
	latency time.Duration
	limiter *rate.Limiter // nil: no throttling

	gets, throttled, lists atomic.Int64
	inflight, maxInflight  atomic.Int64
}

var _ ebsAPI = (*fakeEBS)(nil)

func newFakeEBS(id string, sizeGi int64, blocks map[int32][]byte) *fakeEBS {
	return &fakeEBS{id: id, sizeGi: sizeGi, blocks: blocks, corrupt: map[int32]int{}, fail5xx: map[int32]int{}, expired: map[int32]int{}}
}

func token(id string, i int32) string { return fmt.Sprintf("tok-%s-%d", id, i) }

func opErr(op string, status int, err error) error {
	return &smithy.OperationError{ServiceID: "EBS", OperationName: op, Err: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}}, Err: err,
	}}
}

func (f *fakeEBS) ListSnapshotBlocks(ctx context.Context, in *ebs.ListSnapshotBlocksInput, _ ...func(*ebs.Options)) (*ebs.ListSnapshotBlocksOutput, error) {
	f.lists.Add(1)
	if aws.ToString(in.SnapshotId) != f.id {
		return nil, opErr("ListSnapshotBlocks", 404, &types.ResourceNotFoundException{Message: aws.String("no snapshot")})
	}
	max := aws.ToInt32(in.MaxResults)
	if max == 0 {
		max = 10000
	}
	if max < 100 || max > 10000 {
		return nil, opErr("ListSnapshotBlocks", 400, &types.ValidationException{Message: aws.String("MaxResults")})
	}
	start := aws.ToInt32(in.StartingBlockIndex)
	if t := aws.ToString(in.NextToken); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil {
			return nil, opErr("ListSnapshotBlocks", 400, &types.ValidationException{Message: aws.String("NextToken")})
		}
		start = int32(n)
	}
	idx := make([]int32, 0, len(f.blocks))
	for i := range f.blocks {
		if i >= start {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	out := &ebs.ListSnapshotBlocksOutput{BlockSize: aws.Int32(BlockSize), VolumeSize: aws.Int64(f.sizeGi), ExpiryTime: aws.Time(time.Now().Add(time.Hour))}
	if len(idx) > int(max) {
		out.NextToken = aws.String(strconv.Itoa(int(idx[max])))
		idx = idx[:max]
	}
	for _, i := range idx {
		out.Blocks = append(out.Blocks, types.Block{BlockIndex: aws.Int32(i), BlockToken: aws.String(token(f.id, i))})
	}
	return out, nil
}

func (f *fakeEBS) take(m map[int32]int, i int32) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m[i] > 0 {
		m[i]--
		return true
	}
	return false
}

func (f *fakeEBS) GetSnapshotBlock(ctx context.Context, in *ebs.GetSnapshotBlockInput, _ ...func(*ebs.Options)) (*ebs.GetSnapshotBlockOutput, error) {
	f.gets.Add(1)
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for {
		m := f.maxInflight.Load()
		if n <= m || f.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	if f.latency > 0 {
		select {
		case <-time.After(f.latency):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	i := aws.ToInt32(in.BlockIndex)
	if f.limiter != nil && !f.limiter.Allow() {
		f.throttled.Add(1)
		return nil, opErr("GetSnapshotBlock", 400, &types.RequestThrottledException{Message: aws.String("slow down"), Reason: types.RequestThrottledExceptionReasonResourceLevelThrottle})
	}
	data, ok := f.blocks[i]
	if aws.ToString(in.SnapshotId) != f.id || !ok || aws.ToString(in.BlockToken) != token(f.id, i) {
		return nil, opErr("GetSnapshotBlock", 400, &types.ValidationException{Message: aws.String("bad block token")})
	}
	if f.take(f.fail5xx, i) {
		return nil, opErr("GetSnapshotBlock", 500, &types.InternalServerException{Message: aws.String("boom")})
	}
	if f.take(f.expired, i) {
		return nil, opErr("GetSnapshotBlock", 403, &smithy.GenericAPIError{Code: "ExpiredTokenException", Message: "expired"})
	}
	sum := sha256.Sum256(data)
	body := data
	if f.take(f.corrupt, i) {
		body = bytes.Clone(data)
		body[12345] ^= 0x40
	}
	return &ebs.GetSnapshotBlockOutput{
		BlockData:         io.NopCloser(bytes.NewReader(body)),
		Checksum:          aws.String(base64.StdEncoding.EncodeToString(sum[:])),
		ChecksumAlgorithm: types.ChecksumAlgorithmChecksumAlgorithmSha256,
		DataLength:        aws.Int32(int32(len(body))),
	}, nil
}

// reader streams the full volume content.
func (f *fakeEBS) reader() io.Reader {
	n := int32((f.sizeGi << 30) / BlockSize)
	rs := make([]io.Reader, 0, n)
	zero := make([]byte, BlockSize)
	for i := range n {
		if b, ok := f.blocks[i]; ok {
			rs = append(rs, bytes.NewReader(b))
		} else {
			rs = append(rs, bytes.NewReader(zero))
		}
	}
	return io.MultiReader(rs...)
}
