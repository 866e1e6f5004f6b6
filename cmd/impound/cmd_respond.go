package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/impound-ir/impound/acquire"
	"github.com/impound-ir/impound/acquire/controlplane"
	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/internal/awsconf"
	"github.com/impound-ir/impound/respond"
	"github.com/impound-ir/impound/vault"
)

// caseRunOptions are what every command that works on a live case takes:
// the case and its ledger, the instance, the accounts, and how evidence is kept.
type caseRunOptions struct {
	writeOptions
	accountOptions
	Instance      string
	Hash          string
	Compress      string
	Mode          string
	RetentionDays int
	LegalHold     bool
	KMSKey        string
	ForensicsKey  string
	MemberKey     string
	StateDir      string
	Trigger       string
	FindingFile   string
	// SnapshotTimeout, when set, replaces the size-proportional wait for
	// each snapshot to complete.
	SnapshotTimeout time.Duration
	// CloudTrail events collected with the control plane.
	CloudTrailLookBack  time.Duration
	CloudTrailMaxEvents int
	// Isolation
	NoIsolate       bool
	AllowSSM        bool
	NACL            bool
	ASGDetach       bool
	AllowDefaultVPC bool
}

func (o *caseRunOptions) AddFlags(f *pflag.FlagSet) {
	o.writeOptions.AddFlags(f)
	o.accountOptions.AddFlags(f)
	f.StringVar(&o.Instance, "instance", "", "the compromised instance (i-…)")
	f.StringVar(&o.Hash, "hash", "sha256", "whole-image hashes, comma-separated: sha256 (always), md5, sha1, sha512")
	f.StringVar(&o.Compress, "compress", "", "store images compressed: zstd (seekable); hashes stay those of the raw image")
	f.StringVar(&o.Mode, "mode", "compliance", "Object Lock retention mode: compliance or governance")
	f.IntVar(&o.RetentionDays, "retention-days", 0, "keep evidence this many days (default: the vault's default retention)")
	f.BoolVar(&o.LegalHold, "legal-hold", false, "put every evidence object under legal hold")
	f.StringVar(&o.KMSKey, "kms-key", "", "SSE-KMS key for evidence objects in S3 (default: the bucket's)")
	f.StringVar(&o.ForensicsKey, "forensics-kms-key", "", "KMS key (forensics account) that encrypts the forensics copies of snapshots (default: the forensics account's alias/aws/ebs)")
	f.StringVar(&o.MemberKey, "member-kms-key", "", "customer-managed KMS key (member account) to re-encrypt aws/ebs snapshots, which cannot be shared")
	f.StringVar(&o.StateDir, "state-dir", "", "where acquisitions save progress to resume (default <user cache dir>/impound/acquire)")
	f.StringVar(&o.Trigger, "trigger", "manual", "what opened the case: a ticket, guardduty:<finding ID>")
	f.StringVar(&o.FindingFile, "finding", "", "the triggering GuardDuty finding (EventBridge event or its detail, JSON file), stored as evidence")
	f.BoolVar(&o.NoIsolate, "no-isolate", false, "do not isolate the instance (it was contained by other means, or by another case)")
	f.BoolVar(&o.AllowSSM, "allow-ssm", false, "isolation keeps HTTPS egress to the VPC's SSM and S3 endpoints, so memory can still be captured")
	f.BoolVar(&o.NACL, "nacl", false, "isolation also gives each subnet a deny-all network ACL: cuts EVERY instance in those subnets")
	f.BoolVar(&o.ASGDetach, "asg-detach", false, "isolation detaches the instance from its Auto Scaling group instead of putting it in standby")
	f.BoolVar(&o.AllowDefaultVPC, "allow-default-vpc", false, "isolation proceeds for an instance in a default VPC (refused otherwise: its auto-assigned public IPv4 address stays; security-group isolation still applies)")
	f.DurationVar(&o.CloudTrailLookBack, "cloudtrail-lookback", controlplane.DefaultLookBack, "collect CloudTrail events about the instance and its role from this far back")
	f.IntVar(&o.CloudTrailMaxEvents, "cloudtrail-max-events", controlplane.DefaultMaxCloudTrailEvents, "stop each CloudTrail look-up after this many events (the item then says it is truncated)")
	f.DurationVar(&o.SnapshotTimeout, "snapshot-timeout", 0, "how long each snapshot may take to complete (default: 30 minutes plus 10 seconds per GiB)")
}

// options maps the flags onto respond.Options.
func (o *caseRunOptions) options(ctx context.Context, g *globalOptions) (respond.Options, error) {
	ro := respond.NewOptions()
	ro.CaseID, ro.InstanceID, ro.Operator, ro.Trigger = o.Case, o.Instance, operatorName(o.Operator), o.Trigger
	hashes, err := acquire.ParseHashes(o.Hash)
	if err != nil {
		return ro, usageError{err}
	}
	ro.Hashes = hashes
	switch strings.ToLower(o.Compress) {
	case "", "none":
	case acquire.CompressZstd:
		ro.Compression = acquire.CompressZstd
	default:
		return ro, usagef("--compress %q: want zstd or none", o.Compress)
	}
	switch strings.ToLower(o.Mode) {
	case "compliance":
		ro.Put.RetentionMode = vault.ModeCompliance
	case "governance":
		ro.Put.RetentionMode = vault.ModeGovernance
	default:
		return ro, usagef("--mode %q: want compliance or governance", o.Mode)
	}
	if o.RetentionDays < 0 {
		return ro, usagef("--retention-days must not be negative")
	}
	if o.RetentionDays > 0 {
		ro.RetentionDays = o.RetentionDays
		ro.Put.RetainUntil = time.Now().UTC().AddDate(0, 0, o.RetentionDays)
	}
	ro.Put.LegalHold, ro.Put.KMSKeyID = o.LegalHold, o.KMSKey
	ro.ForensicsKMSKey, ro.MemberKMSKey = o.ForensicsKey, o.MemberKey
	ro.Isolate = !o.NoIsolate
	ro.Isolation.AllowSSM, ro.Isolation.NACL, ro.Isolation.ASGDetach = o.AllowSSM, o.NACL, o.ASGDetach
	ro.Isolation.AllowDefaultVPC = o.AllowDefaultVPC
	if o.SnapshotTimeout < 0 {
		return ro, usagef("--snapshot-timeout must not be negative")
	}
	if o.SnapshotTimeout > 0 {
		ro.SnapshotTimeout = func(int32) time.Duration { return o.SnapshotTimeout }
	}
	if o.NACL {
		zerolog.Ctx(ctx).Warn().Msg("--nacl replaces the network ACL of the instance's subnets: every instance in them loses its network")
	}
	if o.CloudTrailLookBack < 0 || o.CloudTrailMaxEvents < 0 {
		return ro, usagef("--cloudtrail-lookback and --cloudtrail-max-events must not be negative")
	}
	ro.CloudTrailLookBack, ro.CloudTrailMaxEvents = o.CloudTrailLookBack, o.CloudTrailMaxEvents
	ro.StateDir = o.StateDir
	if ro.StateDir == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			return ro, fmt.Errorf("no cache directory for the resume state (%w); give one with --state-dir", err)
		}
		ro.StateDir = filepath.Join(dir, "impound", "acquire")
	}
	if o.FindingFile != "" {
		b, err := os.ReadFile(o.FindingFile)
		if err != nil {
			return ro, usagef("--finding: %v", err)
		}
		if !json.Valid(b) {
			return ro, usagef("--finding %s is not JSON", o.FindingFile)
		}
		ro.Finding = b
	}
	ro.Tool, _ = thisTool(ctx, "record")
	ro.Region = g.Region
	return ro, nil
}

// open opens (or starts) the case: the accounts, the vault, the signing key
// and the ledger. With newCase, a missing case ID is generated.
func (o *caseRunOptions) open(ctx context.Context, g *globalOptions, newCase bool) (*respond.Case, error) {
	if o.Case == "" && newCase {
		o.Case = respond.NewCaseID(time.Now())
		zerolog.Ctx(ctx).Info().Str("case", o.Case).Msg("new case")
	}
	if o.Case == "" {
		return nil, usagef("--case is required")
	}
	if o.Vault == "" {
		return nil, usagef("--vault is required: where the evidence and the ledger are kept (s3://bucket or a directory)")
	}
	ro, err := o.options(ctx, g)
	if err != nil {
		return nil, err
	}
	// The vault and a KMS signing key live in the forensics account.
	o.vaultRole = awsconf.Role{ARN: o.ForensicsRoleARN, ExternalID: o.ExternalID, Operator: ro.Operator, CaseID: o.Case}
	env, err := openForWriting(ctx, g, &o.writeOptions)
	if err != nil {
		return nil, err
	}
	acc, err := o.accountOptions.resolve(ctx, g, ro.Operator, o.Case)
	if ro.Region == "" {
		ro.Region = acc.Member.Region
	}
	if ue := (*respond.UnreachableError)(nil); errors.As(err, &ue) {
		// The case records that it could not reach the account, so the
		// attempt is not only on this terminal.
		return nil, respond.RecordUnreachable(ctx, env.store, env.signer, ro, acc, ue)
	}
	if err != nil {
		return nil, err
	}
	c, err := respond.Open(ctx, acc, env.store, env.signer, ro)
	if err != nil {
		return nil, explainLedgerError(o.Case, err)
	}
	return c, nil
}

func newRespondCommand(g *globalOptions) *cobra.Command {
	o := &caseRunOptions{}
	var keepOpen bool
	var stages, snapshots string
	cmd := &cobra.Command{
		Use:   "respond --instance i-… --vault URI [--case ID] [flags]",
		Short: "Run a whole response: collect, snapshot, acquire every volume, verify, close",
		Long: `Run one case end to end: open it in the custody ledger, collect what the AWS
API knows about the instance, snapshot its volumes into the forensics account,
acquire every volume through the EBS direct APIs into the vault while hashing
it, verify every stored object by reading it back, and close the case.

The stages, in order: collect, isolate (unless --no-isolate), snapshot,
acquire, verify, report, close (unless --keep-open). Re-running with the same
--case resumes where it stopped. A stage that fails is recorded as failed, the
safe stages after it still run, and the exit code is 3.

--stages runs only some stages of an existing or new case, each reading what
is done from the ledger: a Lambda runs collect,isolate and hands the rest to a
longer task. --snapshot limits acquire to the case's forensics-account
snapshots given, so each volume can be acquired by a task of its own.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Instance == "" && o.Case == "" {
				return usagef("respond needs --instance (and --case to resume a case)")
			}
			if _, err := respond.SelectStages(stageList(respond.StageNames()), splitList(stages)); err != nil {
				return usageError{err}
			}
			c, err := o.open(cmd.Context(), g, true)
			if err != nil {
				return err
			}
			run := c.Stages()
			if snaps := splitList(snapshots); len(snaps) > 0 {
				for i := range run {
					if run[i].Name == "acquire" {
						run[i].Run = func(ctx context.Context) error {
							var errs []error
							for _, id := range snaps {
								errs = append(errs, c.AcquireSnapshot(ctx, id))
							}
							return errors.Join(errs...)
						}
					}
				}
			}
			if names := splitList(stages); len(names) > 0 {
				if run, err = respond.SelectStages(run, names); err != nil {
					return usageError{err}
				}
			}
			return runStages(cmd.Context(), g, c, run, keepOpen)
		},
	}
	o.AddFlags(cmd.Flags())
	cmd.Flags().BoolVar(&keepOpen, "keep-open", false, "leave the case open when done")
	cmd.Flags().StringVar(&stages, "stages", "", "run only these stages, comma-separated ("+strings.Join(respond.StageNames(), ",")+")")
	cmd.Flags().StringVar(&snapshots, "snapshot", "", "acquire only these forensics-account snapshots of the case, comma-separated (snap-…)")
	return cmd
}

// runStages runs stages and prints the summary; failed stages make the
// command exit 3 (partial).
func runStages(ctx context.Context, g *globalOptions, c *respond.Case, stages []respond.Stage, keepOpen bool) error {
	if keepOpen {
		var kept []respond.Stage
		for _, s := range stages {
			if s.Name != "close" {
				kept = append(kept, s)
			}
		}
		stages = kept
	}
	sum, err := respond.Run(ctx, c, stages)
	if perr := g.Print(sum, func(w io.Writer) error { return printSummary(w, sum) }); perr != nil {
		return perr
	}
	return stagesError(c, err)
}

// stageList is a list of stages that do nothing, by name: to check names
// before a case is opened.
func stageList(names []string) []respond.Stage {
	out := make([]respond.Stage, len(names))
	for i, n := range names {
		out[i].Name = n
	}
	return out
}

// stagesError explains the error of respond.Run.
func stagesError(c *respond.Case, err error) error {
	if errors.Is(err, respond.ErrIncomplete) {
		return fmt.Errorf("%w: %w; fix the cause and run the same command again to resume case %s", errPartial, err, c.ID())
	}
	return err
}

func printSummary(w io.Writer, s *respond.Summary) error {
	fmt.Fprintf(w, "case %s\n\n", s.Case)
	for _, st := range s.Stages {
		status := "done"
		switch {
		case st.Skipped:
			status = "skipped"
		case !st.OK && strings.HasPrefix(st.Error, "not run"):
			status = "not run"
		case !st.OK:
			status = "FAILED"
		}
		fmt.Fprintf(w, "  %-9s %s\n", st.Stage, status)
		if st.Error != "" {
			for _, line := range strings.Split(st.Error, "\n") {
				fmt.Fprintf(w, "            %s\n", line)
			}
		}
	}
	fmt.Fprintf(w, "\nevidence (%d objects)\n", len(s.Evidence))
	for _, e := range s.Evidence {
		fmt.Fprintf(w, "  %s\n    sha256 %s  %d bytes  version %s\n", e.Receipt.URI, e.Receipt.SHA256, e.Receipt.Size, e.Receipt.VersionID)
	}
	fmt.Fprintf(w, "\nsigned checkpoint\n%s", indent(s.Checkpoint, "  "))
	return nil
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if line != "" {
			b.WriteString(prefix + line)
		}
	}
	return b.String()
}

func newSnapshotCommand(g *globalOptions) *cobra.Command {
	o := &caseRunOptions{}
	cmd := &cobra.Command{
		Use:   "snapshot --instance i-… --case ID --vault URI [flags]",
		Short: "Snapshot an instance's volumes and move the snapshots into the forensics account",
		Long: `Snapshot all of an instance's volumes at once (crash-consistent) and move the
snapshots into the forensics account: share and copy, re-encrypting aws/ebs
snapshots through --member-kms-key, granting KMS access with grants that are
retired when done. Every step is recorded in the case's ledger. Prints the
forensics-account snapshot IDs, ready for 'impound acquire snapshot'.
Running it again for the same case finds the snapshots it made.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "instance", "case"); err != nil {
				return err
			}
			c, err := o.open(cmd.Context(), g, false)
			if err != nil {
				return err
			}
			sum, runErr := respond.Run(cmd.Context(), c, []respond.Stage{{Name: "snapshot", Run: c.Snapshot}})
			snaps, err := c.ForensicsSnapshots(cmd.Context())
			if err != nil {
				return errors.Join(stagesError(c, runErr), err)
			}
			out := struct {
				*respond.Summary
				Snapshots []custody.SnapshotCopied `json:"snapshots"`
			}{sum, snaps}
			if err := g.Print(out, func(w io.Writer) error {
				if err := printSummary(w, sum); err != nil {
					return err
				}
				fmt.Fprintln(w, "\nforensics-account snapshots:")
				for _, s := range snaps {
					fmt.Fprintf(w, "  %s  (volume %s, original %s)\n", s.SnapshotID, s.VolumeID, s.OriginalSnapshotID)
				}
				return nil
			}); err != nil {
				return err
			}
			return stagesError(c, runErr)
		},
	}
	o.AddFlags(cmd.Flags())
	hideFlags(cmd, "hash", "compress", "mode", "retention-days", "legal-hold", "kms-key", "state-dir", "finding",
		"cloudtrail-lookback", "cloudtrail-max-events", "no-isolate", "allow-ssm", "nacl", "asg-detach", "allow-default-vpc")
	return cmd
}

// hideFlags hides, from a command's help, the case flags it shares with
// respond but has no use for. They are still accepted, so one set of flags
// works for every stage of a case.
func hideFlags(cmd *cobra.Command, names ...string) {
	for _, n := range names {
		if err := cmd.Flags().MarkHidden(n); err != nil {
			panic(fmt.Sprintf("hideFlags: %s: %v", cmd.CommandPath(), err))
		}
	}
}

func newCollectCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "collect", Short: "Collect evidence about an instance"}
	o := &caseRunOptions{}
	cp := &cobra.Command{
		Use:   "control-plane --instance i-… --case ID --vault URI [flags]",
		Short: "Store what the AWS API knows about the instance as evidence",
		Long: `Store as evidence, each with its hashes and a ledger entry: the instance's
description, volumes, network interfaces, security groups, instance profile
with its role's policies, tags, console output and screenshot, CloudTrail
events about the instance and its role over the last 7 days, and the
triggering GuardDuty finding when --finding is given.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "instance", "case"); err != nil {
				return err
			}
			c, err := o.open(cmd.Context(), g, false)
			if err != nil {
				return err
			}
			return runStages(cmd.Context(), g, c, []respond.Stage{{Name: "collect", Run: c.Collect}}, true)
		},
	}
	o.AddFlags(cp.Flags())
	hideFlags(cp, "hash", "compress", "state-dir", "forensics-kms-key", "member-kms-key", "snapshot-timeout",
		"no-isolate", "allow-ssm", "nacl", "asg-detach", "allow-default-vpc")
	cmd.AddCommand(cp)
	return cmd
}
