package acquire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Resume errors.
var (
	// ErrNoState: there is no saved state for this acquisition.
	ErrNoState = errors.New("no saved acquisition state")
	// ErrStateExists: a saved state exists and Resume was not asked for.
	ErrStateExists = errors.New("acquire: saved acquisition state exists")
	// ErrStateMismatch: the saved state belongs to a different acquisition
	// (source, key, size, hashes or compression differ).
	ErrStateMismatch = errors.New("acquire: saved state does not match this acquisition")
)

// stateFormat/2: the image SHA-256 of a raw acquisition lives in the
// vault writer's state, not among HashStates.
const stateFormat = "impound-acquire-state/2"

// resumeState is what a checkpoint persists: everything needed to continue
// at block NextBlock with the same hashes and one object.
type resumeState struct {
	Format      string     `json:"format"`
	Case        string     `json:"case"`
	Key         string     `json:"key"`
	Source      SourceInfo `json:"source"`
	Size        int64      `json:"size"`
	Hashes      []string   `json:"hashes"`
	SHA256Impl  string     `json:"sha256_impl"`
	Compression string     `json:"compression"`

	NextBlock     int64    `json:"next_block"`
	HashStates    [][]byte `json:"hash_states"` // per Hashes entry, then the Merkle accumulator
	Encoder       []byte   `json:"encoder"`
	EncoderOffset int64    `json:"encoder_offset"` // output bytes at NextBlock
	Writer        []byte   `json:"writer"`         // vault.Writer.Checkpoint state
	WriterOffset  int64    `json:"writer_offset"`  // bytes the vault holds durably
	Runs          []Extent `json:"runs"`           // block map below NextBlock

	Started time.Time `json:"started"`
	Resumed int       `json:"resumed"`
	Stats   Stats     `json:"stats"`
}

// StatePath returns the file in dir that holds the resume state of the
// acquisition of src into key for caseID.
func StatePath(dir, caseID string, src SourceInfo, key string) string {
	return statePath(dir, stateName(caseID, src, key))
}

func stateName(caseID string, src SourceInfo, key string) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
				return r
			}
			return '_'
		}, s)
	}
	_ = key
	return clean(caseID) + "--" + clean(strings.Trim(src.ID(), "/")) + ".json"
}

func statePath(dir, name string) string { return filepath.Join(dir, name) }

// CheckResume says, before anything is read or written, whether the
// acquisition of src with opts can start: with Resume, a saved state must
// exist; without it, none may (an interrupted run is continued, never
// silently restarted).
func CheckResume(src SourceInfo, opts Options) error {
	_, err := savedState(src, opts)
	return err
}

// savedState is the state to resume from: nil to start anew.
func savedState(src SourceInfo, opts Options) (*resumeState, error) {
	if opts.StateDir == "" {
		if opts.Resume {
			return nil, errors.New("acquire: resume needs a state directory")
		}
		return nil, nil
	}
	name := stateName(opts.Case, src, opts.Key)
	st, err := loadState(opts.StateDir, name)
	switch {
	case err == nil && !opts.Resume:
		return nil, fmt.Errorf("acquire: an interrupted acquisition of %s to %s exists (%s); rerun with --resume to continue it, or delete that file to start over: %w",
			src.ID(), opts.Key, statePath(opts.StateDir, name), ErrStateExists)
	case err == nil:
		return st, nil
	case errors.Is(err, ErrNoState) && opts.Resume:
		return nil, fmt.Errorf("acquire: --resume: %w for %s in %s; run without --resume to start", ErrNoState, src.ID(), opts.StateDir)
	case errors.Is(err, ErrNoState):
		return nil, nil
	}
	return nil, err
}

func loadState(dir, name string) (*resumeState, error) {
	b, err := os.ReadFile(statePath(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoState
	}
	if err != nil {
		return nil, fmt.Errorf("acquire: read state: %w", err)
	}
	var st resumeState
	if err := json.Unmarshal(b, &st); err != nil || st.Format != stateFormat {
		return nil, fmt.Errorf("acquire: state file %s is not an impound acquisition state: %w", statePath(dir, name), ErrStateMismatch)
	}
	return &st, nil
}

// saveState writes the state atomically: a temporary file, fsync, rename,
// fsync of the directory.
func saveState(dir, name string, st *resumeState) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, name+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), statePath(dir, name)); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func removeState(dir, name string) { os.Remove(statePath(dir, name)) }

// resumeFrom restores the runner from a saved state.
func (r *runner) resumeFrom(ctx context.Context, st *resumeState) error {
	if st.Key != r.opts.Key || st.Source.ID() != r.src.Info().ID() || st.Size != r.size ||
		!slices.Equal(st.Hashes, r.opts.Hashes) || st.SHA256Impl != r.opts.SHA256Impl ||
		st.Compression != r.opts.Compression || len(st.HashStates) != len(r.hashers)+1 {
		return fmt.Errorf("acquire: resume %s into %s: state is for %s into %s (size %d, hashes %v, compression %q): %w",
			r.src.Info().ID(), r.opts.Key, st.Source.ID(), st.Key, st.Size, st.Hashes, st.Compression, ErrStateMismatch)
	}
	for i, h := range r.hashers {
		if err := unmarshalHash(h.h, st.HashStates[i]); err != nil {
			return fmt.Errorf("acquire: restore %s state: %w", h.name, err)
		}
	}
	if err := r.merkle.UnmarshalBinary(st.HashStates[len(r.hashers)]); err != nil {
		return err
	}
	if r.merkle.n != st.NextBlock {
		return fmt.Errorf("acquire: state's Merkle tree has %d leaves, next block %d: %w", r.merkle.n, st.NextBlock, ErrStateMismatch)
	}
	enc, err := newEncoder(st.Compression, st.Encoder)
	if err != nil {
		return err
	}
	if enc.Offset() != st.EncoderOffset {
		return fmt.Errorf("acquire: state's encoder offset mismatch: %w", ErrStateMismatch)
	}
	w, off, err := r.dst.Resume(context.WithoutCancel(ctx), st.Writer)
	if err != nil {
		return fmt.Errorf("acquire: resume upload of %s: %w", st.Key, err)
	}
	if off < st.EncoderOffset {
		w.Abort()
		return fmt.Errorf("acquire: vault resumed at byte %d, before the saved boundary %d: %w", off, st.EncoderOffset, ErrStateMismatch)
	}
	r.w = w
	r.out = &skipWriter{w: w, skip: off - st.EncoderOffset}
	r.enc = enc
	enc.setOutput(r.out)
	r.start = st.NextBlock
	r.blocks.Runs = slices.Clone(st.Runs)
	r.started = st.Started
	r.resumed = st.Resumed + 1
	r.stats.add(st.Stats)
	zerolog.Ctx(ctx).Info().Int64("next_block", st.NextBlock).Int64("vault_offset", off).Msg("resuming acquisition")
	return nil
}

// boundary is a point where the whole pipeline's state is known.
type boundary struct {
	next   int64    // first block after the boundary
	out    int64    // encoder output bytes at the boundary, once known
	states [][]byte // hasher states
	enc    encMark  // encoder position
}

// boundaryEvery records a resumable boundary every this many blocks (4 MiB):
// after a crash at most this much is read again beyond what the vault holds.
const boundaryEvery = 8

type checkpointer struct {
	r       *runner
	last    time.Time
	pending []boundary
}

func newCheckpointer(r *runner) *checkpointer {
	return &checkpointer{r: r, last: r.opts.Now()}
}

func (c *checkpointer) afterBlock(ctx context.Context, it *item) error {
	r := c.r
	next := it.index + 1
	if next%boundaryEvery != 0 || !r.enc.AtBoundary() || next == r.nblocks() {
		return nil
	}
	c.pending = append(c.pending, boundary{next: next, states: it.states, enc: r.enc.Mark()})
	if r.opts.Now().Sub(c.last) < r.opts.CheckpointInterval {
		return nil
	}
	c.last = r.opts.Now()
	wstate, off, err := r.w.Checkpoint()
	if err != nil {
		return fmt.Errorf("acquire: checkpoint upload: %w", err)
	}
	// The latest boundary whose output is emitted and durable in the vault.
	k := -1
	for i := range c.pending {
		b := &c.pending[i]
		out, ok := r.enc.MarkOffset(b.enc)
		if !ok || out > off {
			break
		}
		b.out, k = out, i
	}
	if k < 0 {
		return nil
	}
	b := c.pending[k]
	es, err := r.enc.StateAt(b.enc)
	if err != nil {
		return err
	}
	st := &resumeState{
		Format: stateFormat, Case: r.opts.Case, Key: r.opts.Key, Source: r.src.Info(), Size: r.size,
		Hashes: r.opts.Hashes, SHA256Impl: r.opts.SHA256Impl, Compression: r.opts.Compression,
		NextBlock: b.next, HashStates: b.states, Encoder: es, EncoderOffset: b.out,
		Writer: wstate, WriterOffset: off, Runs: truncateRuns(r.blocks.Runs, b.next),
		Started: r.started, Resumed: r.resumed, Stats: r.stats.snapshot(),
	}
	if err := saveState(r.opts.StateDir, r.stateName(), st); err != nil {
		return fmt.Errorf("acquire: save state: %w", err)
	}
	c.pending = slices.Delete(c.pending, 0, k)
	zerolog.Ctx(ctx).Debug().Int64("next_block", b.next).Int64("vault_offset", off).Msg("checkpoint")
	return nil
}
