package isolate

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// cancelAfterAllOpen cancels the run's context as soon as AWS accepted the
// all-open group on one interface, as an operator pressing Ctrl-C during
// --untrack-wait would.
type cancelAfterAllOpen struct {
	EC2API
	eni     string
	allOpen func() string
	cancel  context.CancelFunc
	// reportCancelled makes the call fail with the cancellation although
	// AWS applied it, as when ctx is cancelled while the response is on
	// its way.
	reportCancelled bool
}

func (c *cancelAfterAllOpen) ModifyNetworkInterfaceAttribute(ctx context.Context, in *ec2.ModifyNetworkInterfaceAttributeInput, o ...func(*ec2.Options)) (*ec2.ModifyNetworkInterfaceAttributeOutput, error) {
	out, err := c.EC2API.ModifyNetworkInterfaceAttribute(ctx, in, o...)
	if err == nil && aws.ToString(in.NetworkInterfaceId) == c.eni && slices.Equal(in.Groups, []string{c.allOpen()}) {
		c.cancel()
		if c.reportCancelled {
			return nil, ctx.Err()
		}
	}
	return out, err
}

// liveOnly fails when called with a cancelled context, as a ledger append or
// a vault write would.
func liveOnly(ctx context.Context) error { return ctx.Err() }

// Cancelling while an interface holds the all-open group still gives it the
// isolation group; the failed step is recorded and saved, and release
// (from the final state, or from the state saved just before the change,
// had the process died) puts the interface back.
func TestCancelWhileUntracking(t *testing.T) {
	t.Run("during the wait", func(t *testing.T) { testCancelWhileUntracking(t, false, time.Hour) })
	t.Run("call reported cancelled but applied", func(t *testing.T) { testCancelWhileUntracking(t, true, 0) })
}

func testCancelWhileUntracking(t *testing.T, reportCancelled bool, wait time.Duration) {
	ctx := testContext(t)
	s := buildSim(t, ctx, nil)
	c, ep := s.c, s.cli
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	var allOpen string
	faulty := c
	faulty.EC2 = &cancelAfterAllOpen{EC2API: c.EC2, eni: s.eni0, cancel: cancel, reportCancelled: reportCancelled, allOpen: func() string {
		once.Do(func() {
			if g, err := findGroup(ctx, c, s.vpc, AllOpenGroupName); err == nil && g != nil {
				allOpen = aws.ToString(g.GroupId)
			}
		})
		return allOpen
	}}

	var steps []Step
	opts := testOptions(nil)
	opts.UntrackWait = wait // when set, cancelled long before it ends
	opts.Record = func(ctx context.Context, s Step) error {
		if err := liveOnly(ctx); err != nil {
			return err
		}
		steps = append(steps, s)
		return nil
	}
	var saved []*State
	opts.SaveState = func(ctx context.Context, st *State) error {
		if err := liveOnly(ctx); err != nil {
			return err
		}
		b, _ := MarshalState(st)
		cp, err := UnmarshalState(b)
		saved = append(saved, cp)
		return err
	}
	_, err := Run(runCtx, faulty, s.instance, nil, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v, want context.Canceled", err)
	}
	if allOpen == "" {
		t.Fatal("the all-open group was never set")
	}
	iso, err := findGroup(ctx, c, s.vpc, IsolationGroupName)
	if err != nil || iso == nil {
		t.Fatalf("isolation group: %v", err)
	}
	isoID := aws.ToString(iso.GroupId)

	// AWS: the isolation group, never the all-open one.
	if gs := cliENIGroups(t, ep, s.eni0); !slices.Equal(gs, []string{isoID}) {
		t.Errorf("groups of %s after the cancellation = %v, want only the isolation group %s (all-open is %s)", s.eni0, gs, isoID, allOpen)
	}
	// The second interface was not touched: the run stopped.
	if gs := cliENIGroups(t, ep, s.eni1); !slices.Equal(gs, []string{s.adminGroup}) {
		t.Errorf("groups of %s = %v, want unchanged", s.eni1, gs)
	}

	// Recorded: the network step failed with the cancellation, its after
	// state read back from AWS.
	var rec *Step
	for i := range steps {
		if steps[i].Name == StepNetworkPrefix+s.eni0 {
			rec = &steps[i]
		}
		if steps[i].Name == StepNetworkPrefix+s.eni1 {
			t.Errorf("step %s recorded after the cancellation", steps[i].Name)
		}
	}
	if rec == nil {
		t.Fatalf("network step not recorded; recorded %d steps", len(steps))
	}
	if rec.Status != StatusFailed || !errors.Is(rec.Err, context.Canceled) {
		t.Errorf("network step: %s %v, want failed with context.Canceled", rec.Status, rec.Err)
	}
	if after, ok := rec.After.(ifaceView); !ok || !slices.Equal(after.Groups, []string{isoID}) {
		t.Errorf("recorded after-state %+v, want the isolation group", rec.After)
	}

	// Saved: before the change (pending) and after the failure.
	if len(saved) < 2 {
		t.Fatalf("saved %d states", len(saved))
	}
	var pending *State
	for _, sv := range saved {
		if sv.Pending == StepNetworkPrefix+s.eni0 {
			pending = sv
			break
		}
	}
	final := saved[len(saved)-1]
	if pending == nil || pending.step(StepNetworkPrefix+s.eni0) != nil {
		t.Fatalf("no state saved with the network step pending before it changed anything")
	}
	if final.Pending != "" || final.step(StepNetworkPrefix+s.eni0) == nil || final.step(StepNetworkPrefix+s.eni0).Status != StatusFailed {
		t.Fatalf("final saved state: pending %q, step %+v", final.Pending, final.step(StepNetworkPrefix+s.eni0))
	}

	// Release from the state saved before the change (the process died
	// right after it): the interface gets its groups back.
	relRec := &recorder{}
	if _, err := Release(ctx, c, pending, testOptions(relRec)); err != nil {
		t.Fatalf("Release from the pending state: %v", err)
	}
	if l := relRec.byName(ReleasePrefix + StepNetworkPrefix + s.eni0); l == nil || l.Status != StatusDone {
		t.Errorf("release of the pending interface: %+v", l)
	}
	if gs := cliENIGroups(t, ep, s.eni0); !slices.Equal(gs, sorted(s.appGroup, s.adminGroup)) {
		t.Errorf("groups of %s after release = %v, want %v", s.eni0, gs, sorted(s.appGroup, s.adminGroup))
	}
	// Release from the final state finds it restored and releases the rest.
	relRec = &recorder{}
	rst, err := Release(ctx, c, final, testOptions(relRec))
	if err != nil {
		t.Fatalf("Release from the final state: %v", err)
	}
	if l := relRec.byName(ReleasePrefix + StepNetworkPrefix + s.eni0); l == nil || l.Status != StatusAlready {
		t.Errorf("release of the interface from the final state: %+v", l)
	}
	if !rst.Released {
		t.Error("not marked released")
	}
	if g, l := cliASGLifecycle(t, ep, s.instance); g != s.asg || l != "InService" {
		t.Errorf("auto scaling after release = %s %s", g, l)
	}
}

// lostAllOpen applies the all-open group to one interface but reports the
// call as failed, then fails the read-back of that interface once: the
// interface's state is unknown to the run.
type lostAllOpen struct {
	EC2API
	eni      string
	allOpen  func() string
	lost     bool
	readFail bool
}

func (c *lostAllOpen) ModifyNetworkInterfaceAttribute(ctx context.Context, in *ec2.ModifyNetworkInterfaceAttributeInput, o ...func(*ec2.Options)) (*ec2.ModifyNetworkInterfaceAttributeOutput, error) {
	out, err := c.EC2API.ModifyNetworkInterfaceAttribute(ctx, in, o...)
	if err == nil && !c.lost && aws.ToString(in.NetworkInterfaceId) == c.eni && slices.Equal(in.Groups, []string{c.allOpen()}) {
		c.lost, c.readFail = true, true
		return nil, errors.New("read tcp: i/o timeout")
	}
	return out, err
}

func (c *lostAllOpen) DescribeNetworkInterfaces(ctx context.Context, in *ec2.DescribeNetworkInterfacesInput, o ...func(*ec2.Options)) (*ec2.DescribeNetworkInterfacesOutput, error) {
	if c.readFail && slices.Contains(in.NetworkInterfaceIds, c.eni) {
		c.readFail = false
		return nil, errors.New("read tcp: connection reset by peer")
	}
	return c.EC2API.DescribeNetworkInterfaces(ctx, in, o...)
}

// TestAllOpenUnknownGetsIsolated: when the all-open call fails and the
// interface cannot be read back, the interface may be open to all; it is
// given the isolation group at once, and the step is recorded as failed
// saying tracked flows may survive.
func TestAllOpenUnknownGetsIsolated(t *testing.T) {
	ctx := testContext(t)
	s := buildSim(t, ctx, nil)
	c := s.c
	var allOpen string
	var once sync.Once
	faulty := c
	faulty.EC2 = &lostAllOpen{EC2API: c.EC2, eni: s.eni0, allOpen: func() string {
		once.Do(func() {
			if g, err := findGroup(ctx, c, s.vpc, AllOpenGroupName); err == nil && g != nil {
				allOpen = aws.ToString(g.GroupId)
			}
		})
		return allOpen
	}}
	var failed []Step
	opts := testOptions(nil)
	opts.Record = func(_ context.Context, st Step) error {
		if st.Status == StatusFailed {
			failed = append(failed, st)
		}
		return nil
	}
	if _, err := Run(ctx, faulty, s.instance, nil, opts); err == nil {
		t.Fatal("Run succeeded although the all-open call failed")
	}
	iso, err := findGroup(ctx, c, s.vpc, IsolationGroupName)
	if err != nil || iso == nil {
		t.Fatalf("isolation group: %v", err)
	}
	if gs := cliENIGroups(t, s.cli, s.eni0); !slices.Equal(gs, []string{aws.ToString(iso.GroupId)}) {
		t.Errorf("groups of %s = %v, want only the isolation group %s (all-open is %s)", s.eni0, gs, aws.ToString(iso.GroupId), allOpen)
	}
	var found bool
	for _, st := range failed {
		if st.Name == StepNetworkPrefix+s.eni0 && st.Err != nil && strings.Contains(st.Err.Error(), "tracked flows may survive") {
			found = true
		}
	}
	if !found {
		t.Errorf("no failed network step for %s saying tracked flows may survive: %+v", s.eni0, failed)
	}
}
