package vault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// hostTransport is the host's HTTP: it holds no credentials, and fails any
// request that carries an Authorization header or goes elsewhere than a
// presigned PUT.
type hostTransport struct {
	puts atomic.Int32
	bad  atomic.Value // string
}

func (h *hostTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") != "" || r.Method != http.MethodPut || !strings.Contains(r.URL.RawQuery, "X-Amz-Signature=") {
		h.bad.Store(fmt.Sprintf("%s %s with Authorization %q", r.Method, r.URL, r.Header.Get("Authorization")))
		return nil, errors.New("host transport: not a presigned PUT")
	}
	h.puts.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// hostUpload runs the host's side: it streams src through a PartWriter to
// the URLs signer returns and hands back the report as JSON bytes, as it
// would cross from the host.
func hostUpload(t *testing.T, signer PartSigner, partSize int64, src []byte) (*UploadedParts, *hostTransport, error) {
	t.Helper()
	tr := &hostTransport{}
	pw, err := NewPartWriter(context.Background(), signer, PartWriterOptions{PartSize: partSize, HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(pw, bytes.NewReader(src)); err != nil {
		return nil, tr, errors.Join(err, pw.Abort())
	}
	up, err := pw.Close()
	if err != nil {
		return nil, tr, errors.Join(err, pw.Abort())
	}
	b, err := json.Marshal(up)
	if err != nil {
		t.Fatal(err)
	}
	var crossed UploadedParts
	if err := json.Unmarshal(b, &crossed); err != nil {
		t.Fatal(err)
	}
	return &crossed, tr, nil
}

// newPresigned opens a presigned upload of ev/mem in a new locked bucket
// on the test MinIO, in a store with the options opts returns.
func newPresigned(t *testing.T, ctx context.Context, opts func(aws.Config) Options, popts ...PresignOptions) (Store, *PresignedUpload, string, *s3.Client) {
	t.Helper()
	cfg := minioConfig(t)
	bucket, raw := newLockedBucket(t, cfg)
	st, err := Open(context.Background(), "s3://"+bucket, opts(cfg))
	if err != nil {
		t.Fatal(err)
	}
	u, err := NewPresignedUpload(ctx, st, "ev/mem", PutOptions{}, append(popts, PresignOptions{})[0])
	if err != nil {
		t.Fatal(err)
	}
	return st, u, bucket, raw
}

// TestMinIOPresignedUpload: a stream sent through presigned part URLs by a
// client without credentials ends as one object with the source's
// SHA-256, under the retention and legal hold set at creation.
func TestMinIOPresignedUpload(t *testing.T) {
	ctx := context.Background()
	cfg := minioConfig(t)
	bucket, raw := newLockedBucket(t, cfg)
	st, err := Open(ctx, "s3://"+bucket+"/pfx", minioOptions(cfg))
	if err != nil {
		t.Fatal(err)
	}
	const key = "cases/c/evidence/memory dump+1.lime" // escaped in the signed path
	until := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	u, err := NewPresignedUpload(ctx, st, key, PutOptions{RetainUntil: until, LegalHold: true}, PresignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u.PartSize() != MinPartSize {
		t.Fatalf("part size %d, want %d", u.PartSize(), MinPartSize)
	}
	src := randomBytes(77, 2*MinPartSize+12345)
	up, tr, err := hostUpload(t, u, u.PartSize(), src)
	if err != nil {
		t.Fatal(err)
	}
	if bad := tr.bad.Load(); bad != nil {
		t.Fatalf("host sent %s", bad)
	}
	if tr.puts.Load() != 3 || len(up.Parts) != 3 || up.Size != int64(len(src)) || up.SHA256 != hexSHA(src) {
		t.Fatalf("host: %d PUTs, report %d parts, %d bytes, %s; want 3, 3, %d, %s", tr.puts.Load(), len(up.Parts), up.Size, up.SHA256, len(src), hexSHA(src))
	}
	r, err := u.Complete(*up)
	if err != nil {
		t.Fatal(err)
	}
	if r.SHA256 != hexSHA(src) || r.Size != int64(len(src)) || len(r.Parts) != 3 || r.Key != key || r.URI != "s3://"+bucket+"/pfx/"+key {
		t.Fatalf("receipt %+v", r)
	}
	for i, p := range r.Parts {
		end := min(int64(i+1)*MinPartSize, int64(len(src)))
		sum := sha256.Sum256(src[int64(i)*MinPartSize : end])
		if p.Number != int32(i+1) || p.Size != end-int64(i)*MinPartSize || p.SHA256 != b64(sum[:]) {
			t.Fatalf("part %d: %+v", i+1, p)
		}
	}
	if !r.LegalHold || !r.RetainUntil.Equal(until) || r.RetentionMode != ModeCompliance {
		t.Fatalf("receipt lock: %s %s hold %v", r.RetentionMode, r.RetainUntil, r.LegalHold)
	}

	// What S3 holds, read with a plain client.
	objKey := "pfx/" + key
	out, err := raw.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &objKey, VersionId: &r.VersionID})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if hexSHA(got) != hexSHA(src) {
		t.Fatalf("stored object sha256 %s, source %s", hexSHA(got), hexSHA(src))
	}
	if out.ObjectLockMode != types.ObjectLockModeCompliance || !aws.ToTime(out.ObjectLockRetainUntilDate).Equal(until) ||
		out.ObjectLockLegalHoldStatus != types.ObjectLockLegalHoldStatusOn {
		t.Fatalf("object lock %s %v hold %s", out.ObjectLockMode, out.ObjectLockRetainUntilDate, out.ObjectLockLegalHoldStatus)
	}
	if _, err := raw.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &objKey, VersionId: &r.VersionID}); err == nil {
		t.Fatal("deleted a locked version")
	}
	sr, err := st.Stat(ctx, key, "")
	if err != nil || sr.SHA256 != r.SHA256 || sr.VersionID != r.VersionID || len(sr.Parts) != 3 {
		t.Fatalf("Stat = %+v, %v", sr, err)
	}
	if err := Verify(ctx, st, r); err != nil {
		t.Fatal(err)
	}
	lu, _ := raw.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &bucket})
	if len(lu.Uploads) != 0 {
		t.Fatalf("%d uploads left", len(lu.Uploads))
	}

	// A second presigned upload of different content at the key is refused
	// write-once, and aborted.
	u2, err := NewPresignedUpload(ctx, st, key, PutOptions{}, PresignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	up2, _, err := hostUpload(t, u2, u2.PartSize(), randomBytes(78, MinPartSize+1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u2.Complete(*up2); !errors.Is(err, ErrExists) {
		t.Fatalf("second upload: %v, want ErrExists", err)
	}
	if err := u2.Abort(); err != nil {
		t.Fatal(err)
	}
	lu, _ = raw.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &bucket})
	if len(lu.Uploads) != 0 {
		t.Fatalf("%d uploads left after the refused second upload", len(lu.Uploads))
	}
}

// lyingSigner signs every part after the first for the SHA-256 of other
// bytes than the host sends.
type lyingSigner struct{ u *PresignedUpload }

func (l lyingSigner) SignPart(ctx context.Context, n int32, sum []byte, size int64) (string, http.Header, error) {
	if n > 1 {
		other := sha256.Sum256([]byte("not this part"))
		sum = other[:]
	}
	return l.u.SignPart(ctx, n, sum, size)
}

// TestMinIOPresignedBodyMismatch: a part whose body differs from the
// SHA-256 its URL was signed for is refused by S3; the aborted upload
// leaves nothing, and a report claiming it cannot complete.
func TestMinIOPresignedBodyMismatch(t *testing.T) {
	ctx := context.Background()
	_, u, bucket, raw := newPresigned(t, ctx, minioOptions)
	src := randomBytes(79, 2*MinPartSize+1)
	_, _, err := hostUpload(t, lyingSigner{u}, u.PartSize(), src)
	var pe *PartRefusedError
	if !errors.As(err, &pe) || pe.Number < 2 || pe.StatusCode != http.StatusBadRequest {
		t.Fatalf("host upload: %v, want part 2 or 3 refused with HTTP 400", err)
	}
	t.Logf("S3 refused: %v", pe)

	// Part 1 was stored; a report of part 1 with part 2 as the host hashed
	// it was never signed and is refused before S3 is asked.
	sum := sha256.Sum256(src[MinPartSize : 2*MinPartSize])
	forged := UploadedParts{Size: 2 * MinPartSize, SHA256: hexSHA(src[:2*MinPartSize]), Parts: []UploadedPart{
		{Number: 1, Size: MinPartSize, SHA256: b64sum(src[:MinPartSize]), ETag: `"x"`},
		{Number: 2, Size: MinPartSize, SHA256: b64(sum[:]), ETag: `"y"`},
	}}
	if _, err := u.Complete(forged); err == nil || !strings.Contains(err.Error(), "was not signed") {
		t.Fatalf("Complete with an unsigned part: %v", err)
	}

	// The checksum is in the signature: a host that sends the checksum of
	// its body instead of the signed one is refused too.
	url, hdr, err := u.SignPart(ctx, 3, make([]byte, sha256.Size), 1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(url, "content-length%3Bhost%3Bx-amz-checksum-sha256") || hdr.Get("X-Amz-Checksum-Sha256") != b64(make([]byte, sha256.Size)) {
		t.Fatalf("length and checksum not among the signed headers: %s %v", url, hdr)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, url, strings.NewReader("z"))
	req.Header.Set("X-Amz-Checksum-Sha256", b64sum([]byte("z")))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("PUT with a checksum header other than the signed one: HTTP %d, want 403", resp.StatusCode)
	}
	if err := u.Abort(); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, raw, bucket)
}

// TestMinIOPresignedWrongWholeHash: a host reporting a SHA-256 other than
// that of what it sent is caught by the read-back; no receipt is written.
func TestMinIOPresignedWrongWholeHash(t *testing.T) {
	ctx := context.Background()
	st, u, _, _ := newPresigned(t, ctx, minioOptions)
	src := randomBytes(82, MinPartSize+3)
	up, _, err := hostUpload(t, u, u.PartSize(), src)
	if err != nil {
		t.Fatal(err)
	}
	up.SHA256 = hexSHA([]byte("something else"))
	_, err = u.Complete(*up)
	var me *MismatchError
	if !errors.As(err, &me) || me.GotSHA256 != hexSHA(src) || me.WantSHA256 != up.SHA256 {
		t.Fatalf("Complete with a wrong whole SHA-256: %v, want a MismatchError", err)
	}
	if err := u.Abort(); err != nil {
		t.Fatal(err)
	}
	r, err := st.Stat(ctx, "ev/mem", "")
	if err != nil || r.SHA256 != "" {
		t.Fatalf("Stat = %+v, %v: no receipt may vouch for the reported hash", r, err)
	}
}

// TestMinIOPresignedExpired: a URL used after it expired is refused, and
// the aborted upload leaves nothing.
func TestMinIOPresignedExpired(t *testing.T) {
	ctx := context.Background()
	_, u, bucket, raw := newPresigned(t, ctx, func(cfg aws.Config) Options {
		o := minioOptions(cfg)
		o.Now = func() time.Time { return time.Now().Add(-time.Hour) } // URLs signed an hour ago
		return o
	}, PresignOptions{Expires: time.Minute})
	_, _, err := hostUpload(t, u, u.PartSize(), randomBytes(80, MinPartSize/2))
	var pe *PartRefusedError
	if !errors.As(err, &pe) || pe.StatusCode != http.StatusForbidden {
		t.Fatalf("host upload with an expired URL: %v, want HTTP 403", err)
	}
	t.Logf("S3 refused: %v", pe)
	if err := u.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := u.SignPart(ctx, 1, make([]byte, sha256.Size), 1); err == nil {
		t.Fatal("signed a part of an aborted upload")
	}
	assertNothingLeft(t, raw, bucket)
}

// TestMinIOPresignedEmpty: an empty stream is one empty part.
func TestMinIOPresignedEmpty(t *testing.T) {
	ctx := context.Background()
	st, u, _, _ := newPresigned(t, ctx, minioOptions)
	up, _, err := hostUpload(t, u, u.PartSize(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := u.Complete(*up)
	if err != nil {
		t.Fatal(err)
	}
	if r.Size != 0 || r.SHA256 != hexSHA(nil) {
		t.Fatalf("receipt %+v", r)
	}
	if got := readAll(t, st, "ev/mem", r.VersionID); len(got) != 0 {
		t.Fatalf("read back %d bytes", len(got))
	}
}

// TestMinIOPresignedCancel: cancelling the credentialed side's context
// aborts the upload.
func TestMinIOPresignedCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	_, u, bucket, raw := newPresigned(t, ctx, minioOptions)
	if _, _, err := hostUpload(t, u, u.PartSize(), randomBytes(81, MinPartSize+7)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := u.Abort(); err != nil { // waits for the abort the cancel started
		t.Fatal(err)
	}
	assertNothingLeft(t, raw, bucket)
}

func TestPresignedNeedsS3(t *testing.T) {
	if _, err := NewPresignedUpload(context.Background(), NewMemory(), "ev/mem", PutOptions{}, PresignOptions{}); err == nil {
		t.Fatal("presigned upload on a memory store")
	}
	if _, err := NewPartWriter(context.Background(), lyingSigner{}, PartWriterOptions{PartSize: 1 << 10}); err == nil {
		t.Fatal("part writer with parts below S3's minimum")
	}
}

func b64sum(b []byte) string { s := sha256.Sum256(b); return b64(s[:]) }

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
