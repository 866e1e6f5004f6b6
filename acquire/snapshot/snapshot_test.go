package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go/middleware"

	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/internal/testenv"
)

const (
	memberID    = "111111111111"
	forensicsID = "222222222222"
)

// world is a member account with a compromised instance whose three volumes
// cover the three encryption cases, and a forensics account with its own key.
type world struct {
	sim               *awssim.Sim
	member, forensics aws.Config
	instance          string
	volumes           map[string]*awssim.Volume // by device
	memberKey, volKey string                    // member CMKs: for re-encryption, and one volume's own key
	strayKey          string                    // a member CMK nobody granted the forensics account
	forensicsKey      string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	sim := awssim.New(awssim.Options{})
	m := sim.AddAccount(memberID)
	f := sim.AddAccount(forensicsID)
	srv, err := awssim.Listen(context.Background(), "127.0.0.1:0", sim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cfg := func(a *awssim.Account) aws.Config {
		c := a.Credentials()
		return aws.Config{Region: sim.Region(), BaseEndpoint: aws.String(srv.URL()),
			Credentials: credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")}
	}
	w := &world{sim: sim, member: cfg(m), forensics: cfg(f), volumes: map[string]*awssim.Volume{}}

	mk, err := m.CreateKey(awssim.KeyOptions{Description: "member re-encryption key"})
	must(t, err)
	vk, err := m.CreateKey(awssim.KeyOptions{Description: "application key"})
	must(t, err)
	fk, err := f.CreateKey(awssim.KeyOptions{Description: "forensics key"})
	must(t, err)
	sk, err := m.CreateKey(awssim.KeyOptions{Description: "unrelated key"})
	must(t, err)
	w.memberKey, w.volKey, w.strayKey, w.forensicsKey = mk.ARN(), vk.ARN(), sk.ARN(), fk.ARN()

	specs := []struct {
		dev string
		o   awssim.VolumeOptions
	}{
		{"/dev/xvda", awssim.VolumeOptions{SizeGiB: 2}},
		{"/dev/sdf", awssim.VolumeOptions{SizeGiB: 1, Encryption: awssim.EncryptionDefault}},
		{"/dev/sdg", awssim.VolumeOptions{SizeGiB: 1, Encryption: awssim.EncryptionCMK, KMSKeyID: vk.ARN()}},
	}
	var devs []awssim.Device
	for i, s := range specs {
		v, err := m.CreateVolume(s.o)
		must(t, err)
		// Scattered writes: the first blocks, a run in the middle, the last block.
		must(t, v.WriteRandom(0, 3*awssim.BlockSize+1000, uint64(i+1)))
		must(t, v.WriteRandom(int64(s.o.SizeGiB)<<29, 5*awssim.BlockSize, uint64(i+10)))
		must(t, v.WriteRandom(int64(s.o.SizeGiB)<<30-awssim.BlockSize, awssim.BlockSize, uint64(i+20)))
		w.volumes[s.dev] = v
		devs = append(devs, awssim.Device{Name: s.dev, Volume: v})
	}
	inst, err := m.RunInstance(awssim.InstanceOptions{Devices: devs, Tags: map[string]string{"Name": "web-1"}})
	must(t, err)
	w.instance = inst.ID()
	return w
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type recorder struct {
	mu    sync.Mutex
	steps []Step
}

func (r *recorder) record(_ context.Context, s Step) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, s)
	return nil
}

func (r *recorder) count(action string, failed bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.steps {
		if s.Action == action && (s.Err != nil) == failed {
			n++
		}
	}
	return n
}

func (w *world) mover(t *testing.T, rec *recorder, edit func(*Options)) *Mover {
	o := NewOptions()
	o.CaseID = "IR-7"
	o.Region = w.sim.Region()
	o.ForensicsKMSKey = w.forensicsKey
	o.MemberKMSKey = w.memberKey
	o.PollInterval = 5 * time.Millisecond
	o.Record = rec.record
	if edit != nil {
		edit(&o)
	}
	m, err := New(NewAccount(memberID, w.member), NewAccount(forensicsID, w.forensics), o)
	must(t, err)
	return m
}

// imageSHA256 reads a snapshot whole through EBS direct with cfg's
// credentials, zeros for unlisted blocks, checking every block's checksum.
func imageSHA256(t *testing.T, cfg aws.Config, snap string) string {
	t.Helper()
	ctx := context.Background()
	c := ebs.NewFromConfig(cfg)
	h := sha256.New()
	zero := make([]byte, awssim.BlockSize)
	var next int32
	var size int64
	p := ebs.NewListSnapshotBlocksPaginator(c, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String(snap)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("list blocks of %s: %v", snap, err)
		}
		size = aws.ToInt64(page.VolumeSize) << 30
		for _, b := range page.Blocks {
			for ; next < aws.ToInt32(b.BlockIndex); next++ {
				h.Write(zero)
			}
			out, err := c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: aws.String(snap), BlockIndex: b.BlockIndex, BlockToken: b.BlockToken})
			if err != nil {
				t.Fatalf("get block %d of %s: %v", next, snap, err)
			}
			data, err := io.ReadAll(out.BlockData)
			out.BlockData.Close()
			must(t, err)
			sum := sha256.Sum256(data)
			if got := aws.ToString(out.Checksum); got != b64(sum[:]) {
				t.Fatalf("block %d of %s: checksum %s, data hashes to %s", next, snap, got, b64(sum[:]))
			}
			h.Write(data)
			next++
		}
	}
	for ; int64(next)*awssim.BlockSize < size; next++ {
		h.Write(zero)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func volumeSHA256(t *testing.T, v *awssim.Volume) string {
	r, err := v.Image()
	must(t, err)
	h := sha256.New()
	_, err = io.Copy(h, r)
	must(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

func TestTransferAllEncryptionCases(t *testing.T) {
	w := newWorld(t)
	rec := &recorder{}
	ctx := context.Background()
	want := map[string]string{}
	for dev, v := range w.volumes {
		want[dev] = volumeSHA256(t, v)
	}
	// Writes after Freeze must not reach the evidence: the snapshot froze the volume.
	res, err := w.mover(t, rec, nil).Freeze(ctx, w.instance)
	must(t, err)
	for _, v := range w.volumes {
		must(t, v.WriteRandom(0, awssim.BlockSize, 99))
	}
	m := w.mover(t, rec, nil)
	must(t, m.Transfer(ctx, res))

	if len(res.Volumes) != 3 {
		t.Fatalf("%d volumes, want 3", len(res.Volumes))
	}
	fec2 := ec2.NewFromConfig(w.forensics)
	for _, v := range res.Volumes {
		if v.Forensics == "" {
			t.Fatalf("volume %s: no forensics snapshot", v.VolumeID)
		}
		d, err := fec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{v.Forensics}})
		must(t, err)
		s := d.Snapshots[0]
		if aws.ToString(s.OwnerId) != forensicsID || !aws.ToBool(s.Encrypted) || aws.ToString(s.KmsKeyId) != w.forensicsKey {
			t.Errorf("volume %s: forensics snapshot owner %s encrypted %v key %s; want %s, true, %s",
				v.VolumeID, aws.ToString(s.OwnerId), aws.ToBool(s.Encrypted), aws.ToString(s.KmsKeyId), forensicsID, w.forensicsKey)
		}
		if got := imageSHA256(t, w.forensics, v.Forensics); got != want[v.DeviceName] {
			t.Errorf("volume %s (%s): forensics snapshot image %s, volume held %s", v.VolumeID, v.DeviceName, got, want[v.DeviceName])
		}
		if got := tagMap(s.Tags); got[TagCase] != "IR-7" || got[TagRole] != RoleForensics || got[TagSourceSnapshot] != v.Original {
			t.Errorf("volume %s: forensics snapshot tags %v", v.VolumeID, got)
		}
		if (v.Intermediate != "") != (v.DeviceName == "/dev/sdf") {
			t.Errorf("volume %s (%s): intermediate %q; only the aws/ebs volume needs one", v.VolumeID, v.DeviceName, v.Intermediate)
		}
	}

	// The member account keeps exactly the three tagged originals: the
	// intermediate copy is gone and nothing is still shared.
	mec2 := ec2.NewFromConfig(w.member)
	own, err := mec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	must(t, err)
	if len(own.Snapshots) != 3 {
		t.Errorf("member account owns %d snapshots, want the 3 originals", len(own.Snapshots))
	}
	for _, s := range own.Snapshots {
		if tagMap(s.Tags)[TagRole] != RoleOriginal {
			t.Errorf("member snapshot %s has role %q", aws.ToString(s.SnapshotId), tagMap(s.Tags)[TagRole])
		}
		a, err := mec2.DescribeSnapshotAttribute(ctx, &ec2.DescribeSnapshotAttributeInput{SnapshotId: s.SnapshotId,
			Attribute: ec2types.SnapshotAttributeNameCreateVolumePermission})
		must(t, err)
		if len(a.CreateVolumePermissions) != 0 {
			t.Errorf("member snapshot %s still shared: %+v", aws.ToString(s.SnapshotId), a.CreateVolumePermissions)
		}
	}
	// Grants retired on both member keys.
	mkms := kms.NewFromConfig(w.member)
	for _, k := range []string{w.memberKey, w.volKey} {
		g, err := mkms.ListGrants(ctx, &kms.ListGrantsInput{KeyId: aws.String(k)})
		must(t, err)
		if len(g.Grants) != 0 {
			t.Errorf("key %s still has %d grants", k, len(g.Grants))
		}
	}
	// Every step recorded, none failed.
	for action, n := range map[string]int{ActionCreate: 3, ActionShare: 3, ActionUnshare: 3, ActionGrant: 2, ActionRetireGrant: 2,
		ActionCopy: 4, ActionDeleteIntermediate: 1, ActionInventory: 1, ActionTag: 3, ActionState: 7, ActionFound: 0} {
		if got := rec.count(action, false); got != n {
			t.Errorf("%d successful %s steps recorded, want %d", got, action, n)
		}
	}
	for _, s := range rec.steps {
		if s.Err != nil {
			t.Errorf("step %s failed: %v", s.Action, s.Err)
		}
	}
	checkLedgerDetail(t, w, res, rec)

	// Idempotent: a second run finds everything and creates nothing.
	rec2 := &recorder{}
	res2, err := w.mover(t, rec2, nil).Run(ctx, w.instance)
	must(t, err)
	for i := range res.Volumes {
		if res2.Volumes[i].Original != res.Volumes[i].Original || res2.Volumes[i].Forensics != res.Volumes[i].Forensics {
			t.Errorf("re-run: volume %s got %s/%s, first run %s/%s", res.Volumes[i].VolumeID,
				res2.Volumes[i].Original, res2.Volumes[i].Forensics, res.Volumes[i].Original, res.Volumes[i].Forensics)
		}
	}
	// The re-run only reports what it found, and the states it saw: it
	// creates, copies, shares and grants nothing.
	for _, s := range rec2.steps {
		if s.Action != ActionInventory && s.Action != ActionFound && s.Action != ActionState || s.Err != nil {
			t.Errorf("re-run recorded %s (err %v); want only inventory, found and state steps", s.Action, s.Err)
		}
	}
	if got := rec2.count(ActionFound, false); got != 6 {
		t.Errorf("re-run reported %d found snapshots, want 3 originals and 3 forensics copies", got)
	}
	for _, s := range rec2.steps {
		if s.Action == ActionFound && s.Details["role"] == RoleForensics {
			v := res.volume(s.Details["volume_id"])
			if v == nil || s.Details["snapshot"] != v.Forensics || s.Details["original_snapshot"] != v.Original ||
				s.Details["purpose"] != PurposeForensics || s.Details["kms_key"] != w.forensicsKey {
				t.Errorf("found forensics copy reported as %v", s.Details)
			}
		}
	}
}

func (r *Result) volume(id string) *Volume {
	for i := range r.Volumes {
		if r.Volumes[i].VolumeID == id {
			return &r.Volumes[i]
		}
	}
	return nil
}

// checkLedgerDetail checks what the first run of TestTransferAllEncryptionCases
// reported and tagged beyond the counts of its steps.
func checkLedgerDetail(t *testing.T, w *world, res *Result, rec *recorder) {
	t.Helper()
	ctx := context.Background()
	mec2, fec2 := ec2.NewFromConfig(w.member), ec2.NewFromConfig(w.forensics)
	for _, v := range res.Volumes {
		d, err := mec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{v.Original}})
		must(t, err)
		s := d.Snapshots[0]
		tags := tagMap(s.Tags)
		if tags[TagCase] != "IR-7" || tags[TagRole] != RoleOriginal || tags[TagSourceInstance] != w.instance || tags[TagSourceVolume] != v.VolumeID {
			t.Errorf("original %s of %s: tags %v", v.Original, v.VolumeID, tags)
		}
		if desc := aws.ToString(s.Description); !strings.Contains(desc, "impound") || !strings.Contains(desc, "IR-7") || !strings.Contains(desc, w.instance) {
			t.Errorf("original %s: description %q does not name impound, the case and the instance", v.Original, desc)
		}
		d, err = fec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{v.Forensics}})
		must(t, err)
		s = d.Snapshots[0]
		tags = tagMap(s.Tags)
		src := v.Original
		if v.Intermediate != "" {
			src = v.Intermediate
		}
		if tags[TagSourceVolume] != v.VolumeID || tags[TagSourceInstance] != w.instance || tags[TagCopySource] != src {
			t.Errorf("forensics copy %s of %s: tags %v; want copy source %s", v.Forensics, v.VolumeID, tags, src)
		}
		if desc := aws.ToString(s.Description); !strings.Contains(desc, "impound case IR-7") || !strings.Contains(desc, v.Original) {
			t.Errorf("forensics copy %s: description %q", v.Forensics, desc)
		}
	}
	// The inventory lists the three volumes before anything was made.
	if len(rec.steps) == 0 || rec.steps[0].Action != ActionInventory || len(strings.Split(rec.steps[0].Details["volumes"], ",")) != 3 {
		t.Errorf("first step %+v; want an inventory of the 3 volumes", rec.steps[0])
	}
	// Every snapshot's completed state is recorded, with its actual key.
	states := map[string]Step{}
	for _, s := range rec.steps {
		if s.Action == ActionState {
			states[s.Details["snapshot"]] = s
		}
		if s.Action == ActionTag && (s.Err != nil || s.Details["tags"] != TagSourceVolume+"="+s.Details["volume_id"]) {
			t.Errorf("tag step %+v", s)
		}
		if s.Action == ActionGrant {
			want := "DescribeKey,CreateGrant,GenerateDataKey,GenerateDataKeyWithoutPlaintext,ReEncryptFrom,ReEncryptTo,Decrypt"
			if s.Details["operations"] != want || s.Details["grant_id"] == "" || s.Details["grantee_principal"] != "arn:aws:iam::"+forensicsID+":root" {
				t.Errorf("grant step details %v; want operations %s", s.Details, want)
			}
		}
		if s.Action == ActionShare && (s.Details["operation"] != "add" || s.Details["account"] != forensicsID ||
			(s.Details["kms_key"] == "") != (s.Details["snapshot"] == res.volume(w.volumes["/dev/xvda"].ID()).Original)) {
			t.Errorf("share step details %v; want the forensics account, add, and the key of an encrypted snapshot", s.Details)
		}
	}
	for _, v := range res.Volumes {
		for _, id := range []string{v.Original, v.Intermediate, v.Forensics} {
			if id == "" {
				continue
			}
			if st, ok := states[id]; !ok || st.Details["state"] != "completed" {
				t.Errorf("snapshot %s (volume %s): state step %+v; want completed", id, v.VolumeID, st)
			}
		}
		if got := states[v.Forensics].Details["kms_key"]; got != w.forensicsKey || v.ForensicsKMSKey != w.forensicsKey {
			t.Errorf("forensics copy %s: recorded key %q, result key %q; want %s", v.Forensics, got, v.ForensicsKMSKey, w.forensicsKey)
		}
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	t.Run("unknown instance", func(t *testing.T) {
		w := newWorld(t)
		_, err := w.mover(t, &recorder{}, nil).Run(ctx, "i-0123456789abcdef0")
		if err == nil || !strings.Contains(err.Error(), "not found in account "+memberID) || !strings.Contains(err.Error(), "--region") {
			t.Fatalf("error %v; want one naming the account and the fix", err)
		}
	})
	t.Run("aws/ebs without a member key", func(t *testing.T) {
		w := newWorld(t)
		rec := &recorder{}
		_, err := w.mover(t, rec, func(o *Options) { o.MemberKMSKey = "" }).Run(ctx, w.instance)
		if err == nil || !strings.Contains(err.Error(), "--member-kms-key") {
			t.Fatalf("error %v; want one naming --member-kms-key", err)
		}
		var ce *CreatedError
		if !errors.As(err, &ce) || len(ce.Created) < 3 {
			t.Fatalf("error %v does not list what was created", err)
		}
		// The other two volumes still reached the forensics account.
		if got := rec.count(ActionCopy, false); got != 2 {
			t.Errorf("%d forensics copies, want 2 (the volumes that could be moved)", got)
		}
	})
	t.Run("instance in another Region", func(t *testing.T) {
		w := newWorld(t) // the instance lives in us-east-1
		other := awssim.New(awssim.Options{Region: "eu-west-1"})
		om := other.AddAccount(memberID)
		of := other.AddAccount(forensicsID)
		srv, err := awssim.Listen(ctx, "127.0.0.1:0", other)
		must(t, err)
		t.Cleanup(func() { srv.Close() })
		rec := &recorder{}
		o := NewOptions()
		o.CaseID, o.Region, o.Record, o.PollInterval = "IR-7", "eu-west-1", rec.record, 5*time.Millisecond
		m, err := New(NewAccount(memberID, srv.ClientConfig(om.Credentials())), NewAccount(forensicsID, srv.ClientConfig(of.Credentials())), o)
		must(t, err)
		_, err = m.Run(ctx, w.instance)
		if err == nil || !strings.Contains(err.Error(), "not found in account "+memberID+", Region eu-west-1") ||
			!strings.Contains(err.Error(), "--region") {
			t.Fatalf("error %v; want one naming the Region searched and --region", err)
		}
		if len(rec.steps) != 1 || rec.steps[0].Action != ActionInventory || rec.steps[0].Err == nil ||
			!strings.Contains(rec.steps[0].Err.Error(), "--region") || rec.steps[0].Details["region"] != "eu-west-1" {
			t.Errorf("recorded %+v; want one failed inventory step naming the fix", rec.steps)
		}
	})
	t.Run("forensics key unusable", func(t *testing.T) {
		w := newWorld(t)
		rec := &recorder{}
		_, err := w.mover(t, rec, func(o *Options) { o.ForensicsKMSKey = w.strayKey }).Run(ctx, w.instance)
		if err == nil || !strings.Contains(err.Error(), "copy into forensics account") {
			t.Fatalf("error %v; want a failed forensics copy", err)
		}
		for _, want := range []string{"--forensics-kms-key", w.strayKey, "must be allowed to use KMS key"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %v does not say %q", err, want)
			}
		}
		if rec.count(ActionCopy, true) != 3 {
			t.Errorf("%d failed copies recorded, want 3: %+v", rec.count(ActionCopy, true), rec.steps)
		}
		for _, s := range rec.steps {
			if s.Action == ActionCopy && s.Err != nil && !strings.Contains(s.Err.Error(), "--forensics-kms-key") {
				t.Errorf("recorded copy failure %v does not name the fix", s.Err)
			}
		}
		// Clean-up still ran: grants retired, shares removed.
		if rec.count(ActionRetireGrant, false) != 2 || rec.count(ActionUnshare, false) != 3 {
			t.Errorf("clean-up after failure: %d retired grants, %d unshares", rec.count(ActionRetireGrant, false), rec.count(ActionUnshare, false))
		}
	})
	t.Run("snapshot never completes", func(t *testing.T) {
		w := newWorld(t)
		w.sim.SetPendingPolls(1 << 30)
		rec := &recorder{}
		_, err := w.mover(t, rec, func(o *Options) {
			o.Timeout = func(int32) time.Duration { return 50 * time.Millisecond }
		}).Run(ctx, w.instance)
		if err == nil || !strings.Contains(err.Error(), "did not complete within") || !strings.Contains(err.Error(), "re-run the case") {
			t.Fatalf("error %v; want a timeout that says so and what to do", err)
		}
		// Every snapshot made so far is listed for clean-up, not only the one waited for.
		var ce *CreatedError
		if !errors.As(err, &ce) || len(ce.Created) != 3 {
			t.Fatalf("error %v lists %v; want the 3 originals", err, ce)
		}
		for _, s := range rec.steps {
			if s.Action == ActionCreate && !slices.Contains(ce.Created, s.Details["snapshot"]) {
				t.Errorf("snapshot %s created but not listed in %v", s.Details["snapshot"], ce.Created)
			}
		}
		if rec.count(ActionState, true) != 1 {
			t.Fatalf("%d failed state steps; want the timeout recorded once: %+v", rec.count(ActionState, true), rec.steps)
		}
		for _, s := range rec.steps {
			if s.Action == ActionState && (s.Details["state"] != "pending" || !strings.Contains(s.Err.Error(), "did not complete within")) {
				t.Errorf("timeout recorded as %+v", s)
			}
		}
	})
}

// erroringEC2 reports the forensics copies of one volume in the error
// state, as EC2 does when a copy fails after CopySnapshot succeeded.
type erroringEC2 struct {
	ec2API
	mu     sync.Mutex
	failed map[string]bool // snapshot IDs to report as error
	volume string          // whose copies fail, while failing is set
	on     bool
}

func (e *erroringEC2) CopySnapshot(ctx context.Context, in *ec2.CopySnapshotInput, o ...func(*ec2.Options)) (*ec2.CopySnapshotOutput, error) {
	out, err := e.ec2API.CopySnapshot(ctx, in, o...)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil && e.on {
		for _, sp := range in.TagSpecifications {
			if tagMap(sp.Tags)[TagSourceVolume] == e.volume {
				e.failed[aws.ToString(out.SnapshotId)] = true
			}
		}
	}
	return out, err
}

func (e *erroringEC2) DescribeSnapshots(ctx context.Context, in *ec2.DescribeSnapshotsInput, o ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error) {
	out, err := e.ec2API.DescribeSnapshots(ctx, in, o...)
	return markFailed(&e.mu, e.failed, "simulated copy failure", out, err)
}

// markFailed shows the snapshots of a DescribeSnapshots answer that failed
// holds in the error state, with msg, as EC2 does after a failure.
func markFailed(mu *sync.Mutex, failed map[string]bool, msg string, out *ec2.DescribeSnapshotsOutput, err error) (*ec2.DescribeSnapshotsOutput, error) {
	if err != nil {
		return out, err
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range out.Snapshots {
		if failed[aws.ToString(out.Snapshots[i].SnapshotId)] {
			out.Snapshots[i].State = ec2types.SnapshotStateError
			out.Snapshots[i].StateMessage = aws.String(msg)
		}
	}
	return out, nil
}

// TestCopyInErrorState: a forensics copy that ends in the error state is
// recorded so, and a re-run makes a new one rather than adopting it.
func TestCopyInErrorState(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	vol := w.volumes["/dev/sdg"].ID()
	fe := &erroringEC2{ec2API: ec2.NewFromConfig(w.forensics), failed: map[string]bool{}, volume: vol, on: true}
	mover := func(rec *recorder) *Mover {
		o := NewOptions()
		o.CaseID, o.Region, o.ForensicsKMSKey, o.MemberKMSKey = "IR-7", w.sim.Region(), w.forensicsKey, w.memberKey
		o.PollInterval, o.Record = 5*time.Millisecond, rec.record
		m, err := New(NewAccount(memberID, w.member), Account{ID: forensicsID, EC2: fe, KMS: kms.NewFromConfig(w.forensics)}, o)
		must(t, err)
		return m
	}
	rec := &recorder{}
	res, err := mover(rec).Run(ctx, w.instance)
	if err == nil || !strings.Contains(err.Error(), "simulated copy failure") || !strings.Contains(err.Error(), "re-run the case") {
		t.Fatalf("error %v; want the copy's failure and what to do", err)
	}
	dead := res.volume(vol).Forensics
	var recorded bool
	for _, s := range rec.steps {
		if s.Action == ActionState && s.Details["snapshot"] == dead {
			recorded = s.Err != nil && s.Details["state"] == "error" && s.Details["state_message"] == "simulated copy failure"
		}
	}
	if dead == "" || !recorded {
		t.Fatalf("copy %s in error state not recorded as such: %+v", dead, rec.steps)
	}

	fe.mu.Lock()
	fe.on = false
	fe.mu.Unlock()
	rec2 := &recorder{}
	res2, err := mover(rec2).Run(ctx, w.instance)
	must(t, err)
	if got := res2.volume(vol).Forensics; got == dead || got == "" {
		t.Errorf("re-run kept copy %q; want a new one instead of %s", got, dead)
	}
	for _, s := range rec2.steps {
		if s.Details["snapshot"] == dead && s.Action == ActionFound {
			t.Errorf("re-run adopted the dead copy %s", dead)
		}
	}
	if rec2.count(ActionCopy, false) != 1 || rec2.count(ActionFound, false) != 5 {
		t.Errorf("re-run: %d copies, %d found; want 1 new copy and the 5 other snapshots found", rec2.count(ActionCopy, false), rec2.count(ActionFound, false))
	}
}

// TestDefaultForensicsKeyRecorded: without --forensics-kms-key, the copy is
// recorded with the key EC2 actually used, the account's default EBS key.
func TestDefaultForensicsKeyRecorded(t *testing.T) {
	w := newWorld(t)
	rec := &recorder{}
	res, err := w.mover(t, rec, func(o *Options) { o.ForensicsKMSKey = "" }).Run(context.Background(), w.instance)
	must(t, err)
	want := w.sim.Account(forensicsID).EBSDefaultKeyARN()
	if want == "" {
		t.Fatal("the simulator has no default EBS key")
	}
	for _, s := range rec.steps {
		if (s.Action == ActionCopy && s.Details["purpose"] == PurposeForensics || s.Action == ActionState && s.Details["role"] == RoleForensics) &&
			s.Details["kms_key"] != want {
			t.Errorf("%s of %s recorded key %q; want the default key %s", s.Action, s.Details["snapshot"], s.Details["kms_key"], want)
		}
	}
	for _, v := range res.Volumes {
		if v.ForensicsKMSKey != want {
			t.Errorf("volume %s: forensics key %q, want %s", v.VolumeID, v.ForensicsKMSKey, want)
		}
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// inFlight counts the CopySnapshot calls under way at once. Calls are held
// until limit of them are under way (or hold passes), so that a pool that
// allowed more than limit would show it, and the maximum is exact.
type inFlight struct {
	mu       sync.Mutex
	now, max int
	limit    int
	full     chan struct{} // closed once limit calls were under way together
	closed   bool
	hold     time.Duration
}

func (f *inFlight) attach(cfg *aws.Config) {
	cfg.APIOptions = append(cfg.APIOptions, func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("countCopies",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				if awsmiddleware.GetOperationName(ctx) != "CopySnapshot" {
					return next.HandleInitialize(ctx, in)
				}
				f.mu.Lock()
				f.now++
				f.max = max(f.max, f.now)
				if f.now == f.limit && !f.closed {
					close(f.full)
					f.closed = true
				}
				f.mu.Unlock()
				select {
				case <-f.full:
				case <-time.After(f.hold):
				}
				defer func() {
					f.mu.Lock()
					f.now--
					f.mu.Unlock()
				}()
				return next.HandleInitialize(ctx, in)
			}), middleware.After)
	})
}

// TestAtMost20ConcurrentCopies: an instance with 25 volumes is moved with
// never more than 20 copies under way at once, and 20 are.
func TestAtMost20ConcurrentCopies(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	m := w.sim.Account(memberID)
	var devs []awssim.Device
	for i := range 25 {
		v, err := m.CreateVolume(awssim.VolumeOptions{SizeGiB: 1})
		must(t, err)
		must(t, v.WriteRandom(0, awssim.BlockSize, uint64(i)))
		devs = append(devs, awssim.Device{Name: fmt.Sprintf("/dev/sd%c", 'f'+i), Volume: v})
	}
	inst, err := m.RunInstance(awssim.InstanceOptions{Devices: devs})
	must(t, err)
	f := &inFlight{limit: MaxConcurrentCopies, full: make(chan struct{}), hold: 10 * time.Second}
	fcfg := w.forensics.Copy()
	f.attach(&fcfg)
	o := NewOptions()
	o.CaseID, o.Region, o.ForensicsKMSKey, o.PollInterval = "IR-20", w.sim.Region(), w.forensicsKey, 5*time.Millisecond
	rec := &recorder{}
	o.Record = rec.record
	o.MaxConcurrentCopies = 100 // more than EC2 allows: capped
	mv, err := New(NewAccount(memberID, w.member), NewAccount(forensicsID, fcfg), o)
	must(t, err)
	res, err := mv.Run(ctx, inst.ID())
	must(t, err)
	if len(res.Volumes) != 25 || rec.count(ActionCopy, false) != 25 {
		t.Fatalf("%d volumes, %d copies; want 25 of each", len(res.Volumes), rec.count(ActionCopy, false))
	}
	if f.max != MaxConcurrentCopies {
		t.Errorf("at most %d copies were under way at once; want exactly %d", f.max, MaxConcurrentCopies)
	}
}

// TestShareThroughMoto runs impound's own sharing code against moto:
// ModifySnapshotAttribute with OperationType=add and UserIds, checked with
// DescribeSnapshotAttribute, then removed again.
func TestShareThroughMoto(t *testing.T) {
	ep := testenv.Server(t, "IMPOUND_TEST_MOTO_ENDPOINT")
	ctx := context.Background()
	const motoAccount, motoForensics = "123456789012", "210987654321"
	cfg := aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(ep),
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		Retryer:     func() aws.Retryer { return retry.NewStandard() }}
	c := ec2.NewFromConfig(cfg)
	vol, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1)})
	must(t, err)
	snap, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: vol.VolumeId, Description: aws.String("impound moto share test")})
	must(t, err)
	id := aws.ToString(snap.SnapshotId)
	t.Cleanup(func() {
		_, _ = c.DeleteSnapshot(context.Background(), &ec2.DeleteSnapshotInput{SnapshotId: snap.SnapshotId})
		_, _ = c.DeleteVolume(context.Background(), &ec2.DeleteVolumeInput{VolumeId: vol.VolumeId})
	})
	rec := &recorder{}
	o := NewOptions()
	o.CaseID, o.Region, o.Record = "IR-MOTO", "us-east-1", rec.record
	m, err := New(NewAccount(motoAccount, cfg), NewAccount(motoForensics, cfg), o)
	must(t, err)

	perms := func() []string {
		a, err := c.DescribeSnapshotAttribute(ctx, &ec2.DescribeSnapshotAttributeInput{SnapshotId: aws.String(id),
			Attribute: ec2types.SnapshotAttributeNameCreateVolumePermission})
		must(t, err)
		var users []string
		for _, p := range a.CreateVolumePermissions {
			users = append(users, aws.ToString(p.UserId))
		}
		return users
	}
	must(t, m.share(ctx, id, "", true))
	if got := perms(); len(got) != 1 || got[0] != motoForensics {
		t.Fatalf("after sharing, createVolumePermission users %v; want [%s]", got, motoForensics)
	}
	must(t, m.share(ctx, id, "", false))
	if got := perms(); len(got) != 0 {
		t.Fatalf("after unsharing, createVolumePermission users %v; want none", got)
	}
	if rec.count(ActionShare, false) != 1 || rec.count(ActionUnshare, false) != 1 {
		t.Errorf("recorded %+v; want one share and one unshare", rec.steps)
	}
}

// TestIntermediateInErrorStateDeleted: an intermediate (member-account)
// copy of an aws/ebs snapshot that ends in the error state is deleted and
// recorded by the next run, so the member account keeps nothing of the
// case but its originals.
func TestIntermediateInErrorStateDeleted(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	vol := w.volumes["/dev/sdf"].ID() // aws/ebs: copied to an intermediate first
	me := &erroringEC2{ec2API: ec2.NewFromConfig(w.member), failed: map[string]bool{}, volume: vol, on: true}
	// The first run cannot delete it either (as if killed before its
	// clean-up): the next run must find it.
	nd := &noDelete{erroringEC2: me, on: true}
	mover := func(rec *recorder) *Mover {
		o := NewOptions()
		o.CaseID, o.Region, o.ForensicsKMSKey, o.MemberKMSKey = "IR-8", w.sim.Region(), w.forensicsKey, w.memberKey
		o.PollInterval, o.Record = 5*time.Millisecond, rec.record
		m, err := New(Account{ID: memberID, EC2: nd, KMS: kms.NewFromConfig(w.member)}, NewAccount(forensicsID, w.forensics), o)
		must(t, err)
		return m
	}
	if _, err := mover(&recorder{}).Run(ctx, w.instance); err == nil {
		t.Fatal("the run succeeded although the intermediate copy failed")
	}
	me.mu.Lock()
	dead := slices.Collect(maps.Keys(me.failed))
	me.on, nd.on = false, false
	me.mu.Unlock()
	rec := &recorder{}
	if _, err := mover(rec).Run(ctx, w.instance); err != nil {
		t.Fatalf("re-run: %v", err)
	}
	if len(dead) == 0 {
		t.Fatal("no intermediate copy was made to fail")
	}
	for _, id := range dead {
		var deleted bool
		for _, s := range rec.steps {
			deleted = deleted || s.Action == ActionDeleteIntermediate && s.Details["snapshot"] == id && s.Err == nil && s.Details["leftover"] == "true"
		}
		if !deleted {
			t.Errorf("failed intermediate %s: no recorded deletion", id)
		}
	}
	out, err := ec2.NewFromConfig(w.member).DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("tag:" + TagCase), Values: []string{"IR-8"}}}})
	must(t, err)
	for _, sn := range out.Snapshots {
		if role := tagMap(sn.Tags)[TagRole]; role != RoleOriginal {
			t.Errorf("member account keeps %s snapshot %s of the case", role, aws.ToString(sn.SnapshotId))
		}
	}
}

// noDelete refuses DeleteSnapshot while on.
type noDelete struct {
	*erroringEC2
	on bool
}

func (n *noDelete) DeleteSnapshot(ctx context.Context, in *ec2.DeleteSnapshotInput, o ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error) {
	if n.on {
		return nil, errors.New("connection reset")
	}
	return n.erroringEC2.DeleteSnapshot(ctx, in, o...)
}
