package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/impound-ir/impound/internal/awssim"
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
		ActionCopy: 4, ActionDeleteIntermediate: 1} {
		if got := rec.count(action, false); got != n {
			t.Errorf("%d successful %s steps recorded, want %d", got, action, n)
		}
	}
	for _, s := range rec.steps {
		if s.Err != nil {
			t.Errorf("step %s failed: %v", s.Action, s.Err)
		}
	}

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
	if len(rec2.steps) != 0 {
		t.Errorf("re-run recorded %d steps, want none: %+v", len(rec2.steps), rec2.steps)
	}
}

func tagMap(tags []ec2types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
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
	t.Run("forensics key unusable", func(t *testing.T) {
		w := newWorld(t)
		rec := &recorder{}
		_, err := w.mover(t, rec, func(o *Options) { o.ForensicsKMSKey = w.strayKey }).Run(ctx, w.instance)
		if err == nil || !strings.Contains(err.Error(), "copy into forensics account") {
			t.Fatalf("error %v; want a failed forensics copy", err)
		}
		if rec.count(ActionCopy, true) == 0 {
			t.Errorf("failed copies not recorded: %+v", rec.steps)
		}
		// Clean-up still ran: grants retired, shares removed.
		if rec.count(ActionRetireGrant, false) != 2 || rec.count(ActionUnshare, false) != 3 {
			t.Errorf("clean-up after failure: %d retired grants, %d unshares", rec.count(ActionRetireGrant, false), rec.count(ActionUnshare, false))
		}
	})
	t.Run("snapshot never completes", func(t *testing.T) {
		w := newWorld(t)
		w.sim.SetPendingPolls(1 << 30)
		_, err := w.mover(t, &recorder{}, func(o *Options) {
			o.Timeout = func(int32) time.Duration { return 50 * time.Millisecond }
		}).Run(ctx, w.instance)
		if err == nil || !strings.Contains(err.Error(), "did not complete within") {
			t.Fatalf("error %v; want a timeout that says so", err)
		}
	})
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
