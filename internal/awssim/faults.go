package awssim

import (
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Fault configures what goes wrong with one operation. The zero Fault is a
// healthy operation.
type Fault struct {
	// Latency is added before the operation is served.
	Latency time.Duration
	// ServerErrorRate is the fraction (0..1) of requests answered with the
	// service's 500 error (InternalError / InternalServerException).
	ServerErrorRate float64
	// ResetRate is the fraction of requests whose connection is closed
	// without a response.
	ResetRate float64
	// AccountRate limits requests per second per calling account (token
	// bucket with AccountBurst, at least 1); excess requests get the
	// service's throttling error. Zero means unlimited.
	AccountRate  float64
	AccountBurst int
	// SnapshotRate limits requests per second per snapshot (EBS direct
	// operations), answered with RequestThrottledException reason
	// RESOURCE_LEVEL_THROTTLE. Zero means unlimited.
	SnapshotRate  float64
	SnapshotBurst int
	// CorruptChecksumRate is the fraction of GetSnapshotBlock responses whose
	// x-amz-Checksum does not match the data; CorruptBlocks lists block
	// indexes whose checksum is always wrong.
	CorruptChecksumRate float64
	CorruptBlocks       []int64
	// CorruptData, with CorruptChecksumRate or CorruptBlocks, flips a byte of
	// the data instead and keeps the true checksum, as corruption in transit
	// would.
	CorruptData bool
}

// faultState holds the configured faults and their token buckets.
type faultState struct {
	mu       sync.Mutex
	ops      map[string]Fault // "service:Operation"
	limiters map[string]*rate.Limiter
	rnd      *rand.Rand
	pending  int           // polls new snapshots stay pending
	session  time.Duration // lifetime override for new AssumeRole sessions
}

func (f *faultState) init() {
	f.ops = map[string]Fault{}
	f.limiters = map[string]*rate.Limiter{}
	f.rnd = rand.New(rand.NewPCG(1, 2))
}

// SetFault sets the fault of one operation, named by service signing name and
// operation, e.g. SetFault("ebs", "GetSnapshotBlock", Fault{SnapshotRate: 10}).
// It replaces any earlier fault of that operation and resets its buckets.
func (s *Sim) SetFault(service, operation string, f Fault) {
	st := &s.faults
	st.mu.Lock()
	defer st.mu.Unlock()
	key := service + ":" + operation
	st.ops[key] = f
	for k := range st.limiters {
		if len(k) > len(key) && k[:len(key)+1] == key+"|" {
			delete(st.limiters, k)
		}
	}
}

// ClearFaults removes every fault set with SetFault, SetPendingPolls and
// SetSessionDuration.
func (s *Sim) ClearFaults() {
	st := &s.faults
	st.mu.Lock()
	defer st.mu.Unlock()
	st.ops = map[string]Fault{}
	st.limiters = map[string]*rate.Limiter{}
	st.pending = 0
	st.session = 0
}

// SetPendingPolls makes snapshots created or copied from now on stay
// "pending" for n DescribeSnapshots answers that include them (and EBS
// direct reads fail meanwhile) before they become "completed".
func (s *Sim) SetPendingPolls(n int) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.pending = n
}

// SetSessionDuration makes AssumeRole credentials issued from now on expire
// after d whatever the request asked for; zero restores normal behaviour.
func (s *Sim) SetSessionDuration(d time.Duration) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.session = d
}

// ExpireSessions makes every temporary credential issued so far expired.
func (s *Sim) ExpireSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	past := s.now().Add(-time.Second)
	for _, p := range s.principals {
		if p.sessionToken != "" {
			p.expires = past
		}
	}
}

func (f *faultState) get(service, op string) (Fault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ft, ok := f.ops[service+":"+op]
	return ft, ok
}

func (f *faultState) chance(p float64) bool {
	if p <= 0 {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rnd.Float64() < p
}

func (f *faultState) allow(key string, r float64, burst int) bool {
	f.mu.Lock()
	l := f.limiters[key]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(r), max(burst, 1))
		f.limiters[key] = l
	}
	f.mu.Unlock()
	return l.Allow()
}

// apply injects the operation's configured fault, reporting whether it
// answered the request itself.
func (f *faultState) apply(w http.ResponseWriter, c *call) bool {
	ft, ok := f.get(c.svc.name, c.op)
	if !ok {
		return false
	}
	if ft.Latency > 0 {
		t := time.NewTimer(ft.Latency)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return true
		}
	}
	if f.chance(ft.ResetRate) {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				if tc, ok := conn.(interface{ SetLinger(int) error }); ok {
					_ = tc.SetLinger(0) // RST, not FIN
				}
				_ = conn.Close()
				return true
			}
		}
	}
	if f.chance(ft.ServerErrorRate) {
		c.writeError(w, errf(http.StatusInternalServerError, internalErrorCode(c.svc), "An internal error has occurred. Try again later."))
		return true
	}
	key := c.svc.name + ":" + c.op + "|"
	if ft.AccountRate > 0 && !f.allow(key+"acct:"+c.who.accountID(), ft.AccountRate, ft.AccountBurst) {
		e := c.svc.throttle
		if c.svc.name == "ebs" {
			e.reason = "ACCOUNT_THROTTLED"
		}
		c.writeError(w, &e)
		return true
	}
	if snap := c.path["SnapshotId"] + c.path["SecondSnapshotId"]; ft.SnapshotRate > 0 && snap != "" &&
		!f.allow(key+"snap:"+snap, ft.SnapshotRate, ft.SnapshotBurst) {
		e := c.svc.throttle
		e.reason = "RESOURCE_LEVEL_THROTTLE"
		c.writeError(w, &e)
		return true
	}
	return false
}

// corrupt reports whether this GetSnapshotBlock answer for block idx must be
// corrupted, and whether the data (rather than the checksum) is corrupted.
func (f *faultState) corrupt(idx int64) (corrupt, data bool) {
	ft, ok := f.get("ebs", "GetSnapshotBlock")
	if !ok {
		return false, false
	}
	if slices.Contains(ft.CorruptBlocks, idx) || f.chance(ft.CorruptChecksumRate) {
		return true, ft.CorruptData
	}
	return false, false
}

// EBS direct API quotas AWS applies by default.
const (
	// GetSnapshotBlockPerSnapshotRate is the per-snapshot GetSnapshotBlock
	// quota (requests per second, not adjustable).
	GetSnapshotBlockPerSnapshotRate = 1000
	// GetSnapshotBlockPerAccountRate is the per-account GetSnapshotBlock quota.
	GetSnapshotBlockPerAccountRate = 1000
	// ListBlocksPerAccountRate is the per-account quota of ListSnapshotBlocks
	// and of ListChangedBlocks.
	ListBlocksPerAccountRate = 50
)

// ApplyAWSQuotas throttles the EBS direct APIs at AWS's default quotas,
// with one second's worth of burst, replacing any fault set on them.
func (s *Sim) ApplyAWSQuotas() {
	s.SetFault("ebs", "GetSnapshotBlock", Fault{
		SnapshotRate: GetSnapshotBlockPerSnapshotRate, SnapshotBurst: GetSnapshotBlockPerSnapshotRate,
		AccountRate: GetSnapshotBlockPerAccountRate, AccountBurst: GetSnapshotBlockPerAccountRate,
	})
	for _, op := range []string{"ListSnapshotBlocks", "ListChangedBlocks"} {
		s.SetFault("ebs", op, Fault{AccountRate: ListBlocksPerAccountRate, AccountBurst: ListBlocksPerAccountRate})
	}
}
