package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// minioInitOptions relax what the test MinIO cannot do: it has no KMS for
// default encryption and no public access block API.
func minioInitOptions() InitOptions {
	o := NewInitOptions()
	o.RetentionDays = 1
	o.Encryption = EncryptionNone
	o.SkipPublicAccessBlock = true
	o.Check.RequireEncryption = false
	o.Check.RequirePublicAccessBlock = false
	return o
}

func finding(t *testing.T, r *CheckReport, name string) Finding {
	t.Helper()
	for _, f := range r.Findings {
		if f.Check == name {
			return f
		}
	}
	t.Fatalf("no %q finding in %+v", name, r.Findings)
	return Finding{}
}

func TestMinIOCheckMissingBucket(t *testing.T) {
	cfg := minioConfig(t)
	r, err := Check(context.Background(), "s3://impound-no-such-bucket", Options{AWS: cfg}, NewCheckOptions())
	if err != nil {
		t.Fatal(err)
	}
	if f := finding(t, r, "exists"); f.OK {
		t.Fatal("a missing bucket passed")
	}
	err = r.Err()
	if !errors.Is(err, ErrBucketUnfit) || !strings.Contains(err.Error(), "impound vault init s3://impound-no-such-bucket") {
		t.Fatalf("Err() = %v; want ErrBucketUnfit saying how to create the bucket", err)
	}
}

func TestMinIOCheckBucketWithoutObjectLock(t *testing.T) {
	ctx := context.Background()
	cfg := minioConfig(t)
	c := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	name := fmt.Sprintf("impound-nolock-%d", time.Now().UnixNano()%1e9)
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name}); err != nil {
		t.Fatal(err)
	}
	r, err := Check(ctx, "s3://"+name, Options{AWS: cfg}, minioInitOptions().Check)
	if err != nil {
		t.Fatal(err)
	}
	if f := finding(t, r, "object-lock"); f.OK || !strings.Contains(f.Fix, "impound vault init") {
		t.Fatalf("object-lock finding %+v", f)
	}
	if f := finding(t, r, "versioning"); f.OK {
		t.Fatalf("versioning finding %+v on an unversioned bucket", f)
	}
	if err := r.Err(); !errors.Is(err, ErrBucketUnfit) || !strings.Contains(err.Error(), "Object Lock is not enabled") {
		t.Fatalf("Err() = %v", err)
	}
	// Putting evidence there fails rather than storing an unlocked object.
	st, err := Open(ctx, "s3://"+name, Options{AWS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Put(ctx, st, "ev/x", strings.NewReader("x"), PutOptions{}); err == nil {
		t.Fatal("evidence was stored in a bucket without Object Lock")
	}
	if _, err := st.Stat(ctx, "ev/x", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after a refused put: %v", err)
	}
}

func TestMinIOInitThenCheck(t *testing.T) {
	ctx := context.Background()
	cfg := minioConfig(t)
	name := fmt.Sprintf("impound-init-%d", time.Now().UnixNano()%1e9)
	io := minioInitOptions()
	io.Mode = "governance"
	r, err := Init(ctx, "s3://"+name, Options{AWS: cfg}, io)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Err(); err != nil {
		t.Fatalf("a bucket made by Init fails the preflight: %v", err)
	}
	for _, name := range []string{"exists", "object-lock", "versioning", "policy"} {
		if f := finding(t, r, name); !f.OK {
			t.Fatalf("%s: %+v", name, f)
		}
	}
	if f := finding(t, r, "default-retention"); !f.OK || f.Detail != "GOVERNANCE for 1 days" {
		t.Fatalf("default retention %+v", f)
	}
	// Init again is harmless.
	if r, err := Init(ctx, "s3://"+name, Options{AWS: cfg}, io); err != nil || r.Err() != nil {
		t.Fatalf("second Init: %v, %v", err, r.Err())
	}
	// The production defaults still name what MinIO lacks.
	r, err = Check(ctx, "s3://"+name, Options{AWS: cfg}, NewCheckOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), "encryption") {
		t.Fatalf("strict check of a bucket without encryption: %v", err)
	}
	_ = aws.String
}

func TestMinIOPutToMissingBucket(t *testing.T) {
	ctx := context.Background()
	cfg := minioConfig(t)
	st, err := Open(ctx, "s3://impound-no-such-bucket-put", Options{AWS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{10, 2*DefaultPartSize + 1} {
		_, err = Put(ctx, st, "ev/x", bytes.NewReader(randomBytes(1, size)), PutOptions{})
		if err == nil || !strings.Contains(err.Error(), "impound vault init s3://impound-no-such-bucket-put") &&
			!strings.Contains(err.Error(), "impound vault check s3://impound-no-such-bucket-put") {
			t.Fatalf("Put of %d bytes to a missing bucket: %v; want the fix named", size, err)
		}
	}
}
