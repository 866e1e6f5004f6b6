package acquire

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/impound-ir/impound/vault"
)

// Errors of incremental acquisition.
var (
	// ErrBaseMismatch: the base image read back from the vault is not the
	// image its acquisition recorded (its Merkle root, size or block map
	// differ): it was altered, or the wrong object was named. Nothing is
	// stored.
	ErrBaseMismatch = errors.New("acquire: base image does not match its recorded acquisition")
	// ErrUnrelatedBase: the base snapshot is not an older snapshot of the
	// same volume (EBS refuses to compare them), or the volumes' sizes
	// differ.
	ErrUnrelatedBase = errors.New("acquire: base snapshot is not an older snapshot of the same volume")
)

// ebsChangedAPI is the part of the EBS direct client an incremental source uses.
type ebsChangedAPI interface {
	ebsAPI
	ListChangedBlocks(ctx context.Context, in *ebs.ListChangedBlocksInput, optFns ...func(*ebs.Options)) (*ebs.ListChangedBlocksOutput, error)
}

var _ ebsChangedAPI = (*ebs.Client)(nil)

// baseStore is the part of a vault.Store an incremental source reads the
// base acquisition from.
type baseStore interface {
	Get(ctx context.Context, key, versionID string) (io.ReadCloser, error)
}

// BaseAcquisition is what was recorded when the older snapshot was acquired
// (the custody ledger's evidence-stored entry, or its [Evidence]): an
// incremental acquisition reads the unchanged blocks from that stored image
// and checks them against its recorded Merkle root.
type BaseAcquisition struct {
	SnapshotID string `json:"snapshot_id"`
	// Image is the receipt of the stored base image (raw or zstd seekable).
	Image vault.Receipt `json:"image"`
	// BlockMap is the receipt of the base image's block map.
	BlockMap vault.Receipt `json:"block_map"`
	// Size, MerkleRoot (hex) and Compression are as recorded in the base's
	// evidence.
	Size        int64  `json:"size"`
	MerkleRoot  string `json:"merkle_root"`
	Compression string `json:"compression,omitempty"`
}

// BaseFromEvidence returns the base description of a completed acquisition.
func BaseFromEvidence(ev *Evidence) (BaseAcquisition, error) {
	if ev == nil || ev.Image == nil || ev.BlockMap == nil || ev.Source.SnapshotID == "" {
		return BaseAcquisition{}, errors.New("acquire: base evidence is not a stored snapshot acquisition")
	}
	return BaseAcquisition{
		SnapshotID: ev.Source.SnapshotID, Image: *ev.Image, BlockMap: *ev.BlockMap,
		Size: ev.Size, MerkleRoot: ev.MerkleRoot, Compression: ev.Compression,
	}, nil
}

// Incremental is what the evidence of an incremental acquisition records
// about its base and about where each block came from.
type Incremental struct {
	BaseSnapshotID string         `json:"base_snapshot_id"`
	BaseImage      *vault.Receipt `json:"base_image"`
	BaseMerkleRoot string         `json:"base_merkle_root"` // verified over the whole base image
	// ChangedBlocks is the number of blocks ListChangedBlocks listed;
	// EBSBlocks of them were read with GetSnapshotBlock (the others are no
	// longer written in the newer snapshot and are zeros). ReusedBlocks
	// written blocks were taken from the base image. Counts are of this run
	// (after a resume, of the blocks from where it continued).
	ChangedBlocks int64 `json:"changed_blocks"`
	EBSBlocks     int64 `json:"ebs_blocks"`
	ReusedBlocks  int64 `json:"reused_blocks"`
}

// incrementalReporter is implemented by sources whose evidence records an
// [Incremental] section.
type incrementalReporter interface {
	incremental() *Incremental
}

// leafReader is implemented by sources that already know a block's Merkle
// leaf when they read it, computed from the same bytes (incremental: the
// leaf of a reused base block, hashed while the base was verified), so the
// pipeline does not hash the block again. ok false: the pipeline hashes.
type leafReader interface {
	readBlockLeaf(ctx context.Context, b Block, p []byte) (leaf tlog.Hash, ok bool, err error)
}

// baseBlockToken marks blocks read from the base image; EBS tokens never
// take this form.
const baseBlockToken = "impound:base"

// maxBlockMapBytes caps the block map read back from the vault.
const maxBlockMapBytes = 1 << 30

// IncrementalSource reads a completed EBS snapshot (the newer one, B) as an
// increment over an earlier acquisition of an older snapshot of the same
// volume (the base, A): ListChangedBlocks(A, B) names the blocks that
// differ, which are read with GetSnapshotBlock and checksum-verified like
// [EBSSource] does; every other written block is read from the base image
// in the vault, streamed once in block order. The image is still the full
// image of B.
//
// The base image is verified while it streams: the RFC 6962 root of every
// base block (changed ones included) must equal the base's recorded
// MerkleRoot, and the base must have exactly the recorded size, or Blocks
// fails with [ErrBaseMismatch] before the pipeline can commit anything.
type IncrementalSource struct {
	ebs   *EBSSource
	api   ebsChangedAPI
	store baseStore
	base  BaseAcquisition
	bmap  *BlockMap
	info  SourceInfo

	pool    sync.Pool // base blocks read ahead of the pipeline's readers
	mu      sync.Mutex
	pending map[int64]pendingBlock // base blocks handed to the pipeline, not yet read
	walkErr error                  // why Blocks failed, once it has

	changed, ebsReads, reused atomic.Int64
}

type pendingBlock struct {
	buf  *[]byte
	leaf tlog.Hash
}

var (
	_ Source              = (*IncrementalSource)(nil)
	_ leafReader          = (*IncrementalSource)(nil)
	_ incrementalReporter = (*IncrementalSource)(nil)
)

// NewIncrementalSource opens snapshot id as an increment over base, whose
// image and block map are read from store. It fails with [ErrUnrelatedBase]
// when EBS says the snapshots are not of one volume lineage, or their sizes
// differ, and with [ErrBaseMismatch] when the stored block map is not the
// recorded one.
func NewIncrementalSource(ctx context.Context, api ebsChangedAPI, store baseStore, base BaseAcquisition, id string, gov *Governor, opts EBSOptions) (*IncrementalSource, error) {
	if base.SnapshotID == "" || base.Image.Key == "" || base.BlockMap.Key == "" || base.MerkleRoot == "" {
		return nil, errors.New("acquire: incremental: the base acquisition is incomplete (snapshot, image, block map and Merkle root are needed)")
	}
	if base.SnapshotID == id {
		return nil, fmt.Errorf("acquire: incremental: base and snapshot are both %s", id)
	}
	if base.Compression != CompressNone && base.Compression != CompressZstd {
		return nil, fmt.Errorf("acquire: incremental: base compression %q unknown", base.Compression)
	}
	es, err := NewEBSSource(ctx, api, id, gov, opts)
	if err != nil {
		return nil, err
	}
	s := &IncrementalSource{ebs: es, api: api, store: store, base: base, pending: map[int64]pendingBlock{}}
	s.pool.New = func() any { b := make([]byte, BlockSize); return &b }
	s.info = es.Info()
	s.info.Kind = KindIncremental
	s.info.BaseSnapshotID = base.SnapshotID
	if base.Size != es.Size() {
		return nil, fmt.Errorf("acquire: incremental: base %s holds %d bytes, snapshot %s %d: %w", base.SnapshotID, base.Size, id, es.Size(), ErrUnrelatedBase)
	}
	// Ask EBS now whether the two are comparable, so an unrelated base is
	// refused before anything is written.
	err = es.retry(ctx, "list changed blocks", es.gov.list, func(ctx context.Context) error {
		_, err := api.ListChangedBlocks(ctx, &ebs.ListChangedBlocksInput{
			FirstSnapshotId: aws.String(base.SnapshotID), SecondSnapshotId: aws.String(id), MaxResults: aws.Int32(100)})
		return err
	})
	if err != nil {
		return nil, s.listError(err)
	}
	if s.bmap, err = readBlockMap(ctx, store, base.BlockMap); err != nil {
		return nil, fmt.Errorf("acquire: incremental: base %s: %w", base.SnapshotID, err)
	}
	if s.bmap.Size != base.Size || s.bmap.BlockSize != BlockSize {
		return nil, fmt.Errorf("acquire: incremental: base %s: block map of %d bytes in blocks of %d, evidence says %d: %w",
			base.SnapshotID, s.bmap.Size, s.bmap.BlockSize, base.Size, ErrBaseMismatch)
	}
	return s, nil
}

func (s *IncrementalSource) listError(err error) error {
	var ve *types.ValidationException
	if errors.As(err, &ve) && ve.Reason == types.ValidationExceptionReasonUnrelatedSnapshots {
		return fmt.Errorf("acquire: incremental: %s and %s: %w (EBS: %s); acquire %s in full with 'impound acquire snapshot'",
			s.base.SnapshotID, s.ebs.id, ErrUnrelatedBase, aws.ToString(ve.Message), s.ebs.id)
	}
	return fmt.Errorf("acquire: incremental: snapshot %s over base %s: %w", s.ebs.id, s.base.SnapshotID, err)
}

// readBlockMap reads a block map back and checks it against its receipt.
func readBlockMap(ctx context.Context, store baseStore, r vault.Receipt) (*BlockMap, error) {
	rc, err := store.Get(ctx, r.Key, r.VersionID)
	if err != nil {
		return nil, fmt.Errorf("read block map %s: %w", r.Key, err)
	}
	defer rc.Close()
	text, err := io.ReadAll(io.LimitReader(rc, maxBlockMapBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read block map %s: %w", r.Key, err)
	}
	sum := sha256.Sum256(text)
	if got := hex.EncodeToString(sum[:]); int64(len(text)) != r.Size || got != r.SHA256 {
		return nil, fmt.Errorf("block map %s: %d bytes with SHA-256 %s, receipt says %d bytes, %s: %w", r.Key, len(text), got, r.Size, r.SHA256, ErrBaseMismatch)
	}
	m, err := ParseBlockMap(text)
	if err != nil {
		return nil, fmt.Errorf("block map %s: %w", r.Key, err)
	}
	return m, nil
}

// Info describes the newer snapshot, kind [KindIncremental], with its base.
func (s *IncrementalSource) Info() SourceInfo { return s.info }

// Size is the volume size in bytes.
func (s *IncrementalSource) Size() int64 { return s.ebs.Size() }

// Concurrency is the number of EBS requests in flight.
func (s *IncrementalSource) Concurrency() int { return s.ebs.Concurrency() }

func (s *IncrementalSource) counters() *statCounter { return &s.ebs.stats }

func (s *IncrementalSource) incremental() *Incremental {
	img := s.base.Image
	return &Incremental{
		BaseSnapshotID: s.base.SnapshotID, BaseImage: &img, BaseMerkleRoot: s.base.MerkleRoot,
		ChangedBlocks: s.changed.Load(), EBSBlocks: s.ebsReads.Load(), ReusedBlocks: s.reused.Load(),
	}
}

func (s *IncrementalSource) nblocks() int64 { return (s.Size() + BlockSize - 1) / BlockSize }

func (s *IncrementalSource) blockLen(i int64) int { return int(min(BlockSize, s.Size()-i*BlockSize)) }

// openBase streams the raw base image.
func (s *IncrementalSource) openBase(ctx context.Context) (io.Reader, func(), error) {
	rc, err := s.store.Get(ctx, s.base.Image.Key, s.base.Image.VersionID)
	if err != nil {
		return nil, nil, fmt.Errorf("read base image %s: %w", s.base.Image.Key, err)
	}
	if s.base.Compression == CompressNone {
		return rc, func() { rc.Close() }, nil
	}
	d, err := zstd.NewReader(rc, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
	if err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("read base image %s: %w", s.base.Image.Key, err)
	}
	return d, func() { d.Close(); rc.Close() }, nil
}

// Blocks walks the newer snapshot's written blocks in order: changed blocks
// B holds (read from EBS) and unchanged blocks the base held (read from the
// base image here, in order, and handed to ReadBlock). The whole base image
// is read and its Merkle root checked, whatever from is; the walk fails with
// ErrBaseMismatch if it differs from the recorded one.
func (s *IncrementalSource) Blocks(ctx context.Context, from int64, fn func(Block) error) (err error) {
	want, err := hex.DecodeString(s.base.MerkleRoot)
	if err != nil || len(want) != tlog.HashSize {
		return fmt.Errorf("base %s: Merkle root %q is not a hex SHA-256: %w", s.base.SnapshotID, s.base.MerkleRoot, ErrBaseMismatch)
	}
	base, closeBase, err := s.openBase(ctx)
	if err != nil {
		return err
	}
	defer closeBase()
	defer func() {
		if err != nil {
			s.failWalk(err) // the pipeline has failed: nobody reads them
		}
	}()
	lh, _ := newLeafHasher(ImplStdlib)
	var tree merkle
	spare := make([]byte, BlockSize)
	n := s.nblocks()
	next := int64(0) // next base block to read

	// readBase reads base blocks up to and including upto; unchanged
	// written ones at or after from go to fn, the rest are only hashed.
	readBase := func(upto int64, changed bool) error {
		for ; next <= upto && next < n; next++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			i := next
			reuse := !(changed && i == upto) && i >= from && s.bmap.Contains(i)
			p := spare
			var buf *[]byte
			if reuse {
				buf = s.pool.Get().(*[]byte)
				p = *buf
			}
			p = p[:s.blockLen(i)]
			if _, err := io.ReadFull(base, p); err != nil {
				if buf != nil {
					s.pool.Put(buf)
				}
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return fmt.Errorf("base image %s ends in block %d of %d: %w", s.base.Image.Key, i, n, ErrBaseMismatch)
				}
				return fmt.Errorf("read base image %s: %w", s.base.Image.Key, err)
			}
			leaf := lh.sum(p)
			tree.add(leaf)
			if !reuse {
				continue
			}
			s.mu.Lock()
			s.pending[i] = pendingBlock{buf: buf, leaf: leaf}
			s.mu.Unlock()
			if err := fn(Block{Index: i, Token: baseBlockToken}); err != nil {
				return err
			}
		}
		return nil
	}

	in := &ebs.ListChangedBlocksInput{
		FirstSnapshotId: aws.String(s.base.SnapshotID), SecondSnapshotId: aws.String(s.ebs.id),
		MaxResults: aws.Int32(s.ebs.opts.PageSize),
	}
	last := int64(-1)
	for {
		var out *ebs.ListChangedBlocksOutput
		err := s.ebs.retry(ctx, "list changed blocks", s.ebs.gov.list, func(ctx context.Context) error {
			var err error
			out, err = s.api.ListChangedBlocks(ctx, in)
			return err
		})
		if err != nil {
			return s.listError(err)
		}
		for _, c := range out.ChangedBlocks {
			i := int64(aws.ToInt32(c.BlockIndex))
			if i <= last || i >= n {
				return fmt.Errorf("ListChangedBlocks listed block %d out of order or range (after %d, of %d)", i, last, n)
			}
			last = i
			if err := readBase(i, true); err != nil {
				return err
			}
			s.changed.Add(1)
			if tok := aws.ToString(c.SecondBlockToken); tok != "" && i >= from {
				if err := fn(Block{Index: i, Token: tok}); err != nil {
					return err
				}
			}
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		in.NextToken = out.NextToken
	}
	if err := readBase(n-1, false); err != nil {
		return err
	}
	switch k, err := io.ReadFull(base, spare[:1]); {
	case k != 0:
		return fmt.Errorf("base image %s is longer than its recorded %d bytes: %w", s.base.Image.Key, s.base.Size, ErrBaseMismatch)
	case err != io.EOF:
		return fmt.Errorf("read base image %s: %w", s.base.Image.Key, err)
	}
	if got := tree.root(); string(got[:]) != string(want) {
		return fmt.Errorf("base image %s (snapshot %s) has Merkle root %x, its acquisition recorded %s: %w; it was altered or is not that acquisition's image",
			s.base.Image.Key, s.base.SnapshotID, got[:], s.base.MerkleRoot, ErrBaseMismatch)
	}
	return nil
}

// failWalk records why Blocks failed and drops the blocks read ahead. A
// reader may still ask for one of them before the pipeline stops: it gets
// the walk's error (an altered base is ErrBaseMismatch from every side),
// not a puzzle about a block not read ahead.
func (s *IncrementalSource) failWalk(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.walkErr = err
	for i, pb := range s.pending {
		s.pool.Put(pb.buf)
		delete(s.pending, i)
	}
}

// ReadBlock fills p with block b: from the base image read ahead by Blocks,
// or from EBS, checksum-verified.
func (s *IncrementalSource) ReadBlock(ctx context.Context, b Block, p []byte) error {
	_, _, err := s.readBlockLeaf(ctx, b, p)
	return err
}

func (s *IncrementalSource) readBlockLeaf(ctx context.Context, b Block, p []byte) (tlog.Hash, bool, error) {
	if b.Token != baseBlockToken {
		if err := s.ebs.ReadBlock(ctx, b, p); err != nil {
			return tlog.Hash{}, false, err
		}
		s.ebsReads.Add(1)
		return tlog.Hash{}, false, nil
	}
	s.mu.Lock()
	pb, ok := s.pending[b.Index]
	delete(s.pending, b.Index)
	walkErr := s.walkErr
	s.mu.Unlock()
	switch {
	case !ok && walkErr != nil:
		return tlog.Hash{}, false, fmt.Errorf("base block %d: %w", b.Index, walkErr)
	case !ok:
		return tlog.Hash{}, false, fmt.Errorf("base block %d was not read ahead", b.Index)
	}
	defer s.pool.Put(pb.buf)
	if copy(p, *pb.buf) != len(p) {
		return tlog.Hash{}, false, fmt.Errorf("base block %d: short", b.Index)
	}
	s.reused.Add(1)
	return pb.leaf, true, nil
}
