package acquire

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// EBS direct quotas (AWS defaults): GetSnapshotBlock 1,000 requests/s per
// snapshot (not adjustable) and 1,000/s per account (adjustable);
// ListSnapshotBlocks and ListChangedBlocks 50/s per account.
const (
	DefaultSnapshotRate = 1000
	DefaultAccountRate  = 1000
	DefaultListRate     = 50
)

// GovernorOptions configures a [Governor]. Start from [NewGovernorOptions].
type GovernorOptions struct {
	// AccountRate is the GetSnapshotBlock budget of the account, shared by
	// every snapshot read through the governor (requests/s).
	AccountRate float64
	// SnapshotRate is the starting rate and ceiling for one snapshot.
	SnapshotRate float64
	// ListRate is the account's ListSnapshotBlocks/ListChangedBlocks budget.
	ListRate float64
	// MinRate is the floor multiplicative decreases stop at.
	MinRate float64
	// Increase is the additive increase, in requests/s gained per second
	// of requests without throttling.
	Increase float64
	// Decrease multiplies the rate on a throttling answer (at most once
	// per DecreaseEvery, so a burst of throttled requests cuts it once).
	Decrease      float64
	DecreaseEvery time.Duration
	// Headroom is the fraction of each quota (AccountRate, SnapshotRate,
	// ListRate) that requests are paced at: 1 by default; lower it when
	// another tool reads the same snapshots or spends the same account's
	// quota at the same time.
	Headroom float64
}

// NewGovernorOptions returns AWS's default quotas, paced at the quota, a
// floor of 10 req/s, +200 req/s per second without throttling and a cut to
// 70% on throttling (the AWS SDKs' adaptive retry mode also cuts to 70%).
func NewGovernorOptions() GovernorOptions {
	return GovernorOptions{
		Headroom:      1,
		AccountRate:   DefaultAccountRate,
		SnapshotRate:  DefaultSnapshotRate,
		ListRate:      DefaultListRate,
		MinRate:       10,
		Increase:      200,
		Decrease:      0.7,
		DecreaseEvery: 250 * time.Millisecond,
	}
}

// Governor paces EBS direct requests of one account: a token bucket per
// snapshot and one for the account, each adjusted additive-increase /
// multiplicative-decrease on throttling answers. Share one Governor between
// all concurrent acquisitions of an account.
type Governor struct {
	opts    GovernorOptions
	account *aimd
	list    *aimd
}

// NewGovernor returns a governor for one account.
func NewGovernor(opts GovernorOptions) *Governor {
	d := NewGovernorOptions()
	if opts.AccountRate <= 0 {
		opts.AccountRate = d.AccountRate
	}
	if opts.SnapshotRate <= 0 {
		opts.SnapshotRate = d.SnapshotRate
	}
	if opts.ListRate <= 0 {
		opts.ListRate = d.ListRate
	}
	if opts.MinRate <= 0 {
		opts.MinRate = d.MinRate
	}
	if opts.Increase <= 0 {
		opts.Increase = d.Increase
	}
	if opts.Decrease <= 0 || opts.Decrease >= 1 {
		opts.Decrease = d.Decrease
	}
	if opts.DecreaseEvery <= 0 {
		opts.DecreaseEvery = d.DecreaseEvery
	}
	if opts.Headroom <= 0 || opts.Headroom > 1 {
		opts.Headroom = d.Headroom
	}
	return &Governor{
		opts:    opts,
		account: newAIMD(opts.AccountRate*opts.Headroom, opts),
		list:    newAIMD(opts.ListRate*opts.Headroom, opts),
	}
}

func (g *Governor) snapshot() *aimd { return newAIMD(g.opts.SnapshotRate*g.opts.Headroom, g.opts) }

// aimd is a token bucket whose rate goes up additively while requests pass
// and down multiplicatively when they are throttled.
type aimd struct {
	lim *rate.Limiter

	mu                   sync.Mutex
	cur, ceil            float64
	floor, inc, dec      float64
	decEvery             time.Duration
	lastCut, lastAdvance time.Time
}

func newAIMD(ceil float64, o GovernorOptions) *aimd {
	// A small burst (5 requests at 1,000/s) paces requests evenly: with a
	// burst of 20, as large as AWS's own, requests released together
	// reached the quota's bucket bunched and were throttled about once per
	// GiB, each throttle costing seconds of recovery (BenchmarkSimEBS: 710
	// req/s against 980 with the small burst, on the same machine).
	burst := max(1, int(ceil/200))
	return &aimd{
		lim: rate.NewLimiter(rate.Limit(ceil), burst),
		cur: ceil, ceil: ceil,
		floor: min(o.MinRate, ceil), inc: o.Increase, dec: o.Decrease, decEvery: o.DecreaseEvery,
	}
}

func (a *aimd) wait(ctx context.Context) error { return a.lim.Wait(ctx) }

// success raises the rate by inc per second elapsed since the last change.
func (a *aimd) success() {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if a.cur >= a.ceil {
		a.lastAdvance = now
		return
	}
	if !a.lastAdvance.IsZero() {
		a.cur = min(a.ceil, a.cur+a.inc*now.Sub(a.lastAdvance).Seconds())
		a.lim.SetLimit(rate.Limit(a.cur))
	}
	a.lastAdvance = now
}

// throttled cuts the rate, at most once per decEvery.
func (a *aimd) throttled() {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if now.Sub(a.lastCut) < a.decEvery {
		return
	}
	a.cur = max(a.floor, a.cur*a.dec)
	a.lim.SetLimit(rate.Limit(a.cur))
	a.lastCut, a.lastAdvance = now, now
}

func (a *aimd) rate() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cur
}
