package vault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// suite is the conformance suite every Store passes.
type suite struct {
	// newStore returns an empty store (or one whose keys no other test uses).
	newStore func(t *testing.T) Store
	// big is the size of a stream that spans several parts.
	big int
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func hexSHA(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func readAll(t *testing.T, s Store, key, version string) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), key, version)
	if err != nil {
		t.Fatalf("Get(%s, %q): %v", key, version, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

func (s suite) run(t *testing.T) {
	t.Run("PutGetStat", s.testPutGetStat)
	t.Run("IdenticalRetry", s.testIdenticalRetry)
	t.Run("DifferentContentRefused", s.testDifferent)
	t.Run("RaceDifferent", func(t *testing.T) { s.testRaceDifferent(t, 2048) })
	t.Run("RaceDifferentMultipart", func(t *testing.T) { s.testRaceDifferent(t, s.big) })
	t.Run("RaceIdentical", s.testRaceIdentical)
	t.Run("AbortLeavesNothing", s.testAbort)
	t.Run("CancelLeavesNothing", s.testCancel)
	t.Run("FailingReaderLeavesNothing", s.testFailingReader)
	t.Run("Resume", s.testResume)
	t.Run("Verify", s.testVerify)
	t.Run("LegalHold", s.testLegalHold)
	t.Run("Retention", s.testRetention)
	t.Run("NotFound", s.testNotFound)
	t.Run("BadKeys", s.testBadKeys)
	t.Run("List", s.testList)
}

func (s suite) testPutGetStat(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	for i, size := range []int{0, 1, 1000, s.big} {
		data := randomBytes(uint64(i), size)
		key := fmt.Sprintf("cases/c1/evidence/obj-%d", size)
		r, err := Put(ctx, st, key, bytes.NewReader(data), PutOptions{SizeHint: int64(size)})
		if err != nil {
			t.Fatalf("Put %d bytes: %v", size, err)
		}
		if r.Key != key || r.Size != int64(size) || r.SHA256 != hexSHA(data) || r.VersionID == "" {
			t.Fatalf("receipt %+v: want key %s size %d sha %s and a version", r, key, size, hexSHA(data))
		}
		if got := readAll(t, st, key, r.VersionID); !bytes.Equal(got, data) {
			t.Fatalf("Get %s: %d bytes back, content differs from the %d put", key, len(got), size)
		}
		if got := readAll(t, st, key, ""); !bytes.Equal(got, data) {
			t.Fatalf("Get latest %s: content differs", key)
		}
		sr, err := st.Stat(ctx, key, r.VersionID)
		if err != nil {
			t.Fatalf("Stat: %v", err)
		}
		if sr.VersionID != r.VersionID || sr.Size != r.Size || sr.SHA256 != r.SHA256 || sr.URI != r.URI {
			t.Fatalf("Stat = %+v, Put returned %+v", sr, r)
		}
		if r.StoredAt.IsZero() || time.Since(r.StoredAt) > time.Hour || time.Until(r.StoredAt) > time.Hour {
			t.Fatalf("StoredAt %v is not now", r.StoredAt)
		}
		if err := Verify(ctx, st, r); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	}
}

func (s suite) testIdenticalRetry(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	data := randomBytes(7, s.big)
	r1, err := Put(ctx, st, "k/retry", bytes.NewReader(data), PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := Put(ctx, st, "k/retry", bytes.NewReader(data), PutOptions{})
	if err != nil {
		t.Fatalf("identical retry refused: %v", err)
	}
	if r1.VersionID != r2.VersionID || r1.SHA256 != r2.SHA256 || r1.Size != r2.Size {
		t.Fatalf("retry receipt %+v differs from first %+v", r2, r1)
	}
}

func (s suite) testDifferent(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	a, b := randomBytes(1, 4096), randomBytes(2, 4096)
	ra, err := Put(ctx, st, "k/once", bytes.NewReader(a), PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Put(ctx, st, "k/once", bytes.NewReader(b), PutOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("second write with other content: err = %v, want ErrExists", err)
	}
	// Same size prefix, one byte more: still different.
	if _, err := Put(ctx, st, "k/once", bytes.NewReader(append(a, 0)), PutOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("longer write: err = %v, want ErrExists", err)
	}
	if got := readAll(t, st, "k/once", ""); !bytes.Equal(got, a) {
		t.Fatal("the stored object changed after a refused write")
	}
	if r, err := st.Stat(ctx, "k/once", ""); err != nil || r.VersionID != ra.VersionID {
		t.Fatalf("Stat after refused write = %+v, %v; want version %s", r, err, ra.VersionID)
	}
}

// testRaceDifferent: 8 writers race for one key with different content;
// exactly one wins, the others get ErrExists (custody relies on this).
func (s suite) testRaceDifferent(t *testing.T, size int) {
	ctx := context.Background()
	st := s.newStore(t)
	const n = 8
	var (
		wg      sync.WaitGroup
		errs    [n]error
		rs      [n]*Receipt
		content [n][]byte
		start   = make(chan struct{})
	)
	for i := range n {
		content[i] = randomBytes(uint64(100+i), size+i%2) // some of equal size
		wg.Go(func() {
			w, err := st.Create(ctx, "k/race", PutOptions{})
			if err != nil {
				errs[i] = err
				return
			}
			w.Write(content[i])
			<-start
			rs[i], errs[i] = w.Commit()
			if errs[i] != nil {
				w.Abort()
			}
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("writers %d and %d both won", winner, i)
			}
			winner = i
		case !errors.Is(err, ErrExists):
			t.Fatalf("writer %d: %v, want ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won")
	}
	if got := readAll(t, st, "k/race", ""); !bytes.Equal(got, content[winner]) {
		t.Fatal("stored content is not the winner's")
	}
	if rs[winner].SHA256 != hexSHA(content[winner]) {
		t.Fatal("winner's receipt hash is wrong")
	}
}

func (s suite) testRaceIdentical(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	const n = 8
	data := randomBytes(9, 3000)
	var (
		wg   sync.WaitGroup
		errs [n]error
		rs   [n]*Receipt
	)
	for i := range n {
		wg.Go(func() { rs[i], errs[i] = Put(ctx, st, "k/same", bytes.NewReader(data), PutOptions{}) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("writer %d of identical content: %v", i, errs[i])
		}
		if rs[i].VersionID != rs[0].VersionID || rs[i].SHA256 != hexSHA(data) {
			t.Fatalf("writer %d receipt %+v, writer 0 %+v", i, rs[i], rs[0])
		}
	}
}

func (s suite) assertAbsent(t *testing.T, st Store, key string) {
	t.Helper()
	ctx := context.Background()
	if _, err := st.Stat(ctx, key, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat %s: err = %v, want ErrNotFound", key, err)
	}
	if _, err := st.Get(ctx, key, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get %s: err = %v, want ErrNotFound", key, err)
	}
	keys, err := st.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k == key {
			t.Fatalf("List shows %s", key)
		}
	}
}

func (s suite) testAbort(t *testing.T) {
	st := s.newStore(t)
	w, err := st.Create(context.Background(), "k/aborted", PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(randomBytes(3, s.big)); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(); err == nil {
		t.Fatal("Commit after Abort succeeded")
	}
	s.assertAbsent(t, st, "k/aborted")
}

func (s suite) testCancel(t *testing.T) {
	st := s.newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	w, err := st.Create(ctx, "k/cancelled", PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(randomBytes(4, s.big)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := w.Commit(); err == nil {
		t.Fatal("Commit after cancel succeeded")
	}
	s.assertAbsent(t, st, "k/cancelled")
}

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func (s suite) testFailingReader(t *testing.T) {
	st := s.newStore(t)
	boom := errors.New("disk read error")
	_, err := Put(context.Background(), st, "k/failed", &failingReader{bytes.NewReader(randomBytes(5, s.big)), boom}, PutOptions{})
	if !errors.Is(err, boom) {
		t.Fatalf("Put with a failing reader: %v, want the reader's error", err)
	}
	s.assertAbsent(t, st, "k/failed")
}

// testResume: a writer checkpoints, writes more, then dies; a resumed writer
// continues from the checkpoint's offset and ends with the source's hash.
func (s suite) testResume(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	src := randomBytes(6, 2*s.big+12345)
	w, err := st.Create(ctx, "k/resumed", PutOptions{SizeHint: int64(len(src))})
	if err != nil {
		t.Fatal(err)
	}
	first := s.big + 777
	if _, err := w.Write(src[:first]); err != nil {
		t.Fatal(err)
	}
	state, off, err := w.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 || off > int64(first) {
		t.Fatalf("checkpoint offset %d outside [0, %d]", off, first)
	}
	// More bytes after the checkpoint, then the process "dies": the writer
	// is dropped without Commit or Abort.
	if _, err := w.Write(src[first : first+5000]); err != nil {
		t.Fatal(err)
	}
	w2, off2, err := st.Resume(ctx, state)
	if err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if off2 != off {
		t.Fatalf("Resume offset %d, checkpoint said %d", off2, off)
	}
	if _, err := w2.Write(src[off2:]); err != nil {
		t.Fatal(err)
	}
	r, err := w2.Commit()
	if err != nil {
		t.Fatalf("Commit after resume: %v", err)
	}
	if r.SHA256 != hexSHA(src) || r.Size != int64(len(src)) {
		t.Fatalf("resumed receipt size %d sha %s; source %d %s", r.Size, r.SHA256, len(src), hexSHA(src))
	}
	if got := readAll(t, st, "k/resumed", r.VersionID); !bytes.Equal(got, src) {
		t.Fatal("resumed object differs from the source")
	}
	if err := Verify(ctx, st, r); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Resume(ctx, []byte(`{"v":"impound-vault/0"}`)); err == nil {
		t.Fatal("Resume accepted a state of another version")
	}
}

func (s suite) testVerify(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	data := randomBytes(8, 10000)
	r, err := Put(ctx, st, "k/verify", bytes.NewReader(data), PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(ctx, st, r); err != nil {
		t.Fatalf("Verify of an untouched object: %v", err)
	}
	bad := *r
	bad.SHA256 = hexSHA([]byte("other"))
	err = Verify(ctx, st, &bad)
	var me *MismatchError
	if !errors.Is(err, ErrMismatch) || !errors.As(err, &me) {
		t.Fatalf("Verify with a wrong hash: %v, want a *MismatchError", err)
	}
	if me.WantSHA256 != bad.SHA256 || me.GotSHA256 != r.SHA256 || me.WantSize != me.GotSize {
		t.Fatalf("MismatchError %+v does not name the hash difference", me)
	}
	bad = *r
	bad.Size++
	if err := Verify(ctx, st, &bad); !errors.As(err, &me) || me.GotSize != r.Size || me.WantSize != r.Size+1 {
		t.Fatalf("Verify with a wrong size: %v", err)
	}
	gone := *r
	gone.Key, gone.VersionID = "k/never-written", ""
	if err := Verify(ctx, st, &gone); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Verify of a missing object: %v, want ErrNotFound", err)
	}
}

func (s suite) testLegalHold(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	r, err := Put(ctx, st, "k/held", bytes.NewReader([]byte("held")), PutOptions{LegalHold: true, RetentionMode: ModeGovernance})
	if err != nil {
		t.Fatal(err)
	}
	if !r.LegalHold {
		t.Fatal("receipt does not show the legal hold asked for")
	}
	if sr, err := st.Stat(ctx, "k/held", r.VersionID); err != nil || !sr.LegalHold {
		t.Fatalf("Stat: %+v, %v; want legal hold on", sr, err)
	}
	if err := st.SetLegalHold(ctx, "k/held", r.VersionID, false); err != nil {
		t.Fatal(err)
	}
	if sr, err := st.Stat(ctx, "k/held", r.VersionID); err != nil || sr.LegalHold {
		t.Fatalf("Stat after lifting: %+v, %v; want legal hold off", sr, err)
	}
	if err := st.SetLegalHold(ctx, "k/held", "", true); err != nil {
		t.Fatal(err)
	}
	if sr, err := st.Stat(ctx, "k/held", ""); err != nil || !sr.LegalHold || sr.SHA256 != r.SHA256 {
		t.Fatalf("Stat after placing: %+v, %v", sr, err)
	}
	if err := st.SetLegalHold(ctx, "k/not-there", "", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("legal hold on a missing key: %v, want ErrNotFound", err)
	}
}

func (s suite) testRetention(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	r, err := Put(ctx, st, "k/default-retention", bytes.NewReader([]byte("x")), PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.RetentionMode != ModeCompliance {
		t.Fatalf("default mode %q, want COMPLIANCE", r.RetentionMode)
	}
	want := time.Now().Add(testRetention)
	if d := r.RetainUntil.Sub(want); d < -time.Minute || d > time.Minute {
		t.Fatalf("retain-until %v, want about %v", r.RetainUntil, want)
	}
	until := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	r, err = Put(ctx, st, "k/governance", bytes.NewReader([]byte("y")), PutOptions{RetentionMode: "governance", RetainUntil: until})
	if err != nil {
		t.Fatal(err)
	}
	sr, err := st.Stat(ctx, "k/governance", r.VersionID)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []*Receipt{r, sr} {
		if x.RetentionMode != ModeGovernance || !x.RetainUntil.Equal(until) {
			t.Fatalf("retention %s until %v, want GOVERNANCE until %v", x.RetentionMode, x.RetainUntil, until)
		}
	}
	if _, err := st.Create(ctx, "k/bad-mode", PutOptions{RetentionMode: "forever"}); err == nil {
		t.Fatal("unknown retention mode accepted")
	}
	if _, err := st.Create(ctx, "k/past", PutOptions{RetainUntil: time.Now().Add(-time.Hour)}); err == nil {
		t.Fatal("retain-until in the past accepted")
	}
}

func (s suite) testNotFound(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	if _, err := st.Get(ctx, "k/missing", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
	if _, err := st.Stat(ctx, "k/missing", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat missing: %v", err)
	}
	r, err := Put(ctx, st, "k/present", bytes.NewReader([]byte("p")), PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other := "0000000000000000000000000000000a"
	if other == r.VersionID {
		other = "0000000000000000000000000000000b"
	}
	if _, err := st.Stat(ctx, "k/present", other); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat of an unknown version: %v", err)
	}
	if _, err := st.Get(ctx, "k/present", other); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of an unknown version: %v", err)
	}
}

func (s suite) testBadKeys(t *testing.T) {
	st := s.newStore(t)
	for _, key := range []string{"", "/abs", "a//b", "../up", "a/../b", "a/./b", "trailing/", "x" + receiptSuffix, ".impound/tmp/x", "nul\x00"} {
		if _, err := st.Create(context.Background(), key, PutOptions{}); err == nil {
			t.Errorf("Create(%q) accepted", key)
		}
	}
}

func (s suite) testList(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t)
	for _, k := range []string{"cases/b/x", "cases/a/y", "cases/a/x", "other/z"} {
		if _, err := Put(ctx, st, k, bytes.NewReader([]byte(k)), PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := st.List(ctx, "cases/")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cases/a/x", "cases/a/y", "cases/b/x"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("List(cases/) = %v, want %v", got, want)
	}
	got, _ = st.List(ctx, "cases/a/")
	if fmt.Sprint(got) != fmt.Sprint(want[:2]) {
		t.Fatalf("List(cases/a/) = %v", got)
	}
}

// testRetention is the default retention the suite's stores are opened with.
const testRetention = 24 * time.Hour

func testOptions() Options {
	o := NewOptions()
	o.DefaultRetention = testRetention
	return o
}

func TestMemoryConformance(t *testing.T) {
	suite{newStore: func(t *testing.T) Store { return newMemory(testOptions()) }, big: 3<<20 + 17}.run(t)
}

func TestLocalConformance(t *testing.T) {
	suite{newStore: func(t *testing.T) Store {
		st, err := Open(context.Background(), t.TempDir(), testOptions())
		if err != nil {
			t.Fatal(err)
		}
		return st
	}, big: 3<<20 + 17}.run(t)
}
