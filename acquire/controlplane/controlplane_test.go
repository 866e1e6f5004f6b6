package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/internal/awssim/simtest"
	"github.com/impound-ir/impound/vault"
)

func collect(t *testing.T, instance string, edit func(*Options)) (*awssim.Demo, vault.Store, []Result, error) {
	t.Helper()
	env := simtest.Start(t, awssim.Options{})
	d, err := awssim.SeedDemo(env.Sim, awssim.DemoOptions{RootGiB: 1, DataGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	if instance == "" {
		instance = d.InstanceID
	}
	store := vault.NewMemory()
	o := NewOptions()
	o.AccountID, o.Region = d.Member.ID(), env.Sim.Region()
	o.Now = func() time.Time { return time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC) }
	o.Key = func(item string) string { return "cases/T/evidence/control-plane/" + item }
	o.Finding = d.Finding
	if edit != nil {
		edit(&o)
	}
	res, err := Collect(context.Background(), NewClients(env.ClientConfig(d.Member.Credentials())), store, instance, o)
	return d, store, res, err
}

func read(t *testing.T, s vault.Store, r Result) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), r.Key, r.Receipt.VersionID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != r.Receipt.SHA256 || int64(len(b)) != r.Receipt.Size {
		t.Fatalf("%s: stored bytes do not match the receipt", r.Item)
	}
	return b
}

func TestCollectEveryItem(t *testing.T) {
	var recorded []Result
	d, store, res, err := collect(t, "", func(o *Options) {
		o.Record = func(_ context.Context, r Result) error { recorded = append(recorded, r); return nil }
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{ItemInstance, ItemVolumes, ItemNetworkInterfaces, ItemSecurityGroups, ItemIAM, ItemTags, ItemCloudTrail,
		ItemConsoleOutput, ItemConsoleOutputRecord, ItemScreenshot, ItemFinding}
	if len(res) != len(want) || len(recorded) != len(want) {
		t.Fatalf("%d results, %d recorded; want %d", len(res), len(recorded), len(want))
	}
	items := map[string][]byte{}
	for i, r := range res {
		if r.Item != want[i] || r.Err != nil || r.Receipt == nil {
			t.Fatalf("result %d: %s err %v receipt %v; want %s stored", i, r.Item, r.Err, r.Receipt, want[i])
		}
		items[r.Item] = read(t, store, r)
	}

	// Every JSON item is an envelope naming the instance, the account and the calls.
	for _, it := range want {
		if !strings.HasSuffix(it, ".json") {
			continue
		}
		var env Envelope
		if err := json.Unmarshal(items[it], &env); err != nil {
			t.Fatalf("%s: %v", it, err)
		}
		if env.Format != "impound-control-plane/1" || env.InstanceID != d.InstanceID || env.AccountID != d.Member.ID() || env.Item != it {
			t.Errorf("%s: envelope %+v", it, env)
		}
	}
	mustContain := map[string][]string{
		ItemInstance:          {d.InstanceID, `"InstanceType"`},
		ItemVolumes:           {d.RootVolumeID, d.DataVolumeID},
		ItemNetworkInterfaces: {`"NetworkInterfaceId": "eni-`, `"Ipv6Addresses"`},
		ItemSecurityGroups:    {`"GroupId": "sg-`, `"IpPermissions"`},
		ItemIAM:               {`"inline_policies"`, `"attached_policies"`, `"RoleName"`},
		ItemTags:              {`"Key": "Name"`},
		ItemCloudTrail:        {`"EventName"`, d.InstanceID},
		ItemFinding:           {`Backdoor:EC2/C\u0026CActivity.B`},
	}
	for it, subs := range mustContain {
		for _, s := range subs {
			if !bytes.Contains(items[it], []byte(s)) {
				t.Errorf("%s does not contain %q", it, s)
			}
		}
	}
	// IAM: the role's policies as seeded, decoded, not just their names.
	var iamEnv struct {
		Data struct {
			InstanceProfile struct{ InstanceProfileName, Arn string } `json:"instance_profile"`
			Roles           []struct {
				Role             struct{ RoleName string }                `json:"role"`
				TrustPolicy      string                                   `json:"trust_policy"`
				InlinePolicies   map[string]string                        `json:"inline_policies"`
				AttachedPolicies []struct{ PolicyName, PolicyArn string } `json:"attached_policies"`
			} `json:"roles"`
		} `json:"data"`
	}
	if err := json.Unmarshal(items[ItemIAM], &iamEnv); err != nil {
		t.Fatal(err)
	}
	if p := iamEnv.Data.InstanceProfile; p.InstanceProfileName != "web-app" || p.Arn != d.InstanceProfileARN {
		t.Errorf("instance profile %+v, want web-app %s", p, d.InstanceProfileARN)
	}
	if len(iamEnv.Data.Roles) != 1 {
		t.Fatalf("%d roles, want 1", len(iamEnv.Data.Roles))
	}
	role := iamEnv.Data.Roles[0]
	const s3Read = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::prod-assets","arn:aws:s3:::prod-assets/*"]}]}`
	if role.Role.RoleName != d.RoleName || len(role.InlinePolicies) != 1 || role.InlinePolicies["s3-read"] != s3Read {
		t.Errorf("role %s inline policies %q, want %s with s3-read %s", role.Role.RoleName, role.InlinePolicies, d.RoleName, s3Read)
	}
	if len(role.AttachedPolicies) != 1 || role.AttachedPolicies[0].PolicyArn != "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore" ||
		role.AttachedPolicies[0].PolicyName != "AmazonSSMManagedInstanceCore" {
		t.Errorf("attached policies %+v, want AmazonSSMManagedInstanceCore", role.AttachedPolicies)
	}
	if !json.Valid([]byte(role.TrustPolicy)) || !strings.Contains(role.TrustPolicy, `"ec2.amazonaws.com"`) {
		t.Errorf("trust policy %q: want the decoded document letting EC2 assume the role", role.TrustPolicy)
	}

	// The demo instance is Nitro (t3): the latest console output was asked for.
	var con struct {
		Calls []string
		Notes []string
		Data  ConsoleOutputRecord
	}
	if err := json.Unmarshal(items[ItemConsoleOutputRecord], &con); err != nil {
		t.Fatal(err)
	}
	txt := res[slices.IndexFunc(res, func(r Result) bool { return r.Item == ItemConsoleOutput })]
	if !con.Data.Latest || con.Data.Timestamp == nil || len(con.Notes) != 0 || !slices.Equal(con.Calls, []string{"ec2:GetConsoleOutput Latest=true"}) ||
		con.Data.SHA256 != txt.Receipt.SHA256 || con.Data.Size != txt.Receipt.Size || con.Data.Key != txt.Key || con.Data.VersionID != txt.Receipt.VersionID {
		t.Errorf("console output record %+v, want Latest=true naming %+v", con, txt.Receipt)
	}

	// Console output is stored as the text AWS returned, hostile line and all.
	if got := string(items[ItemConsoleOutput]); got != d.ConsoleOutput {
		t.Errorf("console output %q, want %q", got, d.ConsoleOutput)
	}
	if !bytes.HasPrefix(items[ItemScreenshot], []byte{0xff, 0xd8, 0xff}) {
		t.Errorf("screenshot is not a JPEG: % x", items[ItemScreenshot][:min(8, len(items[ItemScreenshot]))])
	}
}

func TestCollectUnknownInstance(t *testing.T) {
	var recorded []Result
	_, _, res, err := collect(t, "i-0123456789abcdef0", func(o *Options) {
		o.Record = func(_ context.Context, r Result) error { recorded = append(recorded, r); return nil }
	})
	if err == nil || !strings.Contains(err.Error(), "i-0123456789abcdef0") || !strings.Contains(err.Error(), "--region") {
		t.Fatalf("err %v: want one naming the instance and the fix", err)
	}
	if len(res) != 1 || len(recorded) != 1 || recorded[0].Err == nil || recorded[0].Receipt != nil {
		t.Fatalf("results %+v, recorded %+v: want one failed, recorded, with nothing stored", res, recorded)
	}
}

func TestCollectItemFailureDoesNotStopTheRest(t *testing.T) {
	env := simtest.Start(t, awssim.Options{})
	d, err := awssim.SeedDemo(env.Sim, awssim.DemoOptions{RootGiB: 1, DataGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	env.Sim.SetFault("ec2", "GetConsoleScreenshot", awssim.Fault{ServerErrorRate: 1})
	o := NewOptions()
	o.AccountID, o.Region = d.Member.ID(), env.Sim.Region()
	o.Key = func(item string) string { return "cases/T/evidence/control-plane/" + item }
	cfg := env.ClientConfig(d.Member.Credentials())
	cfg.RetryMaxAttempts = 1
	res, err := Collect(context.Background(), NewClients(cfg), vault.NewMemory(), d.InstanceID, o)
	if err == nil || !strings.Contains(err.Error(), ItemScreenshot) {
		t.Fatalf("err %v: want the screenshot's failure", err)
	}
	stored := 0
	for _, r := range res {
		if r.Err == nil {
			stored++
		} else if r.Item != ItemScreenshot {
			t.Errorf("%s failed: %v", r.Item, r.Err)
		}
	}
	if stored != 9 {
		t.Errorf("%d items stored, want the 9 others", stored)
	}
}
