package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// batchSuite checks PutAll against one kind of store.
type batchSuite struct {
	// newStore returns an empty store whose clock is now.
	newStore func(t *testing.T, now func() time.Time) Store
	// contentVersions: version IDs derive from the content (local store),
	// so two stores give the same; elsewhere they are random.
	contentVersions bool
	// clockStoredAt: StoredAt comes from the store's clock, not a server's.
	clockStoredAt bool
}

func (s batchSuite) run(t *testing.T) {
	t.Run("SameAsPut", s.testSameAsPut)
	t.Run("Idempotent", s.testIdempotent)
	t.Run("ConflictStopsThere", s.testConflict)
	t.Run("DuplicateKeyInBatch", s.testDuplicateKey)
	t.Run("BadKeyStoresNothing", s.testBadKey)
	t.Run("CancelledStoresNothing", s.testCancelled)
	t.Run("Empty", s.testEmpty)
}

// stepClock starts at start and advances a millisecond per call, so that
// two stores asked the time in the same order answer the same.
func stepClock(start time.Time) func() time.Time {
	var mu sync.Mutex
	t := start
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Millisecond)
		return t
	}
}

func batchObjects(prefix string, sizes ...int) []Object {
	objs := make([]Object, len(sizes))
	for i, n := range sizes {
		objs[i] = Object{Key: fmt.Sprintf("%s/%020d", prefix, i), Data: randomBytes(uint64(1000+i), n)}
	}
	return objs
}

// comparable returns r as JSON with what legitimately differs between two
// stores removed: the store's own URI prefix, random version IDs, and
// server-side times.
func (s batchSuite) comparable(t *testing.T, st Store, r *Receipt) string {
	t.Helper()
	c := *r
	if !strings.HasPrefix(c.URI, st.URI()) {
		t.Fatalf("receipt URI %s is not in store %s", c.URI, st.URI())
	}
	c.URI = strings.TrimPrefix(c.URI, st.URI())
	if !s.contentVersions {
		c.VersionID = ""
	}
	if !s.clockStoredAt {
		c.StoredAt = time.Time{}
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkStored checks that each of objs reads back byte for byte and that
// its receipt (and Stat) names its size and SHA-256.
func checkStored(t *testing.T, st Store, objs []Object, rs []*Receipt) {
	t.Helper()
	ctx := context.Background()
	if len(rs) != len(objs) {
		t.Fatalf("%d receipts for %d objects", len(rs), len(objs))
	}
	for i, o := range objs {
		r := rs[i]
		if r.Key != o.Key || r.Size != int64(len(o.Data)) || r.SHA256 != hexSHA(o.Data) || r.VersionID == "" {
			t.Fatalf("object %d: receipt %+v; want key %s, size %d, sha256 %s", i, r, o.Key, len(o.Data), hexSHA(o.Data))
		}
		if got := readAll(t, st, o.Key, r.VersionID); !bytes.Equal(got, o.Data) {
			t.Fatalf("object %d (%s): %d bytes back differ from the %d put", i, o.Key, len(got), len(o.Data))
		}
		sr, err := st.Stat(ctx, o.Key, "")
		if err != nil {
			t.Fatal(err)
		}
		if sr.VersionID != r.VersionID || sr.SHA256 != r.SHA256 || sr.Size != r.Size {
			t.Fatalf("object %d: Stat %+v, PutAll returned %+v", i, sr, r)
		}
		if err := Verify(ctx, st, r); err != nil {
			t.Fatalf("object %d: %v", i, err)
		}
	}
}

func listKeys(t *testing.T, st Store) []string {
	t.Helper()
	keys, err := st.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func objKeys(objs []Object) []string {
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}

// testSameAsPut: PutAll into one store and Put one by one into another,
// with clocks that agree, give the same receipts and content.
func (s batchSuite) testSameAsPut(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	batch, single := s.newStore(t, stepClock(start)), s.newStore(t, stepClock(start))
	objs := batchObjects("cases/C/ledger/entries", 0, 1, 700, 1000, 4096, 65536, 3)
	opts := PutOptions{LegalHold: true, RetentionMode: ModeGovernance}
	rs, err := PutAll(ctx, batch, objs, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkStored(t, batch, objs, rs)
	for i, o := range objs {
		want, err := Put(ctx, single, o.Key, bytes.NewReader(o.Data), opts)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := s.comparable(t, batch, rs[i]), s.comparable(t, single, want); got != want {
			t.Fatalf("object %d: PutAll receipt\n%s\nPut receipt\n%s", i, got, want)
		}
		if !rs[i].LegalHold || rs[i].RetentionMode != ModeGovernance {
			t.Fatalf("object %d: options not applied: %+v", i, rs[i])
		}
	}
	if got, want := fmt.Sprint(listKeys(t, batch)), fmt.Sprint(objKeys(objs)); got != want {
		t.Fatalf("List = %s, want %s", got, want)
	}
}

func (s batchSuite) testIdempotent(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t, time.Now)
	objs := batchObjects("k/idem", 10, 20, 30, 40)
	// One of them is there already, put on its own.
	pre, err := Put(ctx, st, objs[2].Key, bytes.NewReader(objs[2].Data), PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := PutAll(ctx, st, objs, PutOptions{})
	if err != nil {
		t.Fatalf("PutAll over an identical object: %v", err)
	}
	checkStored(t, st, objs, rs)
	if rs[2].VersionID != pre.VersionID || !sameStoredAt(rs[2].StoredAt, pre.StoredAt) {
		t.Fatalf("receipt of the object already there: %+v, stored %+v", rs[2], pre)
	}
	// The whole batch again: every receipt is the stored one.
	again, err := PutAll(ctx, st, objs, PutOptions{})
	if err != nil {
		t.Fatalf("identical batch again: %v", err)
	}
	for i := range objs {
		if again[i].VersionID != rs[i].VersionID || again[i].SHA256 != rs[i].SHA256 || !sameStoredAt(again[i].StoredAt, rs[i].StoredAt) {
			t.Fatalf("object %d: retry receipt %+v, first %+v", i, again[i], rs[i])
		}
	}
	if got := listKeys(t, st); len(got) != len(objs) {
		t.Fatalf("List = %v", got)
	}
}

// testConflict: a key in the middle of the batch holds other content; the
// objects before it are stored, it is untouched, nothing after it appears.
func (s batchSuite) testConflict(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t, time.Now)
	objs := batchObjects("k/conflict", 100, 200, 300, 400, 500)
	other := []byte("another writer's content")
	if _, err := Put(ctx, st, objs[2].Key, bytes.NewReader(other), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	rs, err := PutAll(ctx, st, objs, PutOptions{})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("PutAll over other content: %v, want ErrExists", err)
	}
	if !strings.Contains(err.Error(), objs[2].Key) {
		t.Fatalf("error %q does not name %s", err, objs[2].Key)
	}
	checkStored(t, st, objs[:2], rs)
	if got := readAll(t, st, objs[2].Key, ""); !bytes.Equal(got, other) {
		t.Fatal("the conflicting key's content changed")
	}
	for _, o := range objs[3:] {
		suite{}.assertAbsent(t, st, o.Key)
	}
	want := objKeys(objs[:3])
	if got := listKeys(t, st); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
}

func (s batchSuite) testDuplicateKey(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t, time.Now)
	a, b := Object{Key: "k/dup", Data: []byte("first")}, Object{Key: "k/dup", Data: []byte("second")}
	rs, err := PutAll(ctx, st, []Object{a, a, b, {Key: "k/after", Data: []byte("x")}}, PutOptions{})
	if !errors.Is(err, ErrExists) || len(rs) != 2 {
		t.Fatalf("PutAll(a, a, b', c): %d receipts, %v; want 2 and ErrExists", len(rs), err)
	}
	if rs[0].VersionID != rs[1].VersionID {
		t.Fatalf("the same object twice in a batch: versions %s and %s", rs[0].VersionID, rs[1].VersionID)
	}
	if got := readAll(t, st, "k/dup", ""); string(got) != "first" {
		t.Fatalf("k/dup holds %q", got)
	}
	suite{}.assertAbsent(t, st, "k/after")
}

func (s batchSuite) testBadKey(t *testing.T) {
	ctx := context.Background()
	st := s.newStore(t, time.Now)
	for _, bad := range []string{"", "a//b", "../up", "x" + receiptSuffix, ".impound/tmp/x"} {
		objs := []Object{{Key: "k/good-1", Data: []byte("1")}, {Key: bad, Data: []byte("2")}, {Key: "k/good-3", Data: []byte("3")}}
		rs, err := PutAll(ctx, st, objs, PutOptions{})
		if err == nil || len(rs) != 0 {
			t.Fatalf("PutAll with key %q: %d receipts, %v", bad, len(rs), err)
		}
		if got := listKeys(t, st); len(got) != 0 {
			t.Fatalf("PutAll with key %q stored %v", bad, got)
		}
	}
	if rs, err := PutAll(ctx, st, batchObjects("k/mode", 1), PutOptions{RetentionMode: "forever"}); err == nil || len(rs) != 0 {
		t.Fatalf("unknown retention mode: %d receipts, %v", len(rs), err)
	}
	if got := listKeys(t, st); len(got) != 0 {
		t.Fatalf("a refused batch stored %v", got)
	}
}

func (s batchSuite) testCancelled(t *testing.T) {
	st := s.newStore(t, time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rs, err := PutAll(ctx, st, batchObjects("k/cancelled", 1, 2, 3), PutOptions{})
	if !errors.Is(err, context.Canceled) || len(rs) != 0 {
		t.Fatalf("cancelled PutAll: %d receipts, %v", len(rs), err)
	}
	if got := listKeys(t, st); len(got) != 0 {
		t.Fatalf("a cancelled batch stored %v", got)
	}
}

func (s batchSuite) testEmpty(t *testing.T) {
	rs, err := PutAll(context.Background(), s.newStore(t, time.Now), nil, PutOptions{})
	if err != nil || len(rs) != 0 {
		t.Fatalf("empty batch: %v, %v", rs, err)
	}
}

func batchOptions(now func() time.Time) Options {
	o := testOptions()
	o.Now = now
	return o
}

func TestMemoryPutAll(t *testing.T) {
	batchSuite{newStore: func(t *testing.T, now func() time.Time) Store { return newMemory(batchOptions(now)) },
		clockStoredAt: true}.run(t)
}

func newLocalAt(t *testing.T, now func() time.Time) *local {
	t.Helper()
	st, err := openLocal(context.Background(), t.TempDir(), batchOptions(now))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestLocalPutAll(t *testing.T) {
	batchSuite{newStore: func(t *testing.T, now func() time.Time) Store {
		st := newLocalAt(t, now)
		t.Cleanup(func() { assertNoTemporaries(t, st) })
		return st
	}, contentVersions: true, clockStoredAt: true}.run(t)
	t.Run("FilesAsCommitLeavesThem", testLocalPutAllFiles)
	t.Run("SyncFailureLinksNothing", testLocalPutAllSyncFailure)
}

// assertNoTemporaries checks that nothing is left under ROOT/.impound/tmp.
func assertNoTemporaries(t *testing.T, l *local) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Dir(l.tmpPath("x")))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("%d temporary files left, e.g. %s", len(ents), ents[0].Name())
	}
}

// testLocalPutAllFiles: the files a batch leaves are those a one-by-one
// Put leaves: read-only object and receipt, the same receipt.
func testLocalPutAllFiles(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	batch, single := newLocalAt(t, stepClock(start)), newLocalAt(t, stepClock(start))
	objs := batchObjects("cases/C/ledger/entries", 10, 0, 333)
	if _, err := PutAll(ctx, batch, objs, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if _, err := Put(ctx, single, o.Key, bytes.NewReader(o.Data), PutOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, suffix := range []string{"", receiptSuffix} {
			b, s := batch.path(o.Key)+suffix, single.path(o.Key)+suffix
			bi, err := os.Stat(b)
			if err != nil {
				t.Fatal(err)
			}
			si, err := os.Stat(s)
			if err != nil {
				t.Fatal(err)
			}
			if bi.Mode() != si.Mode() || bi.Mode().Perm() != 0o444 || bi.Size() != si.Size() {
				t.Fatalf("%s: mode %v size %d; Put leaves mode %v size %d", b, bi.Mode(), bi.Size(), si.Mode(), si.Size())
			}
			bb, _ := os.ReadFile(b)
			sb, _ := os.ReadFile(s)
			// Receipts name their store's directory; nothing else differs.
			if !bytes.Equal(bytes.ReplaceAll(bb, []byte(batch.root), nil), bytes.ReplaceAll(sb, []byte(single.root), nil)) {
				t.Fatalf("%s differs from what Put writes:\n%s\n%s", b, bb, sb)
			}
		}
	}
	assertNoTemporaries(t, batch)
}

// testLocalPutAllSyncFailure: when the filesystem sync fails, nothing is
// linked and no temporary file is left.
func testLocalPutAllSyncFailure(t *testing.T) {
	st := newLocalAt(t, time.Now)
	if err := os.MkdirAll(filepath.Dir(st.tmpPath("x")), 0o755); err != nil {
		t.Fatal(err)
	}
	if f, err := openFilesystem(filepath.Dir(st.tmpPath("x"))); err != nil || f == nil {
		t.Skipf("no syncfs here (%v): each file is fsynced", err)
	} else {
		f.Close()
	}
	boom := errors.New("syncfs: input/output error")
	rs, err := st.putBatch(context.Background(), batchObjects("k/unsynced", 1, 2, 3), PutOptions{}, func(*os.File) error { return boom })
	if !errors.Is(err, boom) || len(rs) != 0 {
		t.Fatalf("failed sync: %d receipts, %v", len(rs), err)
	}
	if got := listKeys(t, st); len(got) != 0 {
		t.Fatalf("a batch whose sync failed linked %v", got)
	}
	assertNoTemporaries(t, st)
}

func TestMinIOPutAll(t *testing.T) {
	cfg := minioConfig(t)
	batchSuite{newStore: func(t *testing.T, now func() time.Time) Store {
		bucket, _ := newLockedBucket(t, cfg)
		o := minioOptions(cfg)
		o.Now = now
		st, err := Open(context.Background(), "s3://"+bucket+"/batch", o)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}}.run(t)
}

func TestKernelAtLeast(t *testing.T) {
	for _, c := range []struct {
		release string
		want    bool
	}{
		{"6.18.44-fc-v669", true}, {"5.8.0", true}, {"5.8-rc1", true}, {"5.10.0-28-amd64", true},
		{"5.7.19", false}, {"4.19.0-25-amd64", false}, {"3.10.0-1160.el7.x86_64", false},
		{"", false}, {"6", false}, {"x.y", false},
	} {
		if got := kernelAtLeast(c.release, 5, 8); got != c.want {
			t.Errorf("kernelAtLeast(%q, 5, 8) = %v, want %v", c.release, got, c.want)
		}
	}
}

// sameStoredAt compares the StoredAt of a write's receipt with that of a
// retry that found the object there. On S3 the first is the server's
// response time (Date, whole seconds) and the second the object's
// Last-Modified, which the server set while the write was under way: they
// can fall in adjacent seconds. The version ID is the object's identity.
func sameStoredAt(a, b time.Time) bool {
	d := a.Sub(b)
	return d >= -time.Second && d <= time.Second
}
