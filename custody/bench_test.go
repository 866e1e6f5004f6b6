package custody

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/impound-ir/impound/vault"
)

// BenchmarkAppend appends notes to a local-directory vault (in $TMPDIR;
// every object is fsynced, so the disk sets the pace) and to the memory
// vault (custody's own cost), each append writing its entry and a signed
// checkpoint (the default), or with checkpoints deferred to one per 100
// entries, or in batches of 100 with AppendAll (one filesystem sync and
// one checkpoint per batch).
func BenchmarkAppend(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) vault.Store
	}{
		{"local", func(b *testing.B) vault.Store {
			st, err := vault.Open(context.Background(), b.TempDir(), vault.Options{})
			if err != nil {
				b.Fatal(err)
			}
			return st
		}},
		{"memory", func(b *testing.B) vault.Store { return vault.NewMemory() }},
	}
	for _, sc := range stores {
		for _, deferred := range []bool{false, true} {
			name := sc.name + "/checkpoint-each"
			if deferred {
				name = sc.name + "/checkpoint-per-100"
			}
			b.Run(name, func(b *testing.B) { benchmarkAppend(b, sc.open(b), deferred) })
		}
		b.Run(sc.name+"/batch-100", func(b *testing.B) { benchmarkAppendAll(b, sc.open(b), 100) })
	}
}

func benchEntry() Entry {
	return Entry{Actor: Actor{Operator: "bench", CallerARN: "arn:aws:sts::111122223333:assumed-role/IR/bench"},
		Resources: []string{"arn:aws:ec2:eu-west-1:111122223333:instance/i-0123456789abcdef0"},
		Details:   Note{Text: "benchmark note of a typical length, naming an instance and a ticket IR-1234"}}
}

// benchmarkAppendAll appends b.N entries in batches of size, each batch
// one AppendAll and one checkpoint.
func benchmarkAppendAll(b *testing.B, st vault.Store, size int) {
	ctx := context.Background()
	l := openCase(b, st, "BENCH", newTestSigner(b, "bench"), Options{})
	batch := make([]Entry, size)
	for i := range batch {
		batch[i] = benchEntry()
	}
	b.ResetTimer()
	for done := 0; done < b.N; done += size {
		es := batch[:min(size, b.N-done)]
		recs, err := l.AppendAll(ctx, es)
		if err != nil {
			b.Fatal(err)
		}
		if len(recs) != len(es) {
			b.Fatalf("%d of %d entries recorded", len(recs), len(es))
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

func benchmarkAppend(b *testing.B, st vault.Store, deferred bool) {
	ctx := context.Background()
	l := openCase(b, st, "BENCH", newTestSigner(b, "bench"), Options{DeferCheckpoints: deferred})
	e := benchEntry()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.Append(ctx, e); err != nil {
			b.Fatal(err)
		}
		if deferred && i%100 == 99 {
			if _, err := l.Checkpoint(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

var (
	bigLedgerOnce sync.Once
	bigLedger     *fakeStore
	bigLedgerErr  error
)

// big100k is a 100,000-entry ledger in memory with a checkpoint every
// 1,000 entries, built once.
func big100k(b *testing.B) *fakeStore {
	bigLedgerOnce.Do(func() {
		ctx := context.Background()
		s := newFakeStore()
		l := openCase(b, s, "BIG", newTestSigner(b, "bench"), Options{DeferCheckpoints: true})
		for i := 1; i < 100_000; i++ {
			if _, err := l.Append(ctx, Entry{Actor: Actor{Operator: "bench"}, Resources: []string{fmt.Sprintf("arn:aws:ec2:eu-west-1:111122223333:volume/vol-%017d", i)},
				Details: Note{Text: "benchmark note of a typical length, naming an instance and a ticket IR-1234"}}); err != nil {
				bigLedgerErr = err
				return
			}
			if i%1000 == 999 {
				if _, err := l.Checkpoint(ctx); err != nil {
					bigLedgerErr = err
					return
				}
			}
		}
		bigLedger = s
	})
	if bigLedgerErr != nil {
		b.Fatal(bigLedgerErr)
	}
	return bigLedger
}

// BenchmarkVerify100k verifies a 100,000-entry ledger (encoding of every
// entry, chain, tree, 100 checkpoint signatures).
func BenchmarkVerify100k(b *testing.B) {
	s := big100k(b)
	ctx := context.Background()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		v, err := Verify(ctx, s, "BIG", VerifyOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if v.Size != 100_000 {
			b.Fatalf("size %d", v.Size)
		}
	}
	b.ReportMetric(float64(b.N)*100_000/b.Elapsed().Seconds(), "entries/s")
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/verify")
	// CPU time is what the machine's other load does not inflate; on two
	// otherwise idle cores the wall time is about half of it.
	b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/verify")
}
