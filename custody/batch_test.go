package custody

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/impound-ir/impound/vault"
)

// batchEntries are the entries of a case as a batch: the opening, then n
// entries of several shapes (resources, a failure, an over-long error, a
// pointer to details).
func batchEntries(n int) []Entry {
	es := []Entry{{Actor: Actor{Operator: "alice"}, Details: &CaseOpened{Title: "batch case", VerifierKey: "ignored"}}}
	for i := range n {
		e := Entry{Actor: Actor{Operator: "alice", CallerARN: "arn:aws:sts::111122223333:assumed-role/IR/alice"},
			Details: Note{Text: fmt.Sprintf("note %d", i)}}
		switch i % 4 {
		case 1:
			e.Resources = []string{fmt.Sprintf("arn:aws:ec2:eu-west-1:111122223333:volume/vol-%017d", i)}
		case 2:
			e.Error = fmt.Sprintf("step %d failed", i)
		case 3:
			e.Error = strings.Repeat("x", MaxErrorSize+100)
			e.Details = IsolationStep{Step: "standby", Target: fmt.Sprint("asg-", i)}
		}
		es = append(es, e)
	}
	return es
}

// ledgerStores are the stores ledgers are tested on: custody's fake,
// vault's memory store, and a local directory (every object fsynced).
func ledgerStores() map[string]func(t *testing.T) store {
	return map[string]func(t *testing.T) store{
		"fake":   func(t *testing.T) store { return newFakeStore() },
		"memory": func(t *testing.T) store { return vault.NewMemory() },
		"local": func(t *testing.T) store {
			s, err := vault.Open(context.Background(), t.TempDir(), vault.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
}

// ledgerObjects returns every stored object of a case's ledger, by key.
func ledgerObjects(t *testing.T, s store, caseID string) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	keys, err := s.List(ctx, vault.CasePrefix(caseID))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, k := range keys {
		b, err := readObject(ctx, s, k, MaxEntrySize)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = b
	}
	return out
}

// TestAppendAllSameAsAppend: a batch gives, byte for byte, the ledger a
// loop of Append gives (with clocks that agree and one checkpoint at the
// end), on every store.
func TestAppendAllSameAsAppend(t *testing.T) {
	ctx := context.Background()
	for name, mk := range ledgerStores() {
		t.Run(name, func(t *testing.T) {
			signer := newTestSigner(t, "batch.example/k")
			es := batchEntries(37)

			batched := mk(t)
			lb, err := Open(ctx, batched, "B", signer, Options{Now: fixedClock()})
			if err != nil {
				t.Fatal(err)
			}
			recs, err := lb.AppendAll(ctx, es)
			if err != nil {
				t.Fatal(err)
			}

			single := mk(t)
			ls, err := Open(ctx, single, "B", signer, Options{Now: fixedClock(), DeferCheckpoints: true})
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range es {
				r, err := ls.Append(ctx, e)
				if err != nil {
					t.Fatal(err)
				}
				if r != recs[i] {
					t.Fatalf("entry %d: AppendAll recorded %+v, Append %+v", i, recs[i], r)
				}
			}
			if _, err := ls.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}

			got, want := ledgerObjects(t, batched, "B"), ledgerObjects(t, single, "B")
			if len(got) != len(es)+1 || len(got) != len(want) {
				t.Fatalf("batch stored %d objects, Append %d; want %d entries and one checkpoint", len(got), len(want), len(es))
			}
			for k, b := range want {
				if !bytes.Equal(got[k], b) {
					t.Fatalf("%s differs:\nAppendAll:\n%s\nAppend:\n%s", k, got[k], b)
				}
			}
			v, err := Verify(ctx, batched, "B", VerifyOptions{Key: signer.VerifierKey()})
			if err != nil {
				t.Fatal(err)
			}
			if v.Size != int64(len(es)) || v.Signed != v.Size || v.Checkpoints != 1 {
				t.Fatalf("verified %+v", v)
			}
			parsed, err := v.Entries()
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range parsed {
				if e.Seq != int64(i) || e.Time != recs[i].Time || EntryHash(got[entryKey("B", int64(i))]) != recs[i].Hash {
					t.Fatalf("entry %d: %+v, recorded %+v", i, e, recs[i])
				}
			}
			if co := parsed[0].Details.(CaseOpened); co.VerifierKey != signer.VerifierKey() || co.Title != "batch case" {
				t.Fatalf("opening %+v", co)
			}
			if e := parsed[3]; e.Outcome != Failed || e.Error != "step 2 failed" {
				t.Fatalf("entry 3: outcome %s error %q", e.Outcome, e.Error)
			}
			if e := parsed[4]; len(e.Error) > MaxErrorSize || !strings.HasSuffix(e.Error, "[truncated]") {
				t.Fatalf("entry 4: error of %d bytes not truncated", len(e.Error))
			}
			// A second batch continues the chain and adds one checkpoint.
			more, err := lb.AppendAll(ctx, batchEntries(5)[1:])
			if err != nil || len(more) != 5 || more[0].Seq != int64(len(es)) {
				t.Fatalf("second batch: %+v %v", more, err)
			}
			if v, err := Verify(ctx, batched, "B", VerifyOptions{}); err != nil || v.Size != int64(len(es)+5) || v.Checkpoints != 2 {
				t.Fatalf("after a second batch: %+v %v", v, err)
			}
		})
	}
}

func TestAppendAllRules(t *testing.T) {
	ctx := context.Background()
	s := newFakeStore()
	signer := newTestSigner(t, "k")
	l, err := Open(ctx, s, "R", signer, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AppendAll(ctx, batchEntries(3)[1:]); !errors.Is(err, ErrNoCase) {
		t.Fatalf("batch without case-opened on an empty ledger: %v, want ErrNoCase", err)
	}
	twice := append(batchEntries(2), Entry{Actor: Actor{Operator: "a"}, Details: CaseOpened{Title: "again"}})
	if _, err := l.AppendAll(ctx, twice); !errors.Is(err, ErrCaseExists) {
		t.Fatalf("case-opened later in a batch: %v, want ErrCaseExists", err)
	}
	noDetails := append(batchEntries(2), Entry{Actor: Actor{Operator: "a"}})
	if _, err := l.AppendAll(ctx, noDetails); err == nil {
		t.Fatal("an entry without details was accepted")
	}
	if len(s.keys()) != 0 {
		t.Fatalf("refused batches wrote %v", s.keys())
	}
	if recs, err := l.AppendAll(ctx, nil); err != nil || len(recs) != 0 || len(s.keys()) != 0 {
		t.Fatalf("empty batch: %v %v %v", recs, err, s.keys())
	}
	if _, err := l.AppendAll(ctx, batchEntries(2)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.AppendAll(ctx, batchEntries(2)); !errors.Is(err, ErrCaseExists) {
		t.Fatalf("case-opened on an open case: %v, want ErrCaseExists", err)
	}
	if v, err := Verify(ctx, s, "R", VerifyOptions{}); err != nil || v.Size != 3 {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

// intrudingStore lets another writer append an entry just before the batch
// writes the entry at seq: the batch loses that sequence number in the
// middle of the batch.
type intrudingStore struct {
	store
	seq     int64
	intrude func()
	once    sync.Once
}

func (s *intrudingStore) Create(ctx context.Context, key string, o vault.PutOptions) (vault.Writer, error) {
	if key == entryKey("X", s.seq) {
		s.once.Do(s.intrude)
	}
	return s.store.Create(ctx, key, o)
}

// TestAppendAllConflictInBatch: another writer takes entry 6 while a batch
// of 10 is being written after entry 0: the batch's first 5 entries stay,
// the others follow the intruder's entry, each exactly once.
func TestAppendAllConflictInBatch(t *testing.T) {
	ctx := context.Background()
	signer := newTestSigner(t, "k")
	for name, base := range ledgerStores() {
		t.Run(name, func(t *testing.T) {
			s := &intrudingStore{store: base(t), seq: 6}
			openCase(t, s, "X", signer, Options{})
			other, err := Open(ctx, s.store, "X", signer, Options{})
			if err != nil {
				t.Fatal(err)
			}
			s.intrude = func() { appendNote(t, other, "intruder") }
			l, err := Open(ctx, s, "X", signer, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var es []Entry
			for i := range 10 {
				es = append(es, Entry{Actor: Actor{Operator: "batch"}, Details: Note{Text: fmt.Sprint("b", i)}})
			}
			recs, err := l.AppendAll(ctx, es)
			if err != nil {
				t.Fatal(err)
			}
			v, err := Verify(ctx, s, "X", VerifyOptions{Key: signer.VerifierKey()})
			if err != nil {
				t.Fatal(err)
			}
			if v.Size != 12 || v.Signed != 12 {
				t.Fatalf("size %d signed %d, want 12", v.Size, v.Signed)
			}
			parsed, err := v.Entries()
			if err != nil {
				t.Fatal(err)
			}
			var texts []string
			for _, e := range parsed[1:] {
				texts = append(texts, e.Details.(Note).Text)
			}
			if want := "[b0 b1 b2 b3 b4 intruder b5 b6 b7 b8 b9]"; fmt.Sprint(texts) != want {
				t.Fatalf("entries %v, want %s", texts, want)
			}
			if len(recs) != 10 {
				t.Fatalf("%d recorded, want 10", len(recs))
			}
			for i, r := range recs {
				want := int64(1 + i)
				if i >= 5 {
					want++
				}
				if r.Seq != want || parsed[r.Seq].Details.(Note).Text != fmt.Sprint("b", i) || EntryHash(v.raw[r.Seq]) != r.Hash {
					t.Fatalf("recorded %d: %+v", i, r)
				}
			}
		})
	}
}

// TestAppendAllFaults: a lost answer in the middle of a batch is recognised
// (recorded once); a failing write stops the batch, keeps and signs what was
// written before it and says how much; a failing checkpoint is ErrUnsigned.
func TestAppendAllFaults(t *testing.T) {
	ctx := context.Background()
	signer := newTestSigner(t, "k")
	fs := &faultStore{fakeStore: newFakeStore()}
	l := openCase(t, fs, "F", signer, Options{Now: fixedClock()})
	notes := func(prefix string, n int) []Entry {
		var es []Entry
		for i := range n {
			es = append(es, Entry{Actor: Actor{Operator: "a"}, Details: Note{Text: fmt.Sprint(prefix, i)}})
		}
		return es
	}

	fs.lose = func(k string) bool { return k == entryKey("F", 3) }
	recs, err := l.AppendAll(ctx, notes("lost", 5))
	if err != nil || len(recs) != 5 || recs[4].Seq != 5 {
		t.Fatalf("batch with a lost answer: %+v %v", recs, err)
	}
	fs.lose = nil
	if v, err := Verify(ctx, fs, "F", VerifyOptions{}); err != nil || v.Size != 6 || v.Signed != 6 {
		t.Fatalf("verify: %+v %v", v, err)
	}

	fs.fail = func(k string) bool { return k == entryKey("F", 8) }
	recs, err = l.AppendAll(ctx, notes("failing", 4))
	if err == nil || !strings.Contains(err.Error(), "connection reset") || errors.Is(err, ErrUnsigned) {
		t.Fatalf("batch with a failing write: %v", err)
	}
	if len(recs) != 2 || recs[0].Seq != 6 || recs[1].Seq != 7 {
		t.Fatalf("batch with a failing write recorded %+v, want entries 6 and 7", recs)
	}
	fs.fail = nil
	v, err := Verify(ctx, fs, "F", VerifyOptions{})
	if err != nil || v.Size != 8 || v.Signed != 8 {
		t.Fatalf("the written prefix is not signed: %+v %v", v, err)
	}
	if es, _ := v.Entries(); es[7].Details.(Note).Text != "failing1" {
		t.Fatalf("entry 7 = %+v", es[7])
	}

	fs.fail = func(k string) bool { return strings.HasPrefix(k, checkpointPrefix("F")) }
	recs, err = l.AppendAll(ctx, notes("unsigned", 3))
	if !errors.Is(err, ErrUnsigned) || len(recs) != 3 || !strings.Contains(err.Error(), "entries 8 to 10") {
		t.Fatalf("batch with a failing checkpoint: %+v %v", recs, err)
	}
	fs.fail = nil
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := Verify(ctx, fs, "F", VerifyOptions{}); err != nil || v.Size != 11 || v.Signed != 11 {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

// TestAppendAllUnconfirmed: the store wrote a whole batch but confirmed
// only its first entries (a directory it could not sync): the unconfirmed
// entries are read back, recognised as ours and recorded once, not written
// again with other times.
func TestAppendAllUnconfirmed(t *testing.T) {
	ctx := context.Background()
	s := newFakeStore()
	l := openCase(t, s, "U", newTestSigner(t, "k"), Options{Now: fixedClock()})
	var es []Entry
	for i := range 6 {
		es = append(es, Entry{Actor: Actor{Operator: "a"}, Details: Note{Text: fmt.Sprint("u", i)}})
	}
	calls := 0
	l.mu.Lock()
	recs, err := l.appendSigned(ctx, es, func(ctx context.Context, objs []vault.Object) (int, error) {
		calls++
		n, err := l.writeAll(ctx, objs)
		if calls == 1 && err == nil {
			return n - 4, errors.New("sync entries directory: input/output error")
		}
		return n, err
	})
	l.mu.Unlock()
	if err != nil || len(recs) != 6 || calls != 1 {
		t.Fatalf("%d recorded in %d writes: %v", len(recs), calls, err)
	}
	v, err := Verify(ctx, s, "U", VerifyOptions{})
	if err != nil || v.Size != 7 || v.Signed != 7 {
		t.Fatalf("verify: %v", err)
	}
	parsed, _ := v.Entries()
	for i, r := range recs {
		if r.Seq != int64(i+1) || parsed[r.Seq].Details.(Note).Text != fmt.Sprint("u", i) || EntryHash(v.raw[r.Seq]) != r.Hash {
			t.Fatalf("recorded %d: %+v", i, r)
		}
	}
}

// TestConcurrentAppendAll: one writer appends batches of 50 while another
// appends single entries, each its own Ledger as if in its own process;
// the result is one gapless, signed log with every entry exactly once.
func TestConcurrentAppendAll(t *testing.T) {
	for name, mk := range ledgerStores() {
		t.Run(name, func(t *testing.T) { testConcurrentAppendAll(t, mk(t), "CONCB-1", 4, 50, 100) })
	}
}

func testConcurrentAppendAll(t *testing.T, s store, caseID string, batches, size, singles int) {
	ctx := context.Background()
	signer := newTestSigner(t, "k")
	openCase(t, s, caseID, signer, Options{})
	var g errgroup.Group
	g.Go(func() error {
		l, err := Open(ctx, s, caseID, signer, Options{})
		if err != nil {
			return err
		}
		for b := range batches {
			es := make([]Entry, size)
			for i := range es {
				es[i] = Entry{Actor: Actor{Operator: "batcher"}, Details: Note{Text: fmt.Sprintf("b%d-%d", b, i)}}
			}
			recs, err := l.AppendAll(ctx, es)
			if err != nil {
				return err
			}
			if len(recs) != size {
				return fmt.Errorf("batch %d: %d recorded", b, len(recs))
			}
		}
		return nil
	})
	g.Go(func() error {
		l, err := Open(ctx, s, caseID, signer, Options{})
		if err != nil {
			return err
		}
		for i := range singles {
			if _, err := l.Append(ctx, Entry{Actor: Actor{Operator: "single"}, Details: Note{Text: fmt.Sprint("s", i)}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	v, err := Verify(ctx, s, caseID, VerifyOptions{Key: signer.VerifierKey()})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(1 + batches*size + singles); v.Size != want || v.Signed != want {
		t.Fatalf("size %d signed %d, want %d", v.Size, v.Signed, want)
	}
	es, err := v.Entries()
	if err != nil {
		t.Fatal(err)
	}
	var batched, single []string
	seen := map[string]int{}
	for _, e := range es[1:] {
		txt := e.Details.(Note).Text
		seen[txt]++
		if e.Actor.Operator == "batcher" {
			batched = append(batched, txt)
		} else {
			single = append(single, txt)
		}
	}
	for txt, n := range seen {
		if n != 1 {
			t.Fatalf("%s recorded %d times", txt, n)
		}
	}
	// Each writer's entries are all there, in the order it appended them.
	for i, txt := range batched {
		if want := fmt.Sprintf("b%d-%d", i/size, i%size); txt != want {
			t.Fatalf("batched entry %d is %s, want %s", i, txt, want)
		}
	}
	for i, txt := range single {
		if want := fmt.Sprint("s", i); txt != want {
			t.Fatalf("single entry %d is %s, want %s", i, txt, want)
		}
	}
	if len(batched) != batches*size || len(single) != singles {
		t.Fatalf("%d batched and %d single entries", len(batched), len(single))
	}
	interleaved := 0
	for i := 2; i < len(es); i++ {
		if es[i].Actor.Operator != es[i-1].Actor.Operator {
			interleaved++
		}
	}
	t.Logf("%d switches between the writers in %d entries", interleaved, len(es))
}

// TestEntriesFrom: a reader that keeps what it read asks only for what was
// appended since, by itself or by another writer, checked like Entries.
func TestEntriesFrom(t *testing.T) {
	ctx := context.Background()
	s := newFakeStore()
	signer := newTestSigner(t, "k")
	l := openCase(t, s, "FROM-1", signer, Options{})
	other, err := Open(ctx, s, "FROM-1", signer, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if _, err := other.Append(ctx, Entry{Actor: Actor{Operator: "o"}, Details: Note{Text: fmt.Sprint("n", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := l.Entries(ctx)
	if err != nil || len(all) != 5 {
		t.Fatalf("Entries: %d, %v", len(all), err)
	}
	tail, err := l.EntriesFrom(ctx, 3)
	if err != nil || len(tail) != 2 || tail[0].Seq != 3 || tail[1].Seq != 4 || tail[1].Details.(Note).Text != "n3" {
		t.Fatalf("EntriesFrom(3) = %d entries, %v", len(tail), err)
	}
	if none, err := l.EntriesFrom(ctx, 5); err != nil || len(none) != 0 {
		t.Fatalf("EntriesFrom(size) = %d entries, %v", len(none), err)
	}
	if _, err := l.EntriesFrom(ctx, 6); err == nil {
		t.Fatal("EntriesFrom past the end succeeded")
	}
	// An entry altered in the store after this Ledger read it is refused.
	k := entryKey("FROM-1", 4)
	s.mu.Lock()
	b := append([]byte(nil), s.objects[k]...)
	b[len(b)-3] ^= 1
	s.objects[k] = b
	s.mu.Unlock()
	var ee *EntryError
	if _, err := l.EntriesFrom(ctx, 4); !errors.As(err, &ee) || ee.Index != 4 || !errors.Is(err, ErrTampered) {
		t.Fatalf("EntriesFrom over an altered entry: %v", err)
	}
}
