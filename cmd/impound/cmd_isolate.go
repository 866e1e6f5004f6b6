package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/internal/awsconf"
	"github.com/impound-ir/impound/isolate"
	"github.com/impound-ir/impound/respond"
	"github.com/impound-ir/impound/vault"
)

// isolateOptions are the flags of `impound isolate` and `impound release`.
type isolateOptions struct {
	writeOptions
	Instance   string
	RoleARN    string
	ExternalID string
	DryRun     bool
	AllowSSM   bool
	NACL       bool
	ASGDetach  bool
	// AllowDefaultVPC isolates an instance in a default VPC (refused otherwise).
	AllowDefaultVPC bool
	// UntrackWait is how long each interface holds the all-open group.
	UntrackWait time.Duration
	RevokeDeny  bool // release only
}

func (o *isolateOptions) AddFlags(f *pflag.FlagSet, release bool) {
	o.writeOptions.AddFlags(f)
	f.StringVar(&o.Instance, "instance", "", "ID of the instance (required)")
	f.StringVar(&o.RoleARN, "role-arn", "", "role to assume in the instance's (member) account; default: act with your own credentials")
	f.StringVar(&o.ExternalID, "external-id", "", "external ID the member-account role requires")
	f.BoolVar(&o.DryRun, "dry-run", false, "print the plan, each step's current and intended state, and change nothing")
	if release {
		f.BoolVar(&o.RevokeDeny, "revoke-deny", false, "also delete the inline deny put on the instance's role (by default it stays)")
		return
	}
	f.BoolVar(&o.AllowSSM, "allow-ssm", false, "keep HTTPS egress to the VPC's SSM and S3 endpoints, so memory can still be captured")
	f.BoolVar(&o.NACL, "nacl", false, "also give each subnet a deny-all network ACL: cuts EVERY instance in those subnets")
	f.BoolVar(&o.ASGDetach, "asg-detach", false, "detach from the Auto Scaling group instead of putting the instance in standby")
	f.BoolVar(&o.AllowDefaultVPC, "allow-default-vpc", false, "isolate an instance in a default VPC (refused otherwise: its subnet's auto-assigned public IPv4 address stays; security-group isolation still applies)")
	f.DurationVar(&o.UntrackWait, "untrack-wait", 0, "how long each interface keeps the all-open group (which untracks its flows) before the isolation group")
}

func newIsolateCommand(g *globalOptions) *cobra.Command {
	var o isolateOptions
	cmd := &cobra.Command{
		Use:   "isolate --instance ID --case ID --vault URI --signing-key KEY",
		Short: "Contain an EC2 instance in a recorded, reversible order",
		Long: `isolate takes an instance out of its Auto Scaling group and load balancers,
protects it and its volumes from termination, cuts its network (tracked
connections included, IPv4 and IPv6), disassociates its Elastic IPs, replaces
its instance profile and revokes the sessions already issued to its role, then
tags it. Every step's before and after state goes into the case's custody
ledger; the starting state is kept in the vault so 'impound release' can put
it back. Run it again to continue after a failure. See docs/isolate.md.

An instance in a default VPC is refused unless --allow-default-vpc: its
default subnet auto-assigns a public IPv4 address isolation cannot remove
(security-group isolation still cuts its traffic).

Exit status 3 means some steps failed and were recorded as such: fix the
cause and run the same command again.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(cmd); err != nil {
				return err
			}
			return runIsolate(cmd.Context(), g, &o)
		},
	}
	o.AddFlags(cmd.Flags(), false)
	return cmd
}

func newReleaseCommand(g *globalOptions) *cobra.Command {
	var o isolateOptions
	cmd := &cobra.Command{
		Use:   "release --instance ID --case ID --vault URI --signing-key KEY",
		Short: "Restore an isolated instance to the state recorded before isolation",
		Long: `release puts back what 'impound isolate' changed, from the starting state it
recorded in the vault: security groups and connection tracking per interface,
network ACLs, Elastic IPs, instance profile, protection attributes, load
balancer registrations and Auto Scaling membership. Every step goes into the
custody ledger. The inline deny on the instance's role stays unless
--revoke-deny is given. See docs/isolate.md.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(cmd); err != nil {
				return err
			}
			return runRelease(cmd.Context(), g, &o)
		},
	}
	o.AddFlags(cmd.Flags(), true)
	return cmd
}

func (o *isolateOptions) check(cmd *cobra.Command) error {
	if err := requireFlags(cmd, "instance", "case", "vault"); err != nil {
		return err
	}
	if err := vault.CheckCaseID(o.Case); err != nil {
		return usageError{err}
	}
	if !strings.HasPrefix(o.Instance, "i-") || strings.ContainsAny(o.Instance, "/ ") {
		return usagef("--instance %q: want an instance ID such as i-0123456789abcdef0", o.Instance)
	}
	return nil
}

// isolationEnv is what isolate and release work with.
type isolationEnv struct {
	clients isolate.Clients
	*respond.Isolation
}

func openIsolation(ctx context.Context, g *globalOptions, o *isolateOptions) (*isolationEnv, error) {
	base, err := g.AWSConfig(ctx)
	if err != nil {
		return nil, err
	}
	member := base
	if o.RoleARN != "" {
		member = awsconf.AssumeRole(base, awsconf.Role{ARN: o.RoleARN, ExternalID: o.ExternalID, Operator: operatorName(o.Operator), CaseID: o.Case})
	}
	env := &isolationEnv{clients: isolate.NewClients(member)}
	var (
		store  vault.Store
		ledger *custody.Ledger // nil on a dry run: nothing is recorded
		actor  custody.Actor
		w      *ledgerEnv
	)
	if !o.DryRun {
		if w, err = openForWriting(ctx, g, &o.writeOptions); err != nil {
			return nil, err
		}
	}
	var memberARN string
	if o.RoleARN != "" {
		if memberARN, err = awsconf.CallerARN(ctx, member); err != nil {
			ue := &respond.UnreachableError{Which: "member", RoleARN: o.RoleARN,
				Err: fmt.Errorf("assume role %s: %w; check the role's trust policy names your identity (and --external-id)", o.RoleARN, err)}
			if w == nil {
				return nil, ue
			}
			// Recorded in the case, not only on this terminal.
			ro := respond.NewOptions()
			ro.CaseID, ro.InstanceID, ro.Operator, ro.Region, ro.Trigger = o.Case, o.Instance, operatorName(o.Operator), member.Region, "manual"
			ro.Tool, _ = thisTool(ctx, "record")
			return nil, respond.RecordUnreachable(ctx, w.store, w.signer, ro, respond.Accounts{}, ue)
		}
	}
	if o.DryRun {
		if store, _, err = openLedgerVault(ctx, g, o.Vault, false); err != nil {
			return nil, err
		}
	} else {
		store, actor = w.store, w.actor
		if memberARN != "" {
			// The member-account calls are made as the assumed role.
			actor.CallerARN = memberARN
		}
		if ledger, err = custody.Open(ctx, w.store, o.Case, w.signer, custody.Options{}); err != nil {
			return nil, explainLedgerError(o.Case, err)
		}
	}
	if env.Isolation, err = respond.LoadIsolation(ctx, store, ledger, actor, o.Case, o.Instance); err != nil {
		return nil, err
	}
	return env, nil
}

func (o *isolateOptions) libraryOptions(env *isolationEnv) isolate.Options {
	opts := isolate.NewOptions()
	opts.CaseID = o.Case
	opts.DryRun = o.DryRun
	opts.AllowSSM, opts.NACL, opts.ASGDetach, opts.RevokeDeny = o.AllowSSM, o.NACL, o.ASGDetach, o.RevokeDeny
	opts.AllowDefaultVPC = o.AllowDefaultVPC
	opts.UntrackWait = o.UntrackWait
	if !o.DryRun {
		opts.Record = env.Record
		opts.SaveState = env.SaveState
	}
	return opts
}

func runIsolate(ctx context.Context, g *globalOptions, o *isolateOptions) error {
	if o.NACL {
		zerolog.Ctx(ctx).Warn().Msg("--nacl replaces the network ACL of the instance's subnets: every instance in them loses its network")
	}
	env, err := openIsolation(ctx, g, o)
	if err != nil {
		return err
	}
	prior := env.Prior
	if prior != nil && prior.Released {
		prior = nil // isolating again after a release starts afresh
	}
	from := 0
	if prior != nil {
		from = len(prior.Steps)
	}
	st, err := isolate.Run(ctx, env.clients, o.Instance, prior, o.libraryOptions(env))
	if st == nil {
		return explainIsolateError(err)
	}
	if perr := printSteps(g, st, st.Steps, from, o.DryRun, "isolate"); perr != nil && err == nil {
		err = perr
	}
	return explainIsolateError(err)
}

func runRelease(ctx context.Context, g *globalOptions, o *isolateOptions) error {
	env, err := openIsolation(ctx, g, o)
	if err != nil {
		return err
	}
	if env.Prior == nil {
		return fmt.Errorf("no isolation of %s is recorded in case %s in %s; nothing to release (was it isolated under another --case?)", o.Instance, o.Case, o.Vault)
	}
	st, err := isolate.Release(ctx, env.clients, env.Prior, o.libraryOptions(env))
	if st != nil {
		if perr := printSteps(g, st, st.Release, len(env.Prior.Release), o.DryRun, "release"); perr != nil && err == nil {
			err = perr
		}
	}
	return explainIsolateError(err)
}

func explainIsolateError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, isolate.ErrPartial):
		return partialError{err}
	case errors.Is(err, isolate.ErrAccessDenied):
		return fmt.Errorf("%w; give the member-account role the permissions in deploy/iam/isolate-policy.json", err)
	}
	return err
}

// stepResult is one line of the summary.
type stepResult struct {
	Step      string          `json:"step"`
	Status    isolate.Status  `json:"status"`
	Resources []string        `json:"resources,omitempty"`
	Current   json.RawMessage `json:"current,omitempty"`
	Intended  json.RawMessage `json:"intended,omitempty"`
	After     json.RawMessage `json:"after,omitempty"`
	Note      string          `json:"note,omitempty"`
	Error     string          `json:"error,omitempty"`
}

// printSteps prints the steps of this run, log[from:], as a table or JSON.
func printSteps(g *globalOptions, st *isolate.State, log []isolate.StepLog, from int, dryRun bool, action string) error {
	if st == nil {
		return nil
	}
	if from > len(log) {
		from = len(log)
	}
	var res []stepResult
	for _, l := range log[from:] {
		r := stepResult{Step: l.Name, Status: l.Status, Resources: l.Resources, Note: l.Note, Error: l.Error}
		if dryRun {
			r.Current, r.Intended = l.Before, l.After
		} else {
			r.Current, r.After = l.Before, l.After
		}
		res = append(res, r)
	}
	out := struct {
		Action     string       `json:"action"`
		DryRun     bool         `json:"dry_run,omitempty"`
		Case       string       `json:"case"`
		InstanceID string       `json:"instance_id"`
		Steps      []stepResult `json:"steps"`
	}{action, dryRun, st.CaseID, st.InstanceID, res}
	return g.Print(out, func(w io.Writer) error {
		verb := action
		if dryRun {
			verb += " (dry run: nothing changed)"
		}
		fmt.Fprintf(w, "%s %s, case %s\n", verb, st.InstanceID, st.CaseID)
		counts := map[isolate.Status]int{}
		for _, r := range res {
			counts[r.Status]++
			fmt.Fprintf(w, "  %-13s %s", r.Status, r.Step)
			if r.Note != "" {
				fmt.Fprintf(w, "  (%s)", r.Note)
			}
			if r.Error != "" {
				fmt.Fprintf(w, "\n                error: %s", r.Error)
			}
			fmt.Fprintln(w)
			if dryRun && r.Status == isolate.StatusPlanned {
				fmt.Fprintf(w, "                current:  %s\n                intended: %s\n", orNone(r.Current), orNone(r.Intended))
			}
		}
		var parts []string
		for _, s := range []isolate.Status{isolate.StatusDone, isolate.StatusAlready, isolate.StatusPlanned, isolate.StatusSkipped, isolate.StatusFailed} {
			if counts[s] > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
			}
		}
		_, err := fmt.Fprintf(w, "summary: %s\n", strings.Join(parts, ", "))
		return err
	})
}

func orNone(b json.RawMessage) string {
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}

// partialError is err, which also counts as errPartial for the exit code.
type partialError struct{ error }

func (e partialError) Unwrap() []error { return []error{e.error, errPartial} }
