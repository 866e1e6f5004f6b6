package report

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/vault"
)

// Hostile values, as a compromised account could plant them in tags,
// names and error text.
const (
	hostileName  = `<script>alert(1)</script>`
	hostileTag   = `<img src=x onerror=alert(2)>`
	hostileError = "AccessDenied: <b>not authorized</b> | col `tick` *x*\nsecond line"
	hostileNote  = "| col | <script>alert(3)</script> ``` `code` *bold* [link](javascript:alert(4)) <!-- c -->"
	// fixtureNote is a note on a control-plane item, hostile text included.
	fixtureNote   = "console output is not the latest: " + hostileName
	fixtureCase   = "IR-2026-0042"
	fixtureInst   = "i-0abc1234def567890"
	fixtureAcct   = "111122223333"
	fixtureForens = "444455556666"
)

// fixture is a realistic case: every entry kind, a failed step, a skipped
// step and hostile values, in a memory vault.
type fixture struct {
	store    vault.Store
	ledger   *custody.Ledger
	signer   custody.Signer
	key      string
	image    *vault.Receipt // the disk image
	control  *vault.Receipt // the control-plane record
	imageRaw []byte
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ctx := context.Background()
	skey, vkey, err := custody.GenerateKey("ir.example.com/alice")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := custody.NewEd25519Signer(skey)
	if err != nil {
		t.Fatal(err)
	}
	st := vault.NewMemory()
	clock := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	now := func() time.Time { clock = clock.Add(7 * time.Second); return clock }
	l, err := custody.Open(ctx, st, fixtureCase, signer, custody.Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: st, ledger: l, signer: signer, key: vkey}
	alice := custody.Actor{Operator: "alice", CallerARN: "arn:aws:sts::" + fixtureForens + ":assumed-role/IR/alice"}
	tool := &custody.Tool{Name: "impound", Version: "v0.9.0", Commit: "abc1234", BinarySHA256: strings.Repeat("ab", 32)}
	add := func(e custody.Entry) {
		t.Helper()
		if e.Actor.Operator == "" {
			e.Actor = alice
		}
		if _, err := l.Append(ctx, e); err != nil {
			t.Fatalf("append %s: %v", e.Details.Kind(), err)
		}
	}
	add(custody.Entry{Details: custody.CaseOpened{
		Title: "Crypto-miner on web-1", Trigger: "guardduty:finding/5ac1e0d7", Account: fixtureAcct, Region: "eu-west-1",
		InstanceID: fixtureInst, ForensicsAccount: fixtureForens, Tool: tool,
		Attributes: map[string]string{"vault": "mem:", "retention_mode": "COMPLIANCE", "retention_days": "365", "hashes": "sha256,md5,sha1", "isolation.nacl": "false"},
	}})
	add(custody.Entry{Resources: []string{"arn:aws:ec2:eu-west-1:" + fixtureAcct + ":instance/" + fixtureInst}, Details: custody.IsolationStep{
		Step: "record-state", Target: fixtureInst,
		After: json.RawMessage(mustJSON(t, map[string]any{"state": "running", "tags": map[string]string{"Name": hostileName, "env": hostileTag}})),
	}})
	add(custody.Entry{Details: custody.IsolationStep{
		Step: "swap-security-groups", Target: "eni-0123",
		Before: json.RawMessage(mustJSON(t, map[string]any{"groups": []string{"sg-web"}, "description": hostileTag})),
		After:  json.RawMessage(`{"groups":["sg-quarantine"]}`),
	}})
	add(custody.Entry{Details: custody.IsolationStep{Step: "auto-scaling", Status: "skipped", Note: "not in an auto scaling group", Target: fixtureInst}})
	add(custody.Entry{Outcome: custody.Failed, Error: hostileError, Details: custody.IsolationStep{Step: "revoke-sessions", Target: "arn:aws:iam::" + fixtureAcct + ":role/web"}})
	add(custody.Entry{Details: custody.SnapshotCreated{SnapshotID: "snap-0aaa", VolumeID: "vol-0bbb", Account: fixtureAcct, Region: "eu-west-1", Encrypted: true, SizeGiB: 8}})
	add(custody.Entry{Details: custody.AWSAction{Action: "kms.create-grant", Account: fixtureAcct, Region: "eu-west-1", Details: map[string]string{"grant_id": "g-1", "key": "arn:aws:kms:eu-west-1:" + fixtureAcct + ":key/k"}}})
	add(custody.Entry{Details: custody.SnapshotCopied{SourceSnapshotID: "snap-0aaa", SourceAccount: fixtureAcct, SourceRegion: "eu-west-1", SnapshotID: "snap-0ccc", Account: fixtureForens, Region: "eu-west-1", KMSKeyID: "alias/forensics"}})
	add(custody.Entry{Details: custody.SnapshotShared{SnapshotID: "snap-0ccc", Accounts: []string{fixtureForens}}})

	// Evidence: a disk image and its block map, a control-plane record.
	f.imageRaw = bytes.Repeat([]byte("evidence block "), 4096)
	img, err := vault.Put(ctx, st, "cases/"+fixtureCase+"/evidence/snap-0ccc.img", bytes.NewReader(f.imageRaw), vault.PutOptions{RetentionMode: vault.ModeCompliance, RetainUntil: time.Date(2027, 11, 21, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	bm, err := vault.Put(ctx, st, "cases/"+fixtureCase+"/evidence/snap-0ccc.blockmap", strings.NewReader("blockmap"), vault.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.image = img
	add(custody.Entry{Resources: []string{img.URI}, Details: custody.EvidenceStored{
		Receipt: *img, Source: "snap-0ccc", Evidence: custody.EvidenceDiskImage,
		Hashes:     map[string]string{"md5": strings.Repeat("1", 32), "sha1": strings.Repeat("2", 40)},
		MerkleRoot: strings.Repeat("3", 64),
		Acquisition: &custody.Acquisition{SnapshotID: "snap-0ccc", VolumeID: "vol-0bbb", InstanceID: fixtureInst, Account: fixtureForens, Region: "eu-west-1",
			Size: int64(len(f.imageRaw)), BlockSize: 524288, Blocks: 1, WrittenBlocks: 1, BlockMap: bm,
			MerkleLeaf: "rfc6962-sha256; leaf i = SHA-256(0x00 || block i)", Started: "2026-11-21T09:01:00Z", Finished: "2026-11-21T09:02:00Z", Tool: tool},
	}})
	cp, err := vault.Put(ctx, st, "cases/"+fixtureCase+"/evidence/control-plane.json", strings.NewReader(`{"console":"`+hostileName+`"}`), vault.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.control = cp
	add(custody.Entry{Resources: []string{cp.URI}, Details: custody.EvidenceStored{Receipt: *cp, Source: "ec2:DescribeInstances " + fixtureInst, Evidence: custody.EvidenceControlPlane,
		Notes: []string{fixtureNote}}})
	add(custody.Entry{Details: custody.EvidenceVerified{URI: img.URI, Key: img.Key, VersionID: img.VersionID, Size: img.Size, SHA256: img.SHA256}})
	add(custody.Entry{Details: custody.LegalHoldChanged{URI: img.URI, Key: img.Key, VersionID: img.VersionID, On: true, Reason: "litigation " + hostileTag}})
	add(custody.Entry{Actor: custody.Actor{Operator: "bob"}, Details: custody.Note{Text: hostileNote}})
	add(custody.Entry{Outcome: custody.Failed, Error: "memory acquisition: SSM agent not reachable", Details: custody.EvidenceStored{
		Receipt: vault.Receipt{URI: "mem:cases/" + fixtureCase + "/evidence/memory.lime", Key: "cases/" + fixtureCase + "/evidence/memory.lime"}, Source: "memory:" + fixtureInst, Evidence: custody.EvidenceMemory}})
	add(custody.Entry{Details: custody.CaseClosed{Reason: "evidence secured"}})
	return f
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// source reads the fixture's ledger back as a report source, key pinned.
func (f *fixture) source(t testing.TB) *Source {
	t.Helper()
	src, err := FromVault(context.Background(), f.store, fixtureCase, f.key)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func (f *fixture) build(t testing.TB, opts Options) *Report {
	t.Helper()
	r, err := Build(context.Background(), f.source(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func render(t *testing.T, r *Report, format string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := r.Render(&b, format); err != nil {
		t.Fatalf("render %s: %v", format, err)
	}
	return b.Bytes()
}
