package custody

import (
	"encoding/json"
	"fmt"

	"github.com/impound-ir/impound/vault"
)

// Kind names what an entry records. docs/ledger.md describes each.
type Kind string

// The entry kinds impound writes.
const (
	KindCaseOpened       Kind = "case-opened"
	KindEvidenceObserved Kind = "evidence-observed"
	KindIsolationStep    Kind = "isolation-step"
	KindSnapshotCreated  Kind = "snapshot-created"
	KindSnapshotCopied   Kind = "snapshot-copied"
	KindSnapshotShared   Kind = "snapshot-shared"
	KindEvidenceStored   Kind = "evidence-stored"
	KindEvidenceVerified Kind = "evidence-verified"
	KindLegalHoldChanged Kind = "legal-hold-changed"
	KindReportGenerated  Kind = "report-generated"
	KindCaseClosed       Kind = "case-closed"
	KindNote             Kind = "note"
	KindAWSAction        Kind = "aws-action"
)

// Details is the structured payload of an entry; its kind is the entry's
// kind. It is encoded as canonical JSON (RFC 8785) on the entry's details line.
type Details interface {
	Kind() Kind
}

// CaseOpened is always entry 0 of a case, and only entry 0.
type CaseOpened struct {
	// VerifierKey is the note verifier key of the one key allowed to sign the
	// case's checkpoints. The ledger fills it from its signer.
	VerifierKey string `json:"verifier_key"`
	Title       string `json:"title,omitempty"`
	// Trigger is what opened the case: a GuardDuty finding ID, a ticket.
	Trigger string `json:"trigger,omitempty"`
	// Account and Region are where the suspect resources are; InstanceID the
	// instance the case is about, when there is one; ForensicsAccount the
	// account that keeps the evidence.
	Account          string `json:"account,omitempty"`
	Region           string `json:"region,omitempty"`
	InstanceID       string `json:"instance_id,omitempty"`
	ForensicsAccount string `json:"forensics_account,omitempty"`
	// Tool is the impound that opened the case.
	Tool *Tool `json:"tool,omitempty"`
	// Attributes record the case's configuration: vault, retention, hashes,
	// isolation options (see docs/ledger.md for the keys impound writes).
	Attributes map[string]string `json:"attributes,omitempty"`
}

// Tool identifies the binary that acted, as examiners record it.
type Tool struct {
	Name         string `json:"name"` // "impound"
	Version      string `json:"version"`
	Commit       string `json:"commit,omitempty"`
	BinarySHA256 string `json:"binary_sha256,omitempty"`
}

// EvidenceObserved records a fact seen but not stored as an object: an
// instance's state, its metadata, a finding.
type EvidenceObserved struct {
	Source     string            `json:"source"` // e.g. "ec2:DescribeInstances", "guardduty"
	Summary    string            `json:"summary,omitempty"`
	SHA256     string            `json:"sha256,omitempty"` // hex, of the observed bytes when there are some
	Attributes map[string]string `json:"attributes,omitempty"`
}

// IsolationStep records one step of isolating an instance with the state it
// changed, so that a release can restore it exactly.
type IsolationStep struct {
	Step   string          `json:"step"`   // e.g. "asg-standby", "swap-security-groups"
	Target string          `json:"target"` // the resource changed (ARN or ID)
	Before json.RawMessage `json:"before,omitempty"`
	After  json.RawMessage `json:"after,omitempty"`
	// Status is how the step ended when it did not simply run: "skipped"
	// (not safe after an earlier failure), "already-done", "planned".
	// Empty means it ran; a failure is the entry's outcome.
	Status string `json:"status,omitempty"`
	// Note explains the status or what the step found.
	Note string `json:"note,omitempty"`
}

// SnapshotCreated records an EBS snapshot taken of a suspect volume.
type SnapshotCreated struct {
	SnapshotID string `json:"snapshot_id"`
	VolumeID   string `json:"volume_id"`
	Account    string `json:"account,omitempty"`
	Region     string `json:"region,omitempty"`
	Encrypted  bool   `json:"encrypted"`
	KMSKeyID   string `json:"kms_key_id,omitempty"`
	SizeGiB    int64  `json:"size_gib,omitempty"`
	InstanceID string `json:"instance_id,omitempty"`
	Device     string `json:"device,omitempty"`
}

// SnapshotCopied records a CopySnapshot, re-encrypting or moving ownership.
type SnapshotCopied struct {
	SourceSnapshotID string `json:"source_snapshot_id"`
	SourceAccount    string `json:"source_account,omitempty"`
	SourceRegion     string `json:"source_region,omitempty"`
	SnapshotID       string `json:"snapshot_id"`
	Account          string `json:"account,omitempty"`
	Region           string `json:"region,omitempty"`
	KMSKeyID         string `json:"kms_key_id,omitempty"`
	// OriginalSnapshotID and VolumeID tie a copy of a copy back to the
	// suspect volume's first snapshot.
	OriginalSnapshotID string `json:"original_snapshot_id,omitempty"`
	VolumeID           string `json:"volume_id,omitempty"`
	// Purpose says why the copy was made (re-encryption, forensics copy).
	Purpose string `json:"purpose,omitempty"`
}

// SnapshotShared records createVolumePermission granted on a snapshot.
type SnapshotShared struct {
	SnapshotID string   `json:"snapshot_id"`
	Accounts   []string `json:"accounts"`
	KMSKeyID   string   `json:"kms_key_id,omitempty"`
}

// EvidenceStored records an object written to the vault.
type EvidenceStored struct {
	Receipt vault.Receipt `json:"receipt"`
	// Source is what the bytes are: a snapshot ID, "memory:i-0abc", a path.
	Source string `json:"source"`
	// Hashes are further digests computed while streaming, by algorithm
	// ("md5", "sha1"), hex; the receipt carries the SHA-256.
	Hashes map[string]string `json:"hashes,omitempty"`
	// MerkleRoot is the root over the source's blocks, when acquisition
	// computed one (hex).
	MerkleRoot string `json:"merkle_root,omitempty"`
	// Evidence says what kind of object this is (EvidenceDiskImage, ...).
	Evidence string `json:"evidence,omitempty"`
	// Acquisition is how a disk image was acquired; nil for other objects.
	Acquisition *Acquisition `json:"acquisition,omitempty"`
	// Notes are what an examiner must know about the object: a fallback
	// taken (console output that is not the latest), a limit reached
	// (CloudTrail events cut off).
	Notes []string `json:"notes,omitempty"`
}

// Kinds of stored evidence.
const (
	EvidenceDiskImage    = "disk-image"    // a volume, snapshot, device or file image
	EvidenceControlPlane = "control-plane" // what the AWS API said about the instance
	EvidenceMemory       = "memory"        // a memory image
	EvidenceFile         = "file"          // a file stored as is
)

// Acquisition is how a disk image was read: its geometry, where it came from,
// the block map stored beside it, when and by which tool.
type Acquisition struct {
	SnapshotID    string `json:"snapshot_id,omitempty"`
	VolumeID      string `json:"volume_id,omitempty"`
	InstanceID    string `json:"instance_id,omitempty"`
	Device        string `json:"device,omitempty"`
	Account       string `json:"account,omitempty"`
	Region        string `json:"region,omitempty"`
	Size          int64  `json:"size"` // bytes of the raw image
	BlockSize     int64  `json:"block_size"`
	Blocks        int64  `json:"blocks"`
	WrittenBlocks int64  `json:"written_blocks"`
	// Compression is "" (the object is the raw image) or "zstd" (seekable
	// zstd; the hashes are still of the raw image).
	Compression string         `json:"compression,omitempty"`
	BlockMap    *vault.Receipt `json:"block_map,omitempty"`
	MerkleLeaf  string         `json:"merkle_leaf,omitempty"` // how the Merkle leaves are defined
	Started     string         `json:"started"`               // RFC 3339, UTC
	Finished    string         `json:"finished"`
	Tool        *Tool          `json:"tool,omitempty"`
	// Incremental is set when unchanged blocks came from an earlier
	// acquisition of the same volume instead of from EBS.
	Incremental *Incremental `json:"incremental,omitempty"`
}

// Incremental names the base acquisition an incremental one reused, and how
// many blocks came from where.
type Incremental struct {
	BaseSnapshotID string         `json:"base_snapshot_id"`
	BaseImage      *vault.Receipt `json:"base_image,omitempty"`
	// BaseMerkleRoot is the base image's recorded root, which the whole base
	// was verified against before its blocks were reused.
	BaseMerkleRoot string `json:"base_merkle_root"`
	ChangedBlocks  int64  `json:"changed_blocks"` // listed by ListChangedBlocks
	EBSBlocks      int64  `json:"ebs_blocks"`     // read from EBS
	ReusedBlocks   int64  `json:"reused_blocks"`  // taken from the base image
}

// EvidenceVerified records a re-read of a stored object compared with its
// receipt. A mismatch is recorded with outcome failed.
type EvidenceVerified struct {
	URI       string `json:"uri"`
	Key       string `json:"key"`
	VersionID string `json:"version_id"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
}

// LegalHoldChanged records a legal hold placed on or lifted from one object version.
type LegalHoldChanged struct {
	URI       string `json:"uri"`
	Key       string `json:"key"`
	VersionID string `json:"version_id"`
	On        bool   `json:"on"`
	Reason    string `json:"reason,omitempty"`
}

// ReportGenerated records a report written about the case.
type ReportGenerated struct {
	Receipt vault.Receipt `json:"receipt"`
	Format  string        `json:"format"` // "html", "pdf", "json"
	// Checkpoint is the signed checkpoint the report was written against.
	Checkpoint string `json:"checkpoint,omitempty"`
}

// CaseClosed records the end of a case.
type CaseClosed struct {
	Reason string `json:"reason,omitempty"`
}

// Note is free text from an investigator.
type Note struct {
	Text string `json:"text"`
}

// AWSAction records an action on AWS resources that has no kind of its
// own: a KMS grant created or retired, a snapshot unshared, an intermediate
// snapshot deleted.
type AWSAction struct {
	Action  string            `json:"action"` // e.g. "kms.create-grant"
	Account string            `json:"account,omitempty"`
	Region  string            `json:"region,omitempty"`
	Details map[string]string `json:"details,omitempty"`
}

// RawDetails are details of a kind, or with fields, this version of impound
// does not know. They verify like any other: JSON is canonical.
type RawDetails struct {
	EntryKind Kind
	JSON      json.RawMessage
}

func (CaseOpened) Kind() Kind       { return KindCaseOpened }
func (EvidenceObserved) Kind() Kind { return KindEvidenceObserved }
func (IsolationStep) Kind() Kind    { return KindIsolationStep }
func (SnapshotCreated) Kind() Kind  { return KindSnapshotCreated }
func (SnapshotCopied) Kind() Kind   { return KindSnapshotCopied }
func (SnapshotShared) Kind() Kind   { return KindSnapshotShared }
func (EvidenceStored) Kind() Kind   { return KindEvidenceStored }
func (EvidenceVerified) Kind() Kind { return KindEvidenceVerified }
func (LegalHoldChanged) Kind() Kind { return KindLegalHoldChanged }
func (ReportGenerated) Kind() Kind  { return KindReportGenerated }
func (CaseClosed) Kind() Kind       { return KindCaseClosed }
func (Note) Kind() Kind             { return KindNote }
func (AWSAction) Kind() Kind        { return KindAWSAction }
func (r RawDetails) Kind() Kind     { return r.EntryKind }

// newDetails returns a pointer to the zero payload of a known kind.
func newDetails(k Kind) (Details, bool) {
	switch k {
	case KindCaseOpened:
		return &CaseOpened{}, true
	case KindEvidenceObserved:
		return &EvidenceObserved{}, true
	case KindIsolationStep:
		return &IsolationStep{}, true
	case KindSnapshotCreated:
		return &SnapshotCreated{}, true
	case KindSnapshotCopied:
		return &SnapshotCopied{}, true
	case KindSnapshotShared:
		return &SnapshotShared{}, true
	case KindEvidenceStored:
		return &EvidenceStored{}, true
	case KindEvidenceVerified:
		return &EvidenceVerified{}, true
	case KindLegalHoldChanged:
		return &LegalHoldChanged{}, true
	case KindReportGenerated:
		return &ReportGenerated{}, true
	case KindCaseClosed:
		return &CaseClosed{}, true
	case KindNote:
		return &Note{}, true
	case KindAWSAction:
		return &AWSAction{}, true
	}
	return nil, false
}

// EncodeDetails returns the canonical JSON (RFC 8785) of d, as an entry's
// details line holds it.
func EncodeDetails(d Details) ([]byte, error) { return encodeDetails(d) }

// encodeDetails returns the canonical JSON of d.
func encodeDetails(d Details) ([]byte, error) {
	if r, ok := d.(RawDetails); ok {
		if err := checkCanonicalJSON(r.JSON); err != nil {
			return nil, err
		}
		return r.JSON, nil
	}
	if r, ok := d.(*RawDetails); ok {
		return encodeDetails(*r)
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("custody: encode %s details: %w", d.Kind(), err)
	}
	c, err := canonicalJSON(b)
	if err != nil {
		return nil, fmt.Errorf("custody: encode %s details: %w", d.Kind(), err)
	}
	if len(c) == 0 || c[0] != '{' {
		return nil, fmt.Errorf("custody: %s details must encode as a JSON object", d.Kind())
	}
	return c, nil
}

// decodeDetails returns the typed payload of canonical JSON raw of kind k,
// or RawDetails when the kind or a field is unknown to this version, so
// that formatting the result gives back raw exactly.
func decodeDetails(k Kind, raw []byte) Details {
	p, ok := newDetails(k)
	if ok && json.Unmarshal(raw, p) == nil {
		d := derefDetails(p)
		if c, err := encodeDetails(d); err == nil && string(c) == string(raw) {
			return d
		}
	}
	return RawDetails{EntryKind: k, JSON: append(json.RawMessage(nil), raw...)}
}

func derefDetails(p Details) Details {
	switch p := p.(type) {
	case *CaseOpened:
		return *p
	case *EvidenceObserved:
		return *p
	case *IsolationStep:
		return *p
	case *SnapshotCreated:
		return *p
	case *SnapshotCopied:
		return *p
	case *SnapshotShared:
		return *p
	case *EvidenceStored:
		return *p
	case *EvidenceVerified:
		return *p
	case *LegalHoldChanged:
		return *p
	case *ReportGenerated:
		return *p
	case *CaseClosed:
		return *p
	case *Note:
		return *p
	case *AWSAction:
		return *p
	}
	return p
}
