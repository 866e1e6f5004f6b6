package acquire

import "context"

// BlockSize is the unit in which impound reads sources, computes Merkle leaves
// and records which parts of a source held data: the EBS direct block size,
// 512 KiB. Block i covers image bytes [i*BlockSize, min((i+1)*BlockSize, size)).
const BlockSize = 512 << 10

// Source kinds, as recorded in [SourceInfo.Kind].
const (
	KindSnapshot    = "ebs-snapshot"
	KindIncremental = "ebs-incremental"
	KindDevice      = "device"
	KindFile        = "file"
)

// Block names one written block of a source.
type Block struct {
	Index int64
	// Token is the source's handle on the block (the EBS block token); the
	// pipeline passes it back to ReadBlock unchanged.
	Token string
}

// SourceInfo says what was acquired, for the evidence record.
type SourceInfo struct {
	Kind           string `json:"kind"`
	SnapshotID     string `json:"snapshot_id,omitempty"`
	SnapshotARN    string `json:"snapshot_arn,omitempty"`
	BaseSnapshotID string `json:"base_snapshot_id,omitempty"` // incremental: the older snapshot
	VolumeID       string `json:"volume_id,omitempty"`
	VolumeARN      string `json:"volume_arn,omitempty"`
	InstanceID     string `json:"instance_id,omitempty"`
	InstanceARN    string `json:"instance_arn,omitempty"`
	DevicePath     string `json:"device_path,omitempty"` // device name on the instance, or the local device read
	Path           string `json:"path,omitempty"`        // a file source's path
	Account        string `json:"account,omitempty"`
	Region         string `json:"region,omitempty"`
}

// ID returns a short identifier of the source, used in default keys and
// resume-state file names: the snapshot ID, or the device or file path.
func (s SourceInfo) ID() string {
	switch {
	case s.SnapshotID != "":
		return s.SnapshotID
	case s.DevicePath != "":
		return s.DevicePath
	}
	return s.Path
}

// Source is what the pipeline reads. Implementations: [FileSource] (files and
// block devices), [EBSSource] (snapshots through the EBS direct APIs).
type Source interface {
	// Info describes the source for the evidence record.
	Info() SourceInfo
	// Size is the image size in bytes.
	Size() int64
	// Blocks calls fn for every written block with index >= from, in
	// increasing index order. Blocks not reported read as zeros and are
	// never passed to ReadBlock. An error from fn stops the walk and is
	// returned.
	Blocks(ctx context.Context, from int64, fn func(Block) error) error
	// ReadBlock fills p, whose length is the block's length, with block b.
	// It is called from several goroutines at once.
	ReadBlock(ctx context.Context, b Block, p []byte) error
}

// concurrencyHinter is implemented by sources that know how many reads they
// want in flight (EBS: network latency; files: CPU count).
type concurrencyHinter interface {
	Concurrency() int
}
