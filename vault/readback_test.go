package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/impound-ir/impound/internal/testenv"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestMinIOAWSCLIReadsBack: the AWS CLI, an independent S3 client, sees the
// retention impound set and content whose SHA-256 equals the receipt's, for
// a single-request and a multipart object.
func TestMinIOAWSCLIReadsBack(t *testing.T) {
	ctx := context.Background()
	cfg := minioConfig(t)
	awsCLI := testenv.Tool(t, "aws")
	sha256sum := testenv.Tool(t, "sha256sum")
	bucket, _ := newLockedBucket(t, cfg)
	st, err := Open(ctx, "s3://"+bucket, minioOptions(cfg))
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"AWS_ACCESS_KEY_ID="+os.Getenv("IMPOUND_TEST_MINIO_ACCESS_KEY"),
		"AWS_SECRET_ACCESS_KEY="+os.Getenv("IMPOUND_TEST_MINIO_SECRET_KEY"),
		"AWS_REGION=us-east-1", "AWS_ENDPOINT_URL="+os.Getenv("IMPOUND_TEST_MINIO_ENDPOINT"),
		"AWS_PAGER=", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	for _, size := range []int{1000, 3*MinPartSize + 4321} {
		key := fmt.Sprintf("ev/readback-%d", size)
		r, err := Put(ctx, st, key, bytes.NewReader(randomBytes(uint64(size), size)), PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c := exec.Command(awsCLI, "s3api", "get-object-retention", "--bucket", bucket, "--key", key, "--version-id", r.VersionID)
		c.Env = env
		out, err := c.Output()
		if err != nil {
			t.Fatalf("aws s3api get-object-retention: %v", err)
		}
		var ret struct {
			Retention struct{ Mode, RetainUntilDate string }
		}
		if err := json.Unmarshal(out, &ret); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		until, err := time.Parse(time.RFC3339, ret.Retention.RetainUntilDate)
		if ret.Retention.Mode != ModeCompliance || err != nil || !until.Equal(r.RetainUntil) {
			t.Fatalf("AWS CLI sees %s until %s; receipt says %s until %v", ret.Retention.Mode, ret.Retention.RetainUntilDate, r.RetentionMode, r.RetainUntil)
		}
		// aws s3api get-object … FILE; sha256sum FILE (get-object prints its
		// JSON answer on stdout, so the body goes to a file).
		f := t.TempDir() + "/obj"
		c = exec.Command(awsCLI, "s3api", "get-object", "--bucket", bucket, "--key", key, "--version-id", r.VersionID, f)
		c.Env = env
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("aws s3api get-object: %v: %s", err, out)
		}
		out, err = exec.Command(sha256sum, f).Output()
		if err != nil || !strings.HasPrefix(string(out), r.SHA256+" ") {
			t.Fatalf("sha256sum of what the AWS CLI read: %q, %v; receipt %s", out, err, r.SHA256)
		}
	}
}

// TestMinIOExpiredCredentials: refused credentials give ErrCredentials
// with what to do, and nothing is stored.
func TestMinIOExpiredCredentials(t *testing.T) {
	ctx := context.Background()
	cfg := minioConfig(t)
	bucket, raw := newLockedBucket(t, cfg)
	bad := cfg.Copy()
	bad.Credentials = credentials.NewStaticCredentialsProvider(os.Getenv("IMPOUND_TEST_MINIO_ACCESS_KEY"), "expired-secret", "")
	o := minioOptions(bad)
	o.MaxAttempts = 2
	st, err := Open(ctx, "s3://"+bucket, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{10, 2*MinPartSize + 1} {
		_, err = Put(ctx, st, "ev/denied", bytes.NewReader(randomBytes(1, size)), PutOptions{})
		if !errors.Is(err, ErrCredentials) || !strings.Contains(err.Error(), "refresh them") {
			t.Fatalf("Put with refused credentials: %v", err)
		}
	}
	vs, err := raw.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs.Versions) != 0 {
		t.Fatalf("%d versions stored with refused credentials", len(vs.Versions))
	}
}

// mountTmpfs mounts a 1 MiB tmpfs (root only) and returns its directory.
func mountTmpfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		if os.Getenv("IMPOUND_TEST_REQUIRE_SERVERS") == "1" && os.Geteuid() == 0 {
			t.Fatalf("mount a 1 MiB tmpfs: %v", err)
		}
		t.Skipf("cannot mount a 1 MiB tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, 0) })
	return dir
}

// TestLocalFullDisk: on a full filesystem a put fails with the disk's error
// and leaves neither an object, nor a receipt, nor a temporary file.
func TestLocalFullDisk(t *testing.T) {
	dir := mountTmpfs(t)
	ctx := context.Background()
	st, err := Open(ctx, dir, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Put(ctx, st, "ev/small", bytes.NewReader([]byte("fits")), PutOptions{}); err != nil {
		t.Fatalf("a small put on the empty disk: %v", err)
	}
	_, err = Put(ctx, st, "ev/too-big", bytes.NewReader(randomBytes(1, 2<<20)), PutOptions{})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Put larger than the disk: %v, want ENOSPC", err)
	}
	if _, err := st.Stat(ctx, "ev/too-big", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after a full disk: %v", err)
	}
	for _, p := range []string{"/ev/too-big", "/ev/too-big" + receiptSuffix} {
		if _, err := os.Stat(dir + p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s exists after a failed put", p)
		}
	}
	tmp, _ := os.ReadDir(dir + "/.impound/tmp")
	if len(tmp) != 0 {
		t.Fatalf("%d temporary files left", len(tmp))
	}
	keys, _ := st.List(ctx, "")
	if len(keys) != 1 || keys[0] != "ev/small" {
		t.Fatalf("List = %v", keys)
	}
}
