package report

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"html"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/impound-ir/impound/internal/testenv"

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

// ecdsaSigner signs checkpoints with an ECDSA P-256 key, as custody's KMS
// signer does (DER signature over SHA-256 of the note text).
type ecdsaSigner struct {
	name string
	hash uint32
	key  *ecdsa.PrivateKey
	vkey string
}

func newECDSASigner(t *testing.T, name string) *ecdsaSigner {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := custody.ECDSAVerifierKey(name, &k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	h, err := strconv.ParseUint(strings.Split(vkey, "+")[1], 16, 32)
	if err != nil {
		t.Fatal(err)
	}
	return &ecdsaSigner{name: name, hash: uint32(h), key: k, vkey: vkey}
}

func (s *ecdsaSigner) Name() string        { return s.name }
func (s *ecdsaSigner) KeyHash() uint32     { return s.hash }
func (s *ecdsaSigner) VerifierKey() string { return s.vkey }
func (s *ecdsaSigner) Sign(msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	return ecdsa.SignASN1(rand.Reader, s.key, d[:])
}

// signedReport builds the report of a small case signed by signer.
func signedReport(t *testing.T, signer custody.Signer) *Report {
	t.Helper()
	ctx := context.Background()
	st := vault.NewMemory()
	l, err := custody.Open(ctx, st, "SIG-1", signer, custody.Options{})
	if err != nil {
		t.Fatal(err)
	}
	actor := custody.Actor{Operator: "t"}
	for _, d := range []custody.Details{custody.CaseOpened{InstanceID: "i-0123"}, custody.Note{Text: "checked by hand"}} {
		if _, err := l.Append(ctx, custody.Entry{Actor: actor, Details: d}); err != nil {
			t.Fatal(err)
		}
	}
	src, err := FromVault(ctx, st, "SIG-1", signer.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	r, err := Build(ctx, src, Options{KeyFile: "SIG-1 key.pub"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runScript runs commands in order in a shell in dir and returns their
// output, stopping at the first that fails.
func runScript(dir string, cmds []Command, env ...string) (string, error) {
	var all strings.Builder
	for _, c := range cmds {
		cmd := exec.Command("sh", "-c", c.Command)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		all.Write(out)
		if err != nil {
			return all.String(), fmt.Errorf("%s: %w", c.Command, err)
		}
	}
	return all.String(), nil
}

// TestCheckpointByHandCommandsRun runs the report's standard-tool commands
// (POSIX sh, coreutils, OpenSSL) that check the checkpoint's signature, for
// both kinds of signer: they succeed on the report's own key and checkpoint
// and fail on a tampered checkpoint, another key, or a key file whose key
// hash was edited.
func TestCheckpointByHandCommandsRun(t *testing.T) {
	testenv.Tool(t, "openssl")
	for _, tool := range []string{"sed", "tail", "cut", "base64", "head", "od", "tr", "sha256sum"} {
		testenv.Tool(t, tool)
	}
	ed := func(t *testing.T, name string) custody.Signer {
		skey, _, err := custody.GenerateKey(name)
		if err != nil {
			t.Fatal(err)
		}
		s, err := custody.NewEd25519Signer(skey)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ec := func(t *testing.T, name string) custody.Signer { return newECDSASigner(t, name) }
	for _, tc := range []struct {
		name      string
		signer    func(*testing.T, string) custody.Signer
		verified  string
		firstTool string
	}{
		{"ed25519", ed, "Signature Verified Successfully", "openssl pkeyutl -verify"},
		{"ecdsa-p256", ec, "Verified OK", "openssl dgst -sha256 -verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := signedReport(t, tc.signer(t, "ir.example.com/by-hand"))
			// The commands as a reader gets them: from the JSON report, and
			// verbatim in the HTML and Markdown.
			var fromJSON Report
			if err := json.Unmarshal(render(t, r, FormatJSON), &fromJSON); err != nil {
				t.Fatal(err)
			}
			v := fromJSON.Verification
			h, m := html.UnescapeString(string(render(t, r, FormatHTML))), string(render(t, r, FormatMarkdown))
			for _, c := range v.ByHandCommands {
				if !strings.Contains(h, "<pre>"+c.Command+"</pre>") || !strings.Contains(m, "\n"+c.Command+"\n```") {
					t.Errorf("command not verbatim in the HTML or Markdown:\n%s", c.Command)
				}
			}
			if len(v.ByHandCommands) != 4 || !strings.Contains(v.ByHandCommands[2].Command, tc.firstTool) || !strings.Contains(v.ByHandCommands[2].Purpose, tc.verified) {
				t.Fatalf("by-hand commands %+v", v.ByHandCommands)
			}
			if !strings.HasPrefix(v.Commands[0].Command, "printf '%s\\n' ") || !strings.HasPrefix(v.Commands[1].Command, "printf '%s' ") {
				t.Fatalf("the first two commands do not save the key and checkpoint: %+v", v.Commands[:2])
			}
			save := v.Commands[:2]
			script := append(append([]Command{}, save...), v.ByHandCommands...)

			// The report's own key and checkpoint verify.
			dir := t.TempDir()
			out, err := runScript(dir, script)
			if err != nil || !strings.Contains(out, tc.verified) || !strings.HasSuffix(out, "key hash OK\n") {
				t.Fatalf("by-hand check of a genuine checkpoint: %v\n%s", err, out)
			}
			body, err := os.ReadFile(dir + "/checkpoint.body")
			if err != nil {
				t.Fatal(err)
			}
			if cp := r.Ledger.Checkpoint; string(body) != cp[:strings.Index(cp, "\n\n")+1] || strings.Count(string(body), "\n") != 3 {
				t.Errorf("signed text %q, checkpoint %q", body, cp)
			}

			// A tampered checkpoint: the tree size changed.
			dir = t.TempDir()
			if _, err := runScript(dir, save); err != nil {
				t.Fatal(err)
			}
			cp, err := os.ReadFile(dir + "/checkpoint.txt")
			if err != nil {
				t.Fatal(err)
			}
			bad := strings.Replace(string(cp), "\n2\n", "\n3\n", 1)
			if bad == string(cp) {
				t.Fatalf("checkpoint %q has no size line 2", cp)
			}
			if err := os.WriteFile(dir+"/checkpoint.txt", []byte(bad), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err = runScript(dir, v.ByHandCommands)
			if err == nil || strings.Contains(out, tc.verified) || !strings.Contains(err.Error(), tc.firstTool) {
				t.Errorf("tampered checkpoint: %v\n%s", err, out)
			}

			// Another key of the same name: the signature does not verify.
			other := tc.signer(t, "ir.example.com/by-hand").VerifierKey()
			dir = t.TempDir()
			if _, err := runScript(dir, save); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dir+"/SIG-1 key.pub", []byte(other+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err = runScript(dir, v.ByHandCommands)
			if err == nil || strings.Contains(out, tc.verified) {
				t.Errorf("another key: %v\n%s", err, out)
			}

			// The right key with an edited key hash: only the last check fails.
			dir = t.TempDir()
			if _, err := runScript(dir, save); err != nil {
				t.Fatal(err)
			}
			parts := strings.SplitN(r.Ledger.VerifierKey, "+", 3)
			parts[1] = "00000000"
			if err := os.WriteFile(dir+"/SIG-1 key.pub", []byte(strings.Join(parts, "+")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err = runScript(dir, v.ByHandCommands)
			if err == nil || !strings.Contains(out, tc.verified) || strings.Contains(out, "key hash OK") || !strings.Contains(err.Error(), "key hash OK") {
				t.Errorf("edited key hash: %v\n%s", err, out)
			}
		})
	}
}
