// Package vault keeps evidence where nobody, impound's own role included, can
// change or delete it once written, and proves on every read that it got back
// what was written.
//
// # Guarantees
//
//   - Write once: a key is written at most once. Putting identical content at a
//     key that already holds it succeeds and returns the stored version's
//     receipt (an idempotent retry after a lost response); putting different
//     content fails with [ErrExists].
//   - Hashed while streaming: a [Receipt]'s SHA-256 is computed from the bytes as
//     they pass, never by reading the object back.
//   - Nothing half-written: a failed or cancelled Put leaves no object at its
//     key; on S3 its multipart upload is aborted.
//   - Verifiable: [Verify] re-reads one object version and compares it with its
//     receipt.
//
// Implementations: S3 with Object Lock ("s3://bucket[/prefix]"), a local
// directory ("file:///path" or a plain path) and, for tests, memory ("mem:").
//
// A host without AWS credentials streams into S3 through [PartWriter], over
// the part URLs a [PresignedUpload] on the credentialed side signs
// ([PartSigner]); the credentialed side completes the upload and issues the
// receipt.
package vault

import (
	"errors"
	"time"
)

// Errors that are part of the API. Callers test them with errors.Is.
var (
	// ErrExists: the key already holds different content; evidence is never overwritten.
	ErrExists = errors.New("vault: key already holds different content")
	// ErrNotFound: no object (or no such version) at the key.
	ErrNotFound = errors.New("vault: object not found")
	// ErrMismatch: a re-read object differs from its receipt.
	ErrMismatch = errors.New("vault: stored object differs from its receipt")
)

// Retention modes of S3 Object Lock.
const (
	ModeCompliance = "COMPLIANCE" // nobody can shorten or remove it; the default
	ModeGovernance = "GOVERNANCE" // can be bypassed with s3:BypassGovernanceRetention
)

// PutOptions says how one object is kept. The zero value keeps it under the
// store's default retention, with no legal hold.
type PutOptions struct {
	RetentionMode string    // ModeCompliance (default) or ModeGovernance
	RetainUntil   time.Time // zero: the store's default retention period from now
	LegalHold     bool
	KMSKeyID      string // SSE-KMS key for S3; empty: the bucket default
	ContentType   string
	// SizeHint, when > 0, lets the store choose a part size before the
	// stream's end is known; streams of unknown length work without it.
	SizeHint int64
}

// Receipt is the proof of one stored object: what the custody ledger records.
type Receipt struct {
	URI       string // s3://bucket/key or file:///path, without the version
	Key       string
	VersionID string // S3 VersionId; for the local store, the stored file's identifier
	Size      int64
	SHA256    string // hex SHA-256 of the full content, computed while streaming

	// Parts are the checksums S3 verified in transit (multipart uploads).
	Parts []Part `json:",omitempty"`
	// Segments are set when the content was larger than one S3 object can
	// hold (10,000 parts of at most half Options.MemoryBudget each) and was
	// split into numbered objects; the whole's Size and SHA256 are above,
	// each segment's below. Segment 0 is Key itself.
	Segments []Segment `json:",omitempty"`

	RetentionMode string
	RetainUntil   time.Time
	LegalHold     bool
	StoredAt      time.Time
}

// Part is one multipart-upload part's checksum.
type Part struct {
	Number int32
	Size   int64
	SHA256 string // base64, as S3's x-amz-checksum-sha256
}

// Segment is one of the numbered objects a very large stream is split into.
type Segment struct {
	Key       string
	VersionID string
	Offset    int64
	Size      int64
	SHA256    string // hex
	Parts     []Part `json:",omitempty"`
}
