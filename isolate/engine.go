package isolate

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// stepDef is one step: how to read the state it changes, whether that state
// is the wanted one, and how to get there.
type stepDef struct {
	name      string
	resources []string
	// requires names steps that must not have failed or been skipped for
	// safety; when one has, this step is skipped.
	requires []string
	// notApplicable, when set, skips the step without blocking others.
	notApplicable string
	read          func(ctx context.Context) (any, error)
	done          func(cur any) bool
	// want describes the intended state, for dry runs and failure records.
	want  func() any
	apply func(ctx context.Context, cur any) (note string, err error)
}

// runner executes steps, records them and keeps the State up to date.
type runner struct {
	c           Clients
	opts        Options
	state       *State
	log         *[]StepLog
	blocked     map[string]string // step name -> why it blocks dependants
	failed      int
	failedNames []string
}

func (r *runner) emit(ctx context.Context, s Step) error {
	// A step that ran is saved and recorded even if ctx was cancelled
	// meanwhile; the next step then does not start.
	ctx, cancel := settleContext(ctx)
	defer cancel()
	l := StepLog{Name: s.Name, Status: s.Status, Resources: s.Resources, Note: s.Note, At: r.opts.now()}
	var err error
	if l.Before, err = marshalRaw(s.Before); err != nil {
		return fmt.Errorf("step %s: encode state before: %w", s.Name, err)
	}
	if l.After, err = marshalRaw(s.After); err != nil {
		return fmt.Errorf("step %s: encode state after: %w", s.Name, err)
	}
	if s.Err != nil {
		l.Error = s.Err.Error()
	}
	*r.log = append(*r.log, l)
	ev := zerolog.Ctx(ctx).Info()
	if s.Status == StatusFailed {
		ev = zerolog.Ctx(ctx).Error().Err(s.Err)
	}
	ev.Str("step", s.Name).Str("status", string(s.Status)).Str("note", s.Note).Msg("isolation step")
	if r.opts.DryRun {
		return nil
	}
	// The State is saved first: if recording fails, a later release still
	// knows what this step changed.
	// A state without a starting state is worthless to a re-run or a
	// release: nothing is saved until record-state has captured it.
	if r.state.Pending == s.Name {
		r.state.Pending = "" // its outcome is in this log now
	}
	if r.opts.SaveState != nil && r.state.Original.VpcID != "" {
		if err := r.opts.SaveState(ctx, r.state); err != nil {
			return fmt.Errorf("save isolation state after step %s: %w", s.Name, err)
		}
	}
	if r.opts.Record != nil {
		if err := r.opts.Record(ctx, s); err != nil {
			return fmt.Errorf("record step %s: %w", s.Name, err)
		}
	}
	return nil
}

// savePending saves the State with step marked as begun, before a change
// that must not go unnoticed if the process dies before the step is
// recorded: Release then treats the step as attempted.
func (r *runner) savePending(ctx context.Context, step string) error {
	r.state.Pending = step
	if r.opts.SaveState == nil || r.opts.DryRun {
		return nil
	}
	if err := r.opts.SaveState(ctx, r.state); err != nil {
		return fmt.Errorf("save isolation state before step %s: %w", step, err)
	}
	return nil
}

func marshalRaw(v any) (json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if string(b) == "null" {
		return nil, nil
	}
	return b, nil
}

// errStop wraps errors that must end the run at once (recording failed,
// context cancelled).
type errStop struct{ err error }

func (e errStop) Error() string { return e.err.Error() }
func (e errStop) Unwrap() error { return e.err }

// do runs one step. It returns an error only when the run must stop.
func (r *runner) do(ctx context.Context, d stepDef) error {
	if err := ctx.Err(); err != nil {
		return errStop{err}
	}
	s := Step{Name: d.name, Resources: d.resources}
	if d.notApplicable != "" {
		s.Status, s.Note = StatusSkipped, d.notApplicable
		return r.emit(ctx, s)
	}
	for _, req := range d.requires {
		if why, ok := r.blocked[req]; ok {
			s.Status, s.Note = StatusSkipped, fmt.Sprintf("not safe: %s %s", req, why)
			r.blocked[d.name] = "was skipped"
			return r.emit(ctx, s)
		}
	}
	fail := func(ctx context.Context, err error) error {
		s.Status, s.Err = StatusFailed, err
		r.blocked[d.name] = "failed"
		r.failed++
		r.failedNames = append(r.failedNames, d.name)
		if s.After == nil && d.want != nil {
			s.Note = joinNote(s.Note, "intended state not reached")
		}
		return r.emit(ctx, s)
	}
	cur, err := d.read(ctx)
	if err != nil {
		return fail(ctx, err)
	}
	s.Before = cur
	if d.done(cur) {
		s.Status, s.After = StatusAlready, cur
		return r.emit(ctx, s)
	}
	if r.opts.DryRun {
		s.Status = StatusPlanned
		if d.want != nil {
			s.After = d.want()
		}
		return r.emit(ctx, s)
	}
	note, err := d.apply(ctx, cur)
	s.Note = note
	// AWS may have changed even if ctx was cancelled meanwhile: what it
	// holds now is read back, saved and recorded all the same.
	ctx, cancel := settleContext(ctx)
	defer cancel()
	if err != nil {
		// Record what AWS holds now, as far as it can be read.
		if after, rerr := d.read(ctx); rerr == nil {
			s.After = after
		}
		return fail(ctx, err)
	}
	after, err := d.read(ctx)
	if err != nil {
		return fail(ctx, fmt.Errorf("read back: %w", err))
	}
	s.After = after
	if !d.done(after) {
		return fail(ctx, fmt.Errorf("step %s: %w", d.name, ErrNotApplied))
	}
	s.Status = StatusDone
	return r.emit(ctx, s)
}

// settleTimeout bounds the work done after a cancellation to leave AWS, the
// saved State and the record consistent.
const settleTimeout = time.Minute

// settleContext returns ctx while it is live; once it is cancelled, a
// context that keeps its values but not its cancellation, bounded by
// settleTimeout, so that a change already made is finished, read back,
// saved and recorded.
func settleContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Err() == nil {
		return ctx, func() {}
	}
	return context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
}

func joinNote(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// sameJSON compares two values as they would be recorded.
func sameJSON(a, b any) bool {
	ja, err1 := jsonValue(a)
	jb, err2 := jsonValue(b)
	return err1 == nil && err2 == nil && reflect.DeepEqual(ja, jb)
}

// result turns the run's outcome into Run's error.
func (r *runner) result(action string) error {
	if r.failed == 0 {
		return nil
	}
	return fmt.Errorf("%s %s: %d step(s) failed (%s); fix the cause and run the same command again to continue: %w",
		action, r.state.InstanceID, len(r.failedNames), strings.Join(r.failedNames, ", "), ErrPartial)
}
