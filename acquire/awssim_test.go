package acquire

import (
	"context"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/internal/awssim/simtest"
	"github.com/impound-ir/impound/vault"
)

// simSnapshot seeds a volume in a simulated account, snapshots it through
// the real EC2 client and returns the snapshot ID and its image.
type simEnv struct {
	env  *simtest.Env
	acct *awssim.Account
	cfg  aws.Config
}

func newSimEnv(t testing.TB) *simEnv {
	t.Helper()
	env := simtest.Start(t, awssim.Options{Region: "us-east-1"})
	acct := env.Sim.AddAccount("111111111111")
	return &simEnv{env: env, acct: acct, cfg: env.ClientConfig(acct.Credentials())}
}

func (e *simEnv) snapshot(t testing.TB, sizeGiB int32, seed func(v *awssim.Volume)) (string, expected) {
	t.Helper()
	ctx := context.Background()
	v, err := e.acct.CreateVolume(awssim.VolumeOptions{SizeGiB: sizeGiB})
	if err != nil {
		t.Fatal(err)
	}
	seed(v)
	c := ec2.NewFromConfig(e.cfg)
	out, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(v.ID())})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.SnapshotId)
	if err := ec2.NewSnapshotCompletedWaiter(c, func(o *ec2.SnapshotCompletedWaiterOptions) { o.MinDelay = 10 * time.Millisecond }).
		Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	return id, expect(t, func() io.Reader {
		r, err := e.env.Sim.SnapshotImage(id)
		if err != nil {
			t.Fatal(err)
		}
		return r
	})
}

func (e *simEnv) acquire(t testing.TB, cfg aws.Config, id string, o EBSOptions, s Store) (*Evidence, error) {
	t.Helper()
	ctx := context.Background()
	src, err := NewEBSSource(ctx, NewEBSClient(cfg), id, NewGovernor(NewGovernorOptions()), o)
	if err != nil {
		return nil, err
	}
	opts := NewOptions()
	opts.Case = "case-sim"
	opts.Key, _ = DefaultKey(opts.Case, src.Info(), CompressNone)
	return Run(ctx, src, s, opts)
}

func seedScattered(v *awssim.Volume) {
	v.WriteRandom(0, 3*BlockSize+777, 1)
	v.WriteRandom(100*BlockSize+5, 40*BlockSize, 2)
	v.WriteRandom(2047*BlockSize, BlockSize, 3)
}

func TestSimBitForBit(t *testing.T) {
	e := newSimEnv(t)
	id, want := e.snapshot(t, 1, seedScattered)
	s := localVault(t)
	o := fastEBSOptions()
	o.Info = SourceInfo{Region: "us-east-1", Account: e.acct.ID()}
	ev, err := e.acquire(t, e.cfg, id, o, s)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, s, ev, want)
	if ev.WrittenBlocks != 4+41+1 || ev.Stats.Reads != ev.WrittenBlocks || ev.Stats.Retries != 0 {
		t.Fatalf("written %d, stats %+v", ev.WrittenBlocks, ev.Stats)
	}
	if ev.Source.SnapshotARN != "arn:aws:ec2:us-east-1::snapshot/"+id {
		t.Fatalf("ARN %q", ev.Source.SnapshotARN)
	}
}

func TestSimFaultStorm(t *testing.T) {
	e := newSimEnv(t)
	id, want := e.snapshot(t, 1, func(v *awssim.Volume) { v.WriteRandom(0, 300*BlockSize, 9) })
	e.env.Sim.SetFault("ebs", "GetSnapshotBlock", awssim.Fault{
		Latency:             2 * time.Millisecond,
		ServerErrorRate:     0.05,
		ResetRate:           0.05,
		CorruptChecksumRate: 0.03,
		SnapshotRate:        150, SnapshotBurst: 10,
	})
	e.env.Sim.SetFault("ebs", "ListSnapshotBlocks", awssim.Fault{ServerErrorRate: 0.3, ResetRate: 0.1})
	o := fastEBSOptions()
	o.MaxAttempts = 30
	ev, err := e.acquire(t, e.cfg, id, o, discardStore{})
	if err != nil {
		t.Fatal(err)
	}
	checkHash(t, ev, want)
	if ev.Stats.Retries == 0 || ev.Stats.Throttled == 0 || ev.Stats.ChecksumFailures == 0 {
		t.Fatalf("a fault storm left no trace in the stats: %+v", ev.Stats)
	}
	t.Logf("stats %+v", ev.Stats)
}

func TestSimPersistentCorruption(t *testing.T) {
	for _, data := range []bool{false, true} {
		e := newSimEnv(t)
		id, _ := e.snapshot(t, 1, seedScattered)
		e.env.Sim.SetFault("ebs", "GetSnapshotBlock", awssim.Fault{CorruptBlocks: []int64{101}, CorruptData: data})
		s := vault.NewMemory()
		ev, err := e.acquire(t, e.cfg, id, fastEBSOptions(), s)
		if !errors.Is(err, ErrCorrupt) || ev != nil {
			t.Fatalf("corrupt data=%v: Run = %v, %v; want ErrCorrupt", data, ev, err)
		}
		if keys, _ := s.List(context.Background(), ""); len(keys) != 0 {
			t.Fatalf("vault holds %v", keys)
		}
	}
}

func TestSimCredentialsExpireMidRun(t *testing.T) {
	e := newSimEnv(t)
	id, want := e.snapshot(t, 1, func(v *awssim.Volume) { v.WriteRandom(0, 200*BlockSize, 4) })
	// Temporary credentials from AssumeRole, cached and refreshable.
	cache := aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(e.cfg), e.acct.RoleARN("acquirer")))
	cfg := e.cfg.Copy()
	cfg.Credentials = cache
	e.env.Sim.SetFault("ebs", "GetSnapshotBlock", awssim.Fault{Latency: 5 * time.Millisecond})
	o := fastEBSOptions()
	o.Workers = 4
	var invalidated atomic.Int64
	o.OnExpiredCredentials = func() { invalidated.Add(1); cache.Invalidate() }
	go func() {
		time.Sleep(80 * time.Millisecond)
		e.env.Sim.ExpireSessions()
	}()
	ev, err := e.acquire(t, cfg, id, o, discardStore{})
	if err != nil {
		t.Fatal(err)
	}
	checkHash(t, ev, want)
	if invalidated.Load() == 0 {
		t.Fatal("credentials never expired during the run; the test proved nothing")
	}
}

// BenchmarkSimEBS acquires a fully written 1 GiB snapshot from the simulator
// with 10 ms added latency per GetSnapshotBlock and AWS's 1,000 requests/s
// per-snapshot limit, and reports the request rate reached (the ceiling is
// 1,000) and the blocks that failed (must be 0).
func BenchmarkSimEBS(b *testing.B) {
	e := newSimEnv(b)
	id, want := e.snapshot(b, 1, func(v *awssim.Volume) { v.WriteRandom(0, 1<<30, 5) })
	f := awssim.Fault{Latency: 10 * time.Millisecond, SnapshotRate: 1000, SnapshotBurst: 20}
	if os.Getenv("BENCH_SIM_NOFAULT") != "" {
		f = awssim.Fault{}
	}
	e.env.Sim.SetFault("ebs", "GetSnapshotBlock", f)
	b.SetBytes(1 << 30)
	var reqs, secs float64
	var throttled int64
	for b.Loop() {
		start := time.Now()
		ev, err := e.acquire(b, e.cfg, id, NewEBSOptions(), discardStore{})
		if err != nil {
			b.Fatal(err)
		}
		secs += time.Since(start).Seconds()
		reqs += float64(ev.Stats.Reads + ev.Stats.Retries)
		throttled += ev.Stats.Throttled
		checkHash(b, ev, want)
	}
	b.ReportMetric(reqs/secs, "req/s")
	b.ReportMetric(float64(throttled)/float64(b.N), "throttled/op")
}
