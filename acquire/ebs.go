package acquire

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/smithy-go"
	"github.com/rs/zerolog"
)

// ebsAPI is the part of the EBS direct client a snapshot source uses.
type ebsAPI interface {
	ListSnapshotBlocks(ctx context.Context, in *ebs.ListSnapshotBlocksInput, optFns ...func(*ebs.Options)) (*ebs.ListSnapshotBlocksOutput, error)
	GetSnapshotBlock(ctx context.Context, in *ebs.GetSnapshotBlockInput, optFns ...func(*ebs.Options)) (*ebs.GetSnapshotBlockOutput, error)
}

var _ ebsAPI = (*ebs.Client)(nil)

// NewEBSClient returns an EBS direct client for cfg with the SDK's own
// retries turned off: EBSSource retries, paced by its Governor, and nested
// retries would multiply attempts and ignore the governor.
func NewEBSClient(cfg aws.Config, optFns ...func(*ebs.Options)) *ebs.Client {
	return ebs.NewFromConfig(cfg, append([]func(*ebs.Options){func(o *ebs.Options) {
		o.Retryer = aws.NopRetryer{}
	}}, optFns...)...)
}

// EBSOptions configures an [EBSSource]. Start from [NewEBSOptions].
type EBSOptions struct {
	// Info is recorded in the evidence (volume, instance, account, region);
	// SnapshotID is filled in.
	Info SourceInfo
	// Workers is the number of GetSnapshotBlock requests in flight.
	Workers int
	// MaxAttempts bounds the attempts per request (the first included).
	MaxAttempts int
	// BaseDelay and MaxDelay bound the exponential backoff; each wait is
	// drawn uniformly from [0, min(MaxDelay, BaseDelay*2^attempt)) ("full
	// jitter").
	BaseDelay, MaxDelay time.Duration
	// RequestTimeout bounds one request, reading its body included.
	RequestTimeout time.Duration
	// PageSize is ListSnapshotBlocks' MaxResults (100-10,000).
	PageSize int32
	// OnExpiredCredentials is called when AWS answers that the request's
	// credentials expired, before the request is retried; pass the
	// credential cache's Invalidate so fresh credentials are fetched. It is
	// called from several goroutines at once.
	OnExpiredCredentials func()
}

// NewEBSOptions returns the defaults: 64 requests in flight, 8 attempts,
// backoff 100 ms to 10 s, 30 s per request, pages of 10,000 blocks.
func NewEBSOptions() EBSOptions {
	return EBSOptions{
		Workers:        64,
		MaxAttempts:    8,
		BaseDelay:      100 * time.Millisecond,
		MaxDelay:       10 * time.Second,
		RequestTimeout: 30 * time.Second,
		PageSize:       10000,
	}
}

// EBSSource reads a completed EBS snapshot through the EBS direct APIs,
// without a worker instance. It verifies every block's x-amz-Checksum
// (SHA-256) itself, reads a corrupt block again, and fails with [ErrCorrupt]
// if it stays corrupt.
type EBSSource struct {
	api   ebsAPI
	id    string
	size  int64
	info  SourceInfo
	opts  EBSOptions
	gov   *Governor
	snap  *aimd
	stats statCounter
}

var _ Source = (*EBSSource)(nil)

// ErrBlockSize reports a snapshot whose block size is not 512 KiB.
var ErrBlockSize = errors.New("acquire: unexpected EBS block size")

// NewEBSSource opens snapshot id for reading; it asks EBS for the volume size.
// gov paces the requests; share it between the snapshots of one account.
func NewEBSSource(ctx context.Context, api ebsAPI, id string, gov *Governor, opts EBSOptions) (*EBSSource, error) {
	d := NewEBSOptions()
	if opts.Workers <= 0 {
		opts.Workers = d.Workers
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = d.MaxAttempts
	}
	if opts.BaseDelay <= 0 {
		opts.BaseDelay = d.BaseDelay
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = d.MaxDelay
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = d.RequestTimeout
	}
	if opts.PageSize < 100 || opts.PageSize > 10000 {
		opts.PageSize = d.PageSize
	}
	if gov == nil {
		gov = NewGovernor(NewGovernorOptions())
	}
	s := &EBSSource{api: api, id: id, opts: opts, gov: gov, snap: gov.snapshot(), info: opts.Info}
	s.info.Kind = KindSnapshot
	s.info.SnapshotID = id
	if s.info.SnapshotARN == "" && s.info.Region != "" {
		s.info.SnapshotARN = "arn:aws:ec2:" + s.info.Region + "::snapshot/" + id
	}
	var out *ebs.ListSnapshotBlocksOutput
	err := s.retry(ctx, "list blocks", s.gov.list, func(ctx context.Context) error {
		var err error
		out, err = api.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(id), MaxResults: aws.Int32(100)})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("acquire: snapshot %s: %w", id, err)
	}
	if bs := aws.ToInt32(out.BlockSize); bs != BlockSize {
		return nil, fmt.Errorf("acquire: snapshot %s: block size %d, want %d: %w", id, bs, BlockSize, ErrBlockSize)
	}
	s.size = aws.ToInt64(out.VolumeSize) << 30
	return s, nil
}

// Info describes the snapshot.
func (s *EBSSource) Info() SourceInfo { return s.info }

// Size is the volume size in bytes.
func (s *EBSSource) Size() int64 { return s.size }

// Concurrency is the number of requests in flight.
func (s *EBSSource) Concurrency() int { return s.opts.Workers }

func (s *EBSSource) counters() *statCounter { return &s.stats }

// Blocks pages through ListSnapshotBlocks from block from.
func (s *EBSSource) Blocks(ctx context.Context, from int64, fn func(Block) error) error {
	in := &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(s.id), MaxResults: aws.Int32(s.opts.PageSize)}
	if from > 0 {
		in.StartingBlockIndex = aws.Int32(int32(from))
	}
	for {
		var out *ebs.ListSnapshotBlocksOutput
		err := s.retry(ctx, "list blocks", s.gov.list, func(ctx context.Context) error {
			var err error
			out, err = s.api.ListSnapshotBlocks(ctx, in)
			return err
		})
		if err != nil {
			return err
		}
		for _, b := range out.Blocks {
			i := int64(aws.ToInt32(b.BlockIndex))
			if i < from {
				continue
			}
			if err := fn(Block{Index: i, Token: aws.ToString(b.BlockToken)}); err != nil {
				return err
			}
		}
		if aws.ToString(out.NextToken) == "" {
			return nil
		}
		in.NextToken = out.NextToken
		in.StartingBlockIndex = nil
	}
}

// ReadBlock fetches one block and verifies its checksum, retrying as needed.
func (s *EBSSource) ReadBlock(ctx context.Context, b Block, p []byte) error {
	var last string
	err := s.retry(ctx, fmt.Sprintf("block %d", b.Index), nil, func(ctx context.Context) error {
		out, err := s.api.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{
			SnapshotId: aws.String(s.id), BlockIndex: aws.Int32(int32(b.Index)), BlockToken: aws.String(b.Token),
		})
		if err != nil {
			return err
		}
		defer out.BlockData.Close()
		if n := aws.ToInt32(out.DataLength); n != int32(len(p)) {
			return fmt.Errorf("data length %d, want %d: %w", n, len(p), errTransient)
		}
		if _, err := io.ReadFull(out.BlockData, p); err != nil {
			return fmt.Errorf("read body: %w: %w", err, errTransient)
		}
		if out.ChecksumAlgorithm != types.ChecksumAlgorithmChecksumAlgorithmSha256 {
			return fmt.Errorf("checksum algorithm %q, want SHA256: %w", out.ChecksumAlgorithm, ErrCorrupt)
		}
		sum := sha256.Sum256(p)
		if got := base64.StdEncoding.EncodeToString(sum[:]); got != aws.ToString(out.Checksum) {
			s.stats.checksum.Add(1)
			last = fmt.Sprintf("data hashes to %s, x-amz-Checksum is %s", got, aws.ToString(out.Checksum))
			zerolog.Ctx(ctx).Warn().Str("snapshot_id", s.id).Int64("block", b.Index).Str("why", last).Msg("corrupt block, reading it again")
			return fmt.Errorf("%s: %w", last, ErrCorrupt)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", s.id, err)
	}
	return nil
}

// errTransient marks our own retryable failures (short bodies).
var errTransient = errors.New("transient")

// retry runs call with a per-attempt timeout, pacing each attempt by the
// governor (lim for list calls; the snapshot's and account's buckets when
// lim is nil), retrying throttling, server, connection, timeout and
// checksum failures up to MaxAttempts with full-jitter backoff.
func (s *EBSSource) retry(ctx context.Context, what string, lim *aimd, call func(context.Context) error) error {
	var err error
	for attempt := range s.opts.MaxAttempts {
		if attempt > 0 {
			s.stats.retries.Add(1)
			ceil := min(s.opts.MaxDelay, s.opts.BaseDelay<<min(attempt-1, 30))
			t := time.NewTimer(time.Duration(rand.Int64N(int64(ceil)) + 1))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		buckets := []*aimd{lim}
		if lim == nil {
			buckets = []*aimd{s.snap, s.gov.account}
		}
		for _, b := range buckets {
			if werr := b.wait(ctx); werr != nil {
				return werr
			}
		}
		actx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
		err = call(actx)
		cancel()
		if err == nil {
			for _, b := range buckets {
				b.success()
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch kind := classify(err); kind {
		case errThrottled:
			s.stats.throttled.Add(1)
			var te *types.RequestThrottledException
			if lim != nil {
				lim.throttled()
			} else if errors.As(err, &te) && te.Reason == types.RequestThrottledExceptionReasonAccountThrottled {
				s.gov.account.throttled()
			} else {
				s.snap.throttled()
			}
		case errExpired:
			if s.opts.OnExpiredCredentials != nil {
				s.opts.OnExpiredCredentials()
			}
		case errPermanent:
			return fmt.Errorf("%s: %w", what, err)
		}
		zerolog.Ctx(ctx).Debug().Err(err).Str("snapshot_id", s.id).Str("call", what).Int("attempt", attempt+1).Msg("retrying")
	}
	return fmt.Errorf("%s: gave up after %d attempts: %w", what, s.opts.MaxAttempts, err)
}

type errKind int

const (
	errPermanent errKind = iota
	errRetry
	errThrottled
	errExpired
)

var (
	throttles  = retry.IsErrorThrottles(retry.DefaultThrottles)
	retryables = retry.IsErrorRetryables(retry.DefaultRetryables)
)

// classify sorts an EBS error by what to do about it, by type and code,
// never by message.
func classify(err error) errKind {
	if errors.Is(err, ErrCorrupt) || errors.Is(err, errTransient) || errors.Is(err, context.DeadlineExceeded) {
		return errRetry
	}
	var te *types.RequestThrottledException
	if errors.As(err, &te) || throttles.IsErrorThrottle(err) == aws.TrueTernary {
		return errThrottled
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "ExpiredToken", "ExpiredTokenException", "RequestExpired":
			return errExpired
		case "InternalServerException", "InternalError", "ServiceUnavailableException":
			return errRetry
		}
	}
	if retryables.IsErrorRetryable(err) == aws.TrueTernary {
		return errRetry
	}
	return errPermanent
}
