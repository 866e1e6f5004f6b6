package awsconf

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/internal/awssim/simtest"
)

// How these tests control time. The SDK's credentials cache decides whether
// to refresh with the SDK's own wall clock (aws.Credentials.Expired calls an
// internal time source; aws.CredentialsCacheOptions has no clock to
// inject), so the tests cannot move the cache's clock. They move the
// simulator's instead: its clock is frozen at a time each step sets, and STS
// computes a session's Expiration from it. Issuing a one-hour session with
// the simulator's clock set 59 minutes in the past, then moving the clock
// forward to now, gives a session that both the simulator and the cache see
// as 59 minutes old. Moving the simulator past that session's hour then puts
// it a minute ahead of the cache's clock, less than the five-minute window
// that exists to absorb such skew. Nothing depends on how long the test
// takes, except that a session the test expects to be reused must not reach
// its refresh window (at least five minutes away) while the test runs.

// stoppedClock is the simulator's clock: it reads whatever was last set.
type stoppedClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stoppedClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *stoppedClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t.UTC().Truncate(time.Second)
}

// session is one AssumeRole answer.
type session struct {
	keyID, secret, token string
	expires              time.Time
}

// stsLog records, through SDK middleware on the base configuration (which
// the configuration AssumeRole returns inherits), every AssumeRole answer
// and the access key that signed every other request.
type stsLog struct {
	mu       sync.Mutex
	sessions []session
	signers  []string // access key IDs, in order, of requests other than AssumeRole
}

func (l *stsLog) install(stack *middleware.Stack) error {
	if err := stack.Initialize.Add(middleware.InitializeMiddlewareFunc("impoundTestAssumeRoleLog",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleInitialize(ctx, in)
			if o, ok := out.Result.(*sts.AssumeRoleOutput); ok && err == nil {
				l.mu.Lock()
				c := o.Credentials
				l.sessions = append(l.sessions, session{aws.ToString(c.AccessKeyId), aws.ToString(c.SecretAccessKey),
					aws.ToString(c.SessionToken), aws.ToTime(c.Expiration)})
				l.mu.Unlock()
			}
			return out, md, err
		}), middleware.Before); err != nil {
		return err
	}
	return stack.Deserialize.Add(middleware.DeserializeMiddlewareFunc("impoundTestSignerLog",
		func(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
			if req, ok := in.Request.(*smithyhttp.Request); ok && middleware.GetOperationName(ctx) != "AssumeRole" {
				// Authorization: AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request, ...
				auth := req.Header.Get("Authorization")
				key := "unsigned"
				if _, rest, ok := strings.Cut(auth, "Credential="); ok {
					key, _, _ = strings.Cut(rest, "/")
				}
				l.mu.Lock()
				l.signers = append(l.signers, key)
				l.mu.Unlock()
			}
			return next.HandleDeserialize(ctx, in)
		}), middleware.After)
}

func (l *stsLog) assumed() []session {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]session(nil), l.sessions...)
}

// lastSigner returns the access key that signed the latest request.
func (l *stsLog) lastSigner() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.signers) == 0 {
		return ""
	}
	return l.signers[len(l.signers)-1]
}

type refreshEnv struct {
	clock *stoppedClock
	log   *stsLog
	base  aws.Config
	url   string
	role  Role
}

func newRefreshEnv(t *testing.T) *refreshEnv {
	clock := &stoppedClock{}
	clock.set(time.Now())
	env := simtest.Start(t, awssim.Options{Now: clock.now})
	responder := env.Sim.AddAccount("333333333333")
	member := env.Sim.AddAccount("111111111111")
	log := &stsLog{}
	base := env.ClientConfig(responder.Credentials())
	base.RetryMaxAttempts = 1 // the first error is the one to see
	base.APIOptions = append(base.APIOptions, log.install)
	// One-hour sessions, STS's own default. (A zero Duration does not give
	// that: see TestAssumeRoleZeroDuration.)
	role := Role{ARN: member.RoleARN("impound-responder"), Operator: "alice", CaseID: "IR-2026-0042", Duration: time.Hour}
	return &refreshEnv{clock: clock, log: log, base: base, url: env.URL(), role: role}
}

// call makes one request with cfg and returns the access key that signed it.
func (e *refreshEnv) call(t *testing.T, cfg aws.Config, what string) string {
	t.Helper()
	arn, err := CallerARN(context.Background(), cfg)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if want := "arn:aws:sts::111111111111:assumed-role/impound-responder/impound-alice-IR-2026-0042"; arn != want {
		t.Fatalf("%s: caller %s, want %s", what, arn, want)
	}
	return e.log.lastSigner()
}

// static returns a configuration that presents s's credentials as they
// are, never refreshing them.
func (e *refreshEnv) static(s session) aws.Config {
	st := e.base.Copy()
	st.APIOptions = nil
	st.Credentials = credentials.NewStaticCredentialsProvider(s.keyID, s.secret, s.token)
	return st
}

func wantAssumed(t *testing.T, l *stsLog, n int, when string) []session {
	t.Helper()
	got := l.assumed()
	if len(got) != n {
		t.Fatalf("%s: %d AssumeRole calls, want %d", when, len(got), n)
	}
	return got
}

// TestAssumeRoleReusesWithinSession: with one-hour sessions, every call
// made well inside the session uses the credentials of the first
// AssumeRole, and the cache plans to refresh them exactly five minutes
// before STS's Expiration.
func TestAssumeRoleReusesWithinSession(t *testing.T) {
	e := newRefreshEnv(t)
	issued := e.clock.now()
	cfg := AssumeRole(e.base, e.role)
	if n := len(e.log.assumed()); n != 0 {
		t.Fatalf("AssumeRole called %d times before the first request, want 0", n)
	}
	var keys []string
	for i := range 5 {
		keys = append(keys, e.call(t, cfg, fmt.Sprintf("call %d", i+1)))
	}
	s := wantAssumed(t, e.log, 1, "after five calls in the first minute")[0]
	if !s.expires.Equal(issued.Add(time.Hour)) {
		t.Fatalf("session expires %v, want one hour after %v", s.expires, issued)
	}
	for i, k := range keys {
		if k != s.keyID || !strings.HasPrefix(k, "ASIA") {
			t.Fatalf("call %d signed with %s, want the session's key %s", i+1, k, s.keyID)
		}
	}
	c, err := cfg.Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !c.CanExpire || !c.Expires.Equal(s.expires.Add(-5*time.Minute)) {
		t.Fatalf("cached credentials expire (for the cache) at %v (CanExpire %v), want five minutes before STS's %v",
			c.Expires, c.CanExpire, s.expires)
	}
	wantAssumed(t, e.log, 1, "after Retrieve")
}

// TestAssumeRoleRefreshesAheadOfExpiry: a call made in the last five
// minutes of a session assumes the role again, while the old credentials
// are still valid, and work carries on past the first session's hour with
// the new credentials.
func TestAssumeRoleRefreshesAheadOfExpiry(t *testing.T) {
	e := newRefreshEnv(t)
	cfg := AssumeRole(e.base, e.role)

	// The first call of the case, 59 minutes ago.
	now := time.Now()
	e.clock.set(now.Add(-59 * time.Minute))
	start := e.clock.now()
	first := e.call(t, cfg, "first call, 59 minutes ago")
	s1 := wantAssumed(t, e.log, 1, "after the first call")[0]
	if first != s1.keyID || !s1.expires.Equal(start.Add(time.Hour)) {
		t.Fatalf("first call signed with %s, session %s expiring %v; want the session's key, expiring %v", first, s1.keyID, s1.expires, start.Add(time.Hour))
	}

	// Now: one minute of the first session is left, inside the window.
	e.clock.set(now)
	old := e.static(s1)
	if _, err := CallerARN(context.Background(), old); err != nil {
		t.Fatalf("the first session's credentials with a minute left: %v; the simulator should still accept them", err)
	}
	second := e.call(t, cfg, "call with a minute of the session left")
	got := wantAssumed(t, e.log, 2, "after a call inside the five-minute window")
	s2 := got[1]
	if second != s2.keyID || s2.keyID == s1.keyID {
		t.Fatalf("call inside the window signed with %s; want the new session's key %s (first session %s)", second, s2.keyID, s1.keyID)
	}
	if !s2.expires.Equal(e.clock.now().Add(time.Hour)) {
		t.Fatalf("second session expires %v, want %v", s2.expires, e.clock.now().Add(time.Hour))
	}
	if k := e.call(t, cfg, "next call"); k != s2.keyID {
		t.Fatalf("next call signed with %s, want %s", k, s2.keyID)
	}
	wantAssumed(t, e.log, 2, "after the next call")

	// Past the first hour: the first session has expired at STS, the case
	// carries on with the second.
	e.clock.set(start.Add(time.Hour + time.Second))
	_, err := CallerARN(context.Background(), old)
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "ExpiredToken" {
		t.Fatalf("first session after its hour: %v, want ExpiredToken", err)
	}
	for _, what := range []string{"first call past the hour", "second call past the hour"} {
		if k := e.call(t, cfg, what); k != s2.keyID {
			t.Fatalf("%s signed with %s, want the second session's %s", what, k, s2.keyID)
		}
	}
	wantAssumed(t, e.log, 2, "past the first hour")
}

// TestAssumeRoleZeroDuration pins what a zero Role.Duration gives, which is
// what every caller of AssumeRole in impound passes: one-hour sessions, not
// the 15 minutes (stscreds.DefaultDuration) the SDK's provider would ask for
// by itself, refreshed five minutes before they expire.
func TestAssumeRoleZeroDuration(t *testing.T) {
	e := newRefreshEnv(t)
	role := e.role
	role.Duration = 0
	cfg := AssumeRole(e.base, role)
	issued := e.clock.now()
	e.call(t, cfg, "first call")
	s := wantAssumed(t, e.log, 1, "after the first call")[0]
	if want := issued.Add(time.Hour); !s.expires.Equal(want) {
		t.Fatalf("zero Duration: session expires %v, want %v, an hour after issue", s.expires, want)
	}
	c, err := cfg.Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !c.Expires.Equal(s.expires.Add(-5 * time.Minute)) {
		t.Fatalf("cache refreshes at %v, want five minutes before %v", c.Expires, s.expires)
	}
}
