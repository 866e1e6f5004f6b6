package vault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/rs/zerolog"
)

// Uploads from a host that holds no AWS credentials (memory captured on the
// instance): the credentialed side opens a PresignedUpload, which creates
// the multipart upload with its retention, legal hold, encryption and
// checksum algorithm, and signs one UploadPart URL per part; the host
// streams through a PartWriter, the same multipart writer the S3 store
// uses, which hashes each part, asks a PartSigner for that part's URL and
// PUTs the part with the signed headers; the host reports the parts back
// (UploadedParts), and the credentialed side completes the upload
// write-once, reads the object back against the SHA-256 the host reported,
// and returns the receipt.

// DefaultPresignExpiry is how long a part's presigned URL is valid.
const DefaultPresignExpiry = 15 * time.Minute

// PartSigner returns the presigned URL, and the headers to send with it,
// for part number (1-based) of an upload, whose body has the given SHA-256
// and size. S3 refuses a body that does not match the signed checksum.
type PartSigner interface {
	SignPart(ctx context.Context, number int32, sha256 []byte, size int64) (url string, headers http.Header, err error)
}

// UploadedPart is one part a host sent.
type UploadedPart struct {
	Number int32
	Size   int64
	SHA256 string // base64, as S3's x-amz-checksum-sha256
	ETag   string
}

// UploadedParts is what a host reports once it has sent a whole stream:
// the parts S3 accepted and the SHA-256 of the whole stream, computed as
// the bytes passed. It crosses from the host to the credentialed side.
type UploadedParts struct {
	Size   int64
	SHA256 string // hex
	Parts  []UploadedPart
}

// PresignOptions configure a PresignedUpload.
type PresignOptions struct {
	// Expires is how long each part's URL is valid; 0 is
	// DefaultPresignExpiry.
	Expires time.Duration
}

// PresignedUpload is one key's multipart upload whose parts are sent by a
// host without credentials. It holds the credentials' side: it signs the
// parts' URLs, completes the upload, or aborts it. Cancelling the context
// given to NewPresignedUpload aborts it.
type PresignedUpload struct {
	w       *s3Writer // the writer the upload is completed through
	presign *s3.PresignClient
	expires time.Duration

	mu     sync.Mutex
	signed map[int32]UploadedPart // what each part number was signed for
}

var _ PartSigner = (*PresignedUpload)(nil)

// NewPresignedUpload creates a multipart upload at key in an S3 store,
// under the retention, legal hold and encryption of opts, with
// opts.SizeHint choosing the part size. The stream must fit in one object
// (MaxParts parts of PartSize bytes).
func NewPresignedUpload(ctx context.Context, st Store, key string, opts PutOptions, popts PresignOptions) (*PresignedUpload, error) {
	s, ok := st.(*s3Store)
	if !ok || s.presign == nil {
		return nil, fmt.Errorf("vault: presigned upload of %s: store %s is not an S3 store", key, st.URI())
	}
	opts, err := s.opts.prepare(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	if popts.Expires <= 0 {
		popts.Expires = DefaultPresignExpiry
	}
	w := s.newWriter(ctx, key, opts, s.partSize(opts.SizeHint))
	w.readBack = true
	seg := &s3Seg{key: key}
	w.segs = []*s3Seg{seg}
	if err := w.createUpload(seg); err != nil {
		w.stop()
		return nil, err
	}
	return &PresignedUpload{w: w, presign: s.presign, expires: popts.Expires, signed: map[int32]UploadedPart{}}, nil
}

// PartSize is the size of every part but the last, which the host's
// PartWriter must use.
func (u *PresignedUpload) PartSize() int64 { return u.w.partSize }

// MaxParts is the number of parts the upload can hold.
func (u *PresignedUpload) MaxParts() int32 { return u.w.perSeg }

// UploadID is the S3 multipart upload ID.
func (u *PresignedUpload) UploadID() string { return u.w.segs[0].upload }

// SignPart presigns UploadPart for part number with its SHA-256 and size
// in the signature.
func (u *PresignedUpload) SignPart(ctx context.Context, number int32, sum []byte, size int64) (string, http.Header, error) {
	w := u.w
	switch {
	case number < 1 || number > w.perSeg:
		return "", nil, fmt.Errorf("vault: sign part %d of %s: part numbers are 1 to %d", number, w.key, w.perSeg)
	case len(sum) != sha256.Size:
		return "", nil, fmt.Errorf("vault: sign part %d of %s: a SHA-256 has %d bytes, not %d", number, w.key, sha256.Size, len(sum))
	case size < 0 || size > w.partSize:
		return "", nil, fmt.Errorf("vault: sign part %d of %s: size %d outside 0 to %d", number, w.key, size, w.partSize)
	}
	w.mu.Lock()
	done, uploadID := w.done || w.broken != nil, w.segs[0].upload
	w.mu.Unlock()
	if done {
		return "", nil, fmt.Errorf("vault: sign part %d of %s: upload closed", number, w.key)
	}
	b64 := base64.StdEncoding.EncodeToString(sum)
	req, err := u.presign.PresignUploadPart(ctx, &s3.UploadPartInput{
		Bucket: &w.s.bucket, Key: aws.String(w.s.objectKey(w.key)), UploadId: &uploadID, PartNumber: &number,
		ContentLength: aws.Int64(size), ChecksumAlgorithm: types.ChecksumAlgorithmSha256, ChecksumSHA256: &b64,
	}, s3.WithPresignExpires(u.expires), func(o *s3.PresignOptions) {
		o.Presigner = clockPresigner{v4.NewSigner(func(so *v4.SignerOptions) { so.DisableURIPathEscaping = true }), w.s.opts.Now}
	})
	if err != nil {
		return "", nil, fmt.Errorf("vault: sign part %d of %s: %w", number, w.s.objectURI(w.key), w.s.explain(err))
	}
	u.mu.Lock()
	u.signed[number] = UploadedPart{Number: number, Size: size, SHA256: b64}
	u.mu.Unlock()
	zerolog.Ctx(ctx).Debug().Str("key", w.key).Int32("part", number).Int64("size", size).Msg("part presigned")
	return req.URL, req.SignedHeader, nil
}

// clockPresigner signs at the store's clock (Options.Now).
type clockPresigner struct {
	s   *v4.Signer
	now func() time.Time
}

func (c clockPresigner) PresignHTTP(ctx context.Context, cr aws.Credentials, r *http.Request, payloadHash, service, region string, _ time.Time, optFns ...func(*v4.SignerOptions)) (string, http.Header, error) {
	return c.s.PresignHTTP(ctx, cr, r, payloadHash, service, region, c.now(), optFns...)
}

// Complete completes the upload with the parts a host reports, write-once
// (If-None-Match), checks S3's composite checksum against the parts' and
// reads the object back against the SHA-256 the host reported, then
// writes the receipt beside it. Each part must be one that was signed,
// with the checksum and size it was signed for. It works under the
// context given to NewPresignedUpload, like a Writer's Commit. On an error
// the caller should Abort.
func (u *PresignedUpload) Complete(up UploadedParts) (*Receipt, error) {
	whole, parts, err := u.check(up)
	if err != nil {
		return nil, err
	}
	w := u.w
	return w.commitWith(func() (*Receipt, error) {
		seg := w.segs[0]
		seg.mu.Lock()
		seg.parts = parts
		seg.mu.Unlock()
		seg.nparts, seg.size, w.sealed = int32(len(parts)), up.Size, up.Size
		return w.finish(whole, nil)
	})
}

// check compares a host's report with what was signed.
func (u *PresignedUpload) check(up UploadedParts) ([]byte, []s3Part, error) {
	w := u.w
	bad := func(format string, a ...any) error {
		return fmt.Errorf("vault: commit %s: host report: %s", w.key, fmt.Sprintf(format, a...))
	}
	whole, err := decodeHexSHA256(up.SHA256)
	if err != nil {
		return nil, nil, bad("sha256 %q: %v", up.SHA256, err)
	}
	if len(up.Parts) == 0 {
		return nil, nil, bad("no parts")
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	parts := make([]s3Part, len(up.Parts))
	var total int64
	for i, p := range up.Parts {
		want, ok := u.signed[p.Number]
		switch {
		case p.Number != int32(i+1):
			return nil, nil, bad("part %d where %d was expected", p.Number, i+1)
		case !ok || want.SHA256 != p.SHA256 || want.Size != p.Size:
			return nil, nil, bad("part %d (%d bytes, sha256 %s) was not signed", p.Number, p.Size, p.SHA256)
		case i < len(up.Parts)-1 && p.Size != w.partSize:
			return nil, nil, bad("part %d has %d bytes; all but the last have %d", p.Number, p.Size, w.partSize)
		case p.ETag == "":
			return nil, nil, bad("part %d has no ETag", p.Number)
		}
		total += p.Size
		parts[i] = s3Part{Number: p.Number, Size: p.Size, SHA256: p.SHA256, ETag: p.ETag}
	}
	if total != up.Size {
		return nil, nil, bad("parts hold %d bytes, size says %d", total, up.Size)
	}
	return whole, parts, nil
}

// Abort aborts the multipart upload: no object appears at the key.
func (u *PresignedUpload) Abort() error { return u.w.Abort() }

// PartWriterOptions configure a PartWriter.
type PartWriterOptions struct {
	// PartSize must be the PresignedUpload's PartSize.
	PartSize int64
	// MaxParts is the PresignedUpload's MaxParts; 0 is MaxParts.
	MaxParts int32
	// Concurrency is the number of parts in flight; 0 is
	// DefaultConcurrency, within DefaultMemoryBudget.
	Concurrency int
	// HTTPClient sends the parts; nil is http.DefaultClient. It needs no
	// AWS credentials.
	HTTPClient *http.Client
	// MaxAttempts bounds the attempts to send one part when the network
	// fails or S3 answers 5xx (SlowDown among them); 0 is
	// DefaultPartAttempts. Refusals (4xx) are final.
	MaxAttempts int
}

// DefaultPartAttempts is how often a PartWriter tries to send one part.
const DefaultPartAttempts = 5

// PartWriter streams one object's content, on a host without credentials,
// to the presigned part URLs a PartSigner returns. It is the S3 store's
// multipart writer with its parts sent over plain HTTP: parts are hashed as
// they are sealed and sent in parallel from reused buffers. Close returns
// the report for PresignedUpload.Complete; the credentialed side completes
// or aborts the upload.
type PartWriter struct {
	w *s3Writer
}

// NewPartWriter returns a writer that sends parts through signer. Cancelling
// ctx stops it.
func NewPartWriter(ctx context.Context, signer PartSigner, opts PartWriterOptions) (*PartWriter, error) {
	if opts.PartSize < MinPartSize || opts.PartSize > MaxPartSize {
		return nil, fmt.Errorf("vault: part writer: part size %d outside %d to %d", opts.PartSize, MinPartSize, MaxPartSize)
	}
	if opts.MaxParts <= 0 || opts.MaxParts > MaxParts {
		opts.MaxParts = MaxParts
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultPartAttempts
	}
	o := Options{Concurrency: opts.Concurrency, MaxParts: int(opts.MaxParts), MemoryBudget: max(DefaultMemoryBudget, 2*opts.PartSize)}.withDefaults()
	host := &s3Store{opts: o, uri: "presigned:"} // no client: the host has no credentials
	w := host.newWriter(ctx, "presigned upload", PutOptions{}, opts.PartSize)
	w.up = presignedParts{signer: signer, client: opts.HTTPClient, attempts: opts.MaxAttempts}
	w.remote = true
	w.segs = []*s3Seg{{key: w.key, upload: "presigned"}}
	return &PartWriter{w: w}, nil
}

// Write buffers p into parts and sends every full part.
func (p *PartWriter) Write(b []byte) (int, error) { return p.w.Write(b) }

// Close sends the last part, waits for every part and returns what the
// credentialed side needs to complete the upload. An empty stream is one
// empty part.
func (p *PartWriter) Close() (*UploadedParts, error) {
	w := p.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.closed("close"); err != nil {
		return nil, err
	}
	if err := w.ctx.Err(); err != nil {
		return nil, fmt.Errorf("vault: close %s: %w", w.key, err)
	}
	if len(w.cur) > 0 || w.sealed == 0 {
		if err := w.seal(); err != nil {
			w.broken = err
			return nil, err
		}
	}
	if err := w.g.Wait(); err != nil {
		w.broken = err
		return nil, err
	}
	w.close()
	st := w.segs[0].state()
	r := &UploadedParts{Size: w.sealed, SHA256: hex.EncodeToString(w.h.Sum(nil))}
	for _, q := range st.Parts {
		r.Parts = append(r.Parts, UploadedPart(q))
	}
	return r, nil
}

// Abort stops sending parts; the credentialed side aborts the upload.
func (p *PartWriter) Abort() error { return p.w.Abort() }

// presignedParts sends parts to presigned URLs over plain HTTP.
type presignedParts struct {
	signer   PartSigner
	client   *http.Client
	attempts int
}

// PartRefusedError is S3's refusal of a part sent to a presigned URL.
type PartRefusedError struct {
	Number     int32
	StatusCode int
	Code       string // S3's error code, e.g. XAmzContentChecksumMismatch, AccessDenied
	Message    string
}

func (e *PartRefusedError) Error() string {
	return fmt.Sprintf("vault: part %d refused: HTTP %d %s: %s", e.Number, e.StatusCode, e.Code, e.Message)
}

func (p presignedParts) uploadPart(ctx context.Context, key, uploadID string, n int32, data []byte, sum [sha256.Size]byte) (s3Part, error) {
	url, hdr, err := p.signer.SignPart(ctx, n, sum[:], int64(len(data)))
	if err != nil {
		return s3Part{}, fmt.Errorf("vault: part %d: %w", n, err)
	}
	b64 := base64.StdEncoding.EncodeToString(sum[:])
	for attempt := 1; ; attempt++ {
		etag, err := p.put(ctx, url, hdr, n, data, b64)
		if err == nil {
			return s3Part{Number: n, Size: int64(len(data)), SHA256: b64, ETag: etag}, nil
		}
		var pe *PartRefusedError
		if final := errors.As(err, &pe) && pe.StatusCode < 500; final || attempt >= p.attempts || ctx.Err() != nil {
			return s3Part{}, err
		}
		zerolog.Ctx(ctx).Debug().Err(err).Int32("part", n).Int("attempt", attempt).Msg("part not sent; retrying")
		// Exponential back-off with full jitter, 200 ms doubling up to 5 s.
		t := time.NewTimer(time.Duration(rand.Int64N(int64(min(200*time.Millisecond<<(attempt-1), 5*time.Second)))))
		select {
		case <-ctx.Done():
			t.Stop()
			return s3Part{}, errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// put sends one part to its URL with the signed headers and returns the
// part's ETag.
func (p presignedParts) put(ctx context.Context, url string, hdr http.Header, n int32, data []byte, b64 string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("vault: part %d: %w", n, err)
	}
	for k, vs := range hdr {
		switch http.CanonicalHeaderKey(k) {
		case "Host":
			req.Host = vs[0]
		case "Content-Length": // req.ContentLength, below
		default:
			req.Header[http.CanonicalHeaderKey(k)] = slices.Clone(vs)
		}
	}
	req.ContentLength = int64(len(data))
	resp, err := p.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("vault: send part %d: %w", n, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		var e struct{ Code, Message string }
		xml.Unmarshal(body, &e)
		return "", &PartRefusedError{Number: n, StatusCode: resp.StatusCode, Code: e.Code, Message: e.Message}
	}
	if got := resp.Header.Get("X-Amz-Checksum-Sha256"); got != "" && got != b64 {
		return "", fmt.Errorf("vault: part %d: S3 computed checksum %s, sent %s", n, got, b64)
	}
	etag := resp.Header.Get("ETag")
	if etag == "" {
		return "", fmt.Errorf("vault: part %d: S3's answer has no ETag", n)
	}
	return etag, nil
}

func decodeHexSHA256(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != s {
		return nil, fmt.Errorf("want %d lower-case hex digits", 2*sha256.Size)
	}
	return b, nil
}
