package custody

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/errgroup"

	"github.com/impound-ir/impound/vault"
)

// EntryError: entry Index is not a valid entry at its place (encoding, case,
// sequence number, time, kind).
type EntryError struct {
	Index int64
	Err   error
}

func (e *EntryError) Error() string        { return fmt.Sprintf("entry %d: %v", e.Index, e.Err) }
func (e *EntryError) Unwrap() error        { return e.Err }
func (e *EntryError) Is(target error) bool { return target == ErrTampered }

// ChainBreakError: entry Index records Got as its previous entry's hash, but
// entry Index-1 hashes to Want: one of the two was altered, or entries were
// removed or reordered.
type ChainBreakError struct {
	Index     int64
	Want, Got tlog.Hash
}

func (e *ChainBreakError) Error() string {
	return fmt.Sprintf("entry %d: chain broken: it records previous hash %s but entry %d hashes to %s (entry %d or %d was altered)",
		e.Index, b64(e.Got), e.Index-1, b64(e.Want), e.Index-1, e.Index)
}
func (e *ChainBreakError) Is(target error) bool { return target == ErrTampered }

// MissingEntryError: entry Index is absent while later ones exist.
type MissingEntryError struct{ Index int64 }

func (e *MissingEntryError) Error() string {
	return fmt.Sprintf("entry %d: missing from the ledger", e.Index)
}
func (e *MissingEntryError) Is(target error) bool { return target == ErrTampered }

// CheckpointError: the stored checkpoint of tree size Size is invalid: bad
// signature, wrong key, malformed, or a root that does not match the entries.
type CheckpointError struct {
	Size int64
	Err  error
}

func (e *CheckpointError) Error() string        { return fmt.Sprintf("checkpoint %d: %v", e.Size, e.Err) }
func (e *CheckpointError) Unwrap() error        { return e.Err }
func (e *CheckpointError) Is(target error) bool { return target == ErrTampered }

// TruncatedError: a signed checkpoint covers Signed entries but the ledger
// holds only Entries: entries were removed from its end.
type TruncatedError struct {
	Entries, Signed int64
}

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("ledger truncated: it holds %d entries but a signed checkpoint covers %d", e.Entries, e.Signed)
}
func (e *TruncatedError) Is(target error) bool { return target == ErrTampered }

// InconsistentError: a checkpoint seen earlier (given to Verify) is signed
// by the case key but does not match the ledger's first Size entries: the
// ledger was rewritten.
type InconsistentError struct{ Size int64 }

func (e *InconsistentError) Error() string {
	return fmt.Sprintf("ledger inconsistent with the earlier checkpoint of size %d: its first %d entries were rewritten", e.Size, e.Size)
}
func (e *InconsistentError) Is(target error) bool { return target == ErrTampered }

// KeyMismatchError: the case's first entry names key Case, not Given.
type KeyMismatchError struct{ Case, Given string }

func (e *KeyMismatchError) Error() string {
	return fmt.Sprintf("case is signed by %s, not %s", keyLabel(e.Case), keyLabel(e.Given))
}
func (e *KeyMismatchError) Is(target error) bool { return target == ErrWrongKey }

// UnsignedTailError: entries Signed to Size-1 exist but no checkpoint signs them.
type UnsignedTailError struct{ Signed, Size int64 }

func (e *UnsignedTailError) Error() string {
	return fmt.Sprintf("entries %d to %d are not covered by a signed checkpoint (a writer stopped before signing, or they were added without the key)", e.Signed, e.Size-1)
}
func (e *UnsignedTailError) Is(target error) bool { return target == ErrUnsigned }

// EvidenceError: the evidence entry Index records is gone or changed.
type EvidenceError struct {
	Index int64
	URI   string
	Err   error
}

func (e *EvidenceError) Error() string {
	return fmt.Sprintf("entry %d: evidence %s: %v", e.Index, e.URI, e.Err)
}
func (e *EvidenceError) Unwrap() error { return e.Err }

func b64(h tlog.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }

// keyLabel shortens a verifier key to name+hash for messages.
func keyLabel(vkey string) string {
	name, hash, _, err := splitVerifierKey(vkey)
	if err != nil {
		return fmt.Sprintf("%q", truncate(vkey, 40))
	}
	return fmt.Sprintf("%s+%08x", name, hash)
}

// VerifyOptions say what Verify checks beyond the ledger itself.
type VerifyOptions struct {
	// Key is the verifier key the case must be signed with, obtained out of
	// band. Empty: the key the case's first entry names, which proves the
	// ledger is intact but not who wrote it.
	Key string
	// Checkpoints are signed checkpoints seen earlier (in a report, an
	// email, a ticket). The ledger must contain each: a shorter ledger fails
	// with TruncatedError, a rewritten one with InconsistentError.
	Checkpoints [][]byte
	// AllowUnsignedTail accepts entries after the latest checkpoint (a
	// writer that stopped between writing an entry and signing).
	AllowUnsignedTail bool
	// CheckEvidence, when set, is called for each succeeded evidence-stored
	// entry, to re-read the object and compare it with its receipt
	// (vault.Verify).
	CheckEvidence func(ctx context.Context, r *vault.Receipt) error
	// Concurrency is the number of objects read at once; 0 is 16.
	Concurrency int
}

// Verified is a ledger that passed Verify.
type Verified struct {
	Case string
	Size int64
	// Key is the verifier key the checkpoints were checked with;
	// KeyFromLedger says it was taken from the case's first entry rather
	// than given.
	Key           string
	KeyFromLedger bool
	// Checkpoint is the latest signed checkpoint, covering Signed entries.
	Checkpoint  []byte
	Signed      int64
	Checkpoints int // checkpoints checked
	// EvidenceChecked counts the objects re-read: evidence, block maps,
	// stored reports.
	EvidenceChecked int

	raw         [][]byte
	hashes      []tlog.Hash
	checkpoints map[int64][]byte
}

// Verify checks a case's ledger: every entry's encoding, the chain, every
// stored checkpoint's signature and root against the entries, the earlier
// checkpoints given, and optionally the evidence. The error names the first
// bad entry (EntryError, ChainBreakError, MissingEntryError), or the bad
// checkpoint (CheckpointError, TruncatedError, InconsistentError), and wraps
// ErrTampered; UnsignedTailError wraps ErrUnsigned, KeyMismatchError
// ErrWrongKey.
func Verify(ctx context.Context, s reader, caseID string, opts VerifyOptions) (*Verified, error) {
	if err := CheckCaseID(caseID); err != nil {
		return nil, err
	}
	conc := opts.Concurrency
	if conc <= 0 {
		conc = 16
	}
	v := &Verified{Case: caseID, checkpoints: map[int64][]byte{}}

	// Entries: read and parse in parallel, then check in order.
	keys, err := s.List(ctx, entriesPrefix(caseID))
	if err != nil {
		return nil, fmt.Errorf("custody: verify case %s: list entries: %w", caseID, err)
	}
	present := map[int64]bool{}
	var count int64
	for _, k := range keys {
		i, ok := keyNumber(entriesPrefix(caseID), k)
		if !ok {
			return nil, fmt.Errorf("custody: verify case %s: %w: unexpected object %s among the entries", caseID, ErrTampered, k)
		}
		present[i] = true
		count = max(count, i+1)
	}
	if count == 0 {
		return nil, fmt.Errorf("custody: verify case %s: %w: no entries under %s", caseID, ErrNoCase, entriesPrefix(caseID))
	}
	type parsed struct {
		f   *entryFields
		h   tlog.Hash
		err error
	}
	res := make([]parsed, count)
	v.raw = make([][]byte, count)
	// A fixed pool of workers takes indices in turn: no goroutine per entry.
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range min(int64(conc), count) {
		g.Go(func() error {
			for {
				i := next.Add(1) - 1
				if i >= count {
					return nil
				}
				if !present[i] {
					continue
				}
				if err := gctx.Err(); err != nil {
					return err
				}
				b, err := readObject(gctx, s, entryKey(caseID, i), MaxEntrySize)
				if errors.Is(err, vault.ErrNotFound) {
					res[i].err = &MissingEntryError{Index: i}
					continue
				}
				if errors.Is(err, ErrMalformed) {
					res[i].err = &EntryError{Index: i, Err: err}
					continue
				}
				if err != nil {
					return fmt.Errorf("read entry %d: %w", i, err)
				}
				v.raw[i] = b
				res[i].h = EntryHash(b)
				if res[i].f, err = parseEntryFields(b); err != nil {
					res[i].err = &EntryError{Index: i, Err: err}
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("custody: verify case %s: %w", caseID, err)
	}
	var prev tlog.Hash
	var prevTime time.Time
	for i := range count {
		if !present[i] {
			return nil, fmt.Errorf("custody: verify case %s: %w", caseID, &MissingEntryError{Index: i})
		}
		r := res[i]
		if r.err != nil {
			return nil, fmt.Errorf("custody: verify case %s: %w", caseID, r.err)
		}
		if err := checkLink(r.f, caseID, i, prev, prevTime); err != nil {
			return nil, fmt.Errorf("custody: verify case %s: %w", caseID, err)
		}
		if i == 0 {
			k, err := openingKey(r.f)
			if err != nil {
				return nil, fmt.Errorf("custody: verify case %s: %w", caseID, err)
			}
			v.Key, v.KeyFromLedger = k, true
			if opts.Key != "" {
				if k != normalizeKey(opts.Key) {
					return nil, fmt.Errorf("custody: verify case %s: entry 0: %w", caseID, &KeyMismatchError{Case: k, Given: normalizeKey(opts.Key)})
				}
				v.KeyFromLedger = false
			}
		}
		prev, prevTime = r.h, r.f.time
	}
	v.Size = count
	v.hashes = make([]tlog.Hash, 0, tlog.StoredHashCount(count))
	hr := hashSliceReader(&v.hashes)
	for i := range count {
		more, err := tlog.StoredHashesForRecordHash(i, res[i].h, hr)
		if err != nil {
			return nil, err
		}
		v.hashes = append(v.hashes, more...)
	}
	verifier, err := NewVerifier(v.Key)
	if err != nil {
		return nil, fmt.Errorf("custody: verify case %s: %w", caseID, err)
	}

	// Checkpoints: every stored one must be signed by the case key and match the tree.
	if err := v.checkCheckpoints(ctx, s, verifier, conc); err != nil {
		return nil, fmt.Errorf("custody: verify case %s: %w", caseID, err)
	}
	for _, msg := range opts.Checkpoints {
		c, err := OpenCheckpoint(msg, verifier, Origin(caseID))
		if err != nil {
			return nil, fmt.Errorf("custody: verify case %s: earlier checkpoint: %w", caseID, err)
		}
		if c.Size > v.Size {
			return nil, fmt.Errorf("custody: verify case %s: %w", caseID, &TruncatedError{Entries: v.Size, Signed: c.Size})
		}
		if root, err := v.treeHash(c.Size); err != nil || root != c.Root {
			return nil, fmt.Errorf("custody: verify case %s: %w", caseID, &InconsistentError{Size: c.Size})
		}
	}
	if v.Signed < v.Size && !opts.AllowUnsignedTail {
		return v, fmt.Errorf("custody: verify case %s: %w", caseID, &UnsignedTailError{Signed: v.Signed, Size: v.Size})
	}

	if opts.CheckEvidence != nil {
		if err := v.checkEvidence(ctx, res2entries(v.raw), opts.CheckEvidence, conc); err != nil {
			return nil, fmt.Errorf("custody: verify case %s: %w", caseID, err)
		}
	}
	return v, nil
}

func normalizeKey(k string) string { return strings.TrimSpace(k) }

func (v *Verified) checkCheckpoints(ctx context.Context, s reader, verifier note.Verifier, conc int) error {
	prefix := checkpointPrefix(v.Case)
	keys, err := s.List(ctx, prefix)
	if err != nil {
		return fmt.Errorf("list checkpoints: %w", err)
	}
	sizes := make([]int64, len(keys))
	for i, k := range keys {
		n, ok := keyNumber(prefix, k)
		if !ok {
			return fmt.Errorf("%w: unexpected object %s among the checkpoints", ErrTampered, k)
		}
		sizes[i] = n
	}
	errs := make([]error, len(keys))
	msgs := make([][]byte, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(conc)
	for i, n := range sizes {
		g.Go(func() error {
			b, err := readObject(gctx, s, checkpointKey(v.Case, n), MaxCheckpointSize)
			if err != nil {
				if errors.Is(err, vault.ErrNotFound) || errors.Is(err, ErrMalformed) {
					errs[i] = &CheckpointError{Size: n, Err: err}
					return nil
				}
				return fmt.Errorf("read checkpoint %d: %w", n, err)
			}
			c, err := OpenCheckpoint(b, verifier, Origin(v.Case))
			switch {
			case err != nil:
				errs[i] = &CheckpointError{Size: n, Err: err}
			case c.Size != n:
				errs[i] = &CheckpointError{Size: n, Err: fmt.Errorf("%w: stored as checkpoint %d but covers %d entries", ErrTampered, n, c.Size)}
			case n > v.Size:
				errs[i] = &TruncatedError{Entries: v.Size, Signed: n}
			default:
				if root, err := v.treeHash(n); err != nil || root != c.Root {
					errs[i] = &CheckpointError{Size: n, Err: fmt.Errorf("%w: root hash does not match entries 0 to %d", ErrTampered, n-1)}
				}
			}
			msgs[i] = b
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i, n := range sizes {
		if errs[i] != nil {
			return errs[i]
		}
		v.checkpoints[n] = msgs[i]
		if n >= v.Signed {
			v.Signed, v.Checkpoint = n, msgs[i]
		}
		v.Checkpoints++
	}
	return nil
}

func (v *Verified) checkEvidence(ctx context.Context, entries func(int64) (*Entry, error), check func(context.Context, *vault.Receipt) error, conc int) error {
	errs := make([]error, v.Size)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(min(conc, 4))
	var checked []int64
	objects := 0
	for i := range v.Size {
		f, _ := parseEntryFields(v.raw[i])
		if (f.kind != KindEvidenceStored && f.kind != KindReportGenerated) || f.outcome != Succeeded {
			continue
		}
		e, err := entries(i)
		if err != nil {
			return &EntryError{Index: i, Err: err}
		}
		// Every object the entry records: the evidence, an image's block
		// map beside it, a stored report.
		var receipts []*vault.Receipt
		switch d := e.Details.(type) {
		case EvidenceStored:
			receipts = append(receipts, &d.Receipt)
			if d.Acquisition != nil && d.Acquisition.BlockMap != nil {
				receipts = append(receipts, d.Acquisition.BlockMap)
			}
		case ReportGenerated:
			receipts = append(receipts, &d.Receipt)
		default:
			return &EntryError{Index: i, Err: fmt.Errorf("%w: %s details not recognised", ErrMalformed, f.kind)}
		}
		checked = append(checked, i)
		objects += len(receipts)
		g.Go(func() error {
			for _, r := range receipts {
				if err := check(gctx, r); err != nil {
					if ctxErr := gctx.Err(); ctxErr != nil {
						return ctxErr
					}
					errs[i] = &EvidenceError{Index: i, URI: r.URI, Err: err}
					return nil
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, i := range checked {
		if errs[i] != nil {
			return errs[i]
		}
	}
	v.EvidenceChecked = objects
	return nil
}

func res2entries(raw [][]byte) func(int64) (*Entry, error) {
	return func(i int64) (*Entry, error) { return ParseEntry(raw[i]) }
}

func hashSliceReader(hs *[]tlog.Hash) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x < 0 || x >= int64(len(*hs)) {
				return nil, fmt.Errorf("custody: tree: hash %d not stored", x)
			}
			out[i] = (*hs)[x]
		}
		return out, nil
	})
}

func (v *Verified) treeHash(n int64) (tlog.Hash, error) {
	return tlog.TreeHash(n, hashSliceReader(&v.hashes))
}

// Entries parses the verified entries.
func (v *Verified) Entries() ([]*Entry, error) {
	out := make([]*Entry, v.Size)
	for i, b := range v.raw {
		e, err := ParseEntry(b)
		if err != nil {
			return nil, &EntryError{Index: int64(i), Err: err}
		}
		out[i] = e
	}
	return out, nil
}

// Raw returns entry i's stored bytes.
func (v *Verified) Raw(i int64) []byte { return v.raw[i] }

// ProveInclusion returns a C2SP tlog-proof of entry seq against the latest checkpoint.
func (v *Verified) ProveInclusion(seq int64) ([]byte, error) {
	if seq < 0 || seq >= v.Signed {
		return nil, fmt.Errorf("custody: case %s: entry %d is not covered by a signed checkpoint", v.Case, seq)
	}
	p, err := tlog.ProveRecord(v.Signed, seq, hashSliceReader(&v.hashes))
	if err != nil {
		return nil, err
	}
	return FormatProof(&Proof{Entry: v.raw[seq], Index: seq, Path: p, Checkpoint: v.Checkpoint}), nil
}

// ProveConsistency returns the RFC 6962 consistency proof that the tree of
// size newSize extends the tree of size oldSize. Check it with
// tlog.CheckTree against the two checkpoints' roots.
func (v *Verified) ProveConsistency(oldSize, newSize int64) (tlog.TreeProof, error) {
	if oldSize < 1 || oldSize > newSize || newSize > v.Size {
		return nil, fmt.Errorf("custody: case %s: no consistency proof from %d to %d entries", v.Case, oldSize, newSize)
	}
	return tlog.ProveTree(newSize, oldSize, hashSliceReader(&v.hashes))
}

// CheckpointSizes lists the sizes of the stored checkpoints, ascending.
func (v *Verified) CheckpointSizes() []int64 {
	out := make([]int64, 0, len(v.checkpoints))
	for n := range v.checkpoints {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
