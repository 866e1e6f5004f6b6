package awssim_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"github.com/impound-ir/impound/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/impound-ir/impound/internal/awssim"
)

// cli runs the AWS CLI against the simulator as one account.
type cli struct {
	t    *testing.T
	bin  string
	url  string
	dir  string
	env  []string
	sim  *awssim.Sim
	name string
}

func newCLI(t *testing.T, e *env, a *awssim.Account) *cli {
	bin := testenv.Tool(t, "aws")
	c := a.Credentials()
	dir := t.TempDir()
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			base = append(base, kv)
		}
	}
	return &cli{t: t, bin: bin, url: e.URL(), dir: dir, sim: e.Sim, env: append(base,
		"AWS_ACCESS_KEY_ID="+c.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+c.SecretAccessKey,
		"AWS_DEFAULT_REGION=eu-west-1", "AWS_REGION=eu-west-1",
		"AWS_CONFIG_FILE="+os.DevNull, "AWS_SHARED_CREDENTIALS_FILE="+os.DevNull,
		"AWS_MAX_ATTEMPTS=1", "AWS_PAGER=",
	)}
}

// run runs aws --endpoint-url URL args... and decodes its JSON output.
func (c *cli) run(args ...string) map[string]any {
	c.t.Helper()
	out, stderr, err := c.exec(args...)
	if err != nil {
		c.t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	m := map[string]any{}
	if len(bytes.TrimSpace(out)) > 0 {
		if err := json.Unmarshal(out, &m); err != nil {
			c.t.Fatalf("aws %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return m
}

// fail runs a command that must fail with the error code.
func (c *cli) fail(code string, args ...string) {
	c.t.Helper()
	_, stderr, err := c.exec(args...)
	if err == nil || !strings.Contains(string(stderr), "("+code+")") {
		c.t.Fatalf("aws %s: err %v, stderr %s; want error %s", strings.Join(args, " "), err, stderr, code)
	}
}

func (c *cli) exec(args ...string) (stdout, stderr []byte, err error) {
	cmd := exec.Command(c.bin, append([]string{"--endpoint-url", c.url, "--output", "json"}, args...)...)
	cmd.Env = c.env
	cmd.Dir = c.dir
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.Bytes(), e.Bytes(), err
}

// get walks a decoded JSON document: get(m, "Snapshots", 0, "SnapshotId").
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, path ...any) string {
	s, _ := get(v, path...).(string)
	return s
}

// TestAWSCLI drives every simulated operation through the AWS CLI, as an
// operator would with `impound sim serve`.
func TestAWSCLI(t *testing.T) {
	e := newEnv(t)
	m := newCLI(t, e, e.member)
	f := newCLI(t, e, e.forensics)

	// STS
	if id := m.run("sts", "get-caller-identity"); str(id, "Account") != memberID || str(id, "Arn") != e.member.UserARN() {
		t.Fatalf("get-caller-identity %v", id)
	}
	ar := f.run("sts", "assume-role", "--role-arn", e.member.RoleARN("ImpoundResponder"), "--role-session-name", "cli-test")
	if !strings.HasPrefix(str(ar, "Credentials", "AccessKeyId"), "ASIA") ||
		str(ar, "AssumedRoleUser", "Arn") != "arn:aws:sts::"+memberID+":assumed-role/ImpoundResponder/cli-test" {
		t.Fatalf("assume-role %v", ar)
	}
	assumed := &cli{t: t, bin: m.bin, url: m.url, dir: m.dir, env: append(slicesClone(m.env),
		"AWS_ACCESS_KEY_ID="+str(ar, "Credentials", "AccessKeyId"),
		"AWS_SECRET_ACCESS_KEY="+str(ar, "Credentials", "SecretAccessKey"),
		"AWS_SESSION_TOKEN="+str(ar, "Credentials", "SessionToken"))}
	if id := assumed.run("sts", "get-caller-identity"); str(id, "Arn") != str(ar, "AssumedRoleUser", "Arn") {
		t.Fatalf("assumed identity %v", id)
	}

	// KMS
	transfer := m.run("kms", "create-key", "--description", "transfer",
		"--policy", `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::`+forensicsID+`:root"},"Action":"kms:*","Resource":"*"}]}`)
	transferARN := str(transfer, "KeyMetadata", "Arn")
	if d := f.run("kms", "describe-key", "--key-id", transferARN); str(d, "KeyMetadata", "KeyState") != "Enabled" {
		t.Fatalf("describe-key %v", d)
	}
	evidence := f.run("kms", "create-key", "--key-spec", "SYMMETRIC_DEFAULT")
	ledger := f.run("kms", "create-key", "--key-spec", "ECC_NIST_P256", "--key-usage", "SIGN_VERIFY")
	ledgerID := str(ledger, "KeyMetadata", "KeyId")
	pk := f.run("kms", "get-public-key", "--key-id", ledgerID)
	der, _ := base64.StdEncoding.DecodeString(str(pk, "PublicKey"))
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatalf("get-public-key: %v", err)
	}
	msg := []byte("tree 7\n")
	digest := sha256.Sum256(msg)
	_ = os.WriteFile(filepath.Join(f.dir, "digest"), digest[:], 0o600)
	sig := f.run("kms", "sign", "--key-id", ledgerID, "--message", "fileb://digest", "--message-type", "DIGEST", "--signing-algorithm", "ECDSA_SHA_256")
	sigBytes, _ := base64.StdEncoding.DecodeString(str(sig, "Signature"))
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sigBytes) {
		t.Fatal("CLI DIGEST signature does not verify")
	}
	_ = os.WriteFile(filepath.Join(f.dir, "sig"), sigBytes, 0o600)
	if v := f.run("kms", "verify", "--key-id", ledgerID, "--message", "fileb://digest", "--message-type", "DIGEST",
		"--signing-algorithm", "ECDSA_SHA_256", "--signature", "fileb://sig"); get(v, "SignatureValid") != true {
		t.Fatalf("verify %v", v)
	}
	grant := m.run("kms", "create-grant", "--key-id", transferARN, "--grantee-principal", "arn:aws:iam::"+forensicsID+":root",
		"--operations", "Decrypt", "DescribeKey", "--retiring-principal", "arn:aws:iam::"+forensicsID+":root")
	if len(str(grant, "GrantId")) != 64 {
		t.Fatalf("create-grant %v", grant)
	}
	f.run("kms", "retire-grant", "--grant-token", str(grant, "GrantToken"))
	f.fail("InvalidGrantTokenException", "kms", "retire-grant", "--grant-token", str(grant, "GrantToken"))

	// EC2: an instance with an encrypted data volume, written to.
	run := assumed.run("ec2", "run-instances", "--image-id", "ami-0123456789abcdef0", "--instance-type", "t3.micro", "--count", "1",
		"--block-device-mappings", `[{"DeviceName":"/dev/xvda","Ebs":{"VolumeSize":8}},{"DeviceName":"/dev/sdf","Ebs":{"VolumeSize":2,"Encrypted":true}}]`,
		"--tag-specifications", `ResourceType=instance,Tags=[{Key=Name,Value=web-1}]`)
	instID := str(run, "Instances", 0, "InstanceId")
	m.run("ec2", "wait", "instance-running", "--instance-ids", instID)
	di := m.run("ec2", "describe-instances", "--filters", "Name=tag:Name,Values=web-1")
	if str(di, "Reservations", 0, "Instances", 0, "InstanceId") != instID || str(di, "Reservations", 0, "Instances", 0, "State", "Name") != "running" {
		t.Fatalf("describe-instances %v", di)
	}
	dv := m.run("ec2", "describe-volumes", "--filters", "Name=attachment.instance-id,Values="+instID, "Name=encrypted,Values=true")
	volID := str(dv, "Volumes", 0, "VolumeId")
	if volID == "" || get(dv, "Volumes", 1) != nil {
		t.Fatalf("describe-volumes %v", dv)
	}
	vol := volumeHandle(t, e, volID)
	if err := vol.WriteRandom(0, 3*awssim.BlockSize+10, 77); err != nil {
		t.Fatal(err)
	}

	cs := m.run("ec2", "create-snapshots", "--instance-specification", "InstanceId="+instID+",ExcludeBootVolume=true",
		"--copy-tags-from-source", "volume", "--description", "impound cli")
	snapID := str(cs, "Snapshots", 0, "SnapshotId")
	if get(cs, "Snapshots", 1) != nil || str(cs, "Snapshots", 0, "VolumeId") != volID {
		t.Fatalf("create-snapshots %v", cs)
	}
	one := m.run("ec2", "create-snapshot", "--volume-id", volID, "--description", "single",
		"--tag-specifications", "ResourceType=snapshot,Tags=[{Key=impound:case,Value=cli}]")
	if str(one, "State") != "pending" || get(one, "Encrypted") != true {
		t.Fatalf("create-snapshot %v", one)
	}
	m.run("ec2", "wait", "snapshot-completed", "--snapshot-ids", snapID, str(one, "SnapshotId"))
	ds := m.run("ec2", "describe-snapshots", "--owner-ids", "self", "--filters", "Name=tag:impound:case,Values=cli")
	if str(ds, "Snapshots", 0, "SnapshotId") != str(one, "SnapshotId") || str(ds, "Snapshots", 0, "State") != "completed" ||
		str(ds, "Snapshots", 0, "KmsKeyId") != e.member.EBSDefaultKeyARN() || get(ds, "Snapshots", 1) != nil {
		t.Fatalf("describe-snapshots %v", ds)
	}
	m.fail("OperationNotPermitted", "ec2", "modify-snapshot-attribute", "--snapshot-id", snapID,
		"--attribute", "createVolumePermission", "--operation-type", "add", "--user-ids", forensicsID)
	cp := m.run("ec2", "copy-snapshot", "--source-snapshot-id", snapID, "--source-region", "eu-west-1",
		"--encrypted", "--kms-key-id", transferARN, "--description", "transfer")
	cpID := str(cp, "SnapshotId")
	m.run("ec2", "wait", "snapshot-completed", "--snapshot-ids", cpID)
	f.fail("InvalidSnapshot.NotFound", "ec2", "describe-snapshots", "--snapshot-ids", cpID)
	m.run("ec2", "modify-snapshot-attribute", "--snapshot-id", cpID, "--attribute", "createVolumePermission",
		"--operation-type", "add", "--user-ids", forensicsID)
	if a := m.run("ec2", "describe-snapshot-attribute", "--snapshot-id", cpID, "--attribute", "createVolumePermission"); str(a, "CreateVolumePermissions", 0, "UserId") != forensicsID {
		t.Fatalf("describe-snapshot-attribute %v", a)
	}
	if s := f.run("ec2", "describe-snapshots", "--restorable-by-user-ids", "self", "--owner-ids", memberID); str(s, "Snapshots", 0, "SnapshotId") != cpID {
		t.Fatalf("shared snapshot not seen by forensics: %v", s)
	}
	ev := f.run("ec2", "copy-snapshot", "--source-snapshot-id", cpID, "--source-region", "eu-west-1",
		"--encrypted", "--kms-key-id", str(evidence, "KeyMetadata", "KeyId"))
	evID := str(ev, "SnapshotId")
	f.run("ec2", "wait", "snapshot-completed", "--snapshot-ids", evID)
	f.run("ec2", "create-tags", "--resources", evID, "--tags", "Key=impound:case,Value=cli", "Key=impound:status,Value=acquired")
	if dt := f.run("ec2", "describe-tags", "--filters", "Name=resource-id,Values="+evID); str(dt, "Tags", 1, "Key") != "impound:status" || str(dt, "Tags", 0, "ResourceType") != "snapshot" {
		t.Fatalf("describe-tags %v", dt)
	}

	// EBS direct, as the forensics account.
	lb := f.run("ebs", "list-snapshot-blocks", "--snapshot-id", evID)
	blocks, _ := get(lb, "Blocks").([]any)
	if len(blocks) != 4 || get(lb, "BlockSize") != float64(awssim.BlockSize) || get(lb, "VolumeSize") != float64(2) {
		t.Fatalf("list-snapshot-blocks %v", lb)
	}
	img, _ := vol.Image()
	want := make([]byte, 4*awssim.BlockSize)
	if _, err := ioReadFull(img, want); err != nil {
		t.Fatal(err)
	}
	for i, b := range blocks {
		out := filepath.Join(f.dir, "block")
		gb := f.run("ebs", "get-snapshot-block", "--snapshot-id", evID, "--block-index", jsonNum(get(b, "BlockIndex")),
			"--block-token", str(b, "BlockToken"), out)
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if str(gb, "Checksum") != base64.StdEncoding.EncodeToString(sum[:]) || str(gb, "ChecksumAlgorithm") != "SHA256" ||
			!bytes.Equal(data, want[i*awssim.BlockSize:(i+1)*awssim.BlockSize]) {
			t.Fatalf("block %d: %v", i, gb)
		}
	}
	lc := m.run("ebs", "list-changed-blocks", "--first-snapshot-id", snapID, "--second-snapshot-id", str(one, "SnapshotId"))
	if cb, _ := get(lc, "ChangedBlocks").([]any); len(cb) != 0 {
		t.Fatalf("list-changed-blocks of identical snapshots %v", lc)
	}
	f.fail("ResourceNotFoundException", "ebs", "list-snapshot-blocks", "--snapshot-id", snapID)
}

func volumeHandle(t *testing.T, e *env, id string) *awssim.Volume {
	t.Helper()
	v := e.Sim.VolumeByID(id)
	if v == nil {
		t.Fatalf("volume %s not in the simulator", id)
	}
	return v
}

func jsonNum(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }
