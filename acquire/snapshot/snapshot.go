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
//   - A snapshot found by its tags is reported too ([ActionFound]), with
//     what its creation step would have recorded, so a recorder that lost
//     that step (a transient failure after the AWS call succeeded) can add it:
//     no volume silently drops out of a case.
//   - Before anything is snapshotted, the instance's volumes are reported
//     ([ActionInventory]), so a case can check that every one was acquired;
//     each snapshot's final state (completed, error, or still pending at the
//     timeout) is reported with its actual KMS key ([ActionState]).
//   - Clean-up survives interruption: unsharing, retiring grants and
//     deleting intermediate copies run, and are recorded, on a context that
//     outlives the caller's cancellation by at most [CleanupTimeout]. And
//     every run, before it finishes, retires the grants an earlier
//     interrupted run left (found with ListGrants by their name,
//     impound-<case>, and grantee), and once a volume's forensics copy is
//     complete unshares its original and intermediate snapshots and deletes
//     the intermediates: each such clean-up is recorded as a step with the
//     detail "leftover" set to "true".
//   - A volume whose original snapshot ended in the error state is
//     snapshotted again by the next run (CreateSnapshots excluding the
//     volumes that have a usable original; that new snapshot is then not
//     crash-consistent with the others, and its creation step says so), and
//     the volumes whose originals completed are transferred even when
//     another volume's original failed.
//   - On failure, the returned error lists what was created or left live so
//     far (snapshots, grants, shares), so a responder can clean up.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	// TagCopySource is the snapshot a copy was made from: the original, or
	// for an aws/ebs volume the intermediate re-encrypted copy.
	TagCopySource = "impound:copy-source"
	TagRole       = "impound:role" // RoleOriginal, RoleIntermediate or RoleForensics
)

// Values of TagRole.
const (
	RoleOriginal     = "original"     // in the member account, from CreateSnapshots
	RoleIntermediate = "intermediate" // member-account re-encryption of an aws/ebs snapshot; deleted when done
	RoleForensics    = "forensics"    // the copy the forensics account owns: what is acquired
)

// CleanupTimeout bounds the clean-up (unshare, retire grant, delete
// intermediate, and recording them) that runs after a failure or after the
// caller's context was cancelled.
const CleanupTimeout = 2 * time.Minute

// cleanupContext is ctx without its cancellation, bounded by CleanupTimeout:
// an interrupted run still removes, and records, what it granted.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), CleanupTimeout)
}

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
	// ActionInventory lists the instance's EBS volumes, before any snapshot
	// ("volumes": comma-separated IDs; "devices": volume=device pairs).
	ActionInventory = "snapshot.inventory"
	// ActionTag tags an original snapshot with its source volume
	// (CreateSnapshots' tag specifications are the same for every snapshot).
	ActionTag = "snapshot.tag"
	// ActionFound reports a snapshot an earlier run made, found by its tags;
	// its details are those its creating step had, plus "role" and "state".
	ActionFound = "snapshot.found"
	// ActionState reports a snapshot's final state ("state": completed or
	// error; a failed step with state pending when it timed out).
	ActionState = "snapshot.state"
)

// grantOperations are the KMS operations the forensics account needs on a
// member key to copy a snapshot encrypted with it, as AWS's EBS guide
// "Share the KMS key used to encrypt a shared Amazon EBS snapshot" lists
// them (kms:ReEncrypt stands for both ReEncrypt operations).
func grantOperations() []kmstypes.GrantOperation {
	return []kmstypes.GrantOperation{
		kmstypes.GrantOperationDescribeKey, kmstypes.GrantOperationCreateGrant,
		kmstypes.GrantOperationGenerateDataKey, kmstypes.GrantOperationGenerateDataKeyWithoutPlaintext,
		kmstypes.GrantOperationReEncryptFrom, kmstypes.GrantOperationReEncryptTo, kmstypes.GrantOperationDecrypt,
	}
}

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
	DescribeSnapshotAttribute(context.Context, *ec2.DescribeSnapshotAttributeInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotAttributeOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

// kmsAPI is the part of KMS this package uses.
type kmsAPI interface {
	DescribeKey(context.Context, *kms.DescribeKeyInput, ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
	CreateGrant(context.Context, *kms.CreateGrantInput, ...func(*kms.Options)) (*kms.CreateGrantOutput, error)
	RetireGrant(context.Context, *kms.RetireGrantInput, ...func(*kms.Options)) (*kms.RetireGrantOutput, error)
	ListGrants(context.Context, *kms.ListGrantsInput, ...func(*kms.Options)) (*kms.ListGrantsOutput, error)
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
	// forensics account's AWS managed aws/ebs key (DefaultForensicsKey),
	// never the source snapshot's key.
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

	mu   sync.Mutex
	live map[string]string // grants and shares made and not yet removed: key -> description
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
	return &Mover{member: member, forensics: forensics, o: o, live: map[string]string{}}, nil
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

	frozen error // the original did not complete: Transfer skips the volume
}

// Result is what Freeze and Transfer produced.
type Result struct {
	InstanceID string   `json:"instance_id"`
	Volumes    []Volume `json:"volumes"`

	waited bool // Freeze waited for the originals: those that completed can be transferred
}

// CreatedError is a failure after some resources were created; Created lists
// them for clean-up: snapshot IDs, and grants and shares still live
// ("grant <id> on <key> ..." and "snapshot <id> shared with account ...").
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
// A volume whose original snapshot failed does not keep the others, whose
// originals completed, from being transferred; the error then reports both.
func (m *Mover) Run(ctx context.Context, instanceID string) (*Result, error) {
	res, err := m.Freeze(ctx, instanceID)
	if err != nil && (res == nil || !res.waited || ctx.Err() != nil) {
		return res, err
	}
	terr := m.Transfer(ctx, res)
	if err == nil {
		return res, terr
	}
	var ce *CreatedError
	if errors.As(err, &ce) {
		err = ce.Err
	}
	if errors.As(terr, &ce) {
		terr = ce.Err
	}
	return res, &CreatedError{Err: errors.Join(err, terr), Created: m.created(res)}
}

// Freeze snapshots all the instance's volumes at once, or finds the snapshots
// an earlier run of the same case made, and waits until they complete. It
// first reports the instance's volumes ([ActionInventory]); a failure to
// find the instance or its volumes is reported as that step failed.
func (m *Mover) Freeze(ctx context.Context, instanceID string) (*Result, error) {
	log := zerolog.Ctx(ctx)
	inv := Step{Action: ActionInventory, Account: m.member.ID, Resources: []string{m.instanceARN(instanceID)},
		Details: map[string]string{"instance_id": instanceID, "region": m.o.Region}}
	inst, err := m.describeInstance(ctx, instanceID)
	if err != nil {
		return nil, m.failed(ctx, inv, err)
	}
	res := &Result{InstanceID: instanceID}
	var volIDs, devices []string
	for _, bdm := range inst.BlockDeviceMappings {
		if bdm.Ebs == nil {
			continue
		}
		id, dev := aws.ToString(bdm.Ebs.VolumeId), aws.ToString(bdm.DeviceName)
		res.Volumes = append(res.Volumes, Volume{VolumeID: id, DeviceName: dev})
		volIDs = append(volIDs, id)
		devices = append(devices, id+"="+dev)
	}
	if len(volIDs) == 0 {
		return nil, m.failed(ctx, inv, fmt.Errorf("instance %s has no EBS volumes to snapshot; acquire its instance-store data from the running instance", instanceID))
	}
	vols, err := m.member.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: volIDs})
	if err != nil {
		return nil, m.failed(ctx, inv, fmt.Errorf("instance %s: describe volumes: %w", instanceID, err))
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
	inv.Details["volumes"] = strings.Join(volIDs, ",")
	inv.Details["devices"] = strings.Join(devices, ",")
	for _, id := range volIDs {
		inv.Resources = append(inv.Resources, m.volumeARN(id))
	}
	if err := m.record(ctx, inv); err != nil {
		return nil, err
	}

	existing, err := m.findTagged(ctx, m.member, RoleOriginal, TagSourceInstance, instanceID)
	if err != nil {
		return nil, err
	}
	for i := range res.Volumes {
		v := &res.Volumes[i]
		s := pick(existing, func(s ec2types.Snapshot) bool { return aws.ToString(s.VolumeId) == v.VolumeID })
		if s == nil {
			continue
		}
		v.Original = aws.ToString(s.SnapshotId)
		if err := m.found(ctx, m.member, RoleOriginal, *s, m.createDetails(instanceID, v)); err != nil {
			return res, &CreatedError{Err: err, Created: m.created(res)}
		}
		if tagMap(s.Tags)[TagSourceVolume] == "" {
			if err := m.tagSourceVolume(ctx, v); err != nil {
				return res, &CreatedError{Err: err, Created: m.created(res)}
			}
		}
	}
	if len(existing) > 0 {
		log.Info().Str("instance_id", instanceID).Int("snapshots", len(existing)).Msg("found this case's snapshots from an earlier run")
	}
	if missing := res.missingOriginals(); len(missing) > 0 {
		// None yet, or an earlier run's ended in the error state (findTagged
		// leaves those out): snapshot those volumes, and only those.
		if len(existing) > 0 {
			log.Warn().Str("instance_id", instanceID).Strs("volumes", missing).
				Msg("this case has no usable snapshot of these volumes from an earlier run (none, or it ended in error): snapshotting them again")
		}
		if err := m.createSnapshots(ctx, res, aws.ToString(inst.RootDeviceName), len(existing) > 0); err != nil {
			return res, err
		}
	}
	// Wait for every original: one that ends in the error state does not
	// keep the others from being transferred (Run transfers those that
	// completed). Any other failure (a timeout, which the others would
	// likely share, or an interruption) stops here.
	var errs []error
	for i := range res.Volumes {
		v := &res.Volumes[i]
		if _, err := m.wait(ctx, m.member, v.Original, v, RoleOriginal); err != nil {
			v.frozen = err
			errs = append(errs, err)
			if !errors.Is(err, ErrSnapshotFailed) {
				return res, &CreatedError{Err: errors.Join(errs...), Created: m.created(res)}
			}
		}
	}
	res.waited = true
	if err := errors.Join(errs...); err != nil {
		return res, &CreatedError{Err: err, Created: m.created(res)}
	}
	return res, nil
}

// ErrSnapshotFailed is a snapshot that ended in the error state; a re-run of
// the case makes a new one.
var ErrSnapshotFailed = errors.New("snapshot ended in the error state")

// failed reports s as failed with err and returns err, joined with any
// error recording it. The step is recorded even when ctx is cancelled.
func (m *Mover) failed(ctx context.Context, s Step, err error) error {
	s.Err = err
	return errors.Join(err, m.record(ctx, s))
}

// record reports s. The action it reports has happened, so it is recorded
// even when ctx is cancelled (a recorder such as the custody ledger refuses
// a cancelled context), for at most CleanupTimeout.
func (m *Mover) record(ctx context.Context, s Step) error {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	return m.o.Record(ctx, s)
}

// found reports a snapshot an earlier run made: d are the details its
// creating step had.
func (m *Mover) found(ctx context.Context, a Account, role string, s ec2types.Snapshot, d map[string]string) error {
	id := aws.ToString(s.SnapshotId)
	d["snapshot"], d["role"], d["state"] = id, role, string(s.State)
	return m.record(ctx, Step{Action: ActionFound, Account: a.ID, Resources: []string{m.snapshotARN(id)}, Details: d})
}

// pick returns the snapshot among ss that match (all when match is nil)
// that completed, or else the newest; nil when none match.
func pick(ss []ec2types.Snapshot, match func(ec2types.Snapshot) bool) *ec2types.Snapshot {
	var best *ec2types.Snapshot
	for i := range ss {
		s := &ss[i]
		if match != nil && !match(*s) {
			continue
		}
		switch {
		case best == nil:
			best = s
		case (s.State == ec2types.SnapshotStateCompleted) != (best.State == ec2types.SnapshotStateCompleted):
			if s.State == ec2types.SnapshotStateCompleted {
				best = s
			}
		case aws.ToTime(s.StartTime).After(aws.ToTime(best.StartTime)):
			best = s
		}
	}
	return best
}

func tagMap(tags []ec2types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
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
	notFound := fmt.Sprintf("instance %s not found in account %s, Region %s: check the ID, pass --region with the instance's Region, and check --role-arn names a role in the instance's account",
		id, m.member.ID, m.o.Region)
	out, err := m.member.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) && (ae.ErrorCode() == "InvalidInstanceID.NotFound" || ae.ErrorCode() == "InvalidInstanceID.Malformed") {
			return nil, fmt.Errorf("%s: %w", notFound, err)
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
	return nil, errors.New(notFound)
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

// createDetails are the details of an original snapshot's creation.
func (m *Mover) createDetails(instanceID string, v *Volume) map[string]string {
	return map[string]string{"snapshot": v.Original, "volume_id": v.VolumeID, "instance_id": instanceID,
		"device": v.DeviceName, "encrypted": strconv.FormatBool(v.Encrypted), "kms_key": v.KMSKeyID,
		"size_gib": strconv.Itoa(int(v.SizeGiB))}
}

// createSnapshots snapshots, at once, the instance's volumes that have no
// original yet; rootDevice names the boot volume's device. retake says an
// earlier run of the case snapshotted the other volumes: the new snapshots
// are then not crash-consistent with theirs, which their steps record.
func (m *Mover) createSnapshots(ctx context.Context, res *Result, rootDevice string, retake bool) error {
	spec := &ec2types.InstanceSpecification{InstanceId: aws.String(res.InstanceID), ExcludeBootVolume: aws.Bool(false)}
	var kept []string
	for _, v := range res.Volumes {
		switch {
		case v.Original == "":
		case v.DeviceName == rootDevice:
			spec.ExcludeBootVolume = aws.Bool(true) // EC2 refuses the boot volume in ExcludeDataVolumeIds
			kept = append(kept, v.VolumeID)
		default:
			spec.ExcludeDataVolumeIds = append(spec.ExcludeDataVolumeIds, v.VolumeID)
			kept = append(kept, v.VolumeID)
		}
	}
	out, err := m.member.EC2.CreateSnapshots(ctx, &ec2.CreateSnapshotsInput{
		InstanceSpecification: spec,
		Description:           m.description("evidence snapshot of " + res.InstanceID),
		TagSpecifications: []ec2types.TagSpecification{{
			ResourceType: ec2types.ResourceTypeSnapshot,
			Tags:         m.caseTags(RoleOriginal, TagSourceInstance, res.InstanceID),
		}},
	})
	if err != nil {
		step := Step{Action: ActionCreate, Account: m.member.ID, Resources: []string{m.instanceARN(res.InstanceID)},
			Details: map[string]string{"instance_id": res.InstanceID}}
		if retake {
			step.Details["missing_volumes"] = strings.Join(res.missingOriginals(), ",")
		}
		return m.failed(ctx, step, fmt.Errorf("instance %s: create snapshots: %w", res.InstanceID, err))
	}
	made := map[string]bool{}
	for _, s := range out.Snapshots {
		vol := aws.ToString(s.VolumeId)
		for i := range res.Volumes {
			if res.Volumes[i].VolumeID == vol && res.Volumes[i].Original == "" {
				res.Volumes[i].Original = aws.ToString(s.SnapshotId)
				made[vol] = true
			}
		}
	}
	// One step per snapshot: each is its own piece of evidence.
	for i := range res.Volumes {
		v := &res.Volumes[i]
		if !made[v.VolumeID] {
			continue
		}
		step := Step{Action: ActionCreate, Account: m.member.ID,
			Resources: []string{m.instanceARN(res.InstanceID), m.volumeARN(v.VolumeID), m.snapshotARN(v.Original)},
			Details:   m.createDetails(res.InstanceID, v)}
		if retake {
			step.Details["retake"] = "true"
			step.Details["not_crash_consistent_with"] = strings.Join(kept, ",")
		}
		if err := m.record(ctx, step); err != nil {
			return &CreatedError{Err: fmt.Errorf("record snapshot %s: %w", v.Original, err), Created: m.created(res)}
		}
	}
	// CreateSnapshots tags every snapshot alike: name each one's volume.
	for i := range res.Volumes {
		if !made[res.Volumes[i].VolumeID] {
			continue
		}
		if err := m.tagSourceVolume(ctx, &res.Volumes[i]); err != nil {
			return &CreatedError{Err: err, Created: m.created(res)}
		}
	}
	if missing := res.missingOriginals(); len(missing) > 0 {
		step := Step{Action: ActionCreate, Account: m.member.ID, Resources: []string{m.instanceARN(res.InstanceID)},
			Details: map[string]string{"instance_id": res.InstanceID, "missing_volumes": strings.Join(missing, ",")}}
		return m.failed(ctx, step, &CreatedError{Err: fmt.Errorf("instance %s: CreateSnapshots returned no snapshot for %s", res.InstanceID, strings.Join(missing, ", ")),
			Created: m.created(res)})
	}
	return nil
}

// tagSourceVolume tags an original snapshot with the volume it was taken from.
func (m *Mover) tagSourceVolume(ctx context.Context, v *Volume) error {
	_, err := m.member.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{v.Original},
		Tags: []ec2types.Tag{{Key: aws.String(TagSourceVolume), Value: aws.String(v.VolumeID)}}})
	step := Step{Action: ActionTag, Account: m.member.ID, Resources: []string{m.snapshotARN(v.Original)},
		Details: map[string]string{"snapshot": v.Original, "volume_id": v.VolumeID, "tags": TagSourceVolume + "=" + v.VolumeID}, Err: err}
	if rerr := m.record(ctx, step); rerr != nil {
		return errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("snapshot %s: tag with its volume %s: %w", v.Original, v.VolumeID, err)
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

// findTagged lists this case's snapshots of a role in an account, filtered
// by one more tag; snapshots in the error state are left out.
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

// wait polls until a snapshot completes, fails, or the size-based timeout
// passes, and reports the outcome as an ActionState step.
func (m *Mover) wait(ctx context.Context, a Account, id string, v *Volume, role string) (*ec2types.Snapshot, error) {
	log := zerolog.Ctx(ctx)
	timeout := m.o.Timeout(v.SizeGiB)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	step := Step{Action: ActionState, Account: a.ID, Resources: []string{m.snapshotARN(id)},
		Details: map[string]string{"snapshot": id, "volume_id": v.VolumeID, "role": role}}
	lastState, lastProgress := "unknown", ""
	timedOut := func() (*ec2types.Snapshot, error) {
		step.Details["state"], step.Details["progress"] = lastState, lastProgress
		return nil, m.failed(ctx, step, fmt.Errorf("snapshot %s in account %s did not complete within %s (state %s, progress %q): check it in the EC2 console, then re-run the case to resume waiting",
			id, a.ID, timeout, lastState, lastProgress))
	}
	for {
		out, err := a.EC2.DescribeSnapshots(wctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
		if err != nil {
			if wctx.Err() != nil && ctx.Err() == nil {
				return timedOut()
			}
			return nil, fmt.Errorf("snapshot %s: describe: %w", id, err)
		}
		if len(out.Snapshots) != 1 {
			return nil, fmt.Errorf("snapshot %s not visible to account %s", id, a.ID)
		}
		s := out.Snapshots[0]
		lastState = string(s.State)
		switch s.State {
		case ec2types.SnapshotStateCompleted:
			step.Details["state"], step.Details["progress"] = lastState, aws.ToString(s.Progress)
			step.Details["encrypted"] = strconv.FormatBool(aws.ToBool(s.Encrypted))
			step.Details["kms_key"] = aws.ToString(s.KmsKeyId)
			if err := m.record(ctx, step); err != nil {
				return nil, err
			}
			log.Info().Str("snapshot_id", id).Str("account", a.ID).Msg("snapshot completed")
			return &s, nil
		case ec2types.SnapshotStateError:
			step.Details["state"], step.Details["state_message"] = lastState, aws.ToString(s.StateMessage)
			again := "re-run the case: it copies the snapshot again"
			if role == RoleOriginal {
				again = "re-run the case: it snapshots volume " + v.VolumeID + " again (the other volumes are transferred meanwhile)"
			}
			return nil, m.failed(ctx, step, fmt.Errorf("snapshot %s (%s, volume %s) in account %s: %w (%s); %s",
				id, role, v.VolumeID, a.ID, ErrSnapshotFailed, aws.ToString(s.StateMessage), again))
		}
		if p := aws.ToString(s.Progress); p != lastProgress {
			log.Info().Str("snapshot_id", id).Str("account", a.ID).Str("progress", p).Msg("waiting for snapshot")
			lastProgress = p
		}
		select {
		case <-wctx.Done():
			if ctx.Err() == nil {
				return timedOut()
			}
			return nil, ctx.Err()
		case <-time.After(m.o.PollInterval):
		}
	}
}

// Transfer moves each volume's original snapshot into the forensics account,
// at most MaxConcurrentCopies at a time; volumes whose original did not
// complete in Freeze are skipped. Then, even when ctx is cancelled (for at
// most CleanupTimeout), it retires the grants of this case an earlier,
// interrupted run left on the volumes' keys.
func (m *Mover) Transfer(ctx context.Context, res *Result) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(m.o.MaxConcurrentCopies)
	errs := make([]error, len(res.Volumes)+1)
	for i := range res.Volumes {
		if res.Volumes[i].frozen != nil {
			continue
		}
		g.Go(func() error {
			// One volume's failure does not stop the others: each is recorded on its own.
			errs[i] = m.transferOne(gctx, res.InstanceID, &res.Volumes[i])
			return nil
		})
	}
	_ = g.Wait()
	// Every copy of this run is done with its grant: any grant of the case
	// still live is a leftover.
	cctx, cancel := cleanupContext(ctx)
	errs[len(res.Volumes)] = errors.Join(m.retireLeftoverGrants(cctx, res), m.deleteFailedIntermediates(cctx))
	cancel()
	if err := errors.Join(errs...); err != nil {
		return &CreatedError{Err: err, Created: m.created(res)}
	}
	return nil
}

func (m *Mover) transferOne(ctx context.Context, instanceID string, v *Volume) error {
	// An earlier run may have made this volume's copy already.
	done, err := m.findTagged(ctx, m.forensics, RoleForensics, TagSourceSnapshot, v.Original)
	if err != nil {
		return err
	}
	if s := pick(done, nil); s != nil {
		return m.adoptForensics(ctx, instanceID, v, *s)
	}

	src, srcKey := v.Original, ""
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
		srcKey = keyARN
		if grant, err = m.grant(ctx, v, keyARN); err != nil {
			return err
		}
	}
	if err := m.share(ctx, src, srcKey, true); err != nil {
		return m.cleanup(ctx, v, src, srcKey, grant, err)
	}
	err = m.forensicsCopy(ctx, instanceID, v, src)
	return m.cleanup(ctx, v, src, srcKey, grant, err)
}

// adoptForensics takes over a forensics copy an earlier run made: reports
// it, waits for it, and, once it is complete, removes what that run left if
// it failed or was interrupted before its clean-up: the forensics account's
// access to the original and intermediate snapshots, and the intermediates.
func (m *Mover) adoptForensics(ctx context.Context, instanceID string, v *Volume, s ec2types.Snapshot) error {
	v.Forensics = aws.ToString(s.SnapshotId)
	src := tagMap(s.Tags)[TagCopySource]
	if src == "" {
		src = v.Original
	}
	d := m.copyDetails(instanceID, v, src)
	d["kms_key"] = aws.ToString(s.KmsKeyId)
	if err := m.found(ctx, m.forensics, RoleForensics, s, d); err != nil {
		return err
	}
	snap, err := m.wait(ctx, m.forensics, v.Forensics, v, RoleForensics)
	if err != nil {
		return err
	}
	v.ForensicsKMSKey = aws.ToString(snap.KmsKeyId)
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	var errs []error
	if err := m.unshareLeftover(ctx, v.Original, v.KMSKeyID); err != nil {
		errs = append(errs, err)
	}
	if !v.Encrypted {
		return errors.Join(errs...)
	}
	left, err := m.findTagged(ctx, m.member, RoleIntermediate, TagSourceSnapshot, v.Original)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, s := range left {
		v.Intermediate = aws.ToString(s.SnapshotId)
		if err := m.found(ctx, m.member, RoleIntermediate, s, m.intermediateDetails(v, aws.ToString(s.KmsKeyId))); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if err := m.unshareLeftover(ctx, v.Intermediate, aws.ToString(s.KmsKeyId)); err != nil {
			errs = append(errs, err)
			continue // never delete what could not be unshared: a responder looks at it
		}
		if err := m.deleteIntermediate(ctx, v, true); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unshareLeftover removes the forensics account's permission to copy
// snapshot id if an earlier run left it, and records that.
func (m *Mover) unshareLeftover(ctx context.Context, id, keyARN string) error {
	if m.member.ID == m.forensics.ID {
		return nil
	}
	out, err := m.member.EC2.DescribeSnapshotAttribute(ctx, &ec2.DescribeSnapshotAttributeInput{
		SnapshotId: aws.String(id), Attribute: ec2types.SnapshotAttributeNameCreateVolumePermission})
	if err != nil {
		return fmt.Errorf("snapshot %s: check whether it is still shared with account %s: %w", id, m.forensics.ID, err)
	}
	for _, p := range out.CreateVolumePermissions {
		if aws.ToString(p.UserId) == m.forensics.ID {
			return m.shareStep(ctx, id, keyARN, false, true)
		}
	}
	return nil
}

// retireLeftoverGrants retires the grants named for this case that give the
// forensics account use of the volumes' keys, and records each: only grants
// an earlier run left, or whose retirement failed, are still live.
func (m *Mover) retireLeftoverGrants(ctx context.Context, res *Result) error {
	if m.member.ID == m.forensics.ID {
		return nil
	}
	keys := map[string]bool{}
	var errs []error
	for _, v := range res.Volumes {
		if !v.Encrypted || v.KMSKeyID == "" {
			continue
		}
		key, err := m.member.KMS.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(v.KMSKeyID)})
		if err != nil {
			errs = append(errs, fmt.Errorf("volume %s: describe its KMS key %s to look for grants left by an earlier run: %w", v.VolumeID, v.KMSKeyID, err))
			continue
		}
		arn := aws.ToString(key.KeyMetadata.Arn)
		if key.KeyMetadata.KeyManager == kmstypes.KeyManagerTypeAws {
			// Grants go on the re-encryption key, never on aws/ebs. KMS
			// lists grants by key ID or ARN only, not by alias.
			if m.o.MemberKMSKey == "" {
				continue
			}
			mk, err := m.member.KMS.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(m.o.MemberKMSKey)})
			if err != nil {
				errs = append(errs, fmt.Errorf("member KMS key %s: describe it to look for grants left by an earlier run: %w", m.o.MemberKMSKey, err))
				continue
			}
			arn = aws.ToString(mk.KeyMetadata.Arn)
		}
		keys[arn] = true
	}
	grantee := m.granteePrincipal()
	for _, key := range sortedKeys(keys) {
		p := kms.NewListGrantsPaginator(m.member.KMS, &kms.ListGrantsInput{KeyId: aws.String(key), GranteePrincipal: aws.String(grantee)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				errs = append(errs, fmt.Errorf("KMS key %s: list grants to find those an earlier run of case %s left: %w (impound needs kms:ListGrants on the key in account %s)",
					key, m.o.CaseID, err, m.member.ID))
				break
			}
			for _, g := range page.Grants {
				if aws.ToString(g.Name) != m.grantName() || aws.ToString(g.GranteePrincipal) != grantee {
					continue
				}
				keyARN := key
				if k := aws.ToString(g.KeyId); strings.HasPrefix(k, "arn:") {
					keyARN = k
				}
				ref := &grantRef{keyARN: keyARN, grantID: aws.ToString(g.GrantId), leftover: true}
				m.track(ref.liveKey(), ref.String(m.member.ID))
				if err := m.retire(ctx, ref); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// track notes a grant or share made and not yet removed, for CreatedError.
func (m *Mover) track(key, desc string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.live[key] = desc
}

func (m *Mover) untrack(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.live, key)
}

// created lists the snapshots res holds and the grants and shares still live.
func (m *Mover) created(res *Result) []string {
	out := res.created()
	m.mu.Lock()
	defer m.mu.Unlock()
	live := make([]string, 0, len(m.live))
	for _, d := range m.live {
		live = append(live, d)
	}
	slices.Sort(live)
	return append(out, live...)
}

// cleanup unshares src, retires the grant and deletes the intermediate copy,
// recording each; cause is the error so far, returned joined with any new one.
// It runs on a context that survives ctx's cancellation: an interrupted run
// removes, and records, the access it gave.
func (m *Mover) cleanup(ctx context.Context, v *Volume, src, srcKey string, grant *grantRef, cause error) error {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	errs := []error{cause}
	if m.member.ID != m.forensics.ID {
		errs = append(errs, m.share(ctx, src, srcKey, false))
	}
	if grant != nil {
		errs = append(errs, m.retire(ctx, grant))
	}
	if v.Intermediate != "" && cause == nil {
		// Only once the forensics copy exists; never the original.
		errs = append(errs, m.deleteIntermediate(ctx, v, false))
	}
	return errors.Join(errs...)
}

// intermediateDetails are the details of an intermediate copy's creation.
func (m *Mover) intermediateDetails(v *Volume, keyARN string) map[string]string {
	return map[string]string{"snapshot": v.Intermediate, "source_snapshot": v.Original, "source_account": m.member.ID,
		"original_snapshot": v.Original, "volume_id": v.VolumeID, "kms_key": keyARN, "purpose": PurposeIntermediate}
}

func (m *Mover) intermediateCopy(ctx context.Context, instanceID string, v *Volume, keyARN string) (string, error) {
	found, err := m.findTagged(ctx, m.member, RoleIntermediate, TagSourceSnapshot, v.Original)
	if err != nil {
		return "", err
	}
	if s := pick(found, nil); s != nil {
		v.Intermediate = aws.ToString(s.SnapshotId)
		if err := m.found(ctx, m.member, RoleIntermediate, *s, m.intermediateDetails(v, aws.ToString(s.KmsKeyId))); err != nil {
			return "", err
		}
	} else {
		out, err := m.member.EC2.CopySnapshot(ctx, &ec2.CopySnapshotInput{
			SourceSnapshotId: aws.String(v.Original),
			SourceRegion:     aws.String(m.o.Region),
			Encrypted:        aws.Bool(true),
			KmsKeyId:         aws.String(keyARN),
			Description:      m.description("re-encrypted copy of " + v.Original + " for transfer (deleted when done)"),
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSnapshot,
				Tags: m.caseTags(RoleIntermediate, TagSourceSnapshot, v.Original, TagCopySource, v.Original, TagSourceVolume, v.VolumeID, TagSourceInstance, instanceID)}},
		})
		step := Step{Action: ActionCopy, Account: m.member.ID, Resources: []string{m.snapshotARN(v.Original)}, Details: m.intermediateDetails(v, keyARN)}
		delete(step.Details, "snapshot")
		if err != nil {
			return "", m.failed(ctx, step, fmt.Errorf("snapshot %s: copy to member key %s: %w", v.Original, keyARN, err))
		}
		v.Intermediate = aws.ToString(out.SnapshotId)
		step.Resources = append(step.Resources, m.snapshotARN(v.Intermediate))
		step.Details["snapshot"] = v.Intermediate
		if err := m.record(ctx, step); err != nil {
			return "", err
		}
	}
	if _, err := m.wait(ctx, m.member, v.Intermediate, v, RoleIntermediate); err != nil {
		return "", err
	}
	return v.Intermediate, nil
}

type grantRef struct {
	keyARN, grantID string
	leftover        bool // left by an earlier run, found with ListGrants
}

func (g *grantRef) liveKey() string { return "grant:" + g.keyARN + "/" + g.grantID }

func (g *grantRef) String(owner string) string {
	return fmt.Sprintf("grant %s on KMS key %s (account %s)", g.grantID, g.keyARN, owner)
}

// grantName names the grants of this case, so a later run can find them.
func (m *Mover) grantName() string { return "impound-" + m.o.CaseID }

func (m *Mover) granteePrincipal() string { return "arn:aws:iam::" + m.forensics.ID + ":root" }

func (m *Mover) grant(ctx context.Context, v *Volume, keyARN string) (*grantRef, error) {
	if m.member.ID == m.forensics.ID {
		return nil, nil
	}
	ops := grantOperations()
	names := make([]string, len(ops))
	for i, op := range ops {
		names[i] = string(op)
	}
	grantee := m.granteePrincipal()
	out, err := m.member.KMS.CreateGrant(ctx, &kms.CreateGrantInput{
		KeyId:             aws.String(keyARN),
		GranteePrincipal:  aws.String(grantee),
		RetiringPrincipal: aws.String(grantee),
		Operations:        ops,
		Name:              aws.String(m.grantName()),
	})
	step := Step{Action: ActionGrant, Account: m.member.ID, Resources: []string{keyARN},
		Details: map[string]string{"grantee": m.forensics.ID, "grantee_principal": grantee, "retiring_principal": grantee,
			"operations": strings.Join(names, ","), "volume_id": v.VolumeID, "kms_key": keyARN}}
	if err != nil {
		return nil, m.failed(ctx, step, fmt.Errorf("KMS key %s: grant account %s use of it: %w (impound needs kms:CreateGrant on the key in account %s)",
			keyARN, m.forensics.ID, err, m.member.ID))
	}
	step.Details["grant_id"], step.Details["grant_name"] = aws.ToString(out.GrantId), m.grantName()
	ref := &grantRef{keyARN: keyARN, grantID: aws.ToString(out.GrantId)}
	m.track(ref.liveKey(), ref.String(m.member.ID))
	if err := m.record(ctx, step); err != nil {
		// Not recorded, so not retired here either (nothing unrecorded is
		// done): the next run finds it by its name and retires it.
		return nil, err
	}
	return ref, nil
}

func (m *Mover) retire(ctx context.Context, g *grantRef) error {
	_, err := m.forensics.KMS.RetireGrant(ctx, &kms.RetireGrantInput{KeyId: aws.String(g.keyARN), GrantId: aws.String(g.grantID)})
	step := Step{Action: ActionRetireGrant, Account: m.forensics.ID, Resources: []string{g.keyARN},
		Details: map[string]string{"grant_id": g.grantID, "grant_name": m.grantName(), "kms_key": g.keyARN}, Err: err}
	if g.leftover {
		step.Details["leftover"] = "true"
	}
	if err == nil {
		m.untrack(g.liveKey())
	}
	if rerr := m.record(ctx, step); rerr != nil {
		return errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("retire grant %s on %s: %w; retire it by hand: aws kms retire-grant --key-id %s --grant-id %s", g.grantID, g.keyARN, err, g.keyARN, g.grantID)
	}
	return nil
}

// share adds (or removes) the forensics account's permission to create
// volumes from, and so copy, snapshot id, encrypted with keyARN ("": not
// encrypted).
func (m *Mover) share(ctx context.Context, id, keyARN string, add bool) error {
	return m.shareStep(ctx, id, keyARN, add, false)
}

// shareStep is share; leftover says an earlier run left the share.
func (m *Mover) shareStep(ctx context.Context, id, keyARN string, add, leftover bool) error {
	if m.member.ID == m.forensics.ID {
		return nil
	}
	action, op := ActionShare, ec2types.OperationTypeAdd
	if !add {
		action, op = ActionUnshare, ec2types.OperationTypeRemove
	}
	_, err := m.member.EC2.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{
		SnapshotId:    aws.String(id),
		Attribute:     ec2types.SnapshotAttributeNameCreateVolumePermission,
		OperationType: op,
		UserIds:       []string{m.forensics.ID},
	})
	step := Step{Action: action, Account: m.member.ID, Resources: []string{m.snapshotARN(id)},
		Details: map[string]string{"snapshot": id, "account": m.forensics.ID, "attribute": "createVolumePermission", "operation": string(op),
			"kms_key": keyARN}, Err: err}
	if leftover {
		step.Details["leftover"] = "true"
	}
	live := "share:" + id
	switch {
	case add:
		// Tracked even when the call failed: it may have taken effect.
		m.track(live, fmt.Sprintf("snapshot %s shared with account %s", id, m.forensics.ID))
	case err == nil:
		m.untrack(live)
	}
	if rerr := m.record(ctx, step); rerr != nil {
		return errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("snapshot %s: %s with account %s: %w", id, action, m.forensics.ID, err)
	}
	return nil
}

// copyDetails are the details of a forensics copy's creation from src.
func (m *Mover) copyDetails(instanceID string, v *Volume, src string) map[string]string {
	return map[string]string{"source_snapshot": src, "source_account": m.member.ID, "original_snapshot": v.Original,
		"volume_id": v.VolumeID, "instance_id": instanceID, "device": v.DeviceName, "size_gib": strconv.Itoa(int(v.SizeGiB)),
		"kms_key": m.forensicsKey(), "purpose": PurposeForensics}
}

// DefaultForensicsKey is the key that encrypts forensics copies when
// Options.ForensicsKMSKey is empty: the forensics account's own AWS managed
// EBS key.
const DefaultForensicsKey = "alias/aws/ebs"

func (m *Mover) forensicsKey() string {
	if m.o.ForensicsKMSKey != "" {
		return m.o.ForensicsKMSKey
	}
	return DefaultForensicsKey
}

func (m *Mover) forensicsCopy(ctx context.Context, instanceID string, v *Volume, src string) error {
	in := &ec2.CopySnapshotInput{
		SourceSnapshotId: aws.String(src),
		SourceRegion:     aws.String(m.o.Region),
		Encrypted:        aws.Bool(true),
		Description:      m.description("forensics copy of " + v.Original + " (volume " + v.VolumeID + " of " + instanceID + ")"),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSnapshot,
			Tags: m.caseTags(RoleForensics, TagSourceSnapshot, v.Original, TagCopySource, src, TagSourceVolume, v.VolumeID, TagSourceInstance, instanceID)}},
	}
	// Always name the key: without one, EC2 may keep the source's key, a
	// member key whose grant is retired when the copy is done.
	in.KmsKeyId = aws.String(m.forensicsKey())
	out, err := m.forensics.EC2.CopySnapshot(ctx, in)
	step := Step{Action: ActionCopy, Account: m.forensics.ID, Resources: []string{m.snapshotARN(src)}, Details: m.copyDetails(instanceID, v, src)}
	if err != nil {
		err = fmt.Errorf("snapshot %s: copy into forensics account %s: %w", src, m.forensics.ID, err)
		if hint := m.forensicsKeyHint(err); hint != "" {
			err = fmt.Errorf("%w; %s", err, hint)
		}
		return m.failed(ctx, step, err)
	}
	v.Forensics = aws.ToString(out.SnapshotId)
	step.Resources = append(step.Resources, m.snapshotARN(v.Forensics))
	step.Details["snapshot"] = v.Forensics
	if m.o.ForensicsKMSKey == "" {
		// The account's aws/ebs key: record which key that is.
		d, derr := m.forensics.EC2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{v.Forensics}})
		if derr == nil && len(d.Snapshots) == 1 {
			step.Details["kms_key"] = aws.ToString(d.Snapshots[0].KmsKeyId)
		}
	}
	if err := m.record(ctx, step); err != nil {
		return err
	}
	snap, err := m.wait(ctx, m.forensics, v.Forensics, v, RoleForensics)
	if err != nil {
		return err
	}
	v.ForensicsKMSKey = aws.ToString(snap.KmsKeyId)
	return nil
}

// forensicsKeyHint says what to check when the forensics copy failed: the
// forensics account's use of the key that encrypts the copy. EC2 reports a
// key the caller cannot use as InvalidParameterValue, not as a KMS error, so
// any API error qualifies except those about the source snapshot itself.
func (m *Mover) forensicsKeyHint(err error) string {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return ""
	}
	code := ae.ErrorCode()
	if strings.HasPrefix(code, "InvalidSnapshot") || code == "IncorrectState" || code == "RequestLimitExceeded" || code == "ResourceLimitExceeded" {
		return ""
	}
	if m.o.ForensicsKMSKey != "" {
		return fmt.Sprintf("if the key is the cause: the forensics account %s must be allowed to use KMS key %s in Region %s (kms:CreateGrant, kms:Decrypt, kms:DescribeKey, kms:GenerateDataKeyWithoutPlaintext, kms:ReEncrypt*): check --forensics-kms-key and the key's policy",
			m.forensics.ID, m.o.ForensicsKMSKey, m.o.Region)
	}
	if strings.Contains(code, "KMS") {
		return fmt.Sprintf("the forensics account %s must be able to use its %s key in Region %s, or pass --forensics-kms-key", m.forensics.ID, DefaultForensicsKey, m.o.Region)
	}
	return ""
}

// deleteIntermediate deletes v's intermediate copy; leftover says an
// earlier run left it.
// deleteFailedIntermediates deletes the case's intermediate copies that
// ended in the error state (findTagged passes them over, so no run adopts
// them): the member account keeps nothing of the case but its originals.
func (m *Mover) deleteFailedIntermediates(ctx context.Context) error {
	p := ec2.NewDescribeSnapshotsPaginator(m.member.EC2, &ec2.DescribeSnapshotsInput{
		OwnerIds: []string{"self"},
		Filters: []ec2types.Filter{
			{Name: aws.String("tag:" + TagCase), Values: []string{m.o.CaseID}},
			{Name: aws.String("tag:" + TagRole), Values: []string{RoleIntermediate}},
		},
	})
	var errs []error
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("find case %s's failed intermediate snapshots in account %s: %w", m.o.CaseID, m.member.ID, err)
		}
		for _, sn := range page.Snapshots {
			if sn.State != ec2types.SnapshotStateError {
				continue
			}
			v := &Volume{VolumeID: aws.ToString(sn.VolumeId), Intermediate: aws.ToString(sn.SnapshotId), Original: tagMap(sn.Tags)[TagSourceSnapshot]}
			errs = append(errs, m.deleteIntermediate(ctx, v, true))
		}
	}
	return errors.Join(errs...)
}

func (m *Mover) deleteIntermediate(ctx context.Context, v *Volume, leftover bool) error {
	if v.Intermediate == "" || v.Intermediate == v.Original {
		return nil
	}
	_, err := m.member.EC2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(v.Intermediate)})
	step := Step{Action: ActionDeleteIntermediate, Account: m.member.ID, Resources: []string{m.snapshotARN(v.Intermediate)},
		Details: map[string]string{"snapshot": v.Intermediate, "original_snapshot": v.Original, "volume_id": v.VolumeID}, Err: err}
	if leftover {
		step.Details["leftover"] = "true"
	}
	if rerr := m.record(ctx, step); rerr != nil {
		return errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("delete intermediate snapshot %s: %w", v.Intermediate, err)
	}
	return nil
}
