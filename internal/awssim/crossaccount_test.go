package awssim_test

import (
	"context"
	"errors"
	"io"
	"net/http"
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
	if err := root.WriteRandom(0, 3<<20, 1); err != nil {
		t.Fatal(err)
	}
	if err := data.WriteRandom(0, 5<<20+123, 2); err != nil { // partial last block
		t.Fatal(err)
	}
	if err := data.WriteRandom(1<<30+100<<10, 3<<20, 3); err != nil { // unaligned
		t.Fatal(err)
	}
	inst, err := e.member.RunInstance(awssim.InstanceOptions{Devices: []awssim.Device{
		{Name: "/dev/xvda", Volume: root}, {Name: "/dev/sdf", Volume: data},
	}, Tags: map[string]string{"Name": "web-1"}})
	if err != nil {
		t.Fatal(err)
	}
	wantSum := map[string]string{}
	for _, v := range []*awssim.Volume{root, data} {
		img, err := v.Image()
		if err != nil {
			t.Fatal(err)
		}
		wantSum[v.ID()] = sha256Of(t, img)
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
		sum, n, err := readImage(ctx, ebs.NewFromConfig(e.cfg(e.forensics)), *ev.SnapshotId)
		if err != nil {
			t.Fatal(err)
		}
		if sum != wantSum[*s.VolumeId] {
			t.Fatalf("image of %s via %s: sha256 %s, want %s", *s.VolumeId, *ev.SnapshotId, sum, wantSum[*s.VolumeId])
		}
		if wantN := map[string]int{root.ID(): 6, data.ID(): 11 + 7}[*s.VolumeId]; n != wantN {
			t.Fatalf("read %d blocks of %s, want %d", n, *s.VolumeId, wantN)
		}
	}
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
