package vault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
)

// s3API is what the S3 store consumes of the S3 client.
type s3API interface {
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	CreateMultipartUpload(context.Context, *s3.CreateMultipartUploadInput, ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error)
	UploadPart(context.Context, *s3.UploadPartInput, ...func(*s3.Options)) (*s3.UploadPartOutput, error)
	CompleteMultipartUpload(context.Context, *s3.CompleteMultipartUploadInput, ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error)
	AbortMultipartUpload(context.Context, *s3.AbortMultipartUploadInput, ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error)
	ListParts(context.Context, *s3.ListPartsInput, ...func(*s3.Options)) (*s3.ListPartsOutput, error)
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	PutObjectLegalHold(context.Context, *s3.PutObjectLegalHoldInput, ...func(*s3.Options)) (*s3.PutObjectLegalHoldOutput, error)
}

// Object metadata impound writes on every S3 object (x-amz-meta-…).
const (
	metaSHA256   = "impound-sha256"    // hex SHA-256 of the object (single-request uploads)
	metaSize     = "impound-size"      // bytes
	metaPartSize = "impound-part-size" // multipart uploads
	metaSegment  = "impound-segment"   // index of the segment; 0 is the key itself
	metaKey      = "impound-key"       // the key of the whole stream
	segmentInfix = ".impound-seg-"     // KEY.impound-seg-00001 holds segment 1
)

// s3Store is a Store in an S3 bucket with Object Lock.
type s3Store struct {
	client  s3API
	presign *s3.PresignClient // nil unless the client is an *s3.Client
	bucket  string
	prefix  string // "" or ending in "/"
	opts    Options
	uri     string
}

var _ Store = (*s3Store)(nil)

// parseS3URI splits s3://bucket[/prefix] into bucket and prefix ("" or
// ending in "/").
func parseS3URI(uri string) (bucket, prefix string, err error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "s3" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("vault: %q: want s3://bucket[/prefix]", uri)
	}
	prefix = strings.Trim(u.Path, "/")
	if prefix != "" {
		if err := CheckKey(prefix); err != nil {
			return "", "", fmt.Errorf("vault: %q: prefix: %w", uri, err)
		}
		prefix += "/"
	}
	return u.Host, prefix, nil
}

// NewS3Client returns the S3 client the store uses: path-style addressing
// when an endpoint is configured (MinIO and other S3-compatible servers),
// and the retry policy of newRetryer.
func NewS3Client(cfg aws.Config, opts Options) *s3.Client {
	opts = opts.withDefaults()
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = opts.PathStyle || cfg.BaseEndpoint != nil
		o.Retryer = newRetryer(opts)
	})
}

// newRetryer is the one place where retries and throttling are decided:
// adaptive client-side rate limiting that backs off on SlowDown and other
// throttling answers, exponential back-off with jitter up to 20 s, and no
// retry quota (a long acquisition must not give up because earlier
// requests were retried). ConditionalRequestConflict (a conditional write
// racing another on the same key) is retried: the retry then meets the
// winner's object and gets PreconditionFailed. Requests whose answer is final
// (4xx other than those, PreconditionFailed among them) are not retried.
func newRetryer(opts Options) aws.Retryer {
	return retry.NewAdaptiveMode(func(o *retry.AdaptiveModeOptions) {
		o.StandardOptions = append(o.StandardOptions, func(so *retry.StandardOptions) {
			so.MaxAttempts = opts.MaxAttempts
			so.MaxBackoff = 20 * time.Second
			so.RateLimiter = ratelimit.None
			so.Retryables = append(slices.Clone(so.Retryables),
				retry.RetryableErrorCode{Codes: map[string]struct{}{"ConditionalRequestConflict": {}}})
		})
	})
}

func openS3(ctx context.Context, uri string, opts Options) (*s3Store, error) {
	bucket, prefix, err := parseS3URI(uri)
	if err != nil {
		return nil, err
	}
	return newS3Store(NewS3Client(opts.AWS, opts), bucket, prefix, opts), nil
}

func newS3Store(client s3API, bucket, prefix string, opts Options) *s3Store {
	uri := "s3://" + bucket
	if prefix != "" {
		uri += "/" + strings.TrimSuffix(prefix, "/")
	}
	s := &s3Store{client: client, bucket: bucket, prefix: prefix, opts: opts.withDefaults(), uri: uri}
	if c, ok := client.(*s3.Client); ok {
		s.presign = s3.NewPresignClient(c)
	}
	return s
}

func (s *s3Store) URI() string { return s.uri }

// payloadSigning is how parts are signed: by default UNSIGNED-PAYLOAD with
// the signed checksum header; with Options.SignPayload, SigV4 over the
// body, reusing the part's SHA-256.
func (s *s3Store) payloadSigning(hexSum string) func(*s3.Options) {
	if s.opts.SignPayload {
		return withPayloadHash(hexSum)
	}
	return unsignedPayload
}

func (s *s3Store) objectKey(key string) string { return s.prefix + key }
func (s *s3Store) objectURI(key string) string { return "s3://" + s.bucket + "/" + s.objectKey(key) }

func segmentKey(key string, i int) string {
	if i == 0 {
		return key
	}
	return fmt.Sprintf("%s%s%05d", key, segmentInfix, i)
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// notFound maps S3's answers for a missing key or version onto ErrNotFound.
func notFound(err error, versionID string) bool {
	switch apiCode(err) {
	case "NoSuchKey", "NotFound", "NoSuchVersion":
		return true
	case "InvalidArgument", "BadRequest": // a version ID S3 cannot parse names no version
		return versionID != ""
	}
	return false
}

// ErrCredentials: S3 refused the credentials (expired, revoked or wrong).
var ErrCredentials = errors.New("vault: S3 refused the credentials")

// explain adds what to do next to the errors an operator can fix.
func (s *s3Store) explain(err error) error {
	switch apiCode(err) {
	case "ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", "RequestExpired",
		"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "InvalidClientTokenId":
		return fmt.Errorf("%w (%w: they may have expired; refresh them, e.g. `aws sso login` or a new STS session, then retry)", err, ErrCredentials)
	case "AccessDenied":
		return fmt.Errorf("%w (check that the role may use this bucket and its KMS key)", err)
	case "NoSuchBucket":
		return fmt.Errorf("%w (create the bucket with `impound vault init s3://%s`)", err, s.bucket)
	case "InvalidRequest", "InvalidArgument":
		return fmt.Errorf("%w (does the bucket exist, with Object Lock? check it with `impound vault check s3://%s`)", err, s.bucket)
	}
	return err
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (s *s3Store) Create(ctx context.Context, key string, opts PutOptions) (Writer, error) {
	opts, err := s.opts.prepare(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	w := s.newWriter(ctx, key, opts, s.partSize(opts.SizeHint))
	w.segs = []*s3Seg{{key: key}}
	return w, nil
}

// partSize chooses the part size for a stream: the configured size, grown
// (in whole MiB) so that a stream of sizeHint bytes fits in one object's
// MaxParts parts, up to MaxPartSize and half the memory budget; a larger
// stream is split into segments.
func (s *s3Store) partSize(sizeHint int64) int64 {
	ps := max(s.opts.PartSize, MinPartSize)
	if sizeHint > 0 {
		fit := min(sizeHint, s.opts.MaxObjectSize)
		need := (fit + int64(s.opts.MaxParts) - 1) / int64(s.opts.MaxParts)
		need = (need + 1<<20 - 1) &^ (1<<20 - 1)
		ps = max(ps, need)
	}
	ps = min(ps, MaxPartSize, s.opts.MaxObjectSize/int64(s.opts.MaxParts), s.opts.MemoryBudget/2)
	return max(ps, MinPartSize)
}

func (s *s3Store) Resume(ctx context.Context, state []byte) (Writer, int64, error) {
	c, err := parseCheckpoint(state, s.uri)
	if err != nil {
		return nil, 0, err
	}
	if c.PartSize < MinPartSize || c.PartSize > MaxPartSize || len(c.Segs) == 0 {
		return nil, 0, fmt.Errorf("vault: resume %s: malformed S3 state", c.Key)
	}
	h, err := restoreHash(c.Hash)
	if err != nil {
		return nil, 0, err
	}
	w := s.newWriter(ctx, c.Key, c.Opts, c.PartSize)
	w.h = h
	var off int64
	for i, st := range c.Segs {
		if st.Key != segmentKey(c.Key, i) {
			return nil, 0, fmt.Errorf("vault: resume %s: segment %d has key %s", c.Key, i, st.Key)
		}
		seg := &s3Seg{key: st.Key, upload: st.Upload, parts: st.Parts, sha: st.SHA256, start: off}
		if st.Upload != "" {
			if err := s.checkParts(ctx, seg); err != nil {
				return nil, 0, fmt.Errorf("vault: resume %s: %w", c.Key, err)
			}
		} else if len(st.Parts) > 0 {
			return nil, 0, fmt.Errorf("vault: resume %s: parts without an upload", c.Key)
		}
		for j, p := range st.Parts {
			if p.Number != int32(j+1) {
				return nil, 0, fmt.Errorf("vault: resume %s: segment %d: part %d where %d was expected", c.Key, i, p.Number, j+1)
			}
			seg.size += p.Size
		}
		seg.nparts = int32(len(st.Parts))
		off += seg.size
		w.segs = append(w.segs, seg)
	}
	if off != c.Offset {
		return nil, 0, fmt.Errorf("vault: resume %s: parts cover %d bytes, state says %d", c.Key, off, c.Offset)
	}
	if len(w.segs) > 1 {
		if w.segH, err = restoreHash(c.SegHash); err != nil {
			return nil, 0, err
		}
	}
	w.sealed = off
	return w, off, nil
}

// checkParts confirms that S3 still holds a segment's upload with the parts
// the state records.
func (s *s3Store) checkParts(ctx context.Context, seg *s3Seg) error {
	got := map[int32]types.Part{}
	p := s3.NewListPartsPaginator(s.client, &s3.ListPartsInput{
		Bucket: &s.bucket, Key: aws.String(s.objectKey(seg.key)), UploadId: &seg.upload,
	})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if apiCode(err) == "NoSuchUpload" {
			return fmt.Errorf("upload %s of %s is gone (aborted or completed): %w", seg.upload, seg.key, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("list parts of %s: %w", seg.key, err)
		}
		for _, part := range out.Parts {
			got[aws.ToInt32(part.PartNumber)] = part
		}
	}
	for _, want := range seg.parts {
		g, ok := got[want.Number]
		if !ok || aws.ToInt64(g.Size) != want.Size || strings.Trim(aws.ToString(g.ETag), `"`) != strings.Trim(want.ETag, `"`) {
			return fmt.Errorf("part %d of %s: S3 holds %v bytes etag %s, state says %d bytes etag %s",
				want.Number, seg.key, aws.ToInt64(g.Size), aws.ToString(g.ETag), want.Size, want.ETag)
		}
	}
	return nil
}

func (s *s3Store) head(ctx context.Context, key, versionID string) (*s3.HeadObjectOutput, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: &s.bucket, Key: aws.String(s.objectKey(key)), VersionId: optString(versionID),
		ChecksumMode: types.ChecksumModeEnabled,
	})
	if notFound(err, versionID) {
		return nil, fmt.Errorf("vault: %s version %q: %w", s.objectURI(key), versionID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("vault: head %s: %w", s.objectURI(key), s.explain(err))
	}
	return out, nil
}

// receiptFromHead describes a stored object from its HEAD answer.
func (s *s3Store) receiptFromHead(key string, h *s3.HeadObjectOutput) *Receipt {
	r := &Receipt{
		URI: s.objectURI(key), Key: key, VersionID: aws.ToString(h.VersionId),
		Size: aws.ToInt64(h.ContentLength), SHA256: h.Metadata[metaSHA256],
		RetentionMode: string(h.ObjectLockMode), LegalHold: h.ObjectLockLegalHoldStatus == types.ObjectLockLegalHoldStatusOn,
		StoredAt: aws.ToTime(h.LastModified).UTC(),
	}
	if h.ObjectLockRetainUntilDate != nil {
		r.RetainUntil = h.ObjectLockRetainUntilDate.UTC()
	}
	return r
}

func (s *s3Store) Stat(ctx context.Context, key, versionID string) (*Receipt, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	h, err := s.head(ctx, key, versionID)
	if err != nil {
		return nil, err
	}
	r := s.receiptFromHead(key, h)
	if r.SHA256 != "" {
		return r, nil
	}
	// A multipart upload's metadata is fixed before its content is known:
	// the full receipt is in the sidecar written after it.
	side, err := s.readSidecar(ctx, key)
	if err != nil {
		return nil, err
	}
	if side != nil && side.VersionID == r.VersionID {
		r.SHA256, r.Size, r.Parts, r.Segments = side.SHA256, side.Size, side.Parts, side.Segments
	}
	return r, nil
}

func (s *s3Store) readSidecar(ctx context.Context, key string) (*Receipt, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: aws.String(s.objectKey(key + receiptSuffix))})
	if notFound(err, "") {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("vault: read receipt of %s: %w", s.objectURI(key), err)
	}
	defer out.Body.Close()
	var r Receipt
	if err := json.NewDecoder(io.LimitReader(out.Body, maxStateSize)).Decode(&r); err != nil {
		return nil, fmt.Errorf("vault: receipt of %s: %w", s.objectURI(key), err)
	}
	return &r, nil
}

func (s *s3Store) getRaw(ctx context.Context, key, versionID string) (io.ReadCloser, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: aws.String(s.objectKey(key)), VersionId: optString(versionID)})
	if notFound(err, versionID) {
		return nil, fmt.Errorf("vault: %s version %q: %w", s.objectURI(key), versionID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("vault: get %s: %w", s.objectURI(key), s.explain(err))
	}
	return out.Body, nil
}

// Get streams an object version back. An object split into segments is
// returned whole, its segments read one after the other.
func (s *s3Store) Get(ctx context.Context, key, versionID string) (io.ReadCloser, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	r, err := s.Stat(ctx, key, versionID)
	if err != nil {
		return nil, err
	}
	if len(r.Segments) == 0 {
		return s.getRaw(ctx, key, r.VersionID)
	}
	return &segmentReader{ctx: ctx, s: s, segs: r.Segments}, nil
}

// segmentReader reads the segments of a split object in order.
type segmentReader struct {
	ctx  context.Context
	s    *s3Store
	segs []Segment
	cur  io.ReadCloser
}

func (r *segmentReader) Read(p []byte) (int, error) {
	for {
		if r.cur == nil {
			if len(r.segs) == 0 {
				return 0, io.EOF
			}
			rc, err := r.s.getRaw(r.ctx, r.segs[0].Key, r.segs[0].VersionID)
			if err != nil {
				return 0, err
			}
			r.cur, r.segs = rc, r.segs[1:]
		}
		n, err := r.cur.Read(p)
		if err == io.EOF {
			r.cur.Close()
			r.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (r *segmentReader) Close() error {
	if r.cur != nil {
		return r.cur.Close()
	}
	return nil
}

func (s *s3Store) List(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(s.prefix + prefix)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("vault: list %s: %w", s.uri, s.explain(err))
		}
		for _, o := range out.Contents {
			k := strings.TrimPrefix(aws.ToString(o.Key), s.prefix)
			if !strings.Contains(k, reservedPrefix) {
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	return keys, nil
}

func (s *s3Store) SetLegalHold(ctx context.Context, key, versionID string, on bool) error {
	r, err := s.Stat(ctx, key, versionID)
	if err != nil {
		return err
	}
	status := types.ObjectLockLegalHoldStatusOff
	if on {
		status = types.ObjectLockLegalHoldStatusOn
	}
	segs := r.Segments
	if len(segs) == 0 {
		segs = []Segment{{Key: key, VersionID: r.VersionID}}
	}
	for _, seg := range segs {
		_, err := s.client.PutObjectLegalHold(ctx, &s3.PutObjectLegalHoldInput{
			Bucket: &s.bucket, Key: aws.String(s.objectKey(seg.Key)), VersionId: optString(seg.VersionID),
			LegalHold: &types.ObjectLockLegalHold{Status: status},
		})
		if notFound(err, seg.VersionID) {
			return fmt.Errorf("vault: legal hold %s: %w", s.objectURI(seg.Key), ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("vault: legal hold %s version %s: %w", s.objectURI(seg.Key), seg.VersionID, s.explain(err))
		}
	}
	return nil
}

// lockInputs are the retention, legal-hold and encryption fields every
// object impound writes carries.
type lockInputs struct {
	mode  types.ObjectLockMode
	until *time.Time
	hold  types.ObjectLockLegalHoldStatus
	sse   types.ServerSideEncryption
	kms   *string
}

func lockFor(o PutOptions) lockInputs {
	l := lockInputs{mode: types.ObjectLockMode(o.RetentionMode), until: aws.Time(o.RetainUntil)}
	if o.LegalHold {
		l.hold = types.ObjectLockLegalHoldStatusOn
	}
	if o.KMSKeyID != "" {
		l.sse, l.kms = types.ServerSideEncryptionAwsKms, aws.String(o.KMSKeyID)
	}
	return l
}

// putOnce stores body at key with a single write-once PutObject. It
// returns the new version and the server's time of the answer; the error
// is PreconditionFailed when the key exists.
func (s *s3Store) putOnce(ctx context.Context, key string, body []byte, sum []byte, meta map[string]string, o PutOptions) (string, time.Time, error) {
	l := lockFor(o)
	ct := o.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	out, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &s.bucket, Key: aws.String(s.objectKey(key)), Body: bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))), ContentType: &ct,
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256, ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum)),
		IfNoneMatch: aws.String("*"), Metadata: meta,
		ObjectLockMode: l.mode, ObjectLockRetainUntilDate: l.until, ObjectLockLegalHoldStatus: l.hold,
		ServerSideEncryption: l.sse, SSEKMSKeyId: l.kms,
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return aws.ToString(out.VersionId), serverTime(out.ResultMetadata), nil
}

// serverTime is the Date of S3's answer, the storage time a receipt
// records; zero when the answer had none.
func serverTime(md middleware.Metadata) time.Time {
	t, _ := awsmiddleware.GetServerTime(md)
	return t.UTC()
}

// preconditionFailed reports an If-None-Match refusal: the key exists.
func preconditionFailed(err error) bool { return apiCode(err) == "PreconditionFailed" }

// writeSidecar records the receipt of a multipart or split object beside
// it, write-once and under the same retention.
func (s *s3Store) writeSidecar(ctx context.Context, r *Receipt, o PutOptions) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	o.ContentType = "application/json"
	_, _, err = s.putOnce(ctx, r.Key+receiptSuffix, b, sum[:], map[string]string{metaSHA256: hex.EncodeToString(sum[:]), metaKey: r.Key}, o)
	if err != nil && !preconditionFailed(err) {
		return fmt.Errorf("vault: write receipt of %s: %w", r.URI, s.explain(err))
	}
	return nil
}

// compositeChecksum is S3's checksum of a multipart object: the SHA-256 of
// the parts' SHA-256 digests, "-" and the number of parts.
func compositeChecksum(parts []s3Part) string {
	h := sha256.New()
	for _, p := range parts {
		d, _ := base64.StdEncoding.DecodeString(p.SHA256)
		h.Write(d)
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil)) + "-" + strconv.Itoa(len(parts))
}

// sameContent decides, after the key turned out to exist, whether the
// stored object holds what this writer wrote: by the SHA-256 in its
// metadata, by S3's composite part checksum, or failing both by reading it
// back.
func (s *s3Store) sameContent(ctx context.Context, key string, size int64, sha string, parts []s3Part) (*s3.HeadObjectOutput, bool, error) {
	h, err := s.head(ctx, key, "")
	if err != nil {
		return nil, false, err
	}
	if aws.ToInt64(h.ContentLength) != size {
		return h, false, nil
	}
	if m := h.Metadata[metaSHA256]; m != "" {
		return h, m == sha, nil
	}
	if c := aws.ToString(h.ChecksumSHA256); strings.Contains(c, "-") && len(parts) > 0 {
		if c == compositeChecksum(parts) {
			return h, true, nil
		}
		// Another part size gives another composite checksum: read back.
	}
	rc, err := s.getRaw(ctx, key, aws.ToString(h.VersionId))
	if err != nil {
		return nil, false, err
	}
	defer rc.Close()
	hh := sha256.New()
	if _, err := io.Copy(hh, rc); err != nil {
		return nil, false, fmt.Errorf("vault: read back %s to compare: %w", s.objectURI(key), err)
	}
	return h, hex.EncodeToString(hh.Sum(nil)) == sha, nil
}
