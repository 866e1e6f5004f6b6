package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/respond"
	"github.com/impound-ir/impound/vault"
)

const (
	// operator is recorded as the operator of every action the function takes.
	operator = "guardduty"
	// runTaskAction is the ledger action of an acquisition task's dispatch.
	runTaskAction = "ecs.run-task"
	// deadlineMargin is kept between the end of the stages and the Lambda's
	// own deadline, to record what happened and dispatch the acquisition.
	deadlineMargin = 30 * time.Second
	// taskStateDir is where the acquisition task keeps its resume state.
	taskStateDir = "/tmp/impound/acquire"
)

// dispatcher starts the long part of a case (snapshot, acquire, verify,
// report, close) somewhere that may run for hours.
type dispatcher interface {
	// Dispatch starts the command for the case, unless r.Previous, the task
	// started earlier for it, is still pending or running: then it starts
	// nothing and says so.
	Dispatch(ctx context.Context, r dispatchRequest) (dispatchResult, error)
}

type dispatchRequest struct {
	CaseID, InstanceID string
	// Command is the impound CLI's arguments ("respond", "--case", …).
	Command []string
	// Previous is the task last started for the case, "" when none.
	Previous string
}

type dispatchResult struct {
	TaskARN, Cluster, TaskDefinition string
	// Running: Previous is still pending or running (Status), nothing was started.
	Running bool
	Status  string
}

// resolved are the accounts a finding is worked on with.
type resolved struct {
	Accounts respond.Accounts
	// MemberRoleARN is the role assumed in the finding's account, "" for
	// the function's own credentials.
	MemberRoleARN string
	// Self is the function's own identity, the actor of the dispatch.
	SelfAccount, SelfARN string
}

// accountResolver reaches the account a finding is about and the forensics account.
type accountResolver interface {
	Resolve(ctx context.Context, f *respond.Finding, caseID string) (resolved, error)
}

// handler handles GuardDuty finding events.
type handler struct {
	cfg      *config
	store    vault.Store
	signer   custody.Signer
	accounts accountResolver
	// dispatch is nil when no cluster is configured: the command to run is
	// logged and recorded instead.
	dispatch dispatcher
	tool     custody.Tool
	// options, when set, adjusts each case's options (tests).
	options func(*respond.Options)
}

// Handle handles one EventBridge event. It returns nil for what it ignores,
// so EventBridge does not retry, and an error when a stage or the dispatch
// failed, so Lambda's retries resume the case.
func (h *handler) Handle(ctx context.Context, event json.RawMessage) error {
	log := zerolog.Ctx(ctx)
	f, err := respond.ParseFinding(event)
	if err != nil {
		// Retrying cannot make it a finding: the EventBridge rule is wrong.
		log.Error().Err(err).Msg("event ignored: check the EventBridge rule's pattern")
		return nil
	}
	l := log.With().Str("finding_id", f.ID).Str("finding_type", f.Type).Float64("severity", f.Severity).
		Str("account", f.AccountID).Str("instance", f.InstanceID).Logger()
	if ok, why := f.Actionable(h.cfg.policy()); !ok {
		l.Info().Str("reason", why).Msg("finding ignored")
		return nil
	}
	caseID, existing, err := respond.FindingCaseID(ctx, h.store, h.signer, f.InstanceID)
	if err != nil {
		l.Error().Err(err).Msg("cannot find the instance's case")
		return err
	}
	l = l.With().Str("case", caseID).Logger()
	ctx = l.WithContext(ctx)
	ro := h.caseOptions(f, caseID)
	acc, err := h.accounts.Resolve(ctx, f, caseID)
	if err != nil {
		l.Error().Err(err).Msg("cannot reach the accounts")
		if ue := (*respond.UnreachableError)(nil); errors.As(err, &ue) {
			// Recorded in the case (opened for it when new), not only in the logs.
			err = respond.RecordUnreachable(ctx, h.store, h.signer, ro, acc.Accounts, ue)
		}
		return fmt.Errorf("case %s: %w", caseID, err)
	}
	containedBy := ""
	if ro.Isolate {
		// A finding about an instance that an earlier, closed case of the
		// function isolated (and nobody released): it is contained already,
		// and isolating it again would lose the state to restore on release.
		if containedBy, err = h.isolatedBy(ctx, caseID, f.InstanceID); err != nil {
			l.Error().Err(err).Msg("cannot read the earlier cases' isolation")
			return err
		}
		if containedBy != "" {
			ro.Isolate = false
			ro.Attributes["isolation"], ro.Attributes["isolation.by_case"] = "false", containedBy
		}
	}
	c, err := respond.Open(ctx, acc.Accounts, h.store, h.signer, ro)
	if err != nil {
		l.Error().Err(err).Msg("cannot open the case")
		return err
	}
	l.Info().Bool("existing", existing).Msg("case opened")
	var errs []error
	if containedBy != "" && !existing {
		l.Warn().Str("isolated_by", containedBy).Msg("the instance is still isolated by an earlier case: not isolating it again")
		if _, err := c.Ledger().Append(ctx, custody.Entry{Actor: custody.Actor{Operator: operator, CallerARN: acc.SelfARN},
			Details: &custody.Note{Text: "instance " + f.InstanceID + " is still isolated by case " + containedBy +
				" (never released): this case does not isolate it again; release it with that case"}}); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.RecordFinding(ctx, f); err != nil {
		l.Error().Err(err).Msg("cannot record the finding")
		errs = append(errs, err)
	}
	if err := h.runShortStages(ctx, c, ro.Isolate); err != nil {
		errs = append(errs, err)
	}
	// The acquisition goes ahead whatever the short stages did: the
	// snapshots do not depend on them.
	if err := h.dispatchAcquisition(ctx, c, f, acc); err != nil {
		l.Error().Err(err).Msg("acquisition not dispatched")
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// caseOptions maps the configuration onto the case's options, as the CLI's
// respond command maps its flags.
func (h *handler) caseOptions(f *respond.Finding, caseID string) respond.Options {
	ro := respond.NewOptions()
	ro.CaseID, ro.InstanceID, ro.Region, ro.Operator = caseID, f.InstanceID, h.cfg.Region, operator
	ro.Trigger = "guardduty:" + f.ID
	ro.Title = f.Type + " on " + f.InstanceID
	ro.Finding = f.Detail
	ro.Put.RetentionMode = h.cfg.RetentionMode
	if h.cfg.RetentionDays > 0 {
		ro.RetentionDays = h.cfg.RetentionDays
		ro.Put.RetainUntil = time.Now().UTC().AddDate(0, 0, h.cfg.RetentionDays)
	}
	ro.ForensicsKMSKey, ro.MemberKMSKey = h.cfg.ForensicsKMSKey, h.cfg.MemberKMSKey
	ro.Isolate = h.cfg.Isolate
	ro.Isolation.AllowSSM, ro.Isolation.AllowDefaultVPC = h.cfg.AllowSSM, h.cfg.AllowDefaultVPC
	ro.Attributes = map[string]string{
		"guardduty.finding": f.ID,
		"guardduty.type":    f.Type,
	}
	ro.Tool = h.tool
	if h.options != nil {
		h.options(&ro)
	}
	return ro
}

// runShortStages runs collect and, when configured, isolate: each stage
// under a deadline that leaves deadlineMargin before the Lambda's own, so
// what happened is still recorded and the acquisition still dispatched.
func (h *handler) runShortStages(ctx context.Context, c *respond.Case, isolate bool) error {
	stageCtx := func(ctx context.Context) (context.Context, context.CancelFunc) { return ctx, func() {} }
	if d, ok := ctx.Deadline(); ok {
		margin := deadlineMargin
		if left := time.Until(d); left < 2*margin {
			margin = left / 2
		}
		stageCtx = func(ctx context.Context) (context.Context, context.CancelFunc) {
			return context.WithDeadline(ctx, d.Add(-margin))
		}
	}
	limit := func(run func(context.Context) error) func(context.Context) error {
		return func(ctx context.Context) error {
			sctx, cancel := stageCtx(ctx)
			defer cancel()
			return run(sctx)
		}
	}
	stages := []respond.Stage{{Name: "collect", Run: limit(c.Collect)}}
	if isolate {
		stages = append(stages, respond.Stage{Name: "isolate", Run: limit(c.Isolate)})
	}
	log := zerolog.Ctx(ctx)
	sum, err := respond.Run(ctx, c, stages)
	for _, s := range sum.Stages {
		ev := log.Info()
		if !s.OK {
			ev = log.Error().Str("error", s.Error)
		}
		ev.Str("stage", s.Stage).Bool("ok", s.OK).Msg("stage finished")
	}
	if err != nil {
		if isolate && !stageOK(sum, "isolate") {
			log.Error().Msg("the instance is NOT contained: isolation failed; the invocation fails so Lambda retries it, and a responder should act now")
		}
		return fmt.Errorf("case %s: %w", c.ID(), err)
	}
	return nil
}

// isolatedBy returns the earlier case of the function (gd-<instance>,
// gd-<instance>-2, … before caseID) whose isolation of the instance is
// still in place, "" when none is.
func (h *handler) isolatedBy(ctx context.Context, caseID, instance string) (string, error) {
	first := respond.FindingCasePrefix + instance
	n := 1
	if rest, ok := strings.CutPrefix(caseID, first+"-"); ok {
		var err error
		if n, err = strconv.Atoi(rest); err != nil {
			return "", fmt.Errorf("case %s is not a case of instance %s", caseID, instance)
		}
	}
	for i := n - 1; i >= 1; i-- {
		id := first
		if i > 1 {
			id += "-" + strconv.Itoa(i)
		}
		iso, err := respond.LoadIsolation(ctx, h.store, nil, custody.Actor{}, id, instance)
		if err != nil {
			return "", err
		}
		if iso.Prior == nil {
			continue
		}
		if iso.Prior.Isolated() {
			return id, nil
		}
		// The latest isolation was released: the instance is not contained.
		return "", nil
	}
	return "", nil
}

func stageOK(sum *respond.Summary, name string) bool {
	for _, s := range sum.Stages {
		if s.Stage == name {
			return s.OK
		}
	}
	return false
}

// command is the impound CLI's arguments that finish the case: every stage
// but isolation, which the function ran.
func (h *handler) command(caseID, instance, memberRoleARN string) []string {
	cmd := []string{"respond", "--case", caseID, "--instance", instance, "--vault", h.cfg.Vault, "--no-isolate",
		"--region", h.cfg.Region, "--operator", operator, "--mode", strings.ToLower(h.cfg.RetentionMode),
		"--state-dir", taskStateDir, "--log-format", "json", "--no-progress"}
	add := func(flag, v string) {
		if v != "" {
			cmd = append(cmd, flag, v)
		}
	}
	add("--role-arn", memberRoleARN)
	add("--forensics-role-arn", h.cfg.ForensicsRoleARN)
	add("--external-id", h.cfg.ExternalID)
	add("--member-kms-key", h.cfg.MemberKMSKey)
	add("--forensics-kms-key", h.cfg.ForensicsKMSKey)
	if h.cfg.RetentionDays > 0 {
		add("--retention-days", strconv.Itoa(h.cfg.RetentionDays))
	}
	return cmd
}

// dispatchAcquisition starts the task that finishes the case, unless the
// one started earlier is still running, and records the dispatch.
func (h *handler) dispatchAcquisition(ctx context.Context, c *respond.Case, f *respond.Finding, acc resolved) error {
	log := zerolog.Ctx(ctx)
	cmd := h.command(c.ID(), f.InstanceID, acc.MemberRoleARN)
	entries, err := c.Ledger().Entries(ctx)
	if err != nil {
		return fmt.Errorf("read the ledger of case %s: %w", c.ID(), err)
	}
	actor := custody.Actor{Operator: operator, CallerARN: acc.SelfARN}
	if h.dispatch == nil {
		text := "acquisition not dispatched (no IMPOUND_ACQUIRE_CLUSTER): run IMPOUND_SIGNING_KEY=" + h.cfg.SigningKey + " impound " + shellJoin(cmd)
		log.Warn().Str("command", "impound "+shellJoin(cmd)).Msg("no acquisition cluster configured: a responder must run this command to snapshot and acquire the instance")
		for _, e := range entries {
			if n, ok := e.Details.(custody.Note); ok && n.Text == text {
				return nil
			}
		}
		_, err := c.Ledger().Append(ctx, custody.Entry{Actor: actor, Details: &custody.Note{Text: text}})
		return err
	}
	req := dispatchRequest{CaseID: c.ID(), InstanceID: f.InstanceID, Command: cmd, Previous: lastTask(entries)}
	res, derr := h.dispatch.Dispatch(ctx, req)
	if derr == nil && res.Running {
		log.Info().Str("task", req.Previous).Str("status", res.Status).Msg("the case's acquisition task is still running: not starting another")
		return nil
	}
	details := map[string]string{"cluster": h.cfg.Cluster, "task_definition": h.cfg.TaskDefinition,
		"container": h.cfg.Container, "command": shellJoin(cmd)}
	if req.Previous != "" {
		details["previous_task_arn"] = req.Previous
	}
	var resources []string
	if derr == nil {
		details["task_arn"], details["cluster"], details["task_definition"] = res.TaskARN, res.Cluster, res.TaskDefinition
		resources = []string{res.TaskARN}
	}
	e := custody.Entry{Actor: actor, Resources: resources, Details: &custody.AWSAction{
		Action: runTaskAction, Account: acc.SelfAccount, Region: h.cfg.Region, Details: details}}
	if derr != nil {
		e.Outcome, e.Error = custody.Failed, derr.Error()
	}
	_, rerr := c.Ledger().Append(ctx, e)
	if rerr != nil {
		rerr = fmt.Errorf("record %s in the ledger of case %s: %w", runTaskAction, c.ID(), rerr)
	}
	if derr != nil {
		return errors.Join(fmt.Errorf("dispatch the acquisition of case %s: %w", c.ID(), derr), rerr)
	}
	log.Info().Str("task", res.TaskARN).Msg("acquisition task started")
	return rerr
}

// lastTask is the task ARN of the case's last successful dispatch.
func lastTask(entries []*custody.Entry) string {
	last := ""
	for _, e := range entries {
		if a, ok := e.Details.(custody.AWSAction); ok && a.Action == runTaskAction && e.Outcome != custody.Failed && a.Details["task_arn"] != "" {
			last = a.Details["task_arn"]
		}
	}
	return last
}

// shellJoin quotes args for a POSIX shell.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,@+") == "" {
			out[i] = a
		} else {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}
