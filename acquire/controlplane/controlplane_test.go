package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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
		ItemConsoleOutput, ItemConsoleOutputRecord, ItemScreenshot, ItemFindingGiven, ItemFinding}
	if !slices.Equal(Items(), want) {
		t.Errorf("Items() = %q, want %q", Items(), want)
	}
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
		if !strings.HasSuffix(it, ".json") || it == ItemFindingGiven {
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
	// The finding's bytes as given, unchanged.
	if !bytes.Equal(items[ItemFindingGiven], d.Finding) {
		t.Errorf("%s is not the finding's bytes as given", ItemFindingGiven)
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

// collectIn collects from an already seeded world into store.
func collectIn(t *testing.T, env *simtest.Env, d *awssim.Demo, store vault.Store, prefix string, edit func(*Options)) ([]Result, error) {
	t.Helper()
	o := NewOptions()
	o.AccountID, o.Region = d.Member.ID(), env.Sim.Region()
	o.Key = func(item string) string { return "cases/T/evidence/control-plane/" + prefix + "/" + item }
	o.Finding = d.Finding
	if edit != nil {
		edit(&o)
	}
	cfg := env.ClientConfig(d.Member.Credentials())
	cfg.RetryMaxAttempts = 1
	return Collect(context.Background(), NewClients(cfg), store, d.InstanceID, o)
}

func resultItems(res []Result) []string {
	var out []string
	for _, r := range res {
		out = append(out, r.Item)
	}
	return out
}

func TestCollectOnlyTheItemsAsked(t *testing.T) {
	env := simtest.Start(t, awssim.Options{})
	d, err := awssim.SeedDemo(env.Sim, awssim.DemoOptions{RootGiB: 1, DataGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	store := vault.NewMemory()
	for _, tc := range []struct {
		name    string
		items   []string
		finding bool
		want    []string
	}{
		{"screenshot", []string{ItemScreenshot}, true, []string{ItemScreenshot}},
		// console-output.json names the output it describes: both again.
		{"console record", []string{ItemConsoleOutputRecord}, true, []string{ItemConsoleOutput, ItemConsoleOutputRecord}},
		{"finding record", []string{ItemFinding}, true, []string{ItemFindingGiven, ItemFinding}},
		{"finding bytes", []string{ItemFindingGiven, ItemTags}, true, []string{ItemTags, ItemFindingGiven, ItemFinding}},
		{"finding not given", []string{ItemFinding, ItemVolumes}, false, []string{ItemVolumes}},
		{"cloudtrail", []string{ItemCloudTrail}, true, []string{ItemCloudTrail}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var recorded []string
			res, err := collectIn(t, env, d, store, tc.name, func(o *Options) {
				o.Items = tc.items
				if !tc.finding {
					o.Finding = nil
				}
				o.Record = func(_ context.Context, r Result) error { recorded = append(recorded, r.Item); return nil }
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := resultItems(res); !slices.Equal(got, tc.want) || !slices.Equal(recorded, tc.want) {
				t.Fatalf("results %q, recorded %q; want %q", got, recorded, tc.want)
			}
			for _, r := range res {
				if r.Err != nil || r.Receipt == nil || !strings.HasSuffix(r.Key, "/"+tc.name+"/"+r.Item) {
					t.Errorf("%s: %+v, want stored under its prefix", r.Item, r)
				}
				read(t, store, r)
			}
			if tc.name == "cloudtrail" {
				// IAM was looked up (not stored) so the role's events are searched.
				if !slices.Contains(res[0].Calls, "cloudtrail:LookupEvents ResourceName="+d.RoleName) {
					t.Errorf("cloudtrail calls %q: want a look-up by the role %s", res[0].Calls, d.RoleName)
				}
			}
		})
	}
	if _, err := collectIn(t, env, d, store, "bad", func(o *Options) { o.Items = []string{"nope.json"} }); !errors.Is(err, ErrUnknownItem) {
		t.Errorf("unknown item: err %v, want ErrUnknownItem", err)
	}
	// The instance cannot be described: each item asked for fails with it,
	// recorded (the instance item, not asked for, is not).
	env.Sim.SetFault("ec2", "DescribeInstances", awssim.Fault{ServerErrorRate: 1})
	var recorded []Result
	res, err := collectIn(t, env, d, store, "down", func(o *Options) {
		o.Items = []string{ItemScreenshot, ItemTags}
		o.Record = func(_ context.Context, r Result) error { recorded = append(recorded, r); return nil }
	})
	want := []string{ItemTags, ItemScreenshot}
	if err == nil || !slices.Equal(resultItems(res), want) || !slices.Equal(resultItems(recorded), want) {
		t.Fatalf("instance not described: err %v, results %q, recorded %q; want %q failed", err, resultItems(res), resultItems(recorded), want)
	}
	for _, r := range res {
		if r.Err == nil || r.Receipt != nil || !strings.Contains(r.Err.Error(), "describe instance") {
			t.Errorf("%s: %+v, want failed with the DescribeInstances error", r.Item, r)
		}
	}
}

func TestCollectScreenshotUnavailable(t *testing.T) {
	// Bare metal has no virtual console: UnsupportedOperation, for good.
	w := newWorld(t, "c5.metal", 0)
	var recorded []Result
	_, res, err := w.collect(t, func(o *Options) {
		o.Record = func(_ context.Context, r Result) error { recorded = append(recorded, r); return nil }
	})
	if err != nil {
		t.Fatalf("err %v: an unavailable screenshot is not a failure", err)
	}
	r := res[ItemScreenshot]
	if r.Err != nil || r.Receipt != nil || !strings.Contains(r.Unavailable, "UnsupportedOperation") ||
		!strings.Contains(r.Unavailable, "does not support console screenshots") {
		t.Fatalf("screenshot result %+v: want unavailable, saying why", r)
	}
	if i := slices.IndexFunc(recorded, func(r Result) bool { return r.Item == ItemScreenshot }); i < 0 || recorded[i].Unavailable != r.Unavailable {
		t.Errorf("the unavailable screenshot was not recorded: %+v", recorded)
	}

	// A screenshot failing for a while is a failure, to try again.
	w = newWorld(t, "t3.micro", 0)
	w.env.Sim.SetFault("ec2", "GetConsoleScreenshot", awssim.Fault{ServerErrorRate: 1})
	_, res, err = w.collect(t, func(o *Options) {
		o.Items = []string{ItemScreenshot}
		o.Record = nil
	})
	if r := res[ItemScreenshot]; err == nil || r.Err == nil || r.Unavailable != "" {
		t.Errorf("server error: err %v, result %+v; want a failure", err, r)
	}
}
