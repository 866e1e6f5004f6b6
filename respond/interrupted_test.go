package respond

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/smithy-go/middleware"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/vault"
)

// TestInterruptedAcquisitionIsRecorded: a run interrupted during
// acquisition (Ctrl-C, a stopped task) still records that the acquisition
// and its stage failed, and why; the stages after it are not run, and a
// re-run completes the case.
func TestInterruptedAcquisitionIsRecorded(t *testing.T) {
	d := newDrill(t, vault.NewMemory())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	acc := d.acc
	acc.Forensics = d.acc.Forensics.Copy()
	acc.Forensics.APIOptions = append(acc.Forensics.APIOptions, func(s *middleware.Stack) error {
		return s.Initialize.Add(middleware.InitializeMiddlewareFunc("interrupt", func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			if _, ok := in.Parameters.(*ebs.GetSnapshotBlockInput); ok {
				once.Do(cancel)
			}
			return next.HandleInitialize(ctx, in)
		}), middleware.After)
	})
	o := d.options()
	o.Isolate = false
	c, err := Open(ctx, acc, d.store, d.signer, o)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Run(ctx, c, c.Stages())
	if err == nil {
		t.Fatal("an interrupted run reported success")
	}
	notRun := 0
	for _, s := range sum.Stages {
		if strings.HasPrefix(s.Error, "not run") {
			notRun++
		}
	}
	if notRun == 0 {
		t.Errorf("no stage after the interruption is marked not run: %+v", sum.Stages)
	}
	es, err := c.Ledger().Entries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var acquireFailed, stageFailed bool
	for _, e := range es {
		a, ok := e.Details.(custody.AWSAction)
		if !ok || e.Outcome != custody.Failed || !strings.Contains(e.Error, "context canceled") {
			continue
		}
		acquireFailed = acquireFailed || a.Action == "acquire.snapshot"
		stageFailed = stageFailed || a.Action == "stage.acquire"
	}
	if !acquireFailed || !stageFailed {
		t.Fatalf("after the interruption: failed acquire.snapshot recorded %v, failed stage.acquire recorded %v", acquireFailed, stageFailed)
	}

	// The same case, run again, completes.
	c2 := d.open(t, o)
	if _, err := Run(context.Background(), c2, c2.Stages()); err != nil {
		t.Fatalf("re-run: %v", err)
	}
	st, err := c2.state(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.acquired) != 2 || !st.closed {
		t.Errorf("re-run: %d acquired, closed %v", len(st.acquired), st.closed)
	}
}
