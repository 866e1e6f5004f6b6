package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/rs/zerolog"

	"github.com/impound-ir/impound/acquire/controlplane"
	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/internal/awsconf"
	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/internal/awssim/simtest"
	"github.com/impound-ir/impound/respond"
	"github.com/impound-ir/impound/vault"
)

// fakeDispatcher starts pretend tasks whose status the test sets.
type fakeDispatcher struct {
	mu       sync.Mutex
	requests []dispatchRequest // every Dispatch call
	started  []dispatchRequest // the calls that started a task
	status   map[string]string // by task ARN
	fail     error
}

var _ dispatcher = (*fakeDispatcher)(nil)

func newFakeDispatcher() *fakeDispatcher { return &fakeDispatcher{status: map[string]string{}} }

func (d *fakeDispatcher) Dispatch(ctx context.Context, r dispatchRequest) (dispatchResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.requests = append(d.requests, r)
	if d.fail != nil {
		return dispatchResult{}, d.fail
	}
	if r.Previous != "" {
		s, ok := d.status[r.Previous]
		if !ok {
			return dispatchResult{}, fmt.Errorf("fake: unknown task %s", r.Previous)
		}
		if s != "STOPPED" {
			return dispatchResult{Running: true, Status: s, TaskARN: r.Previous}, nil
		}
	}
	arn := fmt.Sprintf("arn:aws:ecs:us-east-1:222222222222:task/impound/%032d", len(d.started)+1)
	d.started = append(d.started, r)
	d.status[arn] = "PROVISIONING"
	return dispatchResult{TaskARN: arn, Cluster: "arn:aws:ecs:us-east-1:222222222222:cluster/impound", TaskDefinition: "arn:aws:ecs:us-east-1:222222222222:task-definition/impound-acquire:3"}, nil
}

func (d *fakeDispatcher) set(arn, status string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.status[arn] = status
}

// world is a seeded simulator, a directory vault and a signing key file.
type world struct {
	env     *simtest.Env
	demo    *awssim.Demo
	base    aws.Config // the function's own credentials: the forensics account's
	vaultTo string
	keyPath string
	store   vault.Store
	signer  custody.Signer
}

func newWorld(t *testing.T) *world {
	t.Helper()
	env := simtest.Start(t, awssim.Options{})
	demo, err := awssim.SeedDemo(env.Sim, awssim.DemoOptions{RootGiB: 1, DataGiB: 1, DataSeed: 7})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{env: env, demo: demo, base: env.ClientConfig(demo.Forensics.Credentials()), vaultTo: t.TempDir()}
	w.keyPath = filepath.Join(t.TempDir(), "guardduty.key")
	if _, err := custody.WriteKeyFiles(w.keyPath, "impound-guardduty-test"); err != nil {
		t.Fatal(err)
	}
	if w.signer, err = custody.LoadSigner(context.Background(), custody.FileKeyPrefix+w.keyPath, nil); err != nil {
		t.Fatal(err)
	}
	if w.store, err = vault.Open(context.Background(), w.vaultTo, vault.Options{}); err != nil {
		t.Fatal(err)
	}
	return w
}

// environment is the function's environment for the world.
func (w *world) environment(extra map[string]string) map[string]string {
	env := map[string]string{
		"AWS_REGION":                w.env.Sim.Region(),
		"IMPOUND_VAULT":             "s3://evidence-test",
		"IMPOUND_SIGNING_KEY":       custody.FileKeyPrefix + w.keyPath,
		"IMPOUND_MEMBER_ROLE_NAME":  "impound-responder",
		"IMPOUND_MEMBER_KMS_KEY":    w.demo.TransferKeyARN,
		"IMPOUND_FORENSICS_KMS_KEY": w.demo.EvidenceKeyARN,
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// handler is the function wired as main wires it, except for the vault (the
// function takes only S3 vaults; the test keeps evidence in a directory) and
// the dispatcher.
func (w *world) handler(t *testing.T, env map[string]string, d dispatcher) *handler {
	t.Helper()
	cfg, err := loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Vault = w.vaultTo
	return &handler{cfg: cfg, store: w.store, signer: w.signer, accounts: &awsAccounts{base: w.base, cfg: cfg},
		dispatch: d, tool: custody.Tool{Name: "impound-guardduty", Version: "test"}}
}

// event is the realistic Backdoor finding event, about the demo's instance.
func (w *world) event(t *testing.T, edit func(detail map[string]any)) []byte {
	t.Helper()
	b, err := os.ReadFile("../../respond/testdata/guardduty/backdoor-cc-activity.json")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(b), "i-0f1e2d3c4b5a69788", w.demo.InstanceID)
	s = strings.ReplaceAll(s, "123456789012", w.demo.Member.ID())
	s = strings.ReplaceAll(s, "us-east-1", w.env.Sim.Region())
	if edit == nil {
		return []byte(s)
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(s), &ev); err != nil {
		t.Fatal(err)
	}
	edit(ev["detail"].(map[string]any))
	out, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	return log.WithContext(ctx)
}

func entries(t *testing.T, w *world, caseID string) []*custody.Entry {
	t.Helper()
	l, err := custody.Open(context.Background(), w.store, caseID, w.signer, custody.NewOptions())
	if err != nil {
		t.Fatal(err)
	}
	es, err := l.Entries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func awsActions(es []*custody.Entry, action string) []*custody.Entry {
	var out []*custody.Entry
	for _, e := range es {
		if a, ok := e.Details.(custody.AWSAction); ok && a.Action == action {
			out = append(out, e)
		}
	}
	return out
}

func cases(t *testing.T, w *world) []string {
	t.Helper()
	keys, err := w.store.List(context.Background(), "cases/")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var out []string
	for _, k := range keys {
		id := strings.SplitN(strings.TrimPrefix(k, "cases/"), "/", 2)[0]
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func TestHandlerFindingToCase(t *testing.T) {
	ctx := testContext(t)
	w := newWorld(t)
	d := newFakeDispatcher()
	h := w.handler(t, w.environment(nil), d)
	event := w.event(t, nil)
	finding, err := respond.ParseFinding(event)
	if err != nil {
		t.Fatal(err)
	}
	caseID := "gd-" + w.demo.InstanceID

	if err := h.Handle(ctx, event); err != nil {
		t.Fatalf("first event: %v", err)
	}
	if got := cases(t, w); !reflect.DeepEqual(got, []string{caseID}) {
		t.Fatalf("cases %v, want [%s]", got, caseID)
	}
	es := entries(t, w, caseID)
	opened, ok := es[0].Details.(custody.CaseOpened)
	if !ok || opened.Trigger != "guardduty:"+finding.ID || opened.InstanceID != w.demo.InstanceID ||
		opened.Account != w.demo.Member.ID() || opened.ForensicsAccount != w.demo.Forensics.ID() || es[0].Actor.Operator != "guardduty" {
		t.Fatalf("entry 0: %+v by %+v", es[0].Details, es[0].Actor)
	}
	// The member account was reached through the configured role.
	wantCaller := "arn:aws:sts::" + w.demo.Member.ID() + ":assumed-role/impound-responder/impound-guardduty-" + caseID
	if es[0].Actor.CallerARN != wantCaller {
		t.Errorf("case opened by %s, want %s", es[0].Actor.CallerARN, wantCaller)
	}

	// The finding is evidence: the object hashes to its receipt, and holds
	// the event's detail.
	var findingEv []custody.EvidenceStored
	var collected, isolationSteps int
	for _, e := range es {
		if e.Outcome == custody.Failed {
			t.Errorf("failed entry %d %s: %s", e.Seq, e.Kind(), e.Error)
		}
		switch dd := e.Details.(type) {
		case custody.EvidenceStored:
			if strings.HasSuffix(dd.Receipt.Key, "/"+controlplane.ItemFinding) {
				findingEv = append(findingEv, dd)
			}
			if strings.HasSuffix(dd.Receipt.Key, "/"+controlplane.ItemInstance) {
				collected++
			}
		case custody.IsolationStep:
			isolationSteps++
		}
	}
	if len(findingEv) != 1 || collected != 1 || isolationSteps == 0 {
		t.Fatalf("%d finding objects, %d instance descriptions, %d isolation steps; want 1, 1, some", len(findingEv), collected, isolationSteps)
	}
	checkFindingObject(t, w, findingEv[0], finding.Detail)
	if n := len(awsActions(es, respond.FindingAction)); n != 1 {
		t.Errorf("%d guardduty.finding entries, want 1", n)
	}

	// Exactly one task, finishing the same case without isolating again.
	if len(d.started) != 1 {
		t.Fatalf("%d tasks started, want 1", len(d.started))
	}
	want := []string{"respond", "--case", caseID, "--instance", w.demo.InstanceID, "--vault", w.vaultTo, "--no-isolate",
		"--region", w.env.Sim.Region(), "--operator", "guardduty", "--mode", "compliance",
		"--state-dir", "/tmp/impound/acquire", "--log-format", "json", "--no-progress",
		"--role-arn", w.demo.Member.RoleARN("impound-responder"),
		"--member-kms-key", w.demo.TransferKeyARN, "--forensics-kms-key", w.demo.EvidenceKeyARN}
	if r := d.started[0]; r.CaseID != caseID || r.InstanceID != w.demo.InstanceID || r.Previous != "" || !reflect.DeepEqual(r.Command, want) {
		t.Fatalf("dispatched %+v\nwant command %q", r, want)
	}
	runs := awsActions(es, runTaskAction)
	if len(runs) != 1 {
		t.Fatalf("%d ecs.run-task entries, want 1", len(runs))
	}
	task := runs[0].Details.(custody.AWSAction).Details["task_arn"]
	if task != "arn:aws:ecs:us-east-1:222222222222:task/impound/00000000000000000000000000000001" ||
		runs[0].Details.(custody.AWSAction).Details["task_definition"] == "" || runs[0].Actor.CallerARN != w.demo.Forensics.UserARN() {
		t.Fatalf("ecs.run-task entry %+v by %+v", runs[0].Details, runs[0].Actor)
	}

	// The same event again, the task running: the same case, no second
	// task, the update recorded.
	d.set(task, "RUNNING")
	size := len(es)
	if err := h.Handle(ctx, event); err != nil {
		t.Fatalf("second event: %v", err)
	}
	if got := cases(t, w); len(got) != 1 {
		t.Fatalf("cases %v after the same event", got)
	}
	es = entries(t, w, caseID)
	if len(d.started) != 1 || len(d.requests) != 2 || d.requests[1].Previous != task {
		t.Fatalf("second event: %d started, %d requests (previous %q)", len(d.started), len(d.requests), d.requests[len(d.requests)-1].Previous)
	}
	if n := len(awsActions(es, runTaskAction)); n != 1 {
		t.Errorf("%d ecs.run-task entries after the second event, want 1", n)
	}
	updates := awsActions(es[size:], respond.FindingAction)
	if len(updates) != 1 || updates[0].Details.(custody.AWSAction).Details["finding_id"] != finding.ID ||
		updates[0].Details.(custody.AWSAction).Details["count"] != "4" {
		t.Fatalf("second event recorded %d updates: %+v", len(updates), updates)
	}
	for _, e := range es[size:] {
		if sd, ok := e.Details.(custody.EvidenceStored); ok {
			t.Errorf("the second event stored %s again", sd.Receipt.Key)
		}
	}

	// The task stopped and the case is still open: started again.
	d.set(task, "STOPPED")
	updated := w.event(t, func(detail map[string]any) { detail["service"].(map[string]any)["count"] = 9 })
	if err := h.Handle(ctx, updated); err != nil {
		t.Fatalf("third event: %v", err)
	}
	if len(d.started) != 2 || d.started[1].Previous != task || !reflect.DeepEqual(d.started[1].Command, want) {
		t.Fatalf("after the task stopped: %d started, %+v", len(d.started), d.started[len(d.started)-1])
	}
	es = entries(t, w, caseID)
	runs = awsActions(es, runTaskAction)
	if len(runs) != 2 || runs[1].Details.(custody.AWSAction).Details["previous_task_arn"] != task {
		t.Fatalf("ecs.run-task entries: %d", len(runs))
	}
	if ups := awsActions(es, respond.FindingAction); ups[len(ups)-1].Details.(custody.AWSAction).Details["count"] != "9" {
		t.Errorf("update count %s, want 9", ups[len(ups)-1].Details.(custody.AWSAction).Details["count"])
	}

	// The circle: the task's command finishes the case.
	runCommand(t, ctx, w, d.started[1].Command)
	es = entries(t, w, caseID)
	checkFinished(t, ctx, w, caseID, es)

	// A finding about the instance once its case is closed opens the next case.
	if err := h.Handle(ctx, event); err != nil {
		t.Fatalf("event after close: %v", err)
	}
	// The instance is still isolated by the closed case (never released):
	// the next case says so and does not isolate it again.
	es2 := entries(t, w, caseID+"-2")
	if op, ok := es2[0].Details.(custody.CaseOpened); !ok || op.InstanceID != w.demo.InstanceID ||
		op.Attributes["isolation"] != "false" || op.Attributes["isolation.by_case"] != caseID {
		t.Fatalf("next case: %+v", es2[0].Details)
	}
	var stillIsolated bool
	for _, e := range es2 {
		if e.Kind() == custody.KindIsolationStep || e.Outcome == custody.Failed {
			t.Errorf("next case entry %d %s (%s)", e.Seq, e.Kind(), e.Error)
		}
		if n, ok := e.Details.(custody.Note); ok && strings.Contains(n.Text, "still isolated by case "+caseID+" ") {
			stillIsolated = true
		}
	}
	if !stillIsolated {
		t.Error("the next case does not record that the instance is still isolated")
	}
	// Its second event does not try to isolate it either.
	if err := h.Handle(ctx, event); err != nil {
		t.Fatalf("second event of the next case: %v", err)
	}
	if len(d.started) != 3 || d.started[2].CaseID != caseID+"-2" || d.started[2].Previous != "" {
		t.Fatalf("next case dispatch: %+v", d.started[len(d.started)-1])
	}
}

// checkFindingObject checks the stored finding against its receipt and the
// event's detail.
func checkFindingObject(t *testing.T, w *world, ev custody.EvidenceStored, detail []byte) {
	t.Helper()
	rc, err := w.store.Get(context.Background(), ev.Receipt.Key, ev.Receipt.VersionID)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != ev.Receipt.SHA256 || int64(len(b)) != ev.Receipt.Size {
		t.Fatalf("finding object: SHA-256 %x (%d bytes), receipt %s (%d bytes)", sum, len(b), ev.Receipt.SHA256, ev.Receipt.Size)
	}
	var env struct {
		Item string
		Data controlplane.FindingRecord
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	// The detail's values as delivered, and the SHA-256 of its bytes.
	sum = sha256.Sum256(detail)
	// Its values as delivered (MarshalIndent lays it out and escapes '&').
	var gv, dv any
	if err := json.Unmarshal(env.Data.Given, &gv); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(detail, &dv); err != nil {
		t.Fatal(err)
	}
	given, _ := json.Marshal(gv)
	want, _ := json.Marshal(dv)
	if r := env.Data; env.Item != controlplane.ItemFinding || r.Shape != controlplane.FindingShapeDetail ||
		r.GivenSHA256 != hex.EncodeToString(sum[:]) || r.GivenSize != len(detail) || !bytes.Equal(given, want) {
		t.Fatalf("stored finding %s: %s %s %d\n%s\nwant the event's detail (SHA-256 %x)\n%s", env.Item, r.Shape, r.GivenSHA256, r.GivenSize, given, sum, want)
	}
}

// runCommand runs what the acquisition task runs, in process: the CLI's
// respond command, its flags mapped onto respond.Options as the CLI maps
// them, every stage the command runs.
func runCommand(t *testing.T, ctx context.Context, w *world, args []string) {
	t.Helper()
	if len(args) == 0 || args[0] != "respond" {
		t.Fatalf("command %q is not respond", args)
	}
	flags := map[string]string{}
	for i := 1; i < len(args); i++ {
		name, ok := strings.CutPrefix(args[i], "--")
		if !ok {
			t.Fatalf("argument %q is not a flag", args[i])
		}
		switch name {
		case "no-isolate", "no-progress":
			flags[name] = "true"
		default:
			if i+1 >= len(args) {
				t.Fatalf("flag --%s has no value", name)
			}
			flags[name] = args[i+1]
			i++
		}
	}
	o := respond.NewOptions()
	o.CaseID, o.InstanceID, o.Region, o.Operator = flags["case"], flags["instance"], flags["region"], flags["operator"]
	o.Isolate = flags["no-isolate"] != "true"
	o.MemberKMSKey, o.ForensicsKMSKey = flags["member-kms-key"], flags["forensics-kms-key"]
	o.StateDir = t.TempDir() // the task's --state-dir
	o.SnapshotPollInterval = 5 * time.Millisecond
	o.Tool = custody.Tool{Name: "impound", Version: "test"}
	if o.Isolate {
		t.Fatal("the task would isolate the instance again")
	}
	member := w.base
	if flags["role-arn"] != "" {
		member = awsconf.AssumeRole(w.base, awsconf.Role{ARN: flags["role-arn"], Operator: o.Operator, CaseID: o.CaseID})
	}
	mi, err := awsconf.Identify(ctx, member)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := awsconf.Identify(ctx, w.base)
	if err != nil {
		t.Fatal(err)
	}
	store, err := vault.Open(ctx, flags["vault"], vault.Options{})
	if err != nil {
		t.Fatal(err)
	}
	acc := respond.Accounts{MemberID: mi.Account, Member: member, MemberCaller: mi.ARN, ForensicsID: fi.Account, Forensics: w.base, ForensicsCaller: fi.ARN}
	c, err := respond.Open(ctx, acc, store, w.signer, o)
	if err != nil {
		t.Fatal(err)
	}
	if sum, err := respond.Run(ctx, c, c.Stages()); err != nil {
		t.Fatalf("the task's respond: %v\n%+v", err, sum.Stages)
	}
}

// checkFinished checks that the case is closed with every volume acquired
// and verified, its hashes those of the original snapshots, and that the
// ledger verifies with the evidence re-read.
func checkFinished(t *testing.T, ctx context.Context, w *world, caseID string, es []*custody.Entry) {
	t.Helper()
	if _, ok := es[len(es)-1].Details.(custody.CaseClosed); !ok {
		t.Fatalf("last entry is %s, want case-closed", es[len(es)-1].Kind())
	}
	acquired := map[string]custody.EvidenceStored{}
	verified := map[string]bool{}
	isolated := 0
	for _, e := range es {
		switch dd := e.Details.(type) {
		case custody.EvidenceStored:
			if dd.Acquisition != nil {
				acquired[dd.Acquisition.VolumeID] = dd
			}
		case custody.EvidenceVerified:
			if e.Outcome != custody.Failed {
				verified[dd.Key+"@"+dd.VersionID] = true
			}
		case custody.IsolationStep:
			isolated++
		}
	}
	for _, vol := range []string{w.demo.RootVolumeID, w.demo.DataVolumeID} {
		ev, ok := acquired[vol]
		if !ok {
			t.Errorf("volume %s not acquired", vol)
			continue
		}
		var original string
		for _, e := range es {
			if sc, ok := e.Details.(custody.SnapshotCopied); ok && sc.SnapshotID == ev.Acquisition.SnapshotID {
				original = sc.OriginalSnapshotID
			}
		}
		img, err := w.env.Sim.SnapshotImage(original)
		if err != nil {
			t.Fatalf("volume %s: original snapshot %q: %v", vol, original, err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, img); err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != ev.Receipt.SHA256 || ev.MerkleRoot == "" {
			t.Errorf("volume %s: ledger SHA-256 %s, original snapshot %s", vol, ev.Receipt.SHA256, got)
		}
		if !verified[ev.Receipt.Key+"@"+ev.Receipt.VersionID] {
			t.Errorf("volume %s: image not verified", vol)
		}
	}
	if len(acquired) != 2 {
		t.Errorf("%d volumes acquired, want 2", len(acquired))
	}
	if _, err := custody.Verify(ctx, w.store, caseID, custody.VerifyOptions{Key: w.signer.VerifierKey(),
		CheckEvidence: func(ctx context.Context, r *vault.Receipt) error { return vault.Verify(ctx, w.store, r) }}); err != nil {
		t.Fatalf("ledger verify: %v", err)
	}
	if isolated == 0 {
		t.Error("no isolation steps: the function's isolation is missing")
	}
}

func TestHandlerIgnores(t *testing.T) {
	w := newWorld(t)
	read := func(name string) []byte {
		b, err := os.ReadFile("../../respond/testdata/guardduty/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("123456789012"), []byte(w.demo.Member.ID())), []byte("us-east-1"), []byte(w.env.Sim.Region()))
	}
	tests := []struct {
		name  string
		event []byte
		env   map[string]string
		why   string
	}{
		{"sample", w.event(t, func(d map[string]any) {
			d["service"].(map[string]any)["additionalInfo"] = map[string]any{"sample": true}
		}), nil, "sample finding"},
		{"sample testdata", read("sample-backdoor-cc-activity.json"), nil, "sample finding"},
		{"low severity", w.event(t, func(d map[string]any) { d["severity"] = 5.0 }), nil, "severity 5 is below 7"},
		{"below configured", w.event(t, nil), map[string]string{"IMPOUND_MIN_SEVERITY": "8.5"}, "severity 8 is below 8.5"},
		{"type not listed", w.event(t, nil), map[string]string{"IMPOUND_FINDING_TYPES": "CryptoCurrency:EC2/, Trojan:EC2/"}, "matches none"},
		{"iam user", read("iam-credential-exfiltration.json"), nil, `resource type is \"AccessKey\"`},
		{"other region", w.event(t, func(d map[string]any) { d["region"] = "ap-south-2" }), nil, "Region ap-south-2"},
		{"not guardduty", []byte(`{"source":"aws.ec2","detail-type":"EC2 Instance State-change Notification","detail":{}}`), nil, `source is \"aws.ec2\"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			ctx := zerolog.New(&logs).WithContext(context.Background())
			d := newFakeDispatcher()
			h := w.handler(t, w.environment(tt.env), d)
			if err := h.Handle(ctx, tt.event); err != nil {
				t.Fatalf("ignored finding returned %v: EventBridge would retry it", err)
			}
			if !strings.Contains(logs.String(), tt.why) {
				t.Errorf("log does not say %q:\n%s", tt.why, logs.String())
			}
			if len(d.requests) != 0 {
				t.Errorf("%d dispatches", len(d.requests))
			}
			var files []string
			_ = filepath.WalkDir(w.vaultTo, func(p string, e fs.DirEntry, err error) error {
				if err == nil && !e.IsDir() {
					files = append(files, p)
				}
				return nil
			})
			if len(files) != 0 {
				t.Fatalf("the vault holds %d files, first %v", len(files), files[:min(3, len(files))])
			}
		})
	}
	// And the control: the same world acts on the real finding.
	if err := w.handler(t, w.environment(nil), newFakeDispatcher()).Handle(testContext(t), w.event(t, nil)); err != nil {
		t.Fatal(err)
	}
	if got := cases(t, w); len(got) != 1 {
		t.Fatalf("cases %v", got)
	}
}

func TestHandlerNoCluster(t *testing.T) {
	ctx := testContext(t)
	w := newWorld(t)
	h := w.handler(t, w.environment(map[string]string{"IMPOUND_ISOLATE": "false"}), nil)
	for range 2 {
		if err := h.Handle(ctx, w.event(t, nil)); err != nil {
			t.Fatal(err)
		}
	}
	caseID := "gd-" + w.demo.InstanceID
	es := entries(t, w, caseID)
	var notes []string
	for _, e := range es {
		if n, ok := e.Details.(custody.Note); ok {
			notes = append(notes, n.Text)
		}
		if e.Kind() == custody.KindIsolationStep {
			t.Errorf("isolated with IMPOUND_ISOLATE=false")
		}
	}
	want := "acquisition not dispatched (no IMPOUND_ACQUIRE_CLUSTER): run IMPOUND_SIGNING_KEY=file:" + w.keyPath +
		" impound respond --case " + caseID + " --instance " + w.demo.InstanceID + " --vault " + w.vaultTo + " --no-isolate --region " +
		w.env.Sim.Region() + " --operator guardduty --mode compliance --state-dir /tmp/impound/acquire --log-format json --no-progress --role-arn " +
		w.demo.Member.RoleARN("impound-responder") + " --member-kms-key " + w.demo.TransferKeyARN + " --forensics-kms-key " + w.demo.EvidenceKeyARN
	if len(notes) != 1 || notes[0] != want {
		t.Fatalf("notes %q\nwant one: %q", notes, want)
	}
	if op := es[0].Details.(custody.CaseOpened); op.Attributes["isolation"] != "false" {
		t.Errorf("case attributes %v", op.Attributes)
	}
}

func TestHandlerDispatchFailure(t *testing.T) {
	ctx := testContext(t)
	w := newWorld(t)
	d := newFakeDispatcher()
	d.fail = errors.New("AccessDeniedException: not authorized to perform ecs:RunTask")
	h := w.handler(t, w.environment(nil), d)
	err := h.Handle(ctx, w.event(t, nil))
	if err == nil || !strings.Contains(err.Error(), "ecs:RunTask") {
		t.Fatalf("failed dispatch returned %v", err)
	}
	es := entries(t, w, "gd-"+w.demo.InstanceID)
	runs := awsActions(es, runTaskAction)
	if len(runs) != 1 || runs[0].Outcome != custody.Failed || !strings.Contains(runs[0].Error, "ecs:RunTask") {
		t.Fatalf("ecs.run-task entries %+v", runs)
	}
	// The retry: dispatched, the failed attempt not taken for a task.
	d.fail = nil
	if err := h.Handle(ctx, w.event(t, nil)); err != nil {
		t.Fatal(err)
	}
	if len(d.started) != 1 || d.started[0].Previous != "" {
		t.Fatalf("retry: %+v", d.started)
	}
}

func TestHandlerStageFailureStillDispatches(t *testing.T) {
	ctx := testContext(t)
	w := newWorld(t)
	// Isolation cannot change security groups: containment fails.
	w.env.Sim.SetFault("ec2", "ModifyNetworkInterfaceAttribute", awssim.Fault{ServerErrorRate: 1})
	w.env.Sim.SetFault("ec2", "ModifyInstanceAttribute", awssim.Fault{ServerErrorRate: 1})
	d := newFakeDispatcher()
	h := w.handler(t, w.environment(nil), d)
	err := h.Handle(ctx, w.event(t, nil))
	if !errors.Is(err, respond.ErrIncomplete) || !strings.Contains(err.Error(), "isolate") {
		t.Fatalf("failed isolation returned %v, want an error naming the isolate stage", err)
	}
	if len(d.started) != 1 {
		t.Fatalf("%d tasks started: acquisition must go ahead when containment fails", len(d.started))
	}
	es := entries(t, w, "gd-"+w.demo.InstanceID)
	if n := len(awsActions(es, "stage.isolate")); n != 1 || awsActions(es, "stage.isolate")[0].Outcome != custody.Failed {
		t.Fatalf("%d failed stage.isolate entries, want 1", n)
	}
}

func TestHandlerDeadlineMargin(t *testing.T) {
	w := newWorld(t)
	// Every DescribeInstances takes longer than the invocation has.
	w.env.Sim.SetFault("ec2", "DescribeInstances", awssim.Fault{Latency: 10 * time.Second})
	d := newFakeDispatcher()
	h := w.handler(t, w.environment(map[string]string{"IMPOUND_ISOLATE": "false"}), d)
	const budget = 4 * time.Second
	ctx, cancel := context.WithTimeout(testContext(t), budget)
	defer cancel()
	start := time.Now()
	err := h.Handle(ctx, w.event(t, nil))
	if err == nil {
		t.Fatal("a stage cut by the deadline returned no error")
	}
	if time.Since(start) > budget {
		t.Fatalf("the handler ran past its deadline: %v", time.Since(start))
	}
	// Within the margin: the stage's failure is recorded and the task dispatched.
	es := entries(t, w, "gd-"+w.demo.InstanceID)
	if n := len(awsActions(es, "stage.collect")); n != 1 {
		t.Errorf("%d stage.collect failure entries, want 1", n)
	}
	if len(d.started) != 1 {
		t.Errorf("%d tasks started within the margin, want 1", len(d.started))
	}
}

// TestLambdaInvoke goes through the Lambda library's own handler wrapping,
// as lambda.Start does: the event reaches Handle as the bytes delivered.
func TestLambdaInvoke(t *testing.T) {
	w := newWorld(t)
	var logs bytes.Buffer
	ctx := zerolog.New(&logs).WithContext(context.Background())
	h := w.handler(t, w.environment(nil), newFakeDispatcher())
	sample := w.event(t, func(d map[string]any) {
		d["service"].(map[string]any)["additionalInfo"] = map[string]any{"sample": true}
	})
	out, err := lambda.NewHandler(h.Handle).Invoke(ctx, sample)
	if err != nil || string(out) != "null" {
		t.Fatalf("invoke: %s, %v", out, err)
	}
	if !strings.Contains(logs.String(), "sample finding") {
		t.Fatalf("log: %s", logs.String())
	}
	// A failure is the invocation's error, for Lambda to retry.
	h.accounts = failingAccounts{}
	if _, err := lambda.NewHandler(h.Handle).Invoke(ctx, w.event(t, nil)); err == nil || !strings.Contains(err.Error(), "no credentials") {
		t.Fatalf("invoke with unreachable accounts: %v", err)
	}
	if got := cases(t, w); len(got) != 0 {
		t.Fatalf("cases %v without accounts", got)
	}
}

type failingAccounts struct{}

func (failingAccounts) Resolve(context.Context, *respond.Finding, string) (resolved, error) {
	return resolved{}, errors.New("no credentials")
}

// TestUnreachableMemberRoleRecorded: a member role that cannot be assumed
// is an error for Lambda to retry, and is recorded in the instance's case
// (opened for it), not only in the function's logs.
func TestUnreachableMemberRoleRecorded(t *testing.T) {
	ctx := testContext(t)
	w := newWorld(t)
	h := w.handler(t, w.environment(nil), newFakeDispatcher())
	// An account the function's role may not reach (the simulator, like
	// STS, refuses AssumeRole into an account it does not know).
	ev := w.event(t, func(d map[string]any) { d["accountId"] = "999999999999" })
	err := h.Handle(ctx, ev)
	role := "arn:aws:iam::999999999999:role/impound-responder"
	if err == nil || !strings.Contains(err.Error(), "cannot assume "+role) || !strings.Contains(err.Error(), "IMPOUND_MEMBER_ROLE_NAME") {
		t.Fatalf("handle: %v", err)
	}
	caseID := "gd-" + w.demo.InstanceID
	l, err := custody.Open(ctx, w.store, caseID, w.signer, custody.NewOptions())
	if err != nil {
		t.Fatal(err)
	}
	es, err := l.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 {
		t.Fatalf("%d entries, want case-opened and the failed assume-role", len(es))
	}
	op, ok := es[0].Details.(custody.CaseOpened)
	if !ok || op.Account != "999999999999" || op.Trigger == "" || op.InstanceID != w.demo.InstanceID {
		t.Errorf("entry 0: %+v", es[0].Details)
	}
	a, ok := es[1].Details.(custody.AWSAction)
	if !ok || a.Action != "sts.assume-role" || a.Details["role_arn"] != role || es[1].Outcome != custody.Failed || !strings.Contains(es[1].Error, "trust policy") {
		t.Errorf("entry 1: %s %+v %q", es[1].Outcome, es[1].Details, es[1].Error)
	}
}
