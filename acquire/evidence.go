package acquire

import (
	"path"
	"strings"
	"time"

	"github.com/impound-ir/impound/vault"
)

// EvidenceFormat tags the evidence record's JSON form.
const EvidenceFormat = "impound-evidence/1"

// MerkleLeafDefinition states, in the record itself, what the Merkle root is
// computed over.
const MerkleLeafDefinition = "rfc6962-sha256; leaf i = SHA-256(0x00 || image bytes of block i), blocks of 524288 bytes, the last block unpadded; root hex"

// Evidence is the record of one acquisition: what the custody ledger stores
// as "evidence stored". It is returned only when everything succeeded: the
// image and its block map are committed in the vault and every hash is of
// the bytes that were stored.
type Evidence struct {
	Format string     `json:"format"` // EvidenceFormat
	Case   string     `json:"case,omitempty"`
	Source SourceInfo `json:"source"`

	Size          int64 `json:"size"`           // image bytes
	BlockSize     int64 `json:"block_size"`     // BlockSize
	Blocks        int64 `json:"blocks"`         // ceil(Size / BlockSize)
	WrittenBlocks int64 `json:"written_blocks"` // blocks the source held data in

	// Hashes maps algorithm ("sha256" always; "md5", "sha1", "sha512" on
	// request) to the lower-case hex digest of the raw image, what
	// `sha256sum` of the image prints.
	Hashes map[string]string `json:"hashes"`
	// MerkleRoot is the hex RFC 6962 tree hash over the blocks' leaf hashes
	// (see MerkleLeaf), so any block can be proven part of the image.
	MerkleRoot string `json:"merkle_root"`
	MerkleLeaf string `json:"merkle_leaf"` // MerkleLeafDefinition

	// Compression is "" (the stored object is the raw image) or "zstd"
	// (zstd seekable format; the hashes above are still of the raw image,
	// Image.SHA256 is the stored object's own SHA-256).
	Compression string         `json:"compression,omitempty"`
	StoredSize  int64          `json:"stored_size"`
	Image       *vault.Receipt `json:"image"`
	BlockMap    *vault.Receipt `json:"block_map"`

	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Resumed  int       `json:"resumed,omitempty"` // times the acquisition was resumed
	Stats    Stats     `json:"stats"`
	// Incremental, for an incremental acquisition, names the base
	// acquisition whose image supplied the unchanged blocks and counts the
	// blocks read from EBS and reused.
	Incremental *Incremental `json:"incremental,omitempty"`
	Tool        Tool         `json:"tool"`
}

// Stats counts what the reads cost.
type Stats struct {
	Reads            int64 `json:"reads"`             // blocks read from the source
	Retries          int64 `json:"retries"`           // reads repeated after an error
	Throttled        int64 `json:"throttled"`         // throttling answers
	ChecksumFailures int64 `json:"checksum_failures"` // blocks whose checksum did not match, then read again
}

// DefaultKey builds the vault key of an image from the case ID and the
// source, in the vault's layout (vault.CaseKey, area "evidence"):
// "cases/<case>/evidence/<snapshot ID>.img", or the base name of a file or
// device ("disk.img", "xvdf.img"); ".zst" is appended when compressed.
func DefaultKey(caseID string, src SourceInfo, compression string) (string, error) {
	name := src.SnapshotID
	if name == "" {
		name = path.Base(src.ID())
	}
	if !strings.HasSuffix(name, ".img") {
		name += ".img"
	}
	if compression == CompressZstd {
		name += ".zst"
	}
	return vault.CaseKey(caseID, vault.AreaEvidence, name)
}
