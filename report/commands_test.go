package report

import (
	"bytes"
	"context"
	"fmt"
	"github.com/impound-ir/impound/internal/testenv"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/vault"
)

// requireEnv returns an environment variable, or skips (fails under
// IMPOUND_TEST_REQUIRE_SERVERS=1) when it is unset.
func requireEnv(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		testenv.SkipOrFail(t, name+" is not set: run under scripts/testenv")
	}
	return v
}

// evidenceReport stores content in st as evidence of a one-entry case and
// returns the report and the receipt.
func evidenceReport(t *testing.T, st vault.Store, content []byte) (*Report, *vault.Receipt) {
	t.Helper()
	ctx := context.Background()
	skey, _, err := custody.GenerateKey("ir.example.com/t")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := custody.NewEd25519Signer(skey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := custody.Open(ctx, st, "CMD-1", signer, custody.Options{})
	if err != nil {
		t.Fatal(err)
	}
	actor := custody.Actor{Operator: "t"}
	if _, err := l.Append(ctx, custody.Entry{Actor: actor, Details: custody.CaseOpened{}}); err != nil {
		t.Fatal(err)
	}
	rc, err := vault.Put(ctx, st, "cases/CMD-1/evidence/disk image's copy.img", bytes.NewReader(content), vault.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, custody.Entry{Actor: actor, Details: custody.EvidenceStored{Receipt: *rc, Source: "file", Evidence: custody.EvidenceFile}}); err != nil {
		t.Fatal(err)
	}
	src, err := FromVault(ctx, st, "CMD-1", signer.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	r, err := Build(ctx, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r, rc
}

// runCommand runs a report command in a shell, in dir.
func runCommand(t *testing.T, dir, command string, env ...string) string {
	t.Helper()
	cmd := exec.Command("sh", "-c", command)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", command, err, out)
	}
	return string(out)
}

// TestLocalCommandRuns: the sha256sum command printed for a local vault
// hashes the stored file to the recorded SHA-256.
func TestLocalCommandRuns(t *testing.T) {
	if _, err := exec.LookPath("sha256sum"); err != nil {
		testenv.SkipOrFail(t, "sha256sum not found")
	}
	st, err := vault.Open(context.Background(), t.TempDir(), vault.Options{})
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("local evidence\n")
	r, rc := evidenceReport(t, st, content)
	cmds := r.Evidence[0].Commands
	if len(cmds) != 2 || !strings.HasPrefix(cmds[1].Command, "sha256sum ") {
		t.Fatalf("commands %+v", cmds)
	}
	out := runCommand(t, t.TempDir(), cmds[1].Command)
	if !strings.HasPrefix(out, rc.SHA256+" ") || rc.SHA256 != sha256Hex(content) {
		t.Errorf("sha256sum printed %q, receipt %s", out, rc.SHA256)
	}
}

// TestMinIOCommandRuns: the AWS CLI command printed for an S3 vault
// downloads the recorded version and hashes it to the recorded SHA-256.
func TestMinIOCommandRuns(t *testing.T) {
	endpoint := requireEnv(t, "IMPOUND_TEST_MINIO_ENDPOINT")
	ak, sk := requireEnv(t, "IMPOUND_TEST_MINIO_ACCESS_KEY"), requireEnv(t, "IMPOUND_TEST_MINIO_SECRET_KEY")
	if _, err := exec.LookPath("aws"); err != nil {
		testenv.SkipOrFail(t, "the AWS CLI (aws) is not installed")
	}
	ctx := context.Background()
	cfg := aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(endpoint),
		Credentials: credentials.NewStaticCredentialsProvider(ak, sk, "")}
	bucket := fmt.Sprintf("impound-report-%d", time.Now().UnixNano()%1e9)
	c := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket, ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	st, err := vault.Open(ctx, "s3://"+bucket+"/vault", vault.Options{AWS: cfg, PathStyle: true, DefaultRetention: time.Hour, DefaultMode: vault.ModeGovernance})
	if err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("s3 evidence "), 1000)
	r, rc := evidenceReport(t, st, content)
	ev := r.Evidence[0]
	if len(ev.Commands) != 2 || !strings.HasPrefix(ev.Commands[1].Command, "aws s3api get-object --bucket "+bucket+" --key 'vault/cases/CMD-1/evidence/disk image'\\''s copy.img' --version-id ") {
		t.Fatalf("commands %+v", ev.Commands)
	}
	env := []string{"AWS_ACCESS_KEY_ID=" + ak, "AWS_SECRET_ACCESS_KEY=" + sk, "AWS_DEFAULT_REGION=us-east-1",
		"AWS_ENDPOINT_URL=" + endpoint, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
	out := runCommand(t, t.TempDir(), ev.Commands[1].Command, env...)
	if !strings.HasPrefix(out, rc.SHA256+" ") || rc.SHA256 != sha256Hex(content) {
		t.Errorf("the report's AWS CLI command printed %q; the receipt says %s", out, rc.SHA256)
	}
}
