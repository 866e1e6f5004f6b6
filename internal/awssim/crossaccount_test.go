package awssim_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/internal/awssim/simtest"
)

func TestSTSIdentityAndAssumeRole(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id, err := sts.NewFromConfig(e.cfg(e.forensics)).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if *id.Account != forensicsID || *id.Arn != e.forensics.UserARN() {
		t.Fatalf("identity = %s %s", *id.Account, *id.Arn)
	}
	member := e.assume(t, e.cfg(e.forensics), e.member.RoleARN("ImpoundResponder"), "alice@case-42")
	id, err = sts.NewFromConfig(member).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "arn:aws:sts::" + memberID + ":assumed-role/ImpoundResponder/alice@case-42"; *id.Account != memberID || *id.Arn != want {
		t.Fatalf("assumed identity = %s %s, want %s", *id.Account, *id.Arn, want)
	}
	if !strings.HasSuffix(*id.UserId, ":alice@case-42") || !strings.HasPrefix(*id.UserId, "AROA") {
		t.Fatalf("assumed user id = %s", *id.UserId)
	}

	// An assumed role acts in its account: it sees the member's instances.
	inst, err := e.member.RunInstance(awssim.InstanceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	di, err := ec2.NewFromConfig(member).DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(di.Reservations) != 1 || *di.Reservations[0].Instances[0].InstanceId != inst.ID() {
		t.Fatalf("member instances = %+v", di.Reservations)
	}

	// Unknown keys and unknown accounts are refused in STS's format.
	bad := e.ClientConfig(awssim.Credentials{AccessKeyID: "AKIAUNKNOWN", SecretAccessKey: "x"})
	bad.RetryMaxAttempts = 1
	_, err = sts.NewFromConfig(bad).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	wantCode(t, err, "InvalidClientTokenId")
	_, err = sts.NewFromConfig(e.cfg(e.member)).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String("arn:aws:iam::999999999999:role/x"), RoleSessionName: aws.String("s1")})
	wantCode(t, err, "AccessDenied")
	_, err = sts.NewFromConfig(e.cfg(e.member)).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(e.forensics.RoleARN("x")), RoleSessionName: aws.String("bad name!")})
	wantCode(t, err, "ValidationError")
}

func TestExpiredCredentials(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	out, err := sts.NewFromConfig(e.cfg(e.forensics)).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(e.member.RoleARN("r")), RoleSessionName: aws.String("s1")})
	if err != nil {
		t.Fatal(err)
	}
	creds := awssim.Credentials{AccessKeyID: *out.Credentials.AccessKeyId, SecretAccessKey: *out.Credentials.SecretAccessKey, SessionToken: *out.Credentials.SessionToken}
	cfg := e.ClientConfig(creds)
	cfg.RetryMaxAttempts = 1
	if _, err := ec2.NewFromConfig(cfg).DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{}); err != nil {
		t.Fatalf("fresh session: %v", err)
	}
	// Without its session token the key is not valid.
	noTok := cfg.Copy()
	noTok.Credentials = e.ClientConfig(awssim.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey}).Credentials
	_, err = ec2.NewFromConfig(noTok).DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{})
	wantCode(t, err, "AuthFailure")

	e.Sim.ExpireSessions()
	_, err = ec2.NewFromConfig(cfg).DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{})
	wantCode(t, err, "RequestExpired")
	_, err = sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	wantCode(t, err, "ExpiredToken")
	_, err = ebs.NewFromConfig(cfg).ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String("snap-0123456789abcdef0")})
	wantCode(t, err, "ExpiredTokenException")
	// Long-term keys never expire.
	if _, err := sts.NewFromConfig(e.cfg(e.member)).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err != nil {
		t.Fatal(err)
	}
}

// TestCrossAccountAcquisition takes the path impound takes: snapshot the
// compromised instance in the member account, copy re-encrypting under a
// key shared with the forensics account, share, copy again inside the
// forensics account under its own key, and read every block through EBS
// direct. Each block's checksum and the whole image's SHA-256 must equal
// the seeded data's.
func TestCrossAccountAcquisition(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	transfer, err := e.member.CreateKey(awssim.KeyOptions{Description: "impound transfer", AllowAccounts: []string{forensicsID}})
	if err != nil {
		t.Fatal(err)
	}
	evidence, err := e.forensics.CreateKey(awssim.KeyOptions{Alias: "alias/impound-evidence"})
	if err != nil {
		t.Fatal(err)
	}
	root, err := e.member.CreateVolume(awssim.VolumeOptions{SizeGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	data, err := e.member.CreateVolume(awssim.VolumeOptions{SizeGiB: 2, Encryption: awssim.EncryptionDefault, Tags: map[string]string{"Name": "data"}})
	if err != nil {
		t.Fatal(err)
	}
	// The expected images are computed from the seeded generator alone,
	// not read back from the simulator.
	want := map[string]*seededImage{root.ID(): newSeededImage(1), data.ID(): newSeededImage(2)}
	for _, w := range []struct {
		v      *awssim.Volume
		off, n int64
		seed   uint64
	}{
		{root, 0, 3 << 20, 1},
		{data, 0, 5<<20 + 123, 2},           // partial last block
		{data, 1<<30 + 100<<10, 3 << 20, 3}, // unaligned
	} {
		if err := w.v.WriteRandom(w.off, w.n, w.seed); err != nil {
			t.Fatal(err)
		}
		want[w.v.ID()].writeRandom(t, w.off, w.n, w.seed)
	}
	inst, err := e.member.RunInstance(awssim.InstanceOptions{Devices: []awssim.Device{
		{Name: "/dev/xvda", Volume: root}, {Name: "/dev/sdf", Volume: data},
	}, Tags: map[string]string{"Name": "web-1"}})
	if err != nil {
		t.Fatal(err)
	}
	wantSum := map[string]string{}
	for id, img := range want {
		wantSum[id] = img.sha256()
	}

	member := ec2.NewFromConfig(e.assume(t, e.cfg(e.forensics), e.member.RoleARN("ImpoundResponder"), "case-7"))
	forensics := ec2.NewFromConfig(e.cfg(e.forensics))

	cs, err := member.CreateSnapshots(ctx, &ec2.CreateSnapshotsInput{
		InstanceSpecification: &types.InstanceSpecification{InstanceId: aws.String(inst.ID())},
		Description:           aws.String("impound case-7"),
		CopyTagsFromSource:    types.CopyTagsFromSourceVolume,
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot,
			Tags: []types.Tag{{Key: aws.String("impound:case"), Value: aws.String("case-7")}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.Snapshots) != 2 {
		t.Fatalf("CreateSnapshots made %d snapshots, want 2", len(cs.Snapshots))
	}
	// Writes after the snapshot must not show in it.
	if _, err := data.WriteAt([]byte("written after the snapshot"), 0); err != nil {
		t.Fatal(err)
	}

	for _, s := range cs.Snapshots {
		if s.State != types.SnapshotStatePending {
			t.Errorf("new snapshot state %s, want pending", s.State)
		}
		waitCompleted(t, member, *s.SnapshotId)
		src := *s.SnapshotId
		d, err := member.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{src}})
		if err != nil {
			t.Fatal(err)
		}
		got := d.Snapshots[0]
		if *got.VolumeId != *s.VolumeId || *got.OwnerId != memberID || got.State != types.SnapshotStateCompleted || *got.Progress != "100%" || got.StartTime == nil {
			t.Fatalf("described snapshot %+v", got)
		}
		tags := map[string]string{}
		for _, tg := range got.Tags {
			tags[*tg.Key] = *tg.Value
		}
		if tags["impound:case"] != "case-7" || (*s.VolumeId == data.ID() && tags["Name"] != "data") {
			t.Fatalf("snapshot tags %v", tags)
		}
		if *s.VolumeId == data.ID() {
			if !*got.Encrypted || *got.KmsKeyId != e.member.EBSDefaultKeyARN() {
				t.Fatalf("data snapshot encryption %v %v", *got.Encrypted, aws.ToString(got.KmsKeyId))
			}
			// Snapshots under aws/ebs cannot be shared.
			_, err := member.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{
				SnapshotId: &src, Attribute: types.SnapshotAttributeNameCreateVolumePermission,
				CreateVolumePermission: &types.CreateVolumePermissionModifications{Add: []types.CreateVolumePermission{{UserId: aws.String(forensicsID)}}},
			})
			wantCode(t, err, "OperationNotPermitted")
		}

		// Copy under the transfer key, which the forensics account may use.
		cp, err := member.CopySnapshot(ctx, &ec2.CopySnapshotInput{
			SourceSnapshotId: &src, SourceRegion: aws.String("eu-west-1"),
			Encrypted: aws.Bool(true), KmsKeyId: aws.String(transfer.ARN()),
			Description: aws.String("impound transfer copy"),
		})
		if err != nil {
			t.Fatal(err)
		}
		waitCompleted(t, member, *cp.SnapshotId)

		// Unshared: invisible to the forensics account, through EC2 and EBS.
		_, err = forensics.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{*cp.SnapshotId}})
		wantCode(t, err, "InvalidSnapshot.NotFound")
		_, err = ebs.NewFromConfig(e.cfg(e.forensics)).ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: cp.SnapshotId})
		var nf *ebstypes.ResourceNotFoundException
		if !errors.As(err, &nf) {
			t.Fatalf("unshared EBS read: %v, want ResourceNotFoundException", err)
		}

		if _, err := member.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{
			SnapshotId: cp.SnapshotId, Attribute: types.SnapshotAttributeNameCreateVolumePermission,
			OperationType: types.OperationTypeAdd, UserIds: []string{forensicsID},
		}); err != nil {
			t.Fatal(err)
		}
		attr, err := member.DescribeSnapshotAttribute(ctx, &ec2.DescribeSnapshotAttributeInput{
			SnapshotId: cp.SnapshotId, Attribute: types.SnapshotAttributeNameCreateVolumePermission})
		if err != nil {
			t.Fatal(err)
		}
		if len(attr.CreateVolumePermissions) != 1 || *attr.CreateVolumePermissions[0].UserId != forensicsID {
			t.Fatalf("permissions %+v", attr.CreateVolumePermissions)
		}

		shared, err := forensics.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{RestorableByUserIds: []string{"self"}, OwnerIds: []string{memberID}})
		if err != nil {
			t.Fatal(err)
		}
		if len(shared.Snapshots) != 1 || *shared.Snapshots[0].SnapshotId != *cp.SnapshotId || *shared.Snapshots[0].KmsKeyId != transfer.ARN() {
			t.Fatalf("shared snapshots seen by forensics: %+v", shared.Snapshots)
		}

		// Copy again inside the forensics account under its own key.
		ev, err := forensics.CopySnapshot(ctx, &ec2.CopySnapshotInput{
			SourceSnapshotId: cp.SnapshotId, SourceRegion: aws.String("eu-west-1"),
			Encrypted: aws.Bool(true), KmsKeyId: aws.String("alias/impound-evidence"),
		})
		if err != nil {
			t.Fatal(err)
		}
		waitCompleted(t, forensics, *ev.SnapshotId)
		d, err = forensics.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, s := range d.Snapshots {
			if *s.SnapshotId == *ev.SnapshotId {
				found = *s.OwnerId == forensicsID && *s.Encrypted && *s.KmsKeyId == evidence.ARN() && *s.VolumeSize == *got.VolumeSize
			}
		}
		if !found {
			t.Fatalf("evidence copy not owned/encrypted as expected: %+v", d.Snapshots)
		}

		// The member unshares its copy; the evidence copy stays readable.
		if _, err := member.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{
			SnapshotId: cp.SnapshotId, Attribute: types.SnapshotAttributeNameCreateVolumePermission,
			OperationType: types.OperationTypeRemove, UserIds: []string{forensicsID},
		}); err != nil {
			t.Fatal(err)
		}
		read, err := readSnapshotBlocks(ctx, ebs.NewFromConfig(e.cfg(e.forensics)), *ev.SnapshotId)
		if err != nil {
			t.Fatal(err)
		}
		w := want[*s.VolumeId]
		if read.size != w.size {
			t.Fatalf("image of %s via %s: %d bytes, want %d", *s.VolumeId, *ev.SnapshotId, read.size, w.size)
		}
		wantSums := w.checksums()
		if wantN := map[string]int{root.ID(): 6, data.ID(): 11 + 7}[*s.VolumeId]; len(read.blocks) != wantN || len(wantSums) != wantN {
			t.Fatalf("read %d blocks of %s, the seeded writes cover %d, want %d", len(read.blocks), *s.VolumeId, len(wantSums), wantN)
		}
		for idx, sum := range wantSums {
			b, ok := read.blocks[idx]
			if !ok {
				t.Fatalf("block %d of %s not listed", idx, *s.VolumeId)
			}
			if b.checksum != sum || checksumOf(b.data) != sum {
				t.Fatalf("block %d of %s: checksum header %s, data's %s, want %s", idx, *s.VolumeId, b.checksum, checksumOf(b.data), sum)
			}
		}
		if sum := read.sha256(); sum != wantSum[*s.VolumeId] {
			t.Fatalf("image of %s via %s: sha256 %s, want %s", *s.VolumeId, *ev.SnapshotId, sum, wantSum[*s.VolumeId])
		}
	}
}

// ebsBlockSize is EBS direct's block size, stated here rather than taken
// from the simulator.
const ebsBlockSize = 512 << 10

// seededImage is a volume's content as a test expects it: its written
// 512 KiB blocks, zeros elsewhere. It is built from the seeded generator
// and the offsets written, independently of the simulator's block map and
// image reader, or filled from what EBS direct returned.
type seededImage struct {
	size   int64
	blocks map[int32]seededBlock
}

type seededBlock struct {
	data     []byte
	checksum string // what GetSnapshotBlock said; empty for expected blocks
}

func newSeededImage(sizeGiB int64) *seededImage {
	return &seededImage{size: sizeGiB << 30, blocks: map[int32]seededBlock{}}
}

// writeRandom applies what Volume.WriteRandom(off, n, seed) writes.
func (m *seededImage) writeRandom(t *testing.T, off, n int64, seed uint64) {
	t.Helper()
	data, err := io.ReadAll(awssim.RandomReader(seed, n))
	if err != nil || int64(len(data)) != n {
		t.Fatalf("RandomReader(%d, %d): %d bytes, %v", seed, n, len(data), err)
	}
	for len(data) > 0 {
		idx := int32(off / ebsBlockSize)
		b, ok := m.blocks[idx]
		if !ok {
			b.data = make([]byte, ebsBlockSize)
		}
		k := copy(b.data[off%ebsBlockSize:], data)
		m.blocks[idx] = b
		data = data[k:]
		off += int64(k)
	}
}

// checksums returns each written block's base64 SHA-256, as EBS direct
// gives it.
func (m *seededImage) checksums() map[int32]string {
	out := map[int32]string{}
	for idx, b := range m.blocks {
		out[idx] = checksumOf(b.data)
	}
	return out
}

// sha256 returns the hex SHA-256 of the whole image.
func (m *seededImage) sha256() string {
	idx := make([]int32, 0, len(m.blocks))
	for i := range m.blocks {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	h := sha256.New()
	var pos int64
	for _, i := range idx {
		off := int64(i) * ebsBlockSize
		writeZeros(h, off-pos)
		h.Write(m.blocks[i].data)
		pos = off + ebsBlockSize
	}
	writeZeros(h, m.size-pos)
	return hex.EncodeToString(h.Sum(nil))
}

func checksumOf(data []byte) string {
	sum := sha256.Sum256(data)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// readSnapshotBlocks reads every block of a snapshot through EBS direct,
// keeping each block's data and the checksum GetSnapshotBlock sent with it.
func readSnapshotBlocks(ctx context.Context, c *ebs.Client, snap string) (*seededImage, error) {
	img := &seededImage{blocks: map[int32]seededBlock{}}
	p := ebs.NewListSnapshotBlocksPaginator(c, &ebs.ListSnapshotBlocksInput{SnapshotId: &snap, MaxResults: aws.Int32(100)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list blocks of %s: %w", snap, err)
		}
		if aws.ToInt32(out.BlockSize) != ebsBlockSize {
			return nil, fmt.Errorf("%s: block size %d, want %d", snap, aws.ToInt32(out.BlockSize), ebsBlockSize)
		}
		img.size = aws.ToInt64(out.VolumeSize) << 30
		for _, b := range out.Blocks {
			idx := aws.ToInt32(b.BlockIndex)
			if _, dup := img.blocks[idx]; dup {
				return nil, fmt.Errorf("%s: block %d listed twice", snap, idx)
			}
			blk, err := c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: &snap, BlockIndex: b.BlockIndex, BlockToken: b.BlockToken})
			if err != nil {
				return nil, fmt.Errorf("get block %d of %s: %w", idx, snap, err)
			}
			data, err := io.ReadAll(blk.BlockData)
			blk.BlockData.Close()
			if err != nil {
				return nil, fmt.Errorf("read block %d of %s: %w", idx, snap, err)
			}
			if len(data) != ebsBlockSize || aws.ToInt32(blk.DataLength) != ebsBlockSize || blk.ChecksumAlgorithm != ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256 {
				return nil, fmt.Errorf("block %d of %s: %d bytes, DataLength %d, algorithm %q", idx, snap, len(data), aws.ToInt32(blk.DataLength), blk.ChecksumAlgorithm)
			}
			img.blocks[idx] = seededBlock{data: data, checksum: aws.ToString(blk.Checksum)}
		}
	}
	return img, nil
}

func TestSharingEnforcement(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v, _ := e.member.CreateVolume(awssim.VolumeOptions{SizeGiB: 1})
	if err := v.WriteRandom(0, awssim.BlockSize, 9); err != nil {
		t.Fatal(err)
	}
	member := ec2.NewFromConfig(e.cfg(e.member))
	forensics := ec2.NewFromConfig(e.cfg(e.forensics))
	snap, err := member.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(v.ID())})
	if err != nil {
		t.Fatal(err)
	}
	all, err := forensics.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Snapshots) != 0 {
		t.Fatalf("forensics sees unshared snapshots %+v", all.Snapshots)
	}
	_, err = forensics.CopySnapshot(ctx, &ec2.CopySnapshotInput{SourceSnapshotId: snap.SnapshotId, SourceRegion: aws.String("eu-west-1")})
	wantCode(t, err, "InvalidSnapshot.NotFound")
	_, err = forensics.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{SnapshotId: snap.SnapshotId,
		Attribute: types.SnapshotAttributeNameCreateVolumePermission, OperationType: types.OperationTypeAdd, UserIds: []string{forensicsID}})
	wantCode(t, err, "InvalidSnapshot.NotFound")
	_, err = forensics.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(v.ID())})
	wantCode(t, err, "InvalidVolume.NotFound")

	// Shared: visible and copyable, but not modifiable by the other account.
	if _, err := member.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{SnapshotId: snap.SnapshotId,
		Attribute: types.SnapshotAttributeNameCreateVolumePermission, OperationType: types.OperationTypeAdd, UserIds: []string{forensicsID}}); err != nil {
		t.Fatal(err)
	}
	_, err = forensics.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{SnapshotId: snap.SnapshotId,
		Attribute: types.SnapshotAttributeNameCreateVolumePermission, OperationType: types.OperationTypeAdd, UserIds: []string{"333333333333"}})
	wantCode(t, err, "UnauthorizedOperation")
	cp, err := forensics.CopySnapshot(ctx, &ec2.CopySnapshotInput{SourceSnapshotId: snap.SnapshotId, SourceRegion: aws.String("eu-west-1")})
	if err != nil {
		t.Fatal(err)
	}
	sum, _, err := readImage(ctx, ebs.NewFromConfig(e.cfg(e.forensics)), *cp.SnapshotId)
	if err != nil {
		t.Fatal(err)
	}
	img, _ := v.Image()
	if want := sha256Of(t, img); sum != want {
		t.Fatalf("copy image %s, want %s", sum, want)
	}

	// A snapshot under a key the other account may not use: shareable, but
	// neither copyable nor readable there.
	private, _ := e.member.CreateKey(awssim.KeyOptions{})
	pv, _ := e.member.CreateVolume(awssim.VolumeOptions{SizeGiB: 1, Encryption: awssim.EncryptionCMK, KMSKeyID: private.ID()})
	_ = pv.WriteRandom(0, 10, 1)
	ps, err := member.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(pv.ID())})
	if err != nil {
		t.Fatal(err)
	}
	waitCompleted(t, member, *ps.SnapshotId)
	if _, err := member.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{SnapshotId: ps.SnapshotId,
		Attribute: types.SnapshotAttributeNameCreateVolumePermission, OperationType: types.OperationTypeAdd, UserIds: []string{forensicsID}}); err != nil {
		t.Fatal(err)
	}
	_, err = forensics.CopySnapshot(ctx, &ec2.CopySnapshotInput{SourceSnapshotId: ps.SnapshotId, SourceRegion: aws.String("eu-west-1")})
	wantCode(t, err, "InvalidParameter")
	_, err = ebs.NewFromConfig(e.cfg(e.forensics)).ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: ps.SnapshotId})
	var ad *ebstypes.AccessDeniedException
	if !errors.As(err, &ad) {
		t.Fatalf("read under unusable key: %v, want AccessDeniedException", err)
	}
}

// TestSignatureChecked shows every service refuses a request signed with
// the wrong secret, in its own error format.
func TestSignatureChecked(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.member.Credentials()
	c.SecretAccessKey = "wrong" + c.SecretAccessKey[5:]
	cfg := e.ClientConfig(c)
	cfg.RetryMaxAttempts = 1
	_, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	wantCode(t, err, "SignatureDoesNotMatch")
	_, err = ec2.NewFromConfig(cfg).DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{})
	wantCode(t, err, "AuthFailure")
	_, err = kms.NewFromConfig(cfg).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/aws/ebs")})
	wantCode(t, err, "InvalidSignatureException")
	_, err = ebs.NewFromConfig(cfg).ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: aws.String("snap-0123456789abcdef0")})
	wantCode(t, err, "InvalidSignatureException")

	// Unsigned requests are refused too.
	rsp, err := http.Post(e.URL(), "application/x-www-form-urlencoded", strings.NewReader("Action=DescribeSnapshots&Version=2016-11-15"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	if rsp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "<Code>MissingAuthenticationToken</Code>") {
		t.Fatalf("unsigned: %d %s", rsp.StatusCode, body)
	}
}

func TestSessionDuration(t *testing.T) {
	var now atomicTime
	now.set(time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC))
	e := simtest.Start(t, awssim.Options{Now: now.get})
	member, forensics := e.Sim.AddAccount(memberID), e.Sim.AddAccount(forensicsID)
	ctx := context.Background()
	cfg := e.ClientConfig(forensics.Credentials())
	cfg.RetryMaxAttempts = 1
	e.Sim.SetSessionDuration(15 * time.Minute)
	out, err := sts.NewFromConfig(cfg).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(member.RoleARN("r")),
		RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(3600)})
	if err != nil {
		t.Fatal(err)
	}
	if want := now.get().Add(15 * time.Minute); !out.Credentials.Expiration.Equal(want) {
		t.Fatalf("expiration %v, want %v", out.Credentials.Expiration, want)
	}
	sc := e.ClientConfig(awssim.Credentials{AccessKeyID: *out.Credentials.AccessKeyId, SecretAccessKey: *out.Credentials.SecretAccessKey, SessionToken: *out.Credentials.SessionToken})
	sc.RetryMaxAttempts = 1
	kc := kms.NewFromConfig(sc)
	if _, err := kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/aws/ebs")}); err != nil {
		t.Fatal(err)
	}
	now.set(now.get().Add(15 * time.Minute))
	_, err = kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/aws/ebs")})
	wantCode(t, err, "ExpiredTokenException")
}

type atomicTime struct {
	mu sync.Mutex
	t  time.Time
}

func (a *atomicTime) get() time.Time  { a.mu.Lock(); defer a.mu.Unlock(); return a.t }
func (a *atomicTime) set(t time.Time) { a.mu.Lock(); defer a.mu.Unlock(); a.t = t }
