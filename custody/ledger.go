package custody

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/errgroup"

	"github.com/impound-ir/impound/vault"
)

// reader is what reading a ledger needs of a vault.Store.
type reader interface {
	Get(ctx context.Context, key, versionID string) (io.ReadCloser, error)
	List(ctx context.Context, prefix string) ([]string, error)
}

// store is what writing a ledger needs of a vault.Store: write-once
// objects (committing different content at an existing key fails with
// vault.ErrExists), which is also all vault.PutAll needs.
type store interface {
	reader
	vault.Creator
}

var _ store = vault.Store(nil)

// Options configure a Ledger. The zero value works.
type Options struct {
	// Put says how entries and checkpoints are kept in the vault (retention,
	// legal hold). The zero value is the store's default retention.
	Put vault.PutOptions
	// DeferCheckpoints stops Append from signing a checkpoint after each
	// entry, and AppendAll after each batch; the caller then calls
	// Checkpoint. Until it does, new entries are not covered by a signature.
	DeferCheckpoints bool
	// Concurrency is the number of objects read at once on Open and Verify.
	Concurrency int
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// NewOptions returns the defaults: a checkpoint after every entry, 16 reads at once.
func NewOptions() Options {
	return Options{Concurrency: 16, Now: time.Now}
}

func (o Options) withDefaults() Options {
	d := NewOptions()
	if o.Concurrency <= 0 {
		o.Concurrency = d.Concurrency
	}
	if o.Now == nil {
		o.Now = d.Now
	}
	return o
}

// Ledger appends to one case's ledger. Its methods are safe for concurrent
// use, and several Ledgers (in several processes) may append to one case at
// once: each entry is written once at the next free sequence number.
type Ledger struct {
	store    store
	caseID   string
	signer   Signer
	verifier note.Verifier
	opts     Options

	mu       sync.Mutex
	n        int64       // entries known, all chained and checked
	hashes   []tlog.Hash // the tree's stored hashes (tlog layout) for n entries
	last     tlog.Hash   // leaf hash of entry n-1
	lastTime time.Time   // time of entry n-1
	signed   int64       // the largest tree size this Ledger knows a checkpoint of
}

// Recorded is what Append wrote.
type Recorded struct {
	Seq  int64
	Hash tlog.Hash // the entry's leaf hash
	Time time.Time
}

// Open reads a case's ledger from the vault, checking every entry's encoding
// and the chain, and returns a Ledger that appends with signer. A case with
// no entries opens empty: its first Append must be a CaseOpened. A case
// opened with another key fails with ErrWrongKey.
func Open(ctx context.Context, s store, caseID string, signer Signer, opts Options) (*Ledger, error) {
	if err := CheckCaseID(caseID); err != nil {
		return nil, err
	}
	if signer == nil {
		return nil, fmt.Errorf("custody: open case %s: no signer", caseID)
	}
	v, err := NewVerifier(signer.VerifierKey())
	if err != nil {
		return nil, fmt.Errorf("custody: open case %s: signer's verifier key: %w", caseID, err)
	}
	l := &Ledger{store: s, caseID: caseID, signer: signer, verifier: v, opts: opts.withDefaults()}
	keys, err := s.List(ctx, entriesPrefix(caseID))
	if err != nil {
		return nil, fmt.Errorf("custody: open case %s: list entries: %w", caseID, err)
	}
	for i, k := range keys {
		n, ok := keyNumber(entriesPrefix(caseID), k)
		if !ok {
			return nil, fmt.Errorf("custody: open case %s: %w: unexpected object %s among the entries", caseID, ErrTampered, k)
		}
		if n != int64(i) {
			return nil, fmt.Errorf("custody: open case %s: %w", caseID, &MissingEntryError{Index: int64(i)})
		}
	}
	raw, err := readRange(ctx, s, caseID, 0, int64(len(keys)), l.opts.Concurrency)
	if err != nil {
		return nil, fmt.Errorf("custody: open case %s: %w", caseID, err)
	}
	for _, b := range raw {
		if err := l.accept(b); err != nil {
			return nil, fmt.Errorf("custody: open case %s: %w", caseID, err)
		}
	}
	return l, nil
}

// Case is the case ID.
func (l *Ledger) Case() string { return l.caseID }

// Size is the number of entries this Ledger knows.
func (l *Ledger) Size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// accept checks encoded entry b as entry l.n and adds it.
func (l *Ledger) accept(b []byte) error {
	f, err := parseEntryFields(b)
	if err != nil {
		return &EntryError{Index: l.n, Err: err}
	}
	if err := checkLink(f, l.caseID, l.n, l.last, l.lastTime); err != nil {
		return err
	}
	if l.n == 0 {
		if err := checkOpening(f, l.signer.VerifierKey()); err != nil {
			return err
		}
	}
	h := EntryHash(b)
	more, err := tlog.StoredHashesForRecordHash(l.n, h, l.hashReader())
	if err != nil {
		return fmt.Errorf("custody: tree: %w", err)
	}
	l.hashes = append(l.hashes, more...)
	l.n++
	l.last = h
	l.lastTime = f.time
	return nil
}

// checkLink checks that entry f can be entry i of caseID following the entry
// with leaf hash prev and time prevTime.
func checkLink(f *entryFields, caseID string, i int64, prev tlog.Hash, prevTime time.Time) error {
	switch {
	case f.caseID != caseID:
		return &EntryError{Index: i, Err: fmt.Errorf("%w: entry records case %q", ErrMalformed, f.caseID)}
	case f.seq != i:
		return &EntryError{Index: i, Err: fmt.Errorf("%w: entry records sequence number %d", ErrMalformed, f.seq)}
	case f.prev != prev:
		return &ChainBreakError{Index: i, Want: prev, Got: f.prev}
	case f.time.Before(prevTime):
		return &EntryError{Index: i, Err: fmt.Errorf("%w: time %s is before the previous entry's", ErrMalformed, f.time.Format(TimeLayout))}
	case (i == 0) != (f.kind == KindCaseOpened):
		return &EntryError{Index: i, Err: fmt.Errorf("%w: entry 0 and only entry 0 is %s, not %s", ErrMalformed, KindCaseOpened, f.kind)}
	}
	return nil
}

// checkOpening checks that entry 0 names vkey as the case's key; vkey ""
// accepts any well-formed key.
func checkOpening(f *entryFields, vkey string) error {
	k, err := openingKey(f)
	if err != nil {
		return err
	}
	if vkey != "" && k != vkey {
		return &KeyMismatchError{Case: k, Given: vkey}
	}
	return nil
}

func openingKey(f *entryFields) (string, error) {
	d, ok := decodeDetails(f.kind, f.details).(CaseOpened)
	if !ok {
		return "", &EntryError{Index: 0, Err: fmt.Errorf("%w: case-opened details are not recognised", ErrMalformed)}
	}
	if _, err := NewVerifier(d.VerifierKey); err != nil {
		return "", &EntryError{Index: 0, Err: fmt.Errorf("%w: case key: %v", ErrMalformed, err)}
	}
	return d.VerifierKey, nil
}

func (l *Ledger) hashReader() tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x < 0 || x >= int64(len(l.hashes)) {
				return nil, fmt.Errorf("custody: tree: hash %d not stored", x)
			}
			out[i] = l.hashes[x]
		}
		return out, nil
	})
}

// Append records e as the next entry: it sets e's case, sequence number,
// time and previous hash, writes it once and, unless
// Options.DeferCheckpoints, signs and writes a checkpoint covering it. The
// first entry of a case must be a CaseOpened; the ledger sets its
// VerifierKey. If another writer took the sequence number, Append re-reads
// the entries written meanwhile and tries the next one.
//
// An error wrapping ErrUnsigned means the entry was written (rec is valid)
// but its checkpoint was not: call Checkpoint later; appending again would
// record the action twice.
func (l *Ledger) Append(ctx context.Context, e Entry) (Recorded, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	recs, err := l.appendSigned(ctx, []Entry{e}, l.writeOne)
	if len(recs) == 0 {
		return Recorded{}, err
	}
	return recs[0], err
}

// AppendAll records es as the next entries, in order, as Append would one
// by one, but writes them as one batch (vault.PutAll: on the local store,
// one filesystem sync for the whole batch) and, unless
// Options.DeferCheckpoints, signs one checkpoint covering them all. Only the
// first entry of a case may be a CaseOpened. If another writer takes one of
// the sequence numbers, AppendAll keeps the entries written before it,
// re-reads the other writer's entries and appends the rest after them.
//
// The Recorded returned are those of the entries written, a prefix of es,
// also when an error is returned: those entries are recorded and must not
// be appended again; the others were not. An error wrapping ErrUnsigned
// means entries were written but not checkpointed: call Checkpoint later.
//
// The checkpoint is written only once the batch is durable. A crash before
// it leaves a prefix of the batch, unsigned, never a gap: the local store
// groups a batch under one sync only on a filesystem that journals its
// metadata, and stores it entry by entry elsewhere (see vault.PutAll).
func (l *Ledger) AppendAll(ctx context.Context, es []Entry) ([]Recorded, error) {
	if len(es) == 0 {
		return nil, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.appendSigned(ctx, es, l.writeAll)
}

// writeFunc writes encoded entries, in order, and returns how many of them
// (a prefix) it stored before an error.
type writeFunc func(ctx context.Context, objs []vault.Object) (int, error)

// writeOne writes the first entry alone: Append's way, each object synced
// on its own, so that a single entry never waits for other data on the
// filesystem.
func (l *Ledger) writeOne(ctx context.Context, objs []vault.Object) (int, error) {
	if err := writeOnce(ctx, l.store, objs[0].Key, objs[0].Data, l.opts.Put); err != nil {
		return 0, err
	}
	return 1, nil
}

// writeAll writes every entry as one batch.
func (l *Ledger) writeAll(ctx context.Context, objs []vault.Object) (int, error) {
	rs, err := vault.PutAll(ctx, l.store, objs, l.opts.Put)
	return len(rs), err
}

// appendSigned appends es and, unless checkpoints are deferred, checkpoints
// what was written, also when an error stopped the batch part way.
func (l *Ledger) appendSigned(ctx context.Context, es []Entry, write writeFunc) ([]Recorded, error) {
	recs, err := l.appendLocked(ctx, es, write)
	if len(recs) == 0 || l.opts.DeferCheckpoints {
		return recs, err
	}
	if cerr := l.checkpointLocked(ctx); cerr != nil {
		what, it := fmt.Sprintf("entry %d", recs[0].Seq), "it"
		if len(recs) > 1 {
			what, it = fmt.Sprintf("entries %d to %d", recs[0].Seq, recs[len(recs)-1].Seq), "them"
		}
		cerr = fmt.Errorf("custody: case %s: %s written but not yet signed (%w; call Checkpoint, do not append %s again): %w", l.caseID, what, ErrUnsigned, it, cerr)
		if err == nil {
			return recs, cerr
		}
		return recs, errors.Join(err, cerr)
	}
	return recs, err
}

// pending is an entry ready to be placed in the chain: everything but its
// sequence number, previous hash and time is set, its details encoded.
type pending struct {
	e       Entry
	details []byte
}

// prepare fills what an entry's place in the chain does not change: its
// outcome, its error text (truncated), the case key of a CaseOpened, its
// case; and encodes its details.
func (l *Ledger) prepare(e Entry) (pending, error) {
	if e.Details == nil {
		return pending{}, fmt.Errorf("custody: append to case %s: entry has no details", l.caseID)
	}
	if e.Outcome == "" {
		e.Outcome = Succeeded
		if e.Error != "" {
			e.Outcome = Failed
		}
	}
	if len(e.Error) > MaxErrorSize {
		e.Error = truncate(e.Error, MaxErrorSize-len("… [truncated]")) + " [truncated]"
	}
	if co, ok := e.Details.(CaseOpened); ok {
		co.VerifierKey = l.signer.VerifierKey()
		e.Details = co
	} else if co, ok := e.Details.(*CaseOpened); ok {
		c := *co
		c.VerifierKey = l.signer.VerifierKey()
		e.Details = c
	}
	details, err := encodeDetails(e.Details)
	if err != nil {
		return pending{}, fmt.Errorf("custody: append to case %s: %w", l.caseID, err)
	}
	e.Case = l.caseID
	return pending{e: e, details: details}, nil
}

// place makes p entry seq following the entry with leaf hash prev and time
// prevTime, and returns its encoding.
func (l *Ledger) place(p *pending, seq int64, prev tlog.Hash, prevTime time.Time) ([]byte, error) {
	p.e.Seq = seq
	p.e.Prev = prev
	p.e.Time = l.opts.Now().UTC()
	if p.e.Time.Before(prevTime) {
		p.e.Time = prevTime // entries never go back in time, even across writers' clocks
	}
	b, err := formatEntry(&p.e, p.details)
	if err != nil {
		return nil, fmt.Errorf("custody: append to case %s: %w", l.caseID, err)
	}
	return b, nil
}

// admit checks that an entry, a CaseOpened or not, may be entry l.n: entry
// 0 and only entry 0 is a CaseOpened.
func (l *Ledger) admit(ctx context.Context, opening bool) error {
	if l.n == 0 && !opening {
		// Someone may have opened the case since we looked.
		if err := l.refresh(ctx); err != nil {
			return err
		}
		if l.n == 0 {
			return fmt.Errorf("%w (case %s)", ErrNoCase, l.caseID)
		}
	}
	if l.n > 0 && opening {
		return fmt.Errorf("%w (case %s)", ErrCaseExists, l.caseID)
	}
	return nil
}

// appendLocked appends es in order with write and returns the Recorded of
// those written, a prefix of es, also with an error. When another writer
// took a sequence number, the entries written before it are kept, the
// others' entries read, and the rest chained after them and written again.
func (l *Ledger) appendLocked(ctx context.Context, es []Entry, write writeFunc) ([]Recorded, error) {
	ps := make([]pending, len(es))
	for i, e := range es {
		p, err := l.prepare(e)
		if err != nil {
			return nil, err
		}
		if i > 0 && p.e.Kind() == KindCaseOpened {
			return nil, fmt.Errorf("%w (case %s): a case-opened entry can only be the first", ErrCaseExists, l.caseID)
		}
		ps[i] = p
	}
	recs := make([]Recorded, 0, len(ps))
	log := zerolog.Ctx(ctx)
	alone := false // write the next entry on its own (see below)
	for len(ps) > 0 {
		if err := ctx.Err(); err != nil {
			return recs, err
		}
		if err := l.admit(ctx, ps[0].e.Kind() == KindCaseOpened); err != nil {
			return recs, err
		}
		w, objs := write, make([]vault.Object, len(ps))
		if alone {
			w, objs = l.writeOne, objs[:1]
		}
		prev, prevTime := l.last, l.lastTime
		for i := range objs {
			b, err := l.place(&ps[i], l.n+int64(i), prev, prevTime)
			if err != nil {
				return recs, err
			}
			objs[i] = vault.Object{Key: entryKey(l.caseID, ps[i].e.Seq), Data: b}
			prev, prevTime = EntryHash(b), ps[i].e.Time
		}
		stored, err := w(ctx, objs)
		for i := range stored {
			if err := l.acceptOwn(ctx, &ps[i].e, objs[i].Data, &recs); err != nil {
				return recs, err
			}
		}
		ps, objs = ps[stored:], objs[stored:]
		alone = false
		switch {
		case err == nil && stored == 0:
			return recs, fmt.Errorf("custody: case %s: write entry %d: the store stored nothing and reported no error", l.caseID, ps[0].e.Seq)
		case err == nil:
			continue
		case len(objs) == 0:
			return recs, fmt.Errorf("custody: case %s: %w", l.caseID, err)
		case !errors.Is(err, vault.ErrExists):
			// Writes may have landed although their answer was lost (or the
			// store could not confirm them): the entries whose keys hold
			// exactly our bytes are recorded, and must not be written again
			// with another time.
			n := 0
			for ; n < len(objs); n++ {
				got, rerr := readObject(ctx, l.store, objs[n].Key, MaxEntrySize)
				if rerr != nil || !bytes.Equal(got, objs[n].Data) {
					break
				}
				if err := l.acceptOwn(ctx, &ps[n].e, objs[n].Data, &recs); err != nil {
					return recs, err
				}
			}
			if n > 0 {
				ps = ps[n:]
				continue
			}
			return recs, fmt.Errorf("custody: case %s: write entry %d: %w", l.caseID, ps[0].e.Seq, err)
		}
		// Lost the race for this sequence number: catch up and retry.
		before := l.n
		if err := l.refresh(ctx); err != nil {
			return recs, err
		}
		if l.n == before {
			return recs, fmt.Errorf("custody: case %s: entry %d exists but cannot be read back", l.caseID, ps[0].e.Seq)
		}
		log.Debug().Str("case", l.caseID).Int64("lost_seq", ps[0].e.Seq).Int64("size", l.n).Msg("custody append raced another writer; retrying")
		// A batch takes longer to write than a single entry: against a
		// writer appending entries one by one, a batch that lost its first
		// entry could lose again and again. The next entry is then written
		// on its own, as that writer does, and the rest batched again.
		alone = stored == 0
	}
	return recs, nil
}

// acceptOwn adds entry e, encoded as b and just written, to the ledger and
// its Recorded to recs.
func (l *Ledger) acceptOwn(ctx context.Context, e *Entry, b []byte, recs *[]Recorded) error {
	if err := l.accept(b); err != nil {
		return fmt.Errorf("custody: case %s: entry %d: %w", l.caseID, e.Seq, err)
	}
	zerolog.Ctx(ctx).Debug().Str("case", l.caseID).Int64("seq", e.Seq).Str("kind", string(e.Kind())).Msg("custody entry written")
	*recs = append(*recs, Recorded{Seq: e.Seq, Hash: l.last, Time: e.Time})
	return nil
}

// refresh reads the entries other writers appended after the known ones.
func (l *Ledger) refresh(ctx context.Context) error {
	for {
		b, err := readObject(ctx, l.store, entryKey(l.caseID, l.n), MaxEntrySize)
		if errors.Is(err, vault.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("custody: case %s: read entry %d: %w", l.caseID, l.n, err)
		}
		if err := l.accept(b); err != nil {
			return fmt.Errorf("custody: case %s: %w", l.caseID, err)
		}
	}
}

// Checkpoint signs and writes a checkpoint of every entry written so far,
// including other writers' entries, and returns it (a signed note). With
// no new entries since the last checkpoint it writes nothing new.
func (l *Ledger) Checkpoint(ctx context.Context) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.refresh(ctx); err != nil {
		return nil, err
	}
	if err := l.checkpointLocked(ctx); err != nil {
		return nil, err
	}
	return l.readCheckpoint(ctx, l.n)
}

func (l *Ledger) checkpointLocked(ctx context.Context) error {
	if l.n == 0 || l.signed == l.n {
		return nil
	}
	root, err := tlog.TreeHash(l.n, l.hashReader())
	if err != nil {
		return fmt.Errorf("custody: tree hash: %w", err)
	}
	c := Checkpoint{Origin: Origin(l.caseID), Size: l.n, Root: root}
	msg, err := SignCheckpoint(c, l.signer)
	if err != nil {
		return err
	}
	err = writeOnce(ctx, l.store, checkpointKey(l.caseID, l.n), msg, l.opts.Put)
	if errors.Is(err, vault.ErrExists) {
		// Another writer checkpointed the same size; ECDSA signatures differ
		// each time. Accept theirs if it is a valid checkpoint of our tree.
		if _, err := l.readCheckpoint(ctx, l.n); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("custody: case %s: write checkpoint %d: %w", l.caseID, l.n, err)
	}
	l.signed = l.n
	zerolog.Ctx(ctx).Debug().Str("case", l.caseID).Int64("size", l.n).Msg("custody checkpoint written")
	return nil
}

// readCheckpoint reads the stored checkpoint of size n and checks it against the tree.
func (l *Ledger) readCheckpoint(ctx context.Context, n int64) ([]byte, error) {
	b, err := readObject(ctx, l.store, checkpointKey(l.caseID, n), MaxCheckpointSize)
	if err != nil {
		return nil, fmt.Errorf("custody: case %s: read checkpoint %d: %w", l.caseID, n, err)
	}
	c, err := OpenCheckpoint(b, l.verifier, Origin(l.caseID))
	if err != nil {
		return nil, &CheckpointError{Size: n, Err: err}
	}
	root, err := tlog.TreeHash(n, l.hashReader())
	if err != nil {
		return nil, err
	}
	if c.Size != n || c.Root != root {
		return nil, &CheckpointError{Size: n, Err: fmt.Errorf("%w: checkpoint does not match the entries", ErrTampered)}
	}
	return b, nil
}

// Entries returns every entry, re-read from the vault and checked against
// the hashes this Ledger holds.
func (l *Ledger) Entries(ctx context.Context) ([]*Entry, error) { return l.EntriesFrom(ctx, 0) }

// EntriesFrom returns the entries from sequence number from on (none when
// from is the ledger's size), re-read from the vault and checked against
// the hashes this Ledger holds: a caller that keeps what it read reads only
// what was appended since.
func (l *Ledger) EntriesFrom(ctx context.Context, from int64) ([]*Entry, error) {
	l.mu.Lock()
	if err := l.refresh(ctx); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	n := l.n
	l.mu.Unlock()
	if from < 0 || from > n {
		return nil, fmt.Errorf("custody: case %s has %d entries, none from %d", l.caseID, n, from)
	}
	raw, err := readRange(ctx, l.store, l.caseID, from, n, l.opts.Concurrency)
	if err != nil {
		return nil, err
	}
	out := make([]*Entry, len(raw))
	for k, b := range raw {
		i := from + int64(k)
		l.mu.Lock()
		want := l.hashes[tlog.StoredHashIndex(0, i)]
		l.mu.Unlock()
		if EntryHash(b) != want {
			return nil, &EntryError{Index: i, Err: fmt.Errorf("%w: entry changed since it was read", ErrTampered)}
		}
		if out[k], err = ParseEntry(b); err != nil {
			return nil, &EntryError{Index: i, Err: err}
		}
	}
	return out, nil
}

// ProveInclusion returns a C2SP tlog-proof that entry seq is in the ledger,
// against a signed checkpoint of the current tree (written if need be).
func (l *Ledger) ProveInclusion(ctx context.Context, seq int64) ([]byte, error) {
	cp, err := l.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	c, err := OpenCheckpoint(cp, l.verifier, Origin(l.caseID))
	if err != nil {
		return nil, err
	}
	if seq < 0 || seq >= c.Size {
		return nil, fmt.Errorf("custody: case %s has no entry %d", l.caseID, seq)
	}
	b, err := readObject(ctx, l.store, entryKey(l.caseID, seq), MaxEntrySize)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if EntryHash(b) != l.hashes[tlog.StoredHashIndex(0, seq)] {
		return nil, &EntryError{Index: seq, Err: fmt.Errorf("%w: entry changed since it was read", ErrTampered)}
	}
	p, err := tlog.ProveRecord(c.Size, seq, l.hashReader())
	if err != nil {
		return nil, err
	}
	return FormatProof(&Proof{Entry: b, Index: seq, Path: p, Checkpoint: cp}), nil
}

// writeOnce stores b at key, write-once.
func writeOnce(ctx context.Context, s store, key string, b []byte, opts vault.PutOptions) error {
	_, err := vault.PutBytes(ctx, s, key, b, opts)
	return err
}

// readObject reads one object of at most limit bytes.
func readObject(ctx context.Context, s reader, key string, limit int64) ([]byte, error) {
	rc, err := s.Get(ctx, key, "")
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	buf.Grow(1024)
	if _, err := buf.ReadFrom(io.LimitReader(rc, limit+1)); err != nil {
		return nil, err
	}
	if int64(buf.Len()) > limit {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrMalformed, key, limit)
	}
	return buf.Bytes(), nil
}

// readRange reads entries from..n-1, concurrency at a time.
func readRange(ctx context.Context, s reader, caseID string, from, n int64, concurrency int) ([][]byte, error) {
	out := make([][]byte, n-from)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for i := from; i < n; i++ {
		g.Go(func() error {
			b, err := readObject(ctx, s, entryKey(caseID, i), MaxEntrySize)
			if err != nil {
				if errors.Is(err, vault.ErrNotFound) {
					return &MissingEntryError{Index: i}
				}
				return fmt.Errorf("read entry %d: %w", i, err)
			}
			out[i-from] = b
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}
