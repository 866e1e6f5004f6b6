package custody

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/impound-ir/impound/vault"
)

func newTestSigner(t testing.TB, name string) Signer {
	t.Helper()
	skey, _, err := GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewEd25519Signer(skey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fixedClock returns a clock advancing one millisecond per call.
func fixedClock() func() time.Time {
	var mu sync.Mutex
	t := testTime
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Millisecond)
		return t
	}
}

func openCase(t testing.TB, s store, caseID string, signer Signer, opts Options) *Ledger {
	t.Helper()
	ctx := context.Background()
	l, err := Open(ctx, s, caseID, signer, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, Entry{Actor: Actor{Operator: "alice"}, Details: CaseOpened{Title: "test case"}}); err != nil {
		t.Fatal(err)
	}
	return l
}

func appendNote(t testing.TB, l *Ledger, text string) Recorded {
	t.Helper()
	r, err := l.Append(context.Background(), Entry{Actor: Actor{Operator: "alice"}, Details: Note{Text: text}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLedgerAppendAndVerify(t *testing.T) {
	ctx := context.Background()
	s := newFakeStore()
	signer := newTestSigner(t, "test.example/alice")
	l, err := Open(ctx, s, "CASE-1", signer, Options{Now: fixedClock()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, Entry{Actor: Actor{Operator: "alice"}, Details: Note{Text: "too early"}}); !errors.Is(err, ErrNoCase) {
		t.Fatalf("note before case-opened: %v, want ErrNoCase", err)
	}
	if len(s.keys()) != 0 {
		t.Fatalf("a refused append wrote %v", s.keys())
	}
	r0, err := l.Append(ctx, Entry{Actor: Actor{Operator: "alice"}, Details: CaseOpened{Title: "t", VerifierKey: "ignored"}})
	if err != nil || r0.Seq != 0 {
		t.Fatalf("open: %v %+v", err, r0)
	}
	r1 := appendNote(t, l, "first")
	r2, err := l.Append(ctx, Entry{Actor: Actor{Operator: "alice", CallerARN: "arn:aws:sts::1:assumed-role/r/s"},
		Resources: []string{"arn:aws:ec2:eu-west-1:1:instance/i-1"}, Error: "boom\nline 2",
		Details: IsolationStep{Step: "standby", Target: "asg-1"}})
	if err != nil || r1.Seq != 1 || r2.Seq != 2 {
		t.Fatalf("appends: %v %+v %+v", err, r1, r2)
	}
	if _, err := l.Append(ctx, Entry{Actor: Actor{Operator: "alice"}, Details: CaseOpened{}}); !errors.Is(err, ErrCaseExists) {
		t.Fatalf("second case-opened: %v", err)
	}
	v, err := Verify(ctx, s, "CASE-1", VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v.Size != 3 || v.Signed != 3 || v.Key != signer.VerifierKey() || !v.KeyFromLedger || v.Checkpoints != 3 {
		t.Fatalf("verified %+v", v)
	}
	es, err := l.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 || es[0].Details.(CaseOpened).VerifierKey != signer.VerifierKey() {
		t.Fatalf("entry 0 does not record the key: %+v", es[0])
	}
	if es[2].Outcome != Failed || es[2].Error != "boom\nline 2" || es[2].Prev != r1.Hash || es[1].Prev != r0.Hash {
		t.Fatalf("entry 2 = %+v", es[2])
	}
	if !es[1].Time.After(es[0].Time) || es[2].Actor.CallerARN == "" {
		t.Fatalf("times/actor: %+v", es)
	}
	// The tree root in the checkpoint is the RFC 6962 root of the entries.
	c, err := OpenCheckpoint(v.Checkpoint, mustVerifier(t, signer), Origin("CASE-1"))
	if err != nil {
		t.Fatal(err)
	}
	leaves := []tlog.Hash{r0.Hash, r1.Hash, r2.Hash}
	want := tlog.NodeHash(tlog.NodeHash(leaves[0], leaves[1]), leaves[2])
	if c.Root != want || c.Size != 3 {
		t.Fatalf("checkpoint root %x, want %x", c.Root, want)
	}
	// Reopening reads the same state and continues the chain.
	l2, err := Open(ctx, s, "CASE-1", signer, Options{})
	if err != nil || l2.Size() != 3 {
		t.Fatalf("reopen: %v size %d", err, l2.Size())
	}
	if r := appendNote(t, l2, "after reopen"); r.Seq != 3 {
		t.Fatalf("seq %d", r.Seq)
	}
}

func mustVerifier(t testing.TB, s Signer) note.Verifier {
	t.Helper()
	v, err := NewVerifier(s.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestLedgerRefusesOtherKey(t *testing.T) {
	ctx := context.Background()
	s := newFakeStore()
	a, b := newTestSigner(t, "a.example/key"), newTestSigner(t, "a.example/key")
	openCase(t, s, "C", a, Options{})
	before := len(s.keys())
	_, err := Open(ctx, s, "C", b, Options{})
	var km *KeyMismatchError
	if !errors.Is(err, ErrWrongKey) || !errors.As(err, &km) || km.Case != a.VerifierKey() {
		t.Fatalf("open with another key: %v", err)
	}
	// A Ledger opened before the case existed learns the key on append.
	s2 := newFakeStore()
	lb, err := Open(ctx, s2, "C", b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	openCase(t, s2, "C", a, Options{})
	if _, err := lb.Append(ctx, Entry{Actor: Actor{Operator: "x"}, Details: Note{Text: "x"}}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("append with another key: %v", err)
	}
	if len(s.keys()) != before {
		t.Fatal("refused writer wrote something")
	}
	if _, err := Verify(ctx, s, "C", VerifyOptions{Key: b.VerifierKey()}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("verify pinned to another key: %v", err)
	}
	if _, err := Verify(ctx, s, "C", VerifyOptions{Key: a.VerifierKey() + "\n"}); err != nil {
		t.Fatalf("verify pinned to the right key: %v", err)
	}
}

func TestUnsignedTail(t *testing.T) {
	ctx := context.Background()
	s := newFakeStore()
	signer := newTestSigner(t, "k")
	l := openCase(t, s, "C", signer, Options{DeferCheckpoints: true})
	appendNote(t, l, "one")
	_, err := Verify(ctx, s, "C", VerifyOptions{})
	var ut *UnsignedTailError
	if !errors.Is(err, ErrUnsigned) || !errors.As(err, &ut) || ut.Signed != 0 || ut.Size != 2 {
		t.Fatalf("unsigned tail: %v", err)
	}
	if errors.Is(err, ErrTampered) {
		t.Fatal("an unsigned tail is not tampering")
	}
	if _, err := Verify(ctx, s, "C", VerifyOptions{AllowUnsignedTail: true}); err != nil {
		t.Fatal(err)
	}
	cp, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(cp, []byte(Origin("C")+"\n2\n")) {
		t.Fatalf("checkpoint:\n%s", cp)
	}
	cp2, err := l.Checkpoint(ctx)
	if err != nil || !bytes.Equal(cp, cp2) {
		t.Fatalf("second checkpoint of the same tree differs: %v", err)
	}
	if _, err := Verify(ctx, s, "C", VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// smallLedger builds a ledger of 4 entries with a checkpoint after each.
func smallLedger(t testing.TB, signer Signer) *fakeStore {
	t.Helper()
	s := newFakeStore()
	l := openCase(t, s, "T", signer, Options{Now: fixedClock()})
	appendNote(t, l, "n1")
	if _, err := l.Append(context.Background(), Entry{Actor: Actor{Operator: "alice"}, Resources: []string{"s3://b/k"},
		Details: EvidenceStored{Source: "snap-1", Receipt: vault.Receipt{URI: "s3://b/k", Key: "k", VersionID: "v1", Size: 3, SHA256: strings.Repeat("0", 64)}}}); err != nil {
		t.Fatal(err)
	}
	appendNote(t, l, "n3")
	return s
}

// TestTamperEveryByte flips every bit pattern 0x01 and 0x80 of every byte of
// every stored object of a small ledger and checks that verification fails
// and names the right entry or checkpoint.
func TestTamperEveryByte(t *testing.T) {
	ctx := context.Background()
	signer := newTestSigner(t, "tamper.example/k")
	base := smallLedger(t, signer)
	if _, err := Verify(ctx, base, "T", VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	const n = 4
	flips := 0
	for _, key := range base.keys() {
		orig := base.get(key)
		for i := range orig {
			for _, mask := range []byte{0x01, 0x80} {
				s := base.clone()
				b := slices.Clone(orig)
				b[i] ^= mask
				s.set(key, b)
				flips++
				// Pinned key and not: both must fail.
				for _, pin := range []string{"", signer.VerifierKey()} {
					_, err := Verify(ctx, s, "T", VerifyOptions{Key: pin})
					if err == nil {
						t.Fatalf("%s byte %d ^%#x: verification passed", key, i, mask)
					}
					if !errors.Is(err, ErrTampered) && !errors.Is(err, ErrWrongKey) {
						t.Fatalf("%s byte %d: %v does not wrap ErrTampered", key, i, err)
					}
					checkBlame(t, key, i, n, err)
				}
			}
		}
	}
	t.Logf("%d single-byte flips detected", flips)
}

// checkBlame checks that err names the object that was changed.
func checkBlame(t *testing.T, key string, byteIdx int, n int64, err error) {
	t.Helper()
	var (
		ee *EntryError
		cb *ChainBreakError
		ce *CheckpointError
		km *KeyMismatchError
	)
	if seq, ok := keyNumber(entriesPrefix("T"), key); ok {
		switch {
		case errors.As(err, &ee) && ee.Index == seq:
		case errors.As(err, &cb) && (cb.Index == seq || cb.Index == seq+1):
		case errors.As(err, &ce) && seq == n-1 && ce.Size == n: // last entry: only the checkpoint covers it
		case errors.As(err, &km) && seq == 0: // the key in entry 0, with a pinned key
		case seq == 0 && errors.As(err, &ce): // entry 0's key changed: checkpoints no longer verify with it
		default:
			t.Fatalf("%s byte %d: error %v does not name entry %d", key, byteIdx, err, seq)
		}
		return
	}
	size, _ := keyNumber(checkpointPrefix("T"), key)
	if !errors.As(err, &ce) || ce.Size != size {
		t.Fatalf("%s byte %d: error %v does not name checkpoint %d", key, byteIdx, err, size)
	}
}

func TestTamperDeleteSwapResign(t *testing.T) {
	ctx := context.Background()
	signer := newTestSigner(t, "k")
	base := smallLedger(t, signer)
	const n = 4

	for i := range int64(n) {
		s := base.clone()
		s.remove(entryKey("T", i))
		_, err := Verify(ctx, s, "T", VerifyOptions{})
		var me *MissingEntryError
		var tr *TruncatedError
		switch {
		case i < n-1 && errors.As(err, &me) && me.Index == i:
		case i == n-1 && errors.As(err, &tr) && tr.Entries == n-1 && tr.Signed == n:
		default:
			t.Fatalf("delete entry %d: %v", i, err)
		}
	}
	// Removing the latest checkpoint leaves the last entry unsigned.
	s := base.clone()
	s.remove(checkpointKey("T", n))
	if _, err := Verify(ctx, s, "T", VerifyOptions{}); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("delete latest checkpoint: %v", err)
	}

	for i := range int64(n) {
		for j := i + 1; j < n; j++ {
			s := base.clone()
			a, b := s.get(entryKey("T", i)), s.get(entryKey("T", j))
			s.set(entryKey("T", i), b)
			s.set(entryKey("T", j), a)
			_, err := Verify(ctx, s, "T", VerifyOptions{})
			var ee *EntryError
			if !errors.As(err, &ee) || ee.Index != i {
				t.Fatalf("swap %d and %d: %v", i, j, err)
			}
		}
	}

	// Re-sign every checkpoint with another key of the same name.
	other := newTestSigner(t, "k")
	s = base.clone()
	for size := int64(1); size <= n; size++ {
		c, err := OpenCheckpoint(s.get(checkpointKey("T", size)), mustVerifier(t, signer), Origin("T"))
		if err != nil {
			t.Fatal(err)
		}
		msg, err := SignCheckpoint(c, other)
		if err != nil {
			t.Fatal(err)
		}
		s.set(checkpointKey("T", size), msg)
	}
	_, err := Verify(ctx, s, "T", VerifyOptions{})
	var ce *CheckpointError
	if !errors.As(err, &ce) || !errors.Is(err, ErrWrongKey) {
		t.Fatalf("re-signed with another key: %v", err)
	}

	// A wholesale rewrite under another key (entry 0 included) verifies on
	// its own but not against the pinned key, nor against a checkpoint seen
	// earlier.
	earlier := base.get(checkpointKey("T", 2))
	forged := smallLedger(t, other)
	if _, err := Verify(ctx, forged, "T", VerifyOptions{}); err != nil {
		t.Fatalf("forged ledger is self-consistent: %v", err)
	}
	if _, err := Verify(ctx, forged, "T", VerifyOptions{Key: signer.VerifierKey()}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("forged ledger with pinned key: %v", err)
	}
	if _, err := Verify(ctx, forged, "T", VerifyOptions{Checkpoints: [][]byte{earlier}}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("forged ledger against an earlier checkpoint: %v", err)
	}
}

func TestTruncationAgainstEarlierCheckpoint(t *testing.T) {
	ctx := context.Background()
	signer := newTestSigner(t, "k")
	s := newFakeStore()
	l := openCase(t, s, "C", signer, Options{Now: fixedClock()})
	for i := range 6 {
		appendNote(t, l, fmt.Sprint("note ", i))
	}
	seen, err := l.Checkpoint(ctx) // size 7, e.g. printed in a report
	if err != nil {
		t.Fatal(err)
	}
	appendNote(t, l, "later")
	if _, err := Verify(ctx, s, "C", VerifyOptions{Checkpoints: [][]byte{seen}}); err != nil {
		t.Fatalf("grown ledger against earlier checkpoint: %v", err)
	}
	// Truncate to 5 entries, removing the checkpoints that covered more:
	// self-consistent, so only the earlier checkpoint reveals it.
	for i := int64(5); i < 8; i++ {
		s.remove(entryKey("C", i))
		s.remove(checkpointKey("C", i+1))
	}
	if _, err := Verify(ctx, s, "C", VerifyOptions{}); err != nil {
		t.Fatalf("truncated ledger is self-consistent: %v", err)
	}
	_, err = Verify(ctx, s, "C", VerifyOptions{Checkpoints: [][]byte{seen}})
	var tr *TruncatedError
	if !errors.As(err, &tr) || tr.Entries != 5 || tr.Signed != 7 {
		t.Fatalf("truncated ledger against earlier checkpoint: %v", err)
	}
	// Rewritten with the same key: as long, but a different history.
	s2 := newFakeStore()
	l2 := openCase(t, s2, "C", signer, Options{Now: fixedClock()})
	for i := range 7 {
		appendNote(t, l2, fmt.Sprint("other ", i))
	}
	_, err = Verify(ctx, s2, "C", VerifyOptions{Checkpoints: [][]byte{seen}})
	var ie *InconsistentError
	if !errors.As(err, &ie) || ie.Size != 7 {
		t.Fatalf("rewritten ledger against earlier checkpoint: %v", err)
	}
	// Consistency proof between two checkpoints of the honest ledger.
	v, err := Verify(ctx, s2, "C", VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.ProveConsistency(3, 8)
	if err != nil {
		t.Fatal(err)
	}
	c3, _ := OpenCheckpoint(s2.get(checkpointKey("C", 3)), mustVerifier(t, signer), Origin("C"))
	c8, _ := OpenCheckpoint(s2.get(checkpointKey("C", 8)), mustVerifier(t, signer), Origin("C"))
	if err := tlog.CheckTree(p, 8, c8.Root, 3, c3.Root); err != nil {
		t.Fatalf("consistency proof: %v", err)
	}
	c3.Root[0] ^= 1
	if err := tlog.CheckTree(p, 8, c8.Root, 3, c3.Root); err == nil {
		t.Fatal("consistency proof accepted a wrong old root")
	}
	vf := mustVerifier(t, signer)
	if err := CheckConsistency(vf, "C", s2.get(checkpointKey("C", 3)), s2.get(checkpointKey("C", 8)), p); err != nil {
		t.Fatalf("CheckConsistency: %v", err)
	}
	// A checkpoint of one history against one of another: inconsistent.
	p37, err := v.ProveConsistency(3, 7)
	if err != nil {
		t.Fatal(err)
	}
	var ie2 *InconsistentError
	if err := CheckConsistency(vf, "C", s2.get(checkpointKey("C", 3)), seen, p37); !errors.As(err, &ie2) {
		t.Fatalf("CheckConsistency of two histories: %v", err)
	}
	if err := CheckConsistency(vf, "C", s2.get(checkpointKey("C", 3)), s2.get(checkpointKey("C", 7)), p37); err != nil {
		t.Fatalf("CheckConsistency 3..7: %v", err)
	}
}

func TestEvidenceCheck(t *testing.T) {
	ctx := context.Background()
	signer := newTestSigner(t, "k")
	vs := vault.NewMemory()
	rec, err := vault.Put(ctx, vs, "cases/C/evidence/mem.raw", strings.NewReader("memory image"), vault.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l := openCase(t, vs, "C", signer, Options{})
	if _, err := l.Append(ctx, Entry{Actor: Actor{Operator: "a"}, Details: EvidenceStored{Receipt: *rec, Source: "memory:i-1"}}); err != nil {
		t.Fatal(err)
	}
	check := func(ctx context.Context, r *vault.Receipt) error { return vault.Verify(ctx, vs, r) }
	v, err := Verify(ctx, vs, "C", VerifyOptions{CheckEvidence: check})
	if err != nil || v.EvidenceChecked != 1 {
		t.Fatalf("evidence check: %v %+v", err, v)
	}
	// A receipt the vault no longer matches (here: a forged SHA-256).
	bad := *rec
	bad.SHA256 = strings.Repeat("0", 64)
	if _, err := l.Append(ctx, Entry{Actor: Actor{Operator: "a"}, Details: EvidenceStored{Receipt: bad, Source: "memory:i-1"}}); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(ctx, vs, "C", VerifyOptions{CheckEvidence: check})
	var ev *EvidenceError
	if !errors.As(err, &ev) || ev.Index != 2 || !errors.Is(err, vault.ErrMismatch) {
		t.Fatalf("changed evidence: %v", err)
	}
}

// TestConcurrentWriters: 8 writers, each its own Ledger as if in its own
// process, append to one case at once; the result is one gapless log with
// every entry exactly once.
func TestConcurrentWriters(t *testing.T) {
	for name, mk := range ledgerStores() {
		t.Run(name, func(t *testing.T) { testConcurrentWriters(t, mk(t), "CONC-1", 8, 20) })
	}
}

func testConcurrentWriters(t *testing.T, s store, caseID string, writers, each int) {
	ctx := context.Background()
	signer := newTestSigner(t, "k")
	openCase(t, s, caseID, signer, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := Open(ctx, s, caseID, signer, Options{})
			if err != nil {
				errs <- err
				return
			}
			for i := range each {
				if _, err := l.Append(ctx, Entry{Actor: Actor{Operator: fmt.Sprint("writer-", w)}, Details: Note{Text: fmt.Sprintf("w%d-%d", w, i)}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	v, err := Verify(ctx, s, caseID, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(1 + writers*each); v.Size != want || v.Signed != want {
		t.Fatalf("size %d signed %d, want %d", v.Size, v.Signed, want)
	}
	es, err := v.Entries()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	last := map[string]int{}
	for _, e := range es[1:] {
		txt := e.Details.(Note).Text
		seen[txt]++
		var w, i int
		fmt.Sscanf(txt, "w%d-%d", &w, &i)
		if k := fmt.Sprint(w); last[k] > i {
			t.Fatalf("writer %d's entries out of order", w)
		} else {
			last[k] = i
		}
	}
	for w := range writers {
		for i := range each {
			if n := seen[fmt.Sprintf("w%d-%d", w, i)]; n != 1 {
				t.Fatalf("w%d-%d recorded %d times", w, i, n)
			}
		}
	}
}

// faultStore fails commits whose key matches: before storing (fail) or
// after storing, as if the answer were lost (lose).
type faultStore struct {
	*fakeStore
	fail, lose func(key string) bool
}

type faultWriter struct {
	vault.Writer
	s   *faultStore
	key string
}

func (s *faultStore) Create(ctx context.Context, key string, o vault.PutOptions) (vault.Writer, error) {
	w, err := s.fakeStore.Create(ctx, key, o)
	return &faultWriter{Writer: w, s: s, key: key}, err
}

func (w *faultWriter) Commit() (*vault.Receipt, error) {
	if w.s.fail != nil && w.s.fail(w.key) {
		w.Writer.Abort()
		return nil, errors.New("fault: connection reset")
	}
	r, err := w.Writer.Commit()
	if err == nil && w.s.lose != nil && w.s.lose(w.key) {
		return nil, errors.New("fault: answer lost")
	}
	return r, err
}

func TestAppendFaults(t *testing.T) {
	ctx := context.Background()
	signer := newTestSigner(t, "k")
	fs := &faultStore{fakeStore: newFakeStore()}
	l := openCase(t, fs, "F", signer, Options{Now: fixedClock()})

	// The entry's answer is lost after it was stored: recorded once.
	fs.lose = func(k string) bool { return k == entryKey("F", 1) }
	if r, err := l.Append(ctx, Entry{Actor: Actor{Operator: "a"}, Details: Note{Text: "lost answer"}}); err != nil || r.Seq != 1 {
		t.Fatalf("append with lost answer: %+v %v", r, err)
	}
	fs.lose = nil

	// The checkpoint cannot be written: the entry is, and the error says so.
	fs.fail = func(k string) bool { return strings.HasPrefix(k, checkpointPrefix("F")) }
	r, err := l.Append(ctx, Entry{Actor: Actor{Operator: "a"}, Details: Note{Text: "unsigned for now"}})
	if !errors.Is(err, ErrUnsigned) || r.Seq != 2 {
		t.Fatalf("append with failing checkpoint: %+v %v", r, err)
	}
	if _, err := Verify(ctx, fs, "F", VerifyOptions{}); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("verify before checkpoint: %v", err)
	}
	fs.fail = nil
	if _, err := l.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := Verify(ctx, fs, "F", VerifyOptions{})
	if err != nil || v.Size != 3 || v.Signed != 3 {
		t.Fatalf("verify: %v %+v", err, v)
	}

	// The entry cannot be written at all: nothing is recorded, the error says why.
	fs.fail = func(k string) bool { return strings.HasPrefix(k, entriesPrefix("F")) }
	if _, err := l.Append(ctx, Entry{Actor: Actor{Operator: "a"}, Details: Note{Text: "lost"}}); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("append to failing store: %v", err)
	}
	if v, _ := Verify(ctx, fs, "F", VerifyOptions{}); v == nil || v.Size != 3 {
		t.Fatal("a failed append left an entry")
	}
}

// TestEvidenceCheckCoversBlockMapsAndReports: verification with evidence
// re-reads an image's block map and every stored report too, not only the
// evidence object an entry names first.
func TestEvidenceCheckCoversBlockMapsAndReports(t *testing.T) {
	ctx := context.Background()
	signer := newTestSigner(t, "k")
	vs := vault.NewMemory()
	put := func(key, content string) *vault.Receipt {
		r, err := vault.Put(ctx, vs, key, strings.NewReader(content), vault.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	img, bm, rep := put("cases/C/evidence/snap.img", "image"), put("cases/C/evidence/snap.img.blockmap", "map"), put("cases/C/reports/report-3.html", "<html>")
	l := openCase(t, vs, "C", signer, Options{})
	for _, d := range []Details{
		EvidenceStored{Receipt: *img, Source: "ebs-snapshot:snap", Evidence: EvidenceDiskImage, Acquisition: &Acquisition{SnapshotID: "snap", BlockMap: bm}},
		ReportGenerated{Receipt: *rep, Format: "html"},
	} {
		if _, err := l.Append(ctx, Entry{Actor: Actor{Operator: "a"}, Details: d}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(ctx context.Context, r *vault.Receipt) error { return vault.Verify(ctx, vs, r) }
	v, err := Verify(ctx, vs, "C", VerifyOptions{CheckEvidence: check})
	if err != nil || v.EvidenceChecked != 3 {
		t.Fatalf("evidence check: %v, %d objects re-read (want image, block map, report)", err, v.EvidenceChecked)
	}
	// A block map or a report that no longer matches its receipt fails it.
	for _, r := range []*vault.Receipt{bm, rep} {
		forged := func(ctx context.Context, got *vault.Receipt) error {
			if got.Key == r.Key {
				return fmt.Errorf("%s: %w", got.Key, vault.ErrMismatch)
			}
			return check(ctx, got)
		}
		_, err := Verify(ctx, vs, "C", VerifyOptions{CheckEvidence: forged})
		var ev *EvidenceError
		if !errors.As(err, &ev) || ev.URI != r.URI {
			t.Errorf("%s changed: %v", r.Key, err)
		}
	}
}
