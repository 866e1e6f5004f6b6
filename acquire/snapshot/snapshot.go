// Package snapshot freezes an instance's EBS volumes and moves the snapshots
// into the forensics account, so the evidence belongs to the forensics
// account and not to the compromised one.
//
// # Guarantees
//
//   - Crash-consistent: all of an instance's volumes are snapshotted at once
//     with CreateSnapshots.
//   - The original snapshot is never deleted or modified beyond sharing it;
//     only intermediate copies that impound itself made are deleted.
//   - KMS access is granted with a grant, never by editing a key policy, and
//     every grant is retired when the forensics copy is complete.
//   - Every action (snapshot, copy, share, grant, delete) is reported to the
//     Recorder before the next one starts, succeeded or failed; if recording
//     fails, nothing further is done.
//   - Idempotent: every snapshot impound makes is tagged with the case, so a
//     second run finds the snapshots of the first instead of making new ones.
//   - On failure, the returned error lists what was created so far, so a
//     responder can clean up.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// Tag keys impound puts on every snapshot it makes.
const (
	TagCase           = "impound:case"
	TagSourceInstance = "impound:source-instance"
	TagSourceVolume   = "impound:source-volume"
	TagSourceSnapshot = "impound:source-snapshot"
	TagRole           = "impound:role" // RoleOriginal, RoleIntermediate or RoleForensics
)

// Values of TagRole.
const (
	RoleOriginal     = "original"     // in the member account, from CreateSnapshots
	RoleIntermediate = "intermediate" // member-account re-encryption of an aws/ebs snapshot; deleted when done
	RoleForensics    = "forensics"    // the copy the forensics account owns: what is acquired
)

// MaxConcurrentCopies is EC2's limit on concurrent snapshot copies per destination Region.
const MaxConcurrentCopies = 20

// Actions reported to the Recorder.
const (
	ActionCreate             = "snapshot.create"
	ActionCopy               = "snapshot.copy"
	ActionShare              = "snapshot.share"
	ActionUnshare            = "snapshot.unshare"
	ActionDeleteIntermediate = "snapshot.delete-intermediate"
	ActionGrant              = "kms.create-grant"
	ActionRetireGrant        = "kms.retire-grant"
)

// Purposes of a copy, in a copy step's "purpose" detail.
const (
	PurposeIntermediate = "re-encrypt an aws/ebs snapshot to a shareable key"
	PurposeForensics    = "forensics account copy"
)

// Step is one action taken on AWS resources, reported for the custody ledger.
type Step struct {
	Action    string
	Account   string   // the account the call was made in
	Resources []string // ARNs acted on
	Details   map[string]string
	Err       error // nil: succeeded
}

// Recorder records a step. An error stops the transfer: impound does nothing
// it cannot record.
type Recorder func(ctx context.Context, s Step) error

// ec2API is the part of EC2 this package uses, in either account.
type ec2API interface {
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeVolumes(context.Context, *ec2.DescribeVolumesInput, ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error)
	CreateSnapshots(context.Context, *ec2.CreateSnapshotsInput, ...func(*ec2.Options)) (*ec2.CreateSnapshotsOutput, error)
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	CopySnapshot(context.Context, *ec2.CopySnapshotInput, ...func(*ec2.Options)) (*ec2.CopySnapshotOutput, error)
	ModifySnapshotAttribute(context.Context, *ec2.ModifySnapshotAttributeInput, ...func(*ec2.Options)) (*ec2.ModifySnapshotAttributeOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
}

// kmsAPI is the part of KMS this package uses.
type kmsAPI interface {
	DescribeKey(context.Context, *kms.DescribeKeyInput, ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
	CreateGrant(context.Context, *kms.CreateGrantInput, ...func(*kms.Options)) (*kms.CreateGrantOutput, error)
	RetireGrant(context.Context, *kms.RetireGrantInput, ...func(*kms.Options)) (*kms.RetireGrantOutput, error)
}

// Account is one side of the transfer: its ID and clients built with its credentials.
type Account struct {
	ID  string
	EC2 ec2API
	KMS kmsAPI
}

// NewAccount builds an Account from an AWS configuration for that account.
func NewAccount(id string, cfg aws.Config) Account {
	return Account{ID: id, EC2: ec2.NewFromConfig(cfg), KMS: kms.NewFromConfig(cfg)}
}

// Options configures a Mover. Start from NewOptions.
type Options struct {
	CaseID string
	Region string
	// ForensicsKMSKey encrypts the forensics account's copy; empty means the
	// forensics account's default EBS key.
	ForensicsKMSKey string
	// MemberKMSKey is a customer-managed key in the member account, used to
	// re-encrypt snapshots encrypted with the AWS managed aws/ebs key, which
	// cannot be shared. Needed only for such volumes.
	MemberKMSKey string
	// PollInterval between DescribeSnapshots calls while waiting.
	PollInterval time.Duration
	// Timeout for one snapshot to complete, from its size in GiB.
	Timeout func(sizeGiB int32) time.Duration
	// MaxConcurrentCopies per destination Region (at most MaxConcurrentCopies).
	MaxConcurrentCopies int
	Record              Recorder
}

// NewOptions returns the defaults.
func NewOptions() Options {
	return Options{
		PollInterval:        15 * time.Second,
		Timeout:             DefaultTimeout,
		MaxConcurrentCopies: MaxConcurrentCopies,
		Record:              func(context.Context, Step) error { return nil },
	}
}

// DefaultTimeout allows 30 minutes plus 10 seconds per GiB (about 3 hours for 1 TiB).
func DefaultTimeout(sizeGiB int32) time.Duration {
	return 30*time.Minute + time.Duration(sizeGiB)*10*time.Second
}

// Mover takes snapshots in the member account and moves them to the forensics account.
type Mover struct {
	member, forensics Account
	o                 Options
}

// New returns a Mover. The member and forensics accounts may be the same
// account (a single-account deployment); the copy is then made in place.
func New(member, forensics Account, o Options) (*Mover, error) {
	if o.CaseID == "" {
		return nil, errors.New("snapshot: no case ID")
	}
	if o.Region == "" {
		return nil, errors.New("snapshot: no Region")
	}
	if o.MaxConcurrentCopies <= 0 || o.MaxConcurrentCopies > MaxConcurrentCopies {
		o.MaxConcurrentCopies = MaxConcurrentCopies
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 15 * time.Second
	}
	if o.Timeout == nil {
		o.Timeout = DefaultTimeout
	}
	if o.Record == nil {
		o.Record = func(context.Context, Step) error { return nil }
	}
	return &Mover{member: member, forensics: forensics, o: o}, nil
}

// Volume is one of the instance's volumes and what became of it.
type Volume struct {
	VolumeID   string `json:"volume_id"`
	DeviceName string `json:"device_name"`
	SizeGiB    int32  `json:"size_gib"`
	Encrypted  bool   `json:"encrypted"`
	KMSKeyID   string `json:"kms_key_id,omitempty"`

	// Original is the member-account snapshot taken by CreateSnapshots.
	Original string `json:"original_snapshot"`
	// Intermediate is the re-encrypted member-account copy (aws/ebs only), deleted when done.
	Intermediate string `json:"intermediate_snapshot,omitempty"`
	// Forensics is the forensics account's own copy: what to acquire.
	Forensics       string `json:"forensics_snapshot"`
	ForensicsKMSKey string `json:"forensics_kms_key,omitempty"`
}

// Result is what Freeze and Transfer produced.
type Result struct {
	InstanceID string   `json:"instance_id"`
	Volumes    []Volume `json:"volumes"`
}

// CreatedError is a failure after some resources were created; Created lists
// them (snapshot IDs and grant IDs with their accounts) for clean-up.
type CreatedError struct {
	Err     error
	Created []string
}

func (e *CreatedError) Error() string {
	if len(e.Created) == 0 {
		return e.Err.Error()
	}
	return fmt.Sprintf("%v (created so far, clean up if you abandon the case: %s)", e.Err, strings.Join(e.Created, ", "))
}

func (e *CreatedError) Unwrap() error { return e.Err }

// Run freezes the instance's volumes and moves the snapshots into the forensics account.
func (m *Mover) Run(ctx context.Context, instanceID string) (*Result, error) {
	res, err := m.Freeze(ctx, instanceID)
	if err != nil {
		return res, err
	}
	return res, m.Transfer(ctx, res)
}

// Freeze snapshots all the instance's volumes at once, or finds the snapshots
// an earlier run of the same case made, and waits until they complete.
func (m *Mover) Freeze(ctx context.Context, instanceID string) (*Result, error) {
	log := zerolog.Ctx(ctx)
	inst, err := m.describeInstance(ctx, instanceID)
	if err != nil {
		return nil, err
	}
	res := &Result{InstanceID: instanceID}
	var volIDs []string
	for _, bdm := range inst.BlockDeviceMappings {
		if bdm.Ebs == nil {
			continue
		}
		res.Volumes = append(res.Volumes, Volume{VolumeID: aws.ToString(bdm.Ebs.VolumeId), DeviceName: aws.ToString(bdm.DeviceName)})
		volIDs = append(volIDs, aws.ToString(bdm.Ebs.VolumeId))
	}
	if len(volIDs) == 0 {
		return nil, fmt.Errorf("instance %s has no EBS volumes to snapshot", instanceID)
	}
	vols, err := m.member.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: volIDs})
	if err != nil {
		return nil, fmt.Errorf("instance %s: describe volumes: %w", instanceID, err)
	}
	for i := range res.Volumes {
		for _, v := range vols.Volumes {
			if aws.ToString(v.VolumeId) == res.Volumes[i].VolumeID {
				res.Volumes[i].SizeGiB = aws.ToInt32(v.Size)
				res.Volumes[i].Encrypted = aws.ToBool(v.Encrypted)
				res.Volumes[i].KMSKeyID = aws.ToString(v.KmsKeyId)
			}
		}
	}

	existing, err := m.findTagged(ctx, m.member, RoleOriginal, TagSourceInstance, instanceID)
	if err != nil {
		return nil, err
	}
	if len(existing) > 0 {
		for i := range res.Volumes {
			for _, s := range existing {
				if aws.ToString(s.VolumeId) == res.Volumes[i].VolumeID {
					res.Volumes[i].Original = aws.ToString(s.SnapshotId)
				}
			}
		}
		log.Info().Str("instance_id", instanceID).Int("snapshots", len(existing)).Msg("found this case's snapshots from an earlier run")
	}
	if missing := res.missingOriginals(); len(missing) > 0 {
		if len(existing) > 0 {
			return res, fmt.Errorf("instance %s: this case already snapshotted some volumes but not %s; snapshot those by hand or open a new case",
				instanceID, strings.Join(missing, ", "))
		}
		if err := m.createSnapshots(ctx, res); err != nil {
			return res, err
		}
	}
	for _, v := range res.Volumes {
		if err := m.wait(ctx, m.member, v.Original, v.SizeGiB); err != nil {
			return res, err
		}
	}
	return res, nil
}

func (r *Result) missingOriginals() []string {
	var out []string
	for _, v := range r.Volumes {
		if v.Original == "" {
			out = append(out, v.VolumeID)
		}
	}
	return out
}

func (m *Mover) describeInstance(ctx context.Context, id string) (*ec2types.Instance, error) {
	out, err := m.member.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && (ae.ErrorCode() == "InvalidInstanceID.NotFound" || ae.ErrorCode() == "InvalidInstanceID.Malformed") {
			return nil, fmt.Errorf("instance %s not found in account %s, Region %s: check the ID, --region, and --role-arn for the member account: %w",
				id, m.member.ID, m.o.Region, err)
		}
		return nil, fmt.Errorf("describe instance %s: %w", id, err)
	}
	for _, r := range out.Reservations {
		for i := range r.Instances {
			if aws.ToString(r.Instances[i].InstanceId) == id {
				inst := &r.Instances[i]
				if inst.State != nil && inst.State.Name == ec2types.InstanceStateNameTerminated {
					return nil, fmt.Errorf("instance %s is terminated: its volumes are gone unless they were kept (DeleteOnTermination=false); snapshot those volumes directly", id)
				}
				return inst, nil
			}
		}
	}
	return nil, fmt.Errorf("instance %s not found in account %s, Region %s", id, m.member.ID, m.o.Region)
}

func (m *Mover) caseTags(role string, kv ...string) []ec2types.Tag {
	tags := []ec2types.Tag{{Key: aws.String(TagCase), Value: aws.String(m.o.CaseID)}, {Key: aws.String(TagRole), Value: aws.String(role)}}
	for i := 0; i+1 < len(kv); i += 2 {
		tags = append(tags, ec2types.Tag{Key: aws.String(kv[i]), Value: aws.String(kv[i+1])})
	}
	return tags
}

func (m *Mover) description(what string) *string {
	return aws.String(fmt.Sprintf("impound case %s: %s", m.o.CaseID, what))
}

func (m *Mover) createSnapshots(ctx context.Context, res *Result) error {
	out, err := m.member.EC2.CreateSnapshots(ctx, &ec2.CreateSnapshotsInput{
		InstanceSpecification: &ec2types.InstanceSpecification{InstanceId: aws.String(res.InstanceID), ExcludeBootVolume: aws.Bool(false)},
		Description:           m.description("evidence snapshot of " + res.InstanceID),
		TagSpecifications: []ec2types.TagSpecification{{
			ResourceType: ec2types.ResourceTypeSnapshot,
			Tags:         m.caseTags(RoleOriginal, TagSourceInstance, res.InstanceID),
		}},
	})
	if err != nil {
		step := Step{Action: ActionCreate, Account: m.member.ID, Resources: []string{m.instanceARN(res.InstanceID)},
			Details: map[string]string{"instance_id": res.InstanceID}, Err: err}
		return errors.Join(fmt.Errorf("instance %s: create snapshots: %w", res.InstanceID, err), m.o.Record(ctx, step))
	}
	for _, s := range out.Snapshots {
		vol := aws.ToString(s.VolumeId)
		for i := range res.Volumes {
			if res.Volumes[i].VolumeID == vol {
				res.Volumes[i].Original = aws.ToString(s.SnapshotId)
			}
		}
	}
	// One step per snapshot: each is its own piece of evidence.
	for _, v := range res.Volumes {
		if v.Original == "" {
			continue
		}
		step := Step{Action: ActionCreate, Account: m.member.ID,
			Resources: []string{m.instanceARN(res.InstanceID), m.volumeARN(v.VolumeID), m.snapshotARN(v.Original)},
			Details: map[string]string{"snapshot": v.Original, "volume_id": v.VolumeID, "instance_id": res.InstanceID,
				"device": v.DeviceName, "encrypted": strconv.FormatBool(v.Encrypted), "kms_key": v.KMSKeyID,
				"size_gib": strconv.Itoa(int(v.SizeGiB))}}
		if err := m.o.Record(ctx, step); err != nil {
			return &CreatedError{Err: fmt.Errorf("record snapshot %s: %w", v.Original, err), Created: res.created()}
		}
	}
	if missing := res.missingOriginals(); len(missing) > 0 {
		return &CreatedError{Err: fmt.Errorf("instance %s: CreateSnapshots returned no snapshot for %s", res.InstanceID, strings.Join(missing, ", ")),
			Created: res.created()}
	}
	return nil
}

func (r *Result) created() []string {
	var out []string
	for _, v := range r.Volumes {
		for _, id := range []string{v.Original, v.Intermediate, v.Forensics} {
			if id != "" {
				out = append(out, id)
			}
		}
	}
	return out
}

func (m *Mover) instanceARN(id string) string {
	return fmt.Sprintf("arn:aws:ec2:%s:%s:instance/%s", m.o.Region, m.member.ID, id)
}

func (m *Mover) volumeARN(id string) string {
	return fmt.Sprintf("arn:aws:ec2:%s:%s:volume/%s", m.o.Region, m.member.ID, id)
}

// snapshotARN is a snapshot's ARN; EC2 snapshot ARNs carry no account.
func (m *Mover) snapshotARN(id string) string {
	return fmt.Sprintf("arn:aws:ec2:%s::snapshot/%s", m.o.Region, id)
}

// findTagged lists this case's snapshots of a role in an account, filtered by one more tag.
func (m *Mover) findTagged(ctx context.Context, a Account, role, key, value string) ([]ec2types.Snapshot, error) {
	var out []ec2types.Snapshot
	p := ec2.NewDescribeSnapshotsPaginator(a.EC2, &ec2.DescribeSnapshotsInput{
		OwnerIds: []string{"self"},
		Filters: []ec2types.Filter{
			{Name: aws.String("tag:" + TagCase), Values: []string{m.o.CaseID}},
			{Name: aws.String("tag:" + TagRole), Values: []string{role}},
			{Name: aws.String("tag:" + key), Values: []string{value}},
		},
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("find case %s snapshots in account %s: %w", m.o.CaseID, a.ID, err)
		}
		for _, s := range page.Snapshots {
			if s.State == ec2types.SnapshotStateError {
				continue // a failed earlier attempt: make a new one
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// wait polls until a snapshot completes, fails, or the size-based timeout passes.
func (m *Mover) wait(ctx context.Context, a Account, id string, sizeGiB int32) error {
	log := zerolog.Ctx(ctx)
	timeout := m.o.Timeout(sizeGiB)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lastProgress := ""
	for {
		out, err := a.EC2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("snapshot %s in account %s did not complete within %s (last progress %s); check it in the console and re-run the case to resume",
					id, a.ID, timeout, lastProgress)
			}
			return fmt.Errorf("snapshot %s: describe: %w", id, err)
		}
		if len(out.Snapshots) != 1 {
			return fmt.Errorf("snapshot %s not visible to account %s", id, a.ID)
		}
		s := out.Snapshots[0]
		switch s.State {
		case ec2types.SnapshotStateCompleted:
			log.Info().Str("snapshot_id", id).Str("account", a.ID).Msg("snapshot completed")
			return nil
		case ec2types.SnapshotStateError:
			return fmt.Errorf("snapshot %s in account %s failed: %s", id, a.ID, aws.ToString(s.StateMessage))
		}
		if p := aws.ToString(s.Progress); p != lastProgress {
			log.Info().Str("snapshot_id", id).Str("account", a.ID).Str("progress", p).Msg("waiting for snapshot")
			lastProgress = p
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("snapshot %s in account %s did not complete within %s (last progress %s); check it in the console and re-run the case to resume",
					id, a.ID, timeout, lastProgress)
			}
			return ctx.Err()
		case <-time.After(m.o.PollInterval):
		}
	}
}

// Transfer moves each volume's original snapshot into the forensics account,
// at most MaxConcurrentCopies at a time.
func (m *Mover) Transfer(ctx context.Context, res *Result) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(m.o.MaxConcurrentCopies)
	errs := make([]error, len(res.Volumes))
	for i := range res.Volumes {
		g.Go(func() error {
			// One volume's failure does not stop the others: each is recorded on its own.
			errs[i] = m.transferOne(gctx, res.InstanceID, &res.Volumes[i])
			return nil
		})
	}
	_ = g.Wait()
	if err := errors.Join(errs...); err != nil {
		return &CreatedError{Err: err, Created: res.created()}
	}
	return nil
}

func (m *Mover) transferOne(ctx context.Context, instanceID string, v *Volume) error {
	// An earlier run may have finished this volume already.
	done, err := m.findTagged(ctx, m.forensics, RoleForensics, TagSourceSnapshot, v.Original)
	if err != nil {
		return err
	}
	if len(done) > 0 {
		v.Forensics = aws.ToString(done[0].SnapshotId)
		v.ForensicsKMSKey = aws.ToString(done[0].KmsKeyId)
		return m.wait(ctx, m.forensics, v.Forensics, v.SizeGiB)
	}

	src := v.Original
	var grant *grantRef
	if v.Encrypted {
		key, err := m.member.KMS.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(v.KMSKeyID)})
		if err != nil {
			return fmt.Errorf("volume %s: describe its KMS key %s: %w", v.VolumeID, v.KMSKeyID, err)
		}
		keyARN := aws.ToString(key.KeyMetadata.Arn)
		if key.KeyMetadata.KeyManager == kmstypes.KeyManagerTypeAws {
			// aws/ebs snapshots cannot be shared: re-encrypt to a CMK first.
			if m.o.MemberKMSKey == "" {
				return fmt.Errorf("volume %s is encrypted with the AWS managed key aws/ebs, whose snapshots cannot be shared: pass --member-kms-key with a customer-managed key in account %s to re-encrypt the copy",
					v.VolumeID, m.member.ID)
			}
			mk, err := m.member.KMS.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(m.o.MemberKMSKey)})
			if err != nil {
				return fmt.Errorf("member KMS key %s: %w", m.o.MemberKMSKey, err)
			}
			keyARN = aws.ToString(mk.KeyMetadata.Arn)
			if src, err = m.intermediateCopy(ctx, instanceID, v, keyARN); err != nil {
				return err
			}
		}
		if grant, err = m.grant(ctx, v, keyARN); err != nil {
			return err
		}
	}
	if err := m.share(ctx, src, true); err != nil {
		return m.cleanup(ctx, v, src, grant, err)
	}
	err = m.forensicsCopy(ctx, instanceID, v, src)
	return m.cleanup(ctx, v, src, grant, err)
}

// cleanup unshares src, retires the grant and deletes the intermediate copy,
// recording each; cause is the error so far, returned joined with any new one.
func (m *Mover) cleanup(ctx context.Context, v *Volume, src string, grant *grantRef, cause error) error {
	errs := []error{cause}
	if m.member.ID != m.forensics.ID {
		errs = append(errs, m.share(ctx, src, false))
	}
	if grant != nil {
		errs = append(errs, m.retire(ctx, grant))
	}
	if v.Intermediate != "" && cause == nil {
		// Only once the forensics copy exists; never the original.
		errs = append(errs, m.deleteIntermediate(ctx, v))
	}
	return errors.Join(errs...)
}

func (m *Mover) intermediateCopy(ctx context.Context, instanceID string, v *Volume, keyARN string) (string, error) {
	found, err := m.findTagged(ctx, m.member, RoleIntermediate, TagSourceSnapshot, v.Original)
	if err != nil {
		return "", err
	}
	if len(found) > 0 {
		v.Intermediate = aws.ToString(found[0].SnapshotId)
	} else {
		out, err := m.member.EC2.CopySnapshot(ctx, &ec2.CopySnapshotInput{
			SourceSnapshotId: aws.String(v.Original),
			SourceRegion:     aws.String(m.o.Region),
			Encrypted:        aws.Bool(true),
			KmsKeyId:         aws.String(keyARN),
			Description:      m.description("re-encrypted copy of " + v.Original + " for transfer (deleted when done)"),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSnapshot,
				Tags: m.caseTags(RoleIntermediate, TagSourceSnapshot, v.Original, TagSourceVolume, v.VolumeID, TagSourceInstance, instanceID)}},
		})
		step := Step{Action: ActionCopy, Account: m.member.ID, Resources: []string{m.snapshotARN(v.Original)},
			Details: map[string]string{"source_snapshot": v.Original, "source_account": m.member.ID, "original_snapshot": v.Original,
				"volume_id": v.VolumeID, "kms_key": keyARN, "purpose": PurposeIntermediate}}
		if err != nil {
			step.Err = err
			return "", errors.Join(fmt.Errorf("snapshot %s: copy to member key %s: %w", v.Original, keyARN, err), m.o.Record(ctx, step))
		}
		v.Intermediate = aws.ToString(out.SnapshotId)
		step.Resources = append(step.Resources, m.snapshotARN(v.Intermediate))
		step.Details["snapshot"] = v.Intermediate
		if err := m.o.Record(ctx, step); err != nil {
			return "", err
		}
	}
	if err := m.wait(ctx, m.member, v.Intermediate, v.SizeGiB); err != nil {
		return "", err
	}
	return v.Intermediate, nil
}

type grantRef struct{ keyARN, grantID string }

func (m *Mover) grant(ctx context.Context, v *Volume, keyARN string) (*grantRef, error) {
	if m.member.ID == m.forensics.ID {
		return nil, nil
	}
	out, err := m.member.KMS.CreateGrant(ctx, &kms.CreateGrantInput{
		KeyId:             aws.String(keyARN),
		GranteePrincipal:  aws.String("arn:aws:iam::" + m.forensics.ID + ":root"),
		RetiringPrincipal: aws.String("arn:aws:iam::" + m.forensics.ID + ":root"),
		Operations: []kmstypes.GrantOperation{
			kmstypes.GrantOperationDecrypt, kmstypes.GrantOperationDescribeKey, kmstypes.GrantOperationCreateGrant,
			kmstypes.GrantOperationReEncryptFrom, kmstypes.GrantOperationGenerateDataKeyWithoutPlaintext,
		},
		Name: aws.String("impound-" + m.o.CaseID),
	})
	step := Step{Action: ActionGrant, Account: m.member.ID, Resources: []string{keyARN},
		Details: map[string]string{"grantee": m.forensics.ID, "volume_id": v.VolumeID}}
	if err != nil {
		step.Err = err
		return nil, errors.Join(fmt.Errorf("KMS key %s: grant account %s use of it: %w (impound needs kms:CreateGrant on the key in account %s)",
			keyARN, m.forensics.ID, err, m.member.ID), m.o.Record(ctx, step))
	}
	step.Details["grant_id"] = aws.ToString(out.GrantId)
	if err := m.o.Record(ctx, step); err != nil {
		return nil, err
	}
	return &grantRef{keyARN: keyARN, grantID: aws.ToString(out.GrantId)}, nil
}

func (m *Mover) retire(ctx context.Context, g *grantRef) error {
	_, err := m.forensics.KMS.RetireGrant(ctx, &kms.RetireGrantInput{KeyId: aws.String(g.keyARN), GrantId: aws.String(g.grantID)})
	step := Step{Action: ActionRetireGrant, Account: m.forensics.ID, Resources: []string{g.keyARN},
		Details: map[string]string{"grant_id": g.grantID}, Err: err}
	if rerr := m.o.Record(ctx, step); rerr != nil {
		return errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("retire grant %s on %s: %w; retire it by hand: aws kms retire-grant --key-id %s --grant-id %s", g.grantID, g.keyARN, err, g.keyARN, g.grantID)
	}
	return nil
}

func (m *Mover) share(ctx context.Context, id string, add bool) error {
	if m.member.ID == m.forensics.ID {
		return nil
	}
	perm := &ec2types.CreateVolumePermissionModifications{}
	action := ActionShare
	if add {
		perm.Add = []ec2types.CreateVolumePermission{{UserId: aws.String(m.forensics.ID)}}
	} else {
		perm.Remove = []ec2types.CreateVolumePermission{{UserId: aws.String(m.forensics.ID)}}
		action = ActionUnshare
	}
	_, err := m.member.EC2.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{
		SnapshotId:             aws.String(id),
		Attribute:              ec2types.SnapshotAttributeNameCreateVolumePermission,
		CreateVolumePermission: perm,
	})
	step := Step{Action: action, Account: m.member.ID, Resources: []string{m.snapshotARN(id)},
		Details: map[string]string{"snapshot": id, "account": m.forensics.ID}, Err: err}
	if rerr := m.o.Record(ctx, step); rerr != nil {
		return errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("snapshot %s: %s with account %s: %w", id, action, m.forensics.ID, err)
	}
	return nil
}

func (m *Mover) forensicsCopy(ctx context.Context, instanceID string, v *Volume, src string) error {
	in := &ec2.CopySnapshotInput{
		SourceSnapshotId: aws.String(src),
		SourceRegion:     aws.String(m.o.Region),
		Encrypted:        aws.Bool(true),
		Description:      m.description("forensics copy of " + v.Original + " (volume " + v.VolumeID + " of " + instanceID + ")"),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSnapshot,
			Tags: m.caseTags(RoleForensics, TagSourceSnapshot, v.Original, TagSourceVolume, v.VolumeID, TagSourceInstance, instanceID)}},
	}
	if m.o.ForensicsKMSKey != "" {
		in.KmsKeyId = aws.String(m.o.ForensicsKMSKey)
	}
	out, err := m.forensics.EC2.CopySnapshot(ctx, in)
	step := Step{Action: ActionCopy, Account: m.forensics.ID, Resources: []string{m.snapshotARN(src)},
		Details: map[string]string{"source_snapshot": src, "source_account": m.member.ID, "original_snapshot": v.Original,
			"volume_id": v.VolumeID, "instance_id": instanceID, "device": v.DeviceName, "size_gib": strconv.Itoa(int(v.SizeGiB)),
			"kms_key": m.o.ForensicsKMSKey, "purpose": PurposeForensics}}
	if err != nil {
		step.Err = err
		err = fmt.Errorf("snapshot %s: copy into forensics account %s: %w", src, m.forensics.ID, err)
		var ae smithy.APIError
		if errors.As(err, &ae) && strings.Contains(ae.ErrorCode(), "KMS") {
			err = fmt.Errorf("%w (the forensics account must be allowed to use KMS key %s: check --forensics-kms-key and its key policy)", err, m.o.ForensicsKMSKey)
		}
		return errors.Join(err, m.o.Record(ctx, step))
	}
	v.Forensics = aws.ToString(out.SnapshotId)
	step.Resources = append(step.Resources, m.snapshotARN(v.Forensics))
	step.Details["snapshot"] = v.Forensics
	if err := m.o.Record(ctx, step); err != nil {
		return err
	}
	if err := m.wait(ctx, m.forensics, v.Forensics, v.SizeGiB); err != nil {
		return err
	}
	d, err := m.forensics.EC2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{v.Forensics}})
	if err == nil && len(d.Snapshots) == 1 {
		v.ForensicsKMSKey = aws.ToString(d.Snapshots[0].KmsKeyId)
	}
	return nil
}

func (m *Mover) deleteIntermediate(ctx context.Context, v *Volume) error {
	if v.Intermediate == "" || v.Intermediate == v.Original {
		return nil
	}
	_, err := m.member.EC2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(v.Intermediate)})
	step := Step{Action: ActionDeleteIntermediate, Account: m.member.ID, Resources: []string{m.snapshotARN(v.Intermediate)},
		Details: map[string]string{"snapshot": v.Intermediate, "original_snapshot": v.Original}, Err: err}
	if rerr := m.o.Record(ctx, step); rerr != nil {
		return errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("delete intermediate snapshot %s: %w", v.Intermediate, err)
	}
	return nil
}
