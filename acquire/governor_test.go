package acquire

import (
	"context"
	"testing"
	"time"
)

func TestAIMD(t *testing.T) {
	o := NewGovernorOptions()
	o.DecreaseEvery = 50 * time.Millisecond
	o.Increase = 1000
	o.Decrease = 0.5
	a := newAIMD(1000, o)
	// A burst of throttling answers cuts the rate once.
	for range 10 {
		a.throttled()
	}
	if r := a.rate(); r != 500 {
		t.Fatalf("rate after a burst of throttles %v, want 500", r)
	}
	time.Sleep(60 * time.Millisecond)
	a.throttled()
	if r := a.rate(); r != 250 {
		t.Fatalf("rate after a second throttle %v, want 250", r)
	}
	// Never below the floor.
	for range 20 {
		time.Sleep(time.Millisecond)
		a.lastCut = time.Time{}
		a.throttled()
	}
	if r := a.rate(); r != o.MinRate {
		t.Fatalf("rate %v, want the floor %v", r, o.MinRate)
	}
	// Additive increase while requests pass, capped at the ceiling.
	a.success()
	time.Sleep(100 * time.Millisecond)
	a.success()
	if r := a.rate(); r < 80 || r > 400 {
		t.Fatalf("rate after 100 ms of successes at +1000/s: %v, want about 110", r)
	}
	time.Sleep(1100 * time.Millisecond)
	a.success()
	if r := a.rate(); r != 1000 {
		t.Fatalf("rate %v, want the ceiling 1000", r)
	}
}

func TestGovernorPacesRequests(t *testing.T) {
	o := NewGovernorOptions()
	o.AccountRate = 100
	g := NewGovernor(o)
	// Two snapshots share the account's 100 req/s.
	a, b := g.snapshot(), g.snapshot()
	ctx := context.Background()
	start := time.Now()
	n := 0
	for time.Since(start) < 500*time.Millisecond {
		for _, s := range []*aimd{a, b} {
			if err := s.wait(ctx); err != nil {
				t.Fatal(err)
			}
			if err := g.account.wait(ctx); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	// 0.5 s at 100/s plus the initial burst (1). A bucket this small keeps
	// no tokens across a stall, so a loaded machine may see fewer; never
	// more.
	if n < 25 || n > 56 {
		t.Fatalf("%d requests passed in 0.5 s with an account budget of 100/s", n)
	}
}

// TestGovernorHeadroom: requests are paced at each quota by default, at
// the given fraction of it with Headroom.
func TestGovernorHeadroom(t *testing.T) {
	g := NewGovernor(NewGovernorOptions())
	if s, a, l := g.snapshot().rate(), g.account.rate(), g.list.rate(); s != 1000 || a != 1000 || l != 50 {
		t.Fatalf("default pacing: snapshot %v, account %v, list %v req/s; want 1000, 1000, 50", s, a, l)
	}
	o := NewGovernorOptions()
	o.Headroom = 0.5
	o.SnapshotRate = 400
	g = NewGovernor(o)
	if s, a := g.snapshot().rate(), g.account.rate(); s != 200 || a != 500 {
		t.Fatalf("Headroom 0.5: snapshot paced at %v, account at %v req/s; want 200, 500", s, a)
	}
	if b := g.snapshot().lim.Burst(); b != 1 {
		t.Fatalf("burst at 200 req/s: %d, want 1", b)
	}
	if b := NewGovernor(NewGovernorOptions()).snapshot().lim.Burst(); b != 5 {
		t.Fatalf("burst at 1,000 req/s: %d, want 5", b)
	}
}
