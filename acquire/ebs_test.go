package acquire

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/impound-ir/impound/vault"
)

func seededBlocks(seed uint64, idx ...int32) map[int32][]byte {
	m := map[int32][]byte{}
	for _, i := range idx {
		m[i] = randomBytes(seed+uint64(i), BlockSize)
	}
	return m
}

func fastEBSOptions() EBSOptions {
	o := NewEBSOptions()
	o.BaseDelay = time.Millisecond
	o.MaxDelay = 5 * time.Millisecond
	o.PageSize = 100
	return o
}

func acquireEBS(t *testing.T, f *fakeEBS, o EBSOptions, gov *Governor) (*Evidence, vault.Store, error) {
	return acquireEBSTo(t, f, o, gov, vault.NewMemory())
}

func acquireEBSTo(t *testing.T, f *fakeEBS, o EBSOptions, gov *Governor, s Store) (*Evidence, vault.Store, error) {
	t.Helper()
	ctx := context.Background()
	src, err := NewEBSSource(ctx, f, f.id, gov, o)
	if err != nil {
		t.Fatal(err)
	}
	vs, _ := s.(vault.Store)
	opts := NewOptions()
	opts.Case = "case-ebs"
	opts.Key, _ = DefaultKey(opts.Case, src.Info(), CompressNone)
	ev, err := Run(ctx, src, s, opts)
	return ev, vs, err
}

func TestEBSBitForBit(t *testing.T) {
	// 1 GiB volume = 2048 blocks; 250 written, spread over three pages.
	var idx []int32
	for i := int32(0); i < 2048; i += 8 {
		if len(idx) < 250 {
			idx = append(idx, i)
		}
	}
	idx = append(idx, 2047)
	f := newFakeEBS("snap-0123456789abcdef0", 1, seededBlocks(7, idx...))
	s := localVault(t)
	ev, _, err := acquireEBSTo(t, f, fastEBSOptions(), nil, s)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, s, ev, expect(t, f.reader))
	if ev.WrittenBlocks != int64(len(idx)) || f.gets.Load() != int64(len(idx)) || ev.Stats.Reads != int64(len(idx)) {
		t.Fatalf("written %d, GetSnapshotBlock calls %d, reads %d; want %d", ev.WrittenBlocks, f.gets.Load(), ev.Stats.Reads, len(idx))
	}
	if ev.Source.Kind != KindSnapshot || ev.Source.SnapshotID != f.id || ev.Size != 1<<30 {
		t.Fatalf("source %+v size %d", ev.Source, ev.Size)
	}
}

func TestEBSFaultsRecovered(t *testing.T) {
	f := newFakeEBS("snap-1", 1, seededBlocks(3, 0, 1, 2, 3, 100, 500, 2047))
	f.corrupt[1] = 2
	f.fail5xx[2] = 3
	f.expired[3] = 1
	f.latency = time.Millisecond
	o := fastEBSOptions()
	var invalidated atomic.Int64
	o.OnExpiredCredentials = func() { invalidated.Add(1) }
	ev, _, err := acquireEBSTo(t, f, o, nil, discardStore{})
	if err != nil {
		t.Fatal(err)
	}
	checkHash(t, ev, expect(t, f.reader))
	if ev.Stats.ChecksumFailures != 2 || ev.Stats.Retries != 6 || invalidated.Load() != 1 {
		t.Fatalf("stats %+v, invalidated %d; want 2 checksum failures, 6 retries, 1 invalidation", ev.Stats, invalidated.Load())
	}
}

func TestEBSPersistentCorruptionFails(t *testing.T) {
	f := newFakeEBS("snap-2", 1, seededBlocks(3, 0, 5, 9))
	f.corrupt[5] = 1000
	ev, s, err := acquireEBS(t, f, fastEBSOptions(), nil)
	if !errors.Is(err, ErrCorrupt) || ev != nil {
		t.Fatalf("Run = %v, %v; want ErrCorrupt", ev, err)
	}
	t.Log(err)
	if keys, _ := s.List(context.Background(), ""); len(keys) != 0 {
		t.Fatalf("vault holds %v after a failed acquisition", keys)
	}
	if f.gets.Load() < int64(NewEBSOptions().MaxAttempts) {
		t.Fatalf("block read %d times", f.gets.Load())
	}
}

func TestEBSPermanentErrorNotRetried(t *testing.T) {
	f := newFakeEBS("snap-3", 1, seededBlocks(3, 0))
	ctx := context.Background()
	_, err := NewEBSSource(ctx, f, "snap-other", nil, fastEBSOptions())
	if err == nil || f.lists.Load() != 1 {
		t.Fatalf("err %v after %d list calls; want one call and an error", err, f.lists.Load())
	}
}

func TestEBSThrottlingAIMD(t *testing.T) {
	// The fake allows 40 req/s; the governor starts at 1,000 and must
	// back off, then finish with every block right.
	var idx []int32
	for i := range int32(120) {
		idx = append(idx, i)
	}
	f := newFakeEBS("snap-4", 1, seededBlocks(11, idx...))
	f.limiter = rate.NewLimiter(40, 4)
	o := fastEBSOptions()
	o.MaxAttempts = 50
	gov := NewGovernor(NewGovernorOptions())
	ev, _, err := acquireEBSTo(t, f, o, gov, discardStore{})
	if err != nil {
		t.Fatal(err)
	}
	checkHash(t, ev, expect(t, f.reader))
	if f.throttled.Load() == 0 || ev.Stats.Throttled != f.throttled.Load() {
		t.Fatalf("throttled %d (recorded %d)", f.throttled.Load(), ev.Stats.Throttled)
	}
	t.Logf("throttled %d of %d requests", f.throttled.Load(), f.gets.Load())
}
