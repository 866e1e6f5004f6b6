package vault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/middleware"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// s3Part is one uploaded part of a segment, as a Checkpoint keeps it.
type s3Part struct {
	Number int32  `json:"n"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // base64, as sent in x-amz-checksum-sha256
	ETag   string `json:"etag"`
}

// s3SegState is one segment in a Checkpoint.
type s3SegState struct {
	Key    string   `json:"key"`
	Upload string   `json:"upload,omitempty"` // multipart upload ID; "" before the first part
	Parts  []s3Part `json:"parts,omitempty"`
	SHA256 string   `json:"sha256,omitempty"` // hex, once the segment is full
}

// partUploader sends one part of a multipart upload, given its SHA-256. It
// is the only call on the data path, so a writer on a host without AWS
// credentials sends its parts to presigned UploadPart URLs instead
// (presignedParts, under PartWriter). The checksum is computed before the
// call because S3 refuses unsigned x-amz-* headers on presigned requests:
// the URL for a part must be signed with that part's x-amz-checksum-sha256.
type partUploader interface {
	uploadPart(ctx context.Context, key, uploadID string, n int32, data []byte, sum [sha256.Size]byte) (s3Part, error)
}

func (s *s3Store) uploadPart(ctx context.Context, key, uploadID string, n int32, data []byte, sum [sha256.Size]byte) (s3Part, error) {
	b64 := base64.StdEncoding.EncodeToString(sum[:])
	out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: &s.bucket, Key: aws.String(s.objectKey(key)), UploadId: &uploadID, PartNumber: &n,
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256, ChecksumSHA256: &b64,
	}, s.payloadSigning(hex.EncodeToString(sum[:])))
	if err != nil {
		return s3Part{}, fmt.Errorf("vault: upload part %d of %s: %w", n, s.objectURI(key), s.explain(err))
	}
	if got := aws.ToString(out.ChecksumSHA256); got != "" && got != b64 {
		return s3Part{}, fmt.Errorf("vault: part %d of %s: S3 computed checksum %s, sent %s", n, s.objectURI(key), got, b64)
	}
	return s3Part{Number: n, Size: int64(len(data)), SHA256: b64, ETag: aws.ToString(out.ETag)}, nil
}

// withPayloadHash hands SigV4 the payload's SHA-256, which is the part
// checksum already computed, so the SDK does not hash every part a second
// time when it signs a request over plain HTTP (the server still checks the
// payload against it).
func withPayloadHash(hexSum string) func(*s3.Options) {
	return func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Finalize.Add(middleware.FinalizeMiddlewareFunc("ImpoundPayloadHash",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
					return next.HandleFinalize(v4.SetPayloadHash(ctx, hexSum), in)
				}), middleware.Before)
		})
	}
}

// unsignedPayload signs the part's headers, x-amz-checksum-sha256 among
// them, but not its body: S3 still refuses a body that does not match the
// signed checksum, and the server is spared a second SHA-256 of every part.
func unsignedPayload(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
}

// s3Seg is one segment (one S3 object) of the stream being written.
type s3Seg struct {
	key     string
	upload  string
	nparts  int32 // parts sealed
	size    int64 // bytes sealed
	start   int64 // offset of the segment in the stream
	sha     string
	version string
	stored  time.Time // the server's time when the object was completed

	mu    sync.Mutex
	parts []s3Part // parts uploaded, in completion order
}

func (g *s3Seg) state() s3SegState {
	g.mu.Lock()
	defer g.mu.Unlock()
	parts := slices.Clone(g.parts)
	slices.SortFunc(parts, func(a, b s3Part) int { return int(a.Number - b.Number) })
	return s3SegState{Key: g.key, Upload: g.upload, Parts: parts, SHA256: g.sha}
}

// s3Writer streams into S3: it cuts the stream into parts, hashes the whole
// stream as parts are sealed, and keeps at most Concurrency parts in
// flight, so memory stays at about (in flight+1) × part size, within
// Options.MemoryBudget, whatever the stream's length. A stream longer than one object can hold is split into
// segments: KEY, KEY.impound-seg-00001, … Every segment's multipart upload
// stays open until Commit, which completes the later segments first and KEY
// last, so an interrupted write never leaves an object at KEY.
type s3Writer struct {
	writerBase
	s        *s3Store
	up       partUploader
	partSize int64
	perSeg   int32 // parts per segment
	inflight int   // parts uploading at once

	h      hash.Hash // the whole stream, through the sealed bytes
	segH   hash.Hash // the current segment when it is not the first
	segs   []*s3Seg
	cur    []byte
	free   chan []byte
	g      *errgroup.Group
	gctx   context.Context
	sealed int64

	// remote: a host-side writer (NewPartWriter) whose one upload was
	// created by the credentialed side, which also completes or aborts it;
	// this writer only sends parts.
	remote bool
	// readBack: the whole stream's SHA-256 was reported by a host
	// (PresignedUpload.Complete), so it is confirmed by reading the object
	// back before the receipt is written.
	readBack bool
}

func (s *s3Store) newWriter(ctx context.Context, key string, opts PutOptions, partSize int64) *s3Writer {
	perSeg := min(int64(s.opts.MaxParts), s.opts.MaxObjectSize/partSize)
	inflight := int(min(max(s.opts.MemoryBudget/partSize-1, 1), int64(s.opts.Concurrency)))
	w := &s3Writer{
		writerBase: newWriterBase(ctx, key, opts), s: s, up: s, partSize: partSize, perSeg: int32(perSeg),
		inflight: inflight, h: sha256.New(), free: make(chan []byte, inflight+1),
	}
	w.newGroup()
	w.abortOnCancel(w.Abort)
	return w
}

func (w *s3Writer) newGroup() {
	w.g, w.gctx = errgroup.WithContext(w.ctx)
	w.g.SetLimit(w.inflight)
}

func (w *s3Writer) buffer() []byte {
	select {
	case b := <-w.free:
		return b
	default:
		return make([]byte, 0, w.partSize)
	}
}

func (w *s3Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writable(); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		if w.cur == nil {
			w.cur = w.buffer()
		}
		c := copy(w.cur[len(w.cur):w.partSize], p)
		w.cur = w.cur[:len(w.cur)+c]
		p, n = p[c:], n+c
		if int64(len(w.cur)) == w.partSize {
			if err := w.seal(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// seal hashes the current buffer and hands it to an upload goroutine; it
// blocks while Concurrency parts are in flight.
func (w *s3Writer) seal() error {
	if w.gctx.Err() != nil {
		if err := w.g.Wait(); err != nil {
			return err
		}
		return w.gctx.Err()
	}
	data := w.cur
	w.cur = nil
	seg := w.segs[len(w.segs)-1]
	if seg.nparts == w.perSeg {
		if w.remote {
			return fmt.Errorf("vault: %s: a presigned upload holds at most %d parts of %d bytes", w.key, w.perSeg, w.partSize)
		}
		seg = w.nextSegment()
	}
	w.h.Write(data)
	if w.segH != nil {
		w.segH.Write(data)
	}
	if seg.upload == "" {
		if err := w.createUpload(seg); err != nil {
			return err
		}
	}
	seg.nparts++
	n := seg.nparts
	seg.size += int64(len(data))
	w.sealed += int64(len(data))
	ctx := w.gctx
	w.g.Go(func() error {
		part, err := w.up.uploadPart(ctx, seg.key, seg.upload, n, data, sha256.Sum256(data))
		select {
		case w.free <- data[:0]:
		default:
		}
		if err != nil {
			return err
		}
		seg.mu.Lock()
		seg.parts = append(seg.parts, part)
		seg.mu.Unlock()
		return nil
	})
	return nil
}

// nextSegment closes the full current segment and starts the next.
func (w *s3Writer) nextSegment() *s3Seg {
	last := w.segs[len(w.segs)-1]
	if w.segH == nil {
		last.sha = hex.EncodeToString(w.h.Sum(nil)) // the first segment starts the stream
	} else {
		last.sha = hex.EncodeToString(w.segH.Sum(nil))
	}
	w.segH = sha256.New()
	seg := &s3Seg{key: segmentKey(w.key, len(w.segs)), start: last.start + last.size}
	w.segs = append(w.segs, seg)
	return seg
}

func (w *s3Writer) meta(seg int) map[string]string {
	return map[string]string{metaPartSize: strconv.FormatInt(w.partSize, 10), metaSegment: strconv.Itoa(seg), metaKey: w.key}
}

func (w *s3Writer) createUpload(seg *s3Seg) error {
	l := lockFor(w.opts)
	ct := w.opts.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	out, err := w.s.client.CreateMultipartUpload(w.ctx, &s3.CreateMultipartUploadInput{
		Bucket: &w.s.bucket, Key: aws.String(w.s.objectKey(seg.key)), ContentType: &ct,
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256, ChecksumType: types.ChecksumTypeComposite,
		Metadata:       w.meta(len(w.segs) - 1),
		ObjectLockMode: l.mode, ObjectLockRetainUntilDate: l.until, ObjectLockLegalHoldStatus: l.hold,
		ServerSideEncryption: l.sse, SSEKMSKeyId: l.kms,
	})
	if err != nil {
		return fmt.Errorf("vault: start upload of %s: %w", w.s.objectURI(seg.key), w.s.explain(err))
	}
	seg.upload = aws.ToString(out.UploadId)
	zerolog.Ctx(w.ctx).Debug().Str("key", seg.key).Str("upload_id", seg.upload).Int64("part_size", w.partSize).Msg("multipart upload started")
	return nil
}

func (w *s3Writer) Checkpoint() ([]byte, int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.closed("checkpoint"); err != nil {
		return nil, 0, err
	}
	if err := w.g.Wait(); err != nil {
		return nil, 0, fmt.Errorf("vault: checkpoint %s: %w", w.key, err)
	}
	w.newGroup()
	c := checkpoint{Store: w.s.uri, Key: w.key, Opts: w.opts, Offset: w.sealed, PartSize: w.partSize}
	var err error
	if c.Hash, err = hashState(w.h); err != nil {
		return nil, 0, err
	}
	if w.segH != nil {
		if c.SegHash, err = hashState(w.segH); err != nil {
			return nil, 0, err
		}
	}
	for _, seg := range w.segs {
		c.Segs = append(c.Segs, seg.state())
	}
	state, err := c.marshal()
	return state, c.Offset, err
}

func (w *s3Writer) Commit() (*Receipt, error) { return w.commitWith(w.commit) }

// commitWith runs commit under the writer's lock when the writer may
// commit. After a failure only Abort is left: Put (or the caller) aborts
// what is left.
func (w *s3Writer) commitWith(commit func() (*Receipt, error)) (*Receipt, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.committable(); err != nil {
		return nil, err
	}
	r, err := commit()
	if err != nil {
		w.broken = err
		return nil, err
	}
	w.close()
	logStored(w.ctx, r)
	return r, nil
}

func (w *s3Writer) commit() (*Receipt, error) {
	seg := w.segs[len(w.segs)-1]
	var single []byte // content of a last segment small enough for one PutObject
	if len(w.cur) > 0 || w.sealed == 0 {
		if seg.nparts == w.perSeg {
			seg = w.nextSegment()
		}
		if seg.upload == "" {
			single = w.cur
			if single == nil {
				single = []byte{}
			}
			w.h.Write(single)
			if w.segH != nil {
				w.segH.Write(single)
			}
			seg.size = int64(len(single))
			w.sealed += seg.size
			w.cur = nil
		} else if err := w.seal(); err != nil {
			return nil, fmt.Errorf("vault: commit %s: %w", w.key, err)
		}
	}
	if err := w.g.Wait(); err != nil {
		return nil, fmt.Errorf("vault: commit %s: %w", w.key, err)
	}
	w.newGroup()
	return w.finish(w.h.Sum(nil), single)
}

// finish completes every segment's upload (single is the content of a
// last segment without one) and writes the receipt of a stream whose
// SHA-256 is whole.
func (w *s3Writer) finish(whole, single []byte) (*Receipt, error) {
	seg := w.segs[len(w.segs)-1]
	if w.segH == nil {
		seg.sha = hex.EncodeToString(whole)
	} else {
		seg.sha = hex.EncodeToString(w.segH.Sum(nil))
	}

	// Later segments first, KEY last: an object at KEY means all is stored.
	order := make([]int, 0, len(w.segs))
	for i := 1; i < len(w.segs); i++ {
		order = append(order, i)
	}
	order = append(order, 0)
	var head0 *s3.HeadObjectOutput
	for _, i := range order {
		sg := w.segs[i]
		var err error
		var existing *s3.HeadObjectOutput
		if sg.upload == "" {
			sum, _ := hex.DecodeString(sg.sha)
			meta := w.meta(i)
			delete(meta, metaPartSize)
			meta[metaSHA256], meta[metaSize] = sg.sha, strconv.FormatInt(sg.size, 10)
			sg.version, sg.stored, err = w.s.putOnce(w.ctx, sg.key, single, sum, meta, w.opts)
			if preconditionFailed(err) {
				existing, err = w.resolveExisting(sg, nil)
			} else if err != nil {
				err = fmt.Errorf("vault: put %s: %w", w.s.objectURI(sg.key), w.s.explain(err))
			}
		} else {
			existing, err = w.complete(sg)
		}
		if err != nil {
			return nil, err
		}
		if i == 0 {
			head0 = existing
		}
	}

	r := &Receipt{
		URI: w.s.objectURI(w.key), Key: w.key, VersionID: w.segs[0].version, Size: w.sealed,
		SHA256: hex.EncodeToString(whole), RetentionMode: w.opts.RetentionMode, RetainUntil: w.opts.RetainUntil,
		LegalHold: w.opts.LegalHold, StoredAt: w.segs[0].stored,
	}
	if r.StoredAt.IsZero() {
		r.StoredAt = w.s.opts.Now().UTC().Truncate(time.Second)
	}
	if head0 != nil { // an identical object was there already: describe it
		h := w.s.receiptFromHead(w.key, head0)
		r.RetentionMode, r.RetainUntil, r.LegalHold, r.StoredAt = h.RetentionMode, h.RetainUntil, h.LegalHold, h.StoredAt
	}
	if len(w.segs) == 1 {
		r.Parts = publicParts(w.segs[0].state().Parts)
	} else {
		for _, sg := range w.segs {
			st := sg.state()
			r.Segments = append(r.Segments, Segment{Key: sg.key, VersionID: sg.version, Offset: sg.start, Size: sg.size, SHA256: sg.sha, Parts: publicParts(st.Parts)})
		}
	}
	if w.readBack {
		if err := Verify(w.ctx, w.s, r); err != nil {
			return nil, fmt.Errorf("vault: commit %s: read back against the host's report: %w", w.key, err)
		}
	}
	if w.segs[0].nparts > 0 || len(w.segs) > 1 {
		if err := w.s.writeSidecar(w.ctx, r, w.opts); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func publicParts(ps []s3Part) []Part {
	out := make([]Part, len(ps))
	for i, p := range ps {
		out[i] = Part{Number: p.Number, Size: p.Size, SHA256: p.SHA256}
	}
	return out
}

// complete finishes a segment's multipart upload, write-once. When the key
// turned out to exist it returns the stored object's HEAD answer if it
// holds the same content, ErrExists otherwise.
func (w *s3Writer) complete(sg *s3Seg) (*s3.HeadObjectOutput, error) {
	st := sg.state()
	cp := make([]types.CompletedPart, len(st.Parts))
	for i, p := range st.Parts {
		cp[i] = types.CompletedPart{PartNumber: aws.Int32(p.Number), ETag: aws.String(p.ETag), ChecksumSHA256: aws.String(p.SHA256)}
	}
	out, err := w.s.client.CompleteMultipartUpload(w.ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &w.s.bucket, Key: aws.String(w.s.objectKey(sg.key)), UploadId: &sg.upload,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: cp},
		ChecksumType:    types.ChecksumTypeComposite,
		IfNoneMatch:     aws.String("*"),
	})
	switch {
	case err == nil:
		if got, want := aws.ToString(out.ChecksumSHA256), compositeChecksum(st.Parts); got != "" && got != want {
			return nil, fmt.Errorf("vault: complete %s: S3's checksum %s, parts sent give %s", w.s.objectURI(sg.key), got, want)
		}
		sg.version = aws.ToString(out.VersionId)
		sg.stored = serverTime(out.ResultMetadata)
		sg.upload = ""
		return nil, nil
	case preconditionFailed(err), apiCode(err) == "NoSuchUpload":
		// The key exists, or this upload was completed by an attempt whose
		// answer was lost: compare what is there.
		return w.resolveExisting(sg, st.Parts)
	default:
		return nil, fmt.Errorf("vault: complete %s: %w", w.s.objectURI(sg.key), w.s.explain(err))
	}
}

func (w *s3Writer) resolveExisting(sg *s3Seg, parts []s3Part) (*s3.HeadObjectOutput, error) {
	h, same, err := w.s.sameContent(w.ctx, sg.key, sg.size, sg.sha, parts)
	if err != nil {
		return nil, fmt.Errorf("vault: commit %s: compare with stored object: %w", w.key, err)
	}
	if !same {
		return nil, fmt.Errorf("vault: commit %s: %w", w.s.objectURI(sg.key), ErrExists)
	}
	sg.version = aws.ToString(h.VersionId)
	if sg.upload != "" { // our own upload is not needed
		w.abortUpload(sg)
	}
	return h, nil
}

func (w *s3Writer) abortUpload(sg *s3Seg) error {
	if sg.upload == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 2*time.Minute)
	defer cancel()
	_, err := w.s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket: &w.s.bucket, Key: aws.String(w.s.objectKey(sg.key)), UploadId: &sg.upload,
	})
	if err != nil && apiCode(err) != "NoSuchUpload" {
		return fmt.Errorf("vault: abort upload %s of %s: %w", sg.upload, w.s.objectURI(sg.key), err)
	}
	zerolog.Ctx(w.ctx).Debug().Str("key", sg.key).Str("upload_id", sg.upload).Msg("multipart upload aborted")
	sg.upload = ""
	return nil
}

func (w *s3Writer) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.close() {
		return nil
	}
	w.g.Wait() // the parts in flight fail or finish; their uploads are aborted below
	w.cur = nil
	if w.remote {
		return nil // the credentialed side aborts the upload
	}
	var errs []error
	for _, sg := range w.segs {
		if err := w.abortUpload(sg); err != nil {
			errs = append(errs, err)
		}
	}
	w.cur = nil
	return errors.Join(errs...)
}
