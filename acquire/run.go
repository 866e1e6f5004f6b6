package acquire

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/errgroup"

	"github.com/impound-ir/impound/vault"
)

// Errors that are part of the API. Callers test them with errors.Is.
var (
	// ErrCorrupt: a block's data did not match its checksum on every attempt.
	ErrCorrupt = errors.New("acquire: block data does not match its checksum")
	// ErrStoredMismatch: the vault's own hash or size of the stored image
	// differs from what impound hashed while streaming it. The object is not
	// evidence; the acquisition fails.
	ErrStoredMismatch = errors.New("acquire: stored image differs from the bytes hashed")
	// ErrShortSource: the source ended before its announced size.
	ErrShortSource = errors.New("acquire: source shorter than its size")
)

// Store is the part of a vault.Store that acquisition writes through.
type Store interface {
	Create(ctx context.Context, key string, opts vault.PutOptions) (vault.Writer, error)
	Resume(ctx context.Context, state []byte) (vault.Writer, int64, error)
}

// item is one block travelling through the pipeline.
type item struct {
	index   int64
	data    []byte  // the block's bytes (a pooled buffer, or the shared zeros)
	buf     *[]byte // pooled buffer to return, nil for zeros
	token   string
	written bool
	leaf    tlog.Hash
	err     error
	done    chan struct{} // closed when data and leaf are ready
	states  [][]byte      // hasher states after this block (resume), one per hasher
}

// hasher is one whole-image hash stage.
type hasher struct {
	name string
	h    hash.Hash
}

// Run acquires src into dst: it reads the source's blocks in parallel,
// reassembles them in order, hashes them (whole-image hashes, Merkle root)
// and streams the image into the vault at opts.Key, then stores the block
// map beside it. It returns the evidence record only when everything
// succeeded; on error nothing is committed (with a StateDir, an interrupted
// run leaves its state for opts.Resume).
func Run(ctx context.Context, src Source, dst Store, opts Options) (*Evidence, error) {
	if opts.Key == "" {
		return nil, errors.New("acquire: no vault key given")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Window <= 0 {
		opts.Window = NewOptions().Window
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = NewOptions().CheckpointInterval
	}
	names, err := ParseHashes(joinNames(opts.Hashes))
	if err != nil {
		return nil, err
	}
	opts.Hashes = names
	if opts.Compression != CompressNone && opts.Compression != CompressZstd {
		return nil, fmt.Errorf("acquire: unknown compression %q (choose zstd or none)", opts.Compression)
	}
	workers := opts.Workers
	if workers <= 0 {
		if c, ok := src.(concurrencyHinter); ok {
			workers = c.Concurrency()
		} else {
			workers = max(1, runtime.NumCPU()-1)
		}
	}
	r := &runner{src: src, dst: dst, opts: opts, workers: workers, size: src.Size()}
	return r.run(ctx)
}

func joinNames(n []string) string {
	s := ""
	for i, x := range n {
		if i > 0 {
			s += ","
		}
		s += x
	}
	return s
}

type runner struct {
	src     Source
	dst     Store
	opts    Options
	workers int
	size    int64

	hashers []hasher // whole-image hashes computed here
	// storeHashed: the image's SHA-256 is the vault receipt's (raw output);
	// otherwise it is among hashers.
	storeHashed bool
	merkle      merkle
	enc         encoder
	w           vault.Writer
	out         io.Writer // w, skipping what a resumed writer already holds
	blocks      BlockMap
	start       int64 // first block to process
	stats       *statCounter
	started     time.Time
	resumed     int
}

func (r *runner) nblocks() int64 { return (r.size + BlockSize - 1) / BlockSize }

func (r *runner) blockLen(i int64) int {
	return int(min(BlockSize, r.size-i*BlockSize))
}

func (r *runner) run(ctx context.Context) (ev *Evidence, err error) {
	log := zerolog.Ctx(ctx).With().Str("source", r.src.Info().ID()).Str("key", r.opts.Key).Logger()
	ctx = log.WithContext(ctx)
	r.stats = statsOf(r.src)
	r.blocks = BlockMap{Size: r.size, BlockSize: BlockSize}
	// A raw image is stored byte for byte, so its SHA-256 is the one the
	// vault computes over what it stores: computing it here as well would
	// hash every byte twice, on the same critical path.
	r.storeHashed = r.opts.Compression == CompressNone
	for _, name := range r.opts.Hashes {
		if name == SHA256 && r.storeHashed {
			continue
		}
		h, err := newHash(name, r.opts.SHA256Impl)
		if err != nil {
			return nil, err
		}
		r.hashers = append(r.hashers, hasher{name: name, h: h})
	}
	r.started = r.opts.Now().UTC()
	if err := r.open(ctx); err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if committed || r.w == nil {
			return
		}
		// Keep an interrupted run's upload for --resume; anything else is
		// discarded, so nothing half-written remains.
		if r.opts.StateDir != "" && errors.Is(err, context.Canceled) {
			log.Warn().Err(err).Msg("acquisition interrupted; its state is kept for --resume")
			return
		}
		if aerr := r.w.Abort(); aerr != nil {
			log.Error().Err(aerr).Msg("abort upload")
		}
		if r.opts.StateDir != "" {
			removeState(r.opts.StateDir, r.stateName())
		}
	}()

	log.Info().Int64("size", r.size).Int64("from_block", r.start).Int("workers", r.workers).
		Strs("hashes", r.opts.Hashes).Str("compression", r.opts.Compression).Msg("acquisition started")

	if err := r.pipeline(ctx); err != nil {
		return nil, err
	}
	if r.merkle.n != r.nblocks() {
		return nil, fmt.Errorf("acquire: %d blocks hashed, want %d: %w", r.merkle.n, r.nblocks(), ErrShortSource)
	}
	if err := r.enc.Close(); err != nil {
		return nil, fmt.Errorf("acquire: finish image: %w", err)
	}
	storedSize := r.enc.Offset()
	rcpt, err := r.w.Commit()
	if err != nil {
		return nil, fmt.Errorf("acquire: commit image to vault: %w", err)
	}
	committed = true
	ev = &Evidence{
		Format:        EvidenceFormat,
		Case:          r.opts.Case,
		Source:        r.src.Info(),
		Size:          r.size,
		BlockSize:     BlockSize,
		Blocks:        r.nblocks(),
		WrittenBlocks: r.blocks.Written(),
		Hashes:        map[string]string{},
		MerkleRoot:    hex.EncodeToString(func() []byte { h := r.merkle.root(); return h[:] }()),
		MerkleLeaf:    MerkleLeafDefinition,
		Compression:   r.opts.Compression,
		StoredSize:    storedSize,
		Image:         rcpt,
		Started:       r.started,
		Resumed:       r.resumed,
		Tool:          r.opts.Tool,
	}
	for _, h := range r.hashers {
		ev.Hashes[h.name] = hex.EncodeToString(h.h.Sum(nil))
	}
	if r.storeHashed {
		ev.Hashes[SHA256] = rcpt.SHA256
	}
	if rcpt.Size != storedSize || (r.storeHashed && rcpt.Size != r.size) {
		return nil, fmt.Errorf("acquire: vault stored %d bytes, impound streamed %d bytes of a %d-byte image: %w",
			rcpt.Size, storedSize, r.size, ErrStoredMismatch)
	}
	if !validSHA256(ev.Hashes[SHA256]) {
		return nil, fmt.Errorf("acquire: vault returned SHA-256 %q for the image: %w", ev.Hashes[SHA256], ErrStoredMismatch)
	}
	mapText, _ := r.blocks.MarshalText()
	ev.BlockMap, err = vault.PutBytes(ctx, r.dst, r.opts.Key+".blockmap", mapText, r.opts.Put)
	if err != nil {
		return nil, fmt.Errorf("acquire: store block map: %w", err)
	}
	ev.Stats = r.stats.snapshot()
	if ir, ok := r.src.(incrementalReporter); ok {
		ev.Incremental = ir.incremental()
	}
	ev.Finished = r.opts.Now().UTC()
	if r.opts.StateDir != "" {
		removeState(r.opts.StateDir, r.stateName())
	}
	log.Info().Str("sha256", ev.Hashes[SHA256]).Str("merkle_root", ev.MerkleRoot).
		Str("version_id", rcpt.VersionID).Dur("took", ev.Finished.Sub(ev.Started)).Msg("acquisition stored")
	return ev, nil
}

// open prepares the hashers, encoder and vault writer, fresh or resumed.
func (r *runner) open(ctx context.Context) error {
	st, err := savedState(r.src.Info(), r.opts)
	if err != nil {
		return err
	}
	if st != nil {
		return r.resumeFrom(ctx, st)
	}
	enc, err := newEncoder(r.opts.Compression, nil)
	if err != nil {
		return err
	}
	put := r.opts.Put
	if r.opts.Compression == CompressNone {
		put.SizeHint = r.size
	} else {
		put.SizeHint = r.size / 2
	}
	if put.ContentType == "" {
		put.ContentType = "application/octet-stream"
		if r.opts.Compression == CompressZstd {
			put.ContentType = "application/zstd"
		}
	}
	// The upload outlives a cancelled ctx: Run aborts it itself on failure,
	// and keeps it for --resume when interrupted.
	w, err := r.dst.Create(context.WithoutCancel(ctx), r.opts.Key, put)
	if err != nil {
		return fmt.Errorf("acquire: create %s in vault: %w", r.opts.Key, err)
	}
	r.w = w
	r.out = w
	r.enc = enc
	enc.setOutput(r.out)
	return nil
}

func (r *runner) stateName() string { return stateName(r.opts.Case, r.src.Info(), r.opts.Key) }

// pipeline runs the stages: a producer walking the blocks in order, workers
// reading written blocks in parallel (and computing their Merkle leaves),
// then, in block order, one goroutine per whole-image hash and the writer.
func (r *runner) pipeline(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	n := r.nblocks()
	zeros := make([]byte, BlockSize)
	lh, err := newLeafHasher(r.opts.SHA256Impl)
	if err != nil {
		return err
	}
	zeroLeaf := lh.sum(zeros)
	var lastZeroLeaf tlog.Hash
	if n > 0 {
		lastZeroLeaf = lh.sum(zeros[:r.blockLen(n-1)])
	}
	pool := sync.Pool{New: func() any { b := make([]byte, BlockSize); return &b }}

	jobs := make(chan *item)
	order := make(chan *item, r.opts.Window)

	// Producer.
	g.Go(func() error {
		defer close(order)
		defer close(jobs)
		next := r.start
		zero := func(upto int64) error {
			for ; next < upto; next++ {
				it := &item{index: next, data: zeros[:r.blockLen(next)], leaf: zeroLeaf}
				if next == n-1 {
					it.leaf = lastZeroLeaf
				}
				select {
				case order <- it:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}
		err := r.src.Blocks(ctx, r.start, func(b Block) error {
			if b.Index < next || b.Index >= n {
				return fmt.Errorf("acquire: source listed block %d out of order or range (next %d of %d)", b.Index, next, n)
			}
			if err := zero(b.Index); err != nil {
				return err
			}
			it := &item{index: b.Index, token: b.Token, written: true, done: make(chan struct{})}
			for _, c := range []chan *item{order, jobs} {
				select {
				case c <- it:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			next = b.Index + 1
			return nil
		})
		if err != nil {
			return fmt.Errorf("acquire: list blocks of %s: %w", r.src.Info().ID(), err)
		}
		return zero(n)
	})
	// Workers.
	for range r.workers {
		g.Go(func() error {
			lh, _ := newLeafHasher(r.opts.SHA256Impl)
			for it := range jobs {
				b := Block{Index: it.index, Token: it.token}
				buf := pool.Get().(*[]byte)
				p := (*buf)[:r.blockLen(it.index)]
				var leaf tlog.Hash
				var known bool
				var err error
				if lr, ok := r.src.(leafReader); ok {
					leaf, known, err = lr.readBlockLeaf(ctx, b, p)
				} else {
					err = r.src.ReadBlock(ctx, b, p)
				}
				if err != nil {
					pool.Put(buf)
					it.err = fmt.Errorf("acquire: read block %d of %s: %w", it.index, r.src.Info().ID(), err)
					close(it.done)
					return it.err
				}
				r.stats.reads.Add(1)
				it.buf, it.data = buf, p
				if !known {
					leaf = lh.sum(p)
				}
				it.leaf = leaf
				close(it.done)
			}
			return nil
		})
	}

	// Ordered stages: the first waits for each block and adds its Merkle
	// leaf; every whole-image hash computed here runs in its own goroutine
	// (the first in the first stage).
	resumable := r.opts.StateDir != ""
	in := (<-chan *item)(order)
	for k := range max(1, len(r.hashers)) {
		out := make(chan *item, 4)
		src := in
		g.Go(func() error {
			defer close(out)
			var h hash.Hash
			if k < len(r.hashers) {
				h = r.hashers[k].h
			}
			for it := range src {
				if k == 0 {
					if it.done != nil {
						select {
						case <-it.done:
						case <-ctx.Done():
							return ctx.Err()
						}
						if it.err != nil {
							return it.err
						}
					}
					r.merkle.add(it.leaf)
				}
				if resumable && it.states == nil {
					it.states = make([][]byte, len(r.hashers)+1)
				}
				if h != nil {
					h.Write(it.data)
					if resumable {
						st, err := marshalHash(h)
						if err != nil {
							return err
						}
						it.states[k] = st
					}
				}
				if resumable {
					if k == 0 {
						it.states[len(r.hashers)], _ = r.merkle.MarshalBinary()
					}
				}
				select {
				case out <- it:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
		in = out
	}

	// Writer.
	g.Go(func() error {
		ck := newCheckpointer(r)
		done := r.start * BlockSize
		for it := range in {
			if it.written {
				r.blocks.add(it.index)
			}
			if err := r.enc.Write(it.data); err != nil {
				return fmt.Errorf("acquire: write image to vault: %w", err)
			}
			if it.buf != nil {
				pool.Put(it.buf)
			}
			it.data, it.buf = nil, nil
			done += int64(r.blockLen(it.index))
			if r.opts.Progress != nil {
				r.opts.Progress.Update(done, r.size)
			}
			if resumable {
				if err := ck.afterBlock(ctx, it); err != nil {
					return err
				}
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return nil
	})
	return g.Wait()
}

// validSHA256 says whether s is a SHA-256 in lowercase hex.
func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
