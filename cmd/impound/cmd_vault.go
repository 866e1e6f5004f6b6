package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/impound-ir/impound/vault"
)

func newVaultCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vault",
		Short: "Create, check and use evidence vaults (S3 Object Lock buckets or local directories)",
		Long: `A vault keeps evidence write-once: S3 with Object Lock (s3://bucket[/prefix]) or
a local directory (file:///path or a plain path) for drills and air-gapped work.
See docs/vault.md for the key layout and the guarantees.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newVaultInitCommand(g), newVaultCheckCommand(g), newVaultPutCommand(g),
		newVaultVerifyCommand(g), newVaultHoldCommand(g))
	return cmd
}

// openVault opens the store a URI names, loading the AWS configuration
// only for s3:// vaults.
func openVault(ctx context.Context, g *globalOptions, uri string, opts vault.Options) (vault.Store, error) {
	if strings.HasPrefix(uri, "s3://") {
		cfg, err := g.AWSConfig(ctx)
		if err != nil {
			return nil, err
		}
		opts.AWS = cfg
		opts.PathStyle = g.s3PathStyle()
	}
	return vault.Open(ctx, uri, opts)
}

func s3Options(ctx context.Context, g *globalOptions) (vault.Options, error) {
	cfg, err := g.AWSConfig(ctx)
	if err != nil {
		return vault.Options{}, err
	}
	o := vault.NewOptions()
	o.AWS = cfg
	o.PathStyle = g.s3PathStyle()
	return o, nil
}

// checkSkips is the --skip flag of init and check: checks an S3-compatible
// server cannot pass (MinIO has no public access block, no KMS without
// configuration).
type checkSkips []string

func (s *checkSkips) apply(co *vault.CheckOptions) error {
	for _, c := range *s {
		switch c {
		case "encryption":
			co.RequireEncryption = false
		case "public-access-block":
			co.RequirePublicAccessBlock = false
		case "policy":
			co.RequirePolicy = false
		default:
			return usagef("--skip %q: want encryption, public-access-block or policy", c)
		}
	}
	return nil
}

func printReport(g *globalOptions, r *vault.CheckReport) error {
	err := g.Print(r, func(w io.Writer) error {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, f := range r.Findings {
			status := "ok"
			switch {
			case !f.OK && f.Required:
				status = "FAIL"
			case !f.OK:
				status = "skipped"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Check, status, f.Detail)
		}
		return tw.Flush()
	})
	if err != nil {
		return err
	}
	return r.Err()
}

// --- init ---

type vaultInitOptions struct {
	RetentionDays int32
	Mode          string
	KMSKey        string
	Encryption    string
	Skip          []string
}

func (o *vaultInitOptions) AddFlags(f *pflag.FlagSet) {
	f.Int32Var(&o.RetentionDays, "retention-days", vault.DefaultRetentionDays, "default retention of every object, in days")
	f.StringVar(&o.Mode, "mode", "compliance", "default retention mode: compliance (nobody can shorten it) or governance")
	f.StringVar(&o.KMSKey, "kms-key", "", "KMS key ARN for default SSE-KMS encryption (default: SSE-S3)")
	f.StringVar(&o.Encryption, "encryption", "", "default encryption: kms, s3 or none (none only for S3-compatible servers without a KMS)")
	f.StringSliceVar(&o.Skip, "skip", nil, "settings the server lacks, left alone and not required: encryption, public-access-block, policy")
}

func newVaultInitCommand(g *globalOptions) *cobra.Command {
	var o vaultInitOptions
	cmd := &cobra.Command{
		Use:   "init s3://BUCKET",
		Short: "Create an S3 bucket fit for evidence: Object Lock, default retention, encryption, no public access, no deletes",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVaultInit(cmd.Context(), g, &o, args)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runVaultInit(ctx context.Context, g *globalOptions, o *vaultInitOptions, args []string) error {
	if !strings.HasPrefix(args[0], "s3://") {
		return usagef("vault init takes an s3://BUCKET; a local vault directory needs no init")
	}
	in := vault.NewInitOptions()
	in.RetentionDays, in.Mode, in.KMSKeyID = o.RetentionDays, strings.ToUpper(o.Mode), o.KMSKey
	switch o.Encryption {
	case "":
	case "kms":
		in.Encryption = vault.EncryptionKMS
	case "s3":
		in.Encryption = vault.EncryptionS3
	case "none":
		in.Encryption = vault.EncryptionNone
	default:
		return usagef("--encryption %q: want kms, s3 or none", o.Encryption)
	}
	if in.Mode != vault.ModeCompliance && in.Mode != vault.ModeGovernance {
		return usagef("--mode %q: want compliance or governance", o.Mode)
	}
	if in.RetentionDays <= 0 {
		return usagef("--retention-days must be at least 1")
	}
	skips := checkSkips(o.Skip)
	if err := skips.apply(&in.Check); err != nil {
		return err
	}
	in.SkipPublicAccessBlock = !in.Check.RequirePublicAccessBlock
	in.SkipPolicy = !in.Check.RequirePolicy
	if !in.Check.RequireEncryption && in.Encryption == "" {
		in.Encryption = vault.EncryptionNone
	}
	opts, err := s3Options(ctx, g)
	if err != nil {
		return err
	}
	zerolog.Ctx(ctx).Info().Str("bucket", args[0]).Str("mode", in.Mode).Int32("retention_days", in.RetentionDays).Msg("creating vault bucket")
	r, err := vault.Init(ctx, args[0], opts, in)
	if err != nil {
		return err
	}
	return printReport(g, r)
}

// --- check ---

type vaultCheckOptions struct{ Skip []string }

func (o *vaultCheckOptions) AddFlags(f *pflag.FlagSet) {
	f.StringSliceVar(&o.Skip, "skip", nil, "checks to report but not require: encryption, public-access-block, policy")
}

func newVaultCheckCommand(g *globalOptions) *cobra.Command {
	var o vaultCheckOptions
	cmd := &cobra.Command{
		Use:   "check s3://BUCKET",
		Short: "Check that a bucket can keep evidence: Object Lock, versioning, retention, encryption, public access, policy",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVaultCheck(cmd.Context(), g, &o, args)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runVaultCheck(ctx context.Context, g *globalOptions, o *vaultCheckOptions, args []string) error {
	if !strings.HasPrefix(args[0], "s3://") {
		return usagef("vault check takes an s3://BUCKET")
	}
	co := vault.NewCheckOptions()
	skips := checkSkips(o.Skip)
	if err := skips.apply(&co); err != nil {
		return err
	}
	opts, err := s3Options(ctx, g)
	if err != nil {
		return err
	}
	r, err := vault.Check(ctx, args[0], opts, co)
	if err != nil {
		return err
	}
	return printReport(g, r)
}

// --- put ---

type vaultPutOptions struct {
	Case          string
	Vault         string
	Name          string
	Area          string
	RetentionDays int
	Mode          string
	LegalHold     bool
	KMSKey        string
	ContentType   string
	State         string
	Resume        bool
	CheckpointMiB int64
}

func (o *vaultPutOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Case, "case", "", "case ID (required)")
	f.StringVar(&o.Vault, "vault", "", "vault URI: s3://bucket[/prefix], file:///path or a directory (required)")
	f.StringVar(&o.Name, "name", "", "object name under the case (default: the file's base name; required for stdin)")
	f.StringVar(&o.Area, "area", vault.AreaEvidence, "area of the case: evidence, investigation or reports")
	f.IntVar(&o.RetentionDays, "retention-days", 0, "retention in days from now (default: 365, whatever the bucket's default rule)")
	f.StringVar(&o.Mode, "mode", "", "retention mode: compliance (default) or governance")
	f.BoolVar(&o.LegalHold, "legal-hold", false, "place a legal hold on the object")
	f.StringVar(&o.KMSKey, "kms-key", "", "SSE-KMS key for this object (S3; default: the bucket's)")
	f.StringVar(&o.ContentType, "content-type", "", "content type to record (S3)")
	f.StringVar(&o.State, "state", "", "save progress to this file as the put streams, so that an interrupted put can be resumed")
	f.BoolVar(&o.Resume, "resume", false, "continue the interrupted put saved in --state (the source must be the same)")
	f.Int64Var(&o.CheckpointMiB, "checkpoint-every", 256, "with --state, save progress every this many MiB")
}

func newVaultPutCommand(g *globalOptions) *cobra.Command {
	var o vaultPutOptions
	cmd := &cobra.Command{
		Use:   "put --case ID --vault URI PATH|-",
		Short: "Store a file or stdin as evidence, hashing it as it streams; prints the receipt",
		Long: `Store a file, or stdin ("-"), as evidence under cases/<case>/<area>/<name>.
The SHA-256 is computed while the data streams; the receipt names the object
version, size, hash, retention and legal hold. Storing identical content
again returns the same receipt; different content under the same name is
refused.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "case", "vault"); err != nil {
				return err
			}
			return runVaultPut(cmd.Context(), g, &o, args)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runVaultPut(ctx context.Context, g *globalOptions, o *vaultPutOptions, args []string) error {
	path := args[0]
	name := o.Name
	if name == "" {
		if path == "-" {
			return usagef("vault put from stdin needs --name")
		}
		name = filepath.Base(path)
	}
	if o.Area == vault.AreaLedger {
		return usagef("--area ledger is written by the ledger commands only")
	}
	key, err := vault.CaseKey(o.Case, o.Area, name)
	if err != nil {
		return usageError{err}
	}
	po := vault.PutOptions{RetentionMode: strings.ToUpper(o.Mode), LegalHold: o.LegalHold, KMSKeyID: o.KMSKey, ContentType: o.ContentType}
	if o.RetentionDays < 0 {
		return usagef("--retention-days must be positive")
	}
	if o.RetentionDays > 0 {
		po.RetainUntil = time.Now().Add(time.Duration(o.RetentionDays) * 24 * time.Hour)
	}
	if o.Resume && o.State == "" {
		return usagef("--resume needs --state FILE")
	}
	if o.CheckpointMiB <= 0 {
		return usagef("--checkpoint-every must be at least 1 (MiB)")
	}
	var src io.Reader = os.Stdin
	var seeker io.Seeker
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("vault put: %w; nothing was stored", err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			po.SizeHint = fi.Size()
			seeker = f
		}
		src = f
	}
	st, err := openVault(ctx, g, o.Vault, vault.Options{})
	if err != nil {
		return err
	}
	var r *vault.Receipt
	if o.State == "" {
		r, err = vault.Put(ctx, st, key, src, po)
		if err != nil && !errors.Is(err, vault.ErrExists) {
			err = fmt.Errorf("%w; nothing was stored", err)
		}
	} else {
		r, err = putResumable(ctx, st, key, src, seeker, po, o)
	}
	if errors.Is(err, vault.ErrExists) {
		return fmt.Errorf("%w: %s already holds other content; evidence is never overwritten: store this under another --name", err, key)
	}
	if err != nil {
		return err
	}
	zerolog.Ctx(ctx).Info().Str("uri", r.URI).Str("version_id", r.VersionID).Int64("size", r.Size).Str("sha256", r.SHA256).Msg("evidence stored")
	return g.Print(r, func(w io.Writer) error { return printReceipt(w, r) })
}

// putResumable streams src into key, saving the writer's checkpoint to
// o.State every o.CheckpointMiB. Interrupted (signal, read error, crash),
// it leaves the upload in place for --resume instead of aborting it.
func putResumable(ctx context.Context, st vault.Store, key string, src io.Reader, seeker io.Seeker, po vault.PutOptions, o *vaultPutOptions) (*vault.Receipt, error) {
	log := zerolog.Ctx(ctx)
	// The writer must outlive a cancelled ctx: cancelling would abort it.
	wctx := context.WithoutCancel(ctx)
	var (
		w   vault.Writer
		off int64
		err error
	)
	if o.Resume {
		state, rerr := os.ReadFile(o.State)
		if rerr != nil {
			return nil, fmt.Errorf("vault put --resume: %w", rerr)
		}
		if w, off, err = st.Resume(wctx, state); err != nil {
			return nil, fmt.Errorf("vault put --resume: %w; start afresh without --resume", err)
		}
		if seeker != nil {
			_, err = seeker.Seek(off, io.SeekStart)
		} else {
			_, err = io.CopyN(io.Discard, src, off) // the same stream, again from its start
		}
		if err != nil {
			return nil, fmt.Errorf("vault put --resume: skip to byte %d of the source: %w", off, err)
		}
		log.Info().Str("key", key).Int64("offset", off).Msg("resuming put")
	} else if w, err = st.Create(wctx, key, po); err != nil {
		return nil, err
	}
	interrupted := func(err error) error {
		return fmt.Errorf("vault put: %w; progress is saved in %s: run the same command with --resume to continue", err, o.State)
	}
	buf := make([]byte, 1<<20)
	every := o.CheckpointMiB << 20
	since := int64(0)
	for {
		if err := ctx.Err(); err != nil {
			return nil, interrupted(err)
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return nil, interrupted(err)
			}
			off += int64(n)
			since += int64(n)
			if since >= every {
				if err := saveState(w, o.State); err != nil {
					return nil, interrupted(err)
				}
				since = 0
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, interrupted(fmt.Errorf("read source: %w", rerr))
		}
	}
	r, err := w.Commit()
	if errors.Is(err, vault.ErrExists) {
		w.Abort()
		os.Remove(o.State)
		return nil, err
	}
	if err != nil {
		return nil, interrupted(err)
	}
	os.Remove(o.State)
	return r, nil
}

// saveState checkpoints w and replaces the state file atomically.
func saveState(w vault.Writer, path string) error {
	state, _, err := w.Checkpoint()
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(state)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	return err
}

func printReceipt(w io.Writer, r *vault.Receipt) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "uri\t%s\n", r.URI)
	fmt.Fprintf(tw, "key\t%s\n", r.Key)
	fmt.Fprintf(tw, "version\t%s\n", r.VersionID)
	fmt.Fprintf(tw, "size\t%d\n", r.Size)
	fmt.Fprintf(tw, "sha256\t%s\n", r.SHA256)
	fmt.Fprintf(tw, "retention\t%s until %s\n", r.RetentionMode, r.RetainUntil.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "legal-hold\t%t\n", r.LegalHold)
	fmt.Fprintf(tw, "stored\t%s\n", r.StoredAt.UTC().Format(time.RFC3339))
	if len(r.Parts) > 0 {
		fmt.Fprintf(tw, "parts\t%d\n", len(r.Parts))
	}
	if len(r.Segments) > 0 {
		fmt.Fprintf(tw, "segments\t%d\n", len(r.Segments))
	}
	return tw.Flush()
}

// splitVersion splits KEY@VERSION.
func splitVersion(arg string) (key, version string) {
	if i := strings.LastIndex(arg, "@"); i > 0 {
		return arg[:i], arg[i+1:]
	}
	return arg, ""
}

// --- verify ---

type vaultVerifyOptions struct {
	Vault  string
	SHA256 string
	Size   int64
}

func (o *vaultVerifyOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Vault, "vault", "", "vault URI (required)")
	f.StringVar(&o.SHA256, "sha256", "", "expected SHA-256 (hex), e.g. from the custody ledger (default: the stored receipt's)")
	f.Int64Var(&o.Size, "size", -1, "expected size in bytes (default: the stored receipt's)")
}

func newVaultVerifyCommand(g *globalOptions) *cobra.Command {
	var o vaultVerifyOptions
	cmd := &cobra.Command{
		Use:   "verify --vault URI KEY[@VERSION]",
		Short: "Re-read a stored object and compare its size and SHA-256 with its receipt",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "vault"); err != nil {
				return err
			}
			return runVaultVerify(cmd.Context(), g, &o, args)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

type verifyResult struct {
	Receipt  *vault.Receipt
	Verified bool
	Error    string `json:",omitempty"`
}

func runVaultVerify(ctx context.Context, g *globalOptions, o *vaultVerifyOptions, args []string) error {
	key, version := splitVersion(args[0])
	st, err := openVault(ctx, g, o.Vault, vault.Options{})
	if err != nil {
		return err
	}
	r, err := st.Stat(ctx, key, version)
	if err != nil {
		return fmt.Errorf("vault verify: %w", err)
	}
	if o.SHA256 != "" {
		r.SHA256 = strings.ToLower(o.SHA256)
	}
	if o.Size >= 0 {
		r.Size = o.Size
	}
	if r.SHA256 == "" {
		return fmt.Errorf("vault verify %s: the vault records no SHA-256 for this version; pass the recorded one with --sha256", key)
	}
	verr := vault.Verify(ctx, st, r)
	res := verifyResult{Receipt: r, Verified: verr == nil}
	if verr != nil {
		res.Error = verr.Error()
	}
	if err := g.Print(res, func(w io.Writer) error {
		if verr != nil {
			return nil
		}
		_, err := fmt.Fprintf(w, "verified %s version %s: %d bytes, sha256 %s\n", r.URI, r.VersionID, r.Size, r.SHA256)
		return err
	}); err != nil {
		return err
	}
	return verr
}

// --- hold ---

type vaultHoldOptions struct{ Vault string }

func (o *vaultHoldOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Vault, "vault", "", "vault URI (required)")
}

func newVaultHoldCommand(g *globalOptions) *cobra.Command {
	var o vaultHoldOptions
	cmd := &cobra.Command{
		Use:   "hold --vault URI KEY[@VERSION] on|off",
		Short: "Place or lift a legal hold on a stored object version",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "vault"); err != nil {
				return err
			}
			return runVaultHold(cmd.Context(), g, &o, args)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runVaultHold(ctx context.Context, g *globalOptions, o *vaultHoldOptions, args []string) error {
	key, version := splitVersion(args[0])
	var on bool
	switch args[1] {
	case "on":
		on = true
	case "off":
	default:
		return usagef("vault hold: %q: want on or off", args[1])
	}
	st, err := openVault(ctx, g, o.Vault, vault.Options{})
	if err != nil {
		return err
	}
	if err := st.SetLegalHold(ctx, key, version, on); err != nil {
		return fmt.Errorf("vault hold: %w", err)
	}
	r, err := st.Stat(ctx, key, version)
	if err != nil {
		return fmt.Errorf("vault hold: %w", err)
	}
	zerolog.Ctx(ctx).Info().Str("uri", r.URI).Str("version_id", r.VersionID).Bool("legal_hold", r.LegalHold).Msg("legal hold set")
	return g.Print(r, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "legal hold %s for %s version %s\n", args[1], r.URI, r.VersionID)
		return err
	})
}
