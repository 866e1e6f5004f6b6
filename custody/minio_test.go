package custody

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/impound-ir/impound/internal/testenv"
	"github.com/impound-ir/impound/vault"
)

// TestConcurrentWritersMinIO runs the 8-writer test against real S3 with
// Object Lock (MinIO) through vault.Open("s3://..."): write-once is
// If-None-Match there, not a lock in this process.
func TestConcurrentWritersMinIO(t *testing.T) {
	st := minioStore(t)
	ctx := context.Background()
	testConcurrentWriters(t, st, "MINIO-1", 8, 10)

	// The stored ledger is exported and verified offline like any other.
	signerless, err := Verify(ctx, st, "MINIO-1", VerifyOptions{})
	if err != nil || signerless.Size != 81 {
		t.Fatalf("verify from MinIO: %v", err)
	}
}

// TestConcurrentAppendAllMinIO: batches against single entries on real S3,
// where a batch is written object by object, each with If-None-Match.
func TestConcurrentAppendAllMinIO(t *testing.T) {
	testConcurrentAppendAll(t, minioStore(t), "MINIO-B", 3, 20, 40)
}

// minioStore is a vault in a new Object Lock bucket on the test MinIO.
func minioStore(t *testing.T) vault.Store {
	t.Helper()
	endpoint := testenv.Server(t, "IMPOUND_TEST_MINIO_ENDPOINT")
	cfg := aws.Config{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(
			testenv.Server(t, "IMPOUND_TEST_MINIO_ACCESS_KEY"), testenv.Server(t, "IMPOUND_TEST_MINIO_SECRET_KEY"), ""),
	}
	ctx := context.Background()
	bucket := fmt.Sprintf("impound-custody-%d", time.Now().UnixNano()%1e9)
	c := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket, ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	st, err := vault.Open(ctx, "s3://"+bucket+"/vault", vault.Options{AWS: cfg, DefaultRetention: 24 * time.Hour, DefaultMode: vault.ModeGovernance})
	if err != nil {
		t.Fatal(err)
	}
	return st
}
