package acquire

import (
	"time"

	"github.com/impound-ir/impound/vault"
)

// Compression of the stored image ([Options.Compression]).
const (
	CompressNone = ""
	// CompressZstd stores the image in the zstd seekable format: independent
	// frames of [FrameSize] raw bytes and a seek table, so any range can be
	// read without decompressing the rest (see package acquire/seekable).
	CompressZstd = "zstd"
)

// Options says how to acquire. Start from [NewOptions].
type Options struct {
	// Key is the vault key of the image; the block map is stored at
	// Key + ".blockmap". Required: see [DefaultKey].
	Key string
	// Case is the case ID, recorded in the evidence and the resume state.
	Case string
	// Hashes lists the whole-image hashes to compute in the same pass
	// (sha256 always; md5, sha1, sha512 on request).
	Hashes []string
	// SHA256Impl chooses the SHA-256 implementation ([ImplStdlib], [ImplSIMD]).
	SHA256Impl string
	// Workers is the number of parallel block reads; 0 asks the source
	// (EBS: 64; files: CPU cores minus one, at least one, keeping one core
	// for the whole-image hash).
	Workers int
	// Window bounds the blocks read ahead of the sequential hash, in blocks
	// (backpressure and memory: Window*BlockSize bytes of buffers at most,
	// plus one per worker).
	Window int
	// Compression is CompressNone (raw image) or CompressZstd.
	Compression string
	// Put says how the image and its block map are kept in the vault.
	Put vault.PutOptions
	// StateDir, when set, holds the resume state of this acquisition,
	// written every CheckpointInterval; see [StatePath]. Empty: no resume.
	StateDir string
	// Resume continues from the state in StateDir instead of starting anew.
	Resume bool
	// CheckpointInterval is the time between checkpoints when StateDir is set.
	CheckpointInterval time.Duration
	// Progress, when set, is told how far the acquisition is.
	Progress Progress
	// Tool identifies the impound binary in the evidence record.
	Tool Tool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// NewOptions returns the defaults: SHA-256 only, stdlib SHA-256, workers
// chosen by the source, a 64-block (32 MiB) window, raw output, checkpoints
// every 15 s.
func NewOptions() Options {
	return Options{
		Hashes:             []string{SHA256},
		SHA256Impl:         ImplStdlib,
		Window:             64,
		CheckpointInterval: 15 * time.Second,
	}
}

// Progress receives the acquisition's progress. Implementations must be
// cheap: Update is called once per block from the pipeline's writer.
type Progress interface {
	// Update reports done of total image bytes processed (hashed and
	// written to the vault).
	Update(done, total int64)
}

// Tool identifies the binary that made the acquisition.
type Tool struct {
	Name         string `json:"name"`
	Version      string `json:"version"`
	BinarySHA256 string `json:"binary_sha256,omitempty"`
}
