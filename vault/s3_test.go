package vault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/impound-ir/impound/internal/testenv"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// minioConfig returns an AWS config for the test MinIO server.
func minioConfig(t testing.TB) aws.Config {
	endpoint := testenv.Server(t, "IMPOUND_TEST_MINIO_ENDPOINT")
	return aws.Config{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(
			testenv.Server(t, "IMPOUND_TEST_MINIO_ACCESS_KEY"), testenv.Server(t, "IMPOUND_TEST_MINIO_SECRET_KEY"), ""),
	}
}

var bucketSeq atomic.Int64

// newLockedBucket creates a bucket with Object Lock on the test MinIO and
// returns its name and a plain S3 client with the same credentials.
func newLockedBucket(t testing.TB, cfg aws.Config) (string, *s3.Client) {
	t.Helper()
	c := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	name := fmt.Sprintf("impound-t%d-%d", time.Now().UnixNano()%1e9, bucketSeq.Add(1))
	_, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: &name, ObjectLockEnabledForBucket: aws.Bool(true)})
	if err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return name, c
}

func minioOptions(cfg aws.Config) Options {
	o := testOptions()
	o.AWS = cfg
	o.PartSize = MinPartSize
	return o
}

func TestMinIOConformance(t *testing.T) {
	cfg := minioConfig(t)
	suite{newStore: func(t *testing.T) Store {
		bucket, _ := newLockedBucket(t, cfg)
		st, err := Open(context.Background(), "s3://"+bucket+"/vault-prefix", minioOptions(cfg))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}, big: 2*MinPartSize + 1<<20 + 17}.run(t)
}

// TestMinIOSegments lowers the parts per object so that a stream is split
// into segments, and checks it reads back whole.
func TestMinIOSegments(t *testing.T) {
	ctx := context.Background()
	cfg := minioConfig(t)
	bucket, raw := newLockedBucket(t, cfg)
	o := minioOptions(cfg)
	o.MaxParts = 2
	st, err := Open(ctx, "s3://"+bucket, o)
	if err != nil {
		t.Fatal(err)
	}
	src := randomBytes(42, 5*MinPartSize+123) // 3 segments: 2+2+1(+tail) parts
	r, err := Put(ctx, st, "cases/c/evidence/big", bytes.NewReader(src), PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.SHA256 != hexSHA(src) || r.Size != int64(len(src)) {
		t.Fatalf("receipt %d %s, source %d %s", r.Size, r.SHA256, len(src), hexSHA(src))
	}
	if len(r.Segments) != 3 {
		t.Fatalf("%d segments, want 3: %+v", len(r.Segments), r.Segments)
	}
	var off int64
	for i, sg := range r.Segments {
		want := src[off : off+sg.Size]
		if sg.Offset != off || sg.SHA256 != hexSHA(want) || sg.Key != segmentKey("cases/c/evidence/big", i) {
			t.Fatalf("segment %d: %+v", i, sg)
		}
		out, err := raw.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &sg.Key, VersionId: &sg.VersionID})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(out.Body)
		out.Body.Close()
		if !bytes.Equal(b, want) {
			t.Fatalf("segment %d content differs", i)
		}
		off += sg.Size
	}
	if got := readAll(t, st, "cases/c/evidence/big", ""); !bytes.Equal(got, src) {
		t.Fatal("Get of a split object does not return the whole stream")
	}
	sr, err := st.Stat(ctx, "cases/c/evidence/big", "")
	if err != nil || len(sr.Segments) != 3 || sr.SHA256 != r.SHA256 || sr.Size != r.Size {
		t.Fatalf("Stat = %+v, %v", sr, err)
	}
	if err := Verify(ctx, st, r); err != nil {
		t.Fatal(err)
	}
	keys, _ := st.List(ctx, "")
	if fmt.Sprint(keys) != "[cases/c/evidence/big]" {
		t.Fatalf("List = %v: segments and receipts must not show", keys)
	}
	if r2, err := Put(ctx, st, "cases/c/evidence/big", bytes.NewReader(src), PutOptions{}); err != nil || r2.VersionID != r.VersionID {
		t.Fatalf("identical retry of a split object: %+v, %v", r2, err)
	}
}

// TestMinIOLockedWithPlainClient proves with a plain S3 client holding the
// same credentials that what impound stored cannot be changed.
func TestMinIOLockedWithPlainClient(t *testing.T) {
	ctx := context.Background()
	cfg := minioConfig(t)
	bucket, raw := newLockedBucket(t, cfg)
	st, err := Open(ctx, "s3://"+bucket, minioOptions(cfg))
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(1, 2*MinPartSize+5)
	r, err := Put(ctx, st, "ev/locked", bytes.NewReader(data), PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := "ev/locked"

	t.Run("DeleteVersionRefused", func(t *testing.T) {
		_, err := raw.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &key, VersionId: &r.VersionID})
		if err == nil {
			t.Fatal("a COMPLIANCE-locked version was deleted")
		}
		if _, err := raw.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: &key, VersionId: &r.VersionID}); err != nil {
			t.Fatalf("version gone after refused delete: %v", err)
		}
	})
	t.Run("GovernanceBypassDoesNotApplyToCompliance", func(t *testing.T) {
		_, err := raw.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &key, VersionId: &r.VersionID, BypassGovernanceRetention: aws.Bool(true)})
		if err == nil {
			t.Fatal("COMPLIANCE version deleted with the governance bypass")
		}
	})
	t.Run("ShortenComplianceRefused", func(t *testing.T) {
		shorter := r.RetainUntil.Add(-time.Hour)
		_, err := raw.PutObjectRetention(ctx, &s3.PutObjectRetentionInput{Bucket: &bucket, Key: &key, VersionId: &r.VersionID,
			Retention: &types.ObjectLockRetention{Mode: types.ObjectLockRetentionModeCompliance, RetainUntilDate: &shorter}})
		if err == nil {
			t.Fatal("COMPLIANCE retention was shortened")
		}
		got, err := raw.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: &bucket, Key: &key, VersionId: &r.VersionID})
		if err != nil {
			t.Fatal(err)
		}
		if got.Retention.Mode != types.ObjectLockRetentionModeCompliance || !got.Retention.RetainUntilDate.Equal(r.RetainUntil) {
			t.Fatalf("retention now %s until %v, receipt says %s until %v", got.Retention.Mode, got.Retention.RetainUntilDate, r.RetentionMode, r.RetainUntil)
		}
	})
	t.Run("OverwriteByImpoundRefused", func(t *testing.T) {
		if _, err := Put(ctx, st, key, bytes.NewReader([]byte("other")), PutOptions{}); !errors.Is(err, ErrExists) {
			t.Fatalf("second write: %v, want ErrExists", err)
		}
	})
	t.Run("PlainOverwriteKeepsLockedVersion", func(t *testing.T) {
		// A plain PUT without If-None-Match adds a version on a versioned
		// bucket; the locked version stays intact and readable.
		raw.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: strings.NewReader("tampered")})
		out, err := raw.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key, VersionId: &r.VersionID})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(out.Body)
		out.Body.Close()
		if !bytes.Equal(b, data) {
			t.Fatal("the locked version changed")
		}
		if err := Verify(ctx, st, r); err != nil {
			t.Fatalf("Verify of the locked version after a plain overwrite: %v", err)
		}
	})
	t.Run("WrongPartChecksumRefused", func(t *testing.T) {
		k := "ev/bad-part"
		mp, err := raw.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: &k, ChecksumAlgorithm: types.ChecksumAlgorithmSha256})
		if err != nil {
			t.Fatal(err)
		}
		defer raw.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &bucket, Key: &k, UploadId: mp.UploadId})
		body := randomBytes(3, MinPartSize)
		wrong := sha256.Sum256([]byte("not the body"))
		_, err = raw.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: &k, UploadId: mp.UploadId, PartNumber: aws.Int32(1),
			Body: bytes.NewReader(body), ChecksumAlgorithm: types.ChecksumAlgorithmSha256,
			ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(wrong[:]))})
		if err == nil {
			t.Fatal("a part with a wrong x-amz-checksum-sha256 was accepted")
		}
		// The same with impound's signing: only headers signed
		// (UNSIGNED-PAYLOAD), the checksum header among them.
		_, err = raw.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: &k, UploadId: mp.UploadId, PartNumber: aws.Int32(2),
			Body: bytes.NewReader(body), ChecksumAlgorithm: types.ChecksumAlgorithmSha256,
			ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(wrong[:]))}, unsignedPayload)
		if err == nil {
			t.Fatal("an unsigned-payload part with a wrong x-amz-checksum-sha256 was accepted")
		}
		right := sha256.Sum256(body)
		if _, err = raw.UploadPart(ctx, &s3.UploadPartInput{Bucket: &bucket, Key: &k, UploadId: mp.UploadId, PartNumber: aws.Int32(3),
			Body: bytes.NewReader(body), ChecksumAlgorithm: types.ChecksumAlgorithmSha256,
			ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(right[:]))}, unsignedPayload); err != nil {
			t.Fatalf("the right checksum, unsigned payload: %v", err)
		}
	})
	t.Run("LegalHoldBlocksDeletion", func(t *testing.T) {
		k := "ev/held"
		hr, err := Put(ctx, st, k, bytes.NewReader([]byte("held evidence")), PutOptions{RetentionMode: ModeGovernance, LegalHold: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = raw.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: &k, VersionId: &hr.VersionID, BypassGovernanceRetention: aws.Bool(true)})
		if err == nil {
			t.Fatal("a version under legal hold was deleted")
		}
		lh, err := raw.GetObjectLegalHold(ctx, &s3.GetObjectLegalHoldInput{Bucket: &bucket, Key: &k, VersionId: &hr.VersionID})
		if err != nil || lh.LegalHold.Status != types.ObjectLockLegalHoldStatusOn {
			t.Fatalf("legal hold read by a plain client: %+v, %v", lh, err)
		}
	})
	t.Run("SecondWriteRefusedByS3", func(t *testing.T) {
		// If-None-Match is enforced by the server, not only by impound.
		_, err := raw.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: strings.NewReader("x"), IfNoneMatch: aws.String("*")})
		if !preconditionFailed(err) {
			t.Fatalf("conditional PUT over an existing key: %v, want PreconditionFailed", err)
		}
	})
	t.Run("NoUploadsLeft", func(t *testing.T) {
		out, err := raw.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &bucket, Prefix: aws.String("ev/locked")})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Uploads) != 0 {
			t.Fatalf("%d multipart uploads left behind", len(out.Uploads))
		}
	})
}

// TestMinIOAbortCleansUploads: a failed put aborts its multipart upload.
func TestMinIOAbortCleansUploads(t *testing.T) {
	ctx := context.Background()
	cfg := minioConfig(t)
	bucket, raw := newLockedBucket(t, cfg)
	st, err := Open(ctx, "s3://"+bucket, minioOptions(cfg))
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("source unreadable")
	_, err = Put(ctx, st, "ev/failed", &failingReader{bytes.NewReader(randomBytes(2, 3*MinPartSize)), boom}, PutOptions{})
	if !errors.Is(err, boom) {
		t.Fatalf("Put: %v", err)
	}
	assertNothingLeft(t, raw, bucket)
}

// assertNothingLeft checks that the bucket holds no upload and no version.
func assertNothingLeft(t *testing.T, raw *s3.Client, bucket string) {
	t.Helper()
	ctx := context.Background()
	out, err := raw.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Uploads) != 0 {
		t.Fatalf("%d multipart uploads left", len(out.Uploads))
	}
	vs, err := raw.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs.Versions) != 0 {
		t.Fatalf("%d object versions left", len(vs.Versions))
	}
}

// TestMinIOResumeAcrossProcesses: the state survives a new store (a new
// process), and the resumed upload ends with the source's hash.
func TestMinIOResumeAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	cfg := minioConfig(t)
	bucket, raw := newLockedBucket(t, cfg)
	open := func() Store {
		st, err := Open(ctx, "s3://"+bucket, minioOptions(cfg))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	src := randomBytes(11, 4*MinPartSize+999)
	w, err := open().Create(ctx, "ev/resumed", PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(src[:2*MinPartSize+100])
	state, off, err := w.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if off != 2*MinPartSize {
		t.Fatalf("checkpoint offset %d, want the two sealed parts %d", off, 2*MinPartSize)
	}
	// killed here: no Commit, no Abort
	w2, off2, err := open().Resume(ctx, state)
	if err != nil {
		t.Fatal(err)
	}
	w2.Write(src[off2:])
	r, err := w2.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if r.SHA256 != hexSHA(src) {
		t.Fatalf("resumed sha %s, source %s", r.SHA256, hexSHA(src))
	}
	vs, err := raw.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{Bucket: &bucket, Prefix: aws.String("ev/resumed")})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range vs.Versions {
		if aws.ToString(v.Key) == "ev/resumed" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d versions of the resumed object, want 1", n)
	}
	// The upload is complete: resuming the old state again must fail.
	if _, _, err := open().Resume(ctx, state); !errors.Is(err, ErrNotFound) {
		t.Fatalf("resume of a completed upload: %v, want ErrNotFound", err)
	}
}
