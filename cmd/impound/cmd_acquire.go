package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/impound-ir/impound/acquire"
	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/internal/awsconf"
	"github.com/impound-ir/impound/respond"
	"github.com/impound-ir/impound/vault"
)

func newAcquireCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "acquire",
		Short: "Stream a snapshot, block device or file into the vault, hashing it as it passes",
		Long: `acquire reads a source once, in parallel, and streams it in order into the
vault while computing its SHA-256 (plus MD5, SHA-1, SHA-512 on request) and an
RFC 6962 Merkle root over its 512 KiB blocks. The stored image's SHA-256 equals
the source's. A block map (which blocks held data) is stored beside the image.
An interrupted acquisition continues with --resume. See docs/acquire.md.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newAcquireSnapshotCommand(g), newAcquireIncrementalCommand(g), newAcquireDeviceCommand(g), newAcquireFileCommand(g))
	return cmd
}

// acquireOptions are the flags every acquire subcommand takes.
type acquireOptions struct {
	writeOptions // the case, its vault and ledger key: every acquisition is recorded
	Key          string
	Hash         string
	Compress     string
	Resume       bool
	StateDir     string
	Workers      int
	Window       int
	SHA256Impl   string
	// Put
	Mode        string
	RetainUntil string
	LegalHold   bool
	KMSKey      string
	// Source details recorded in the evidence
	InstanceID string
	VolumeID   string
	DeviceName string
}

func (o *acquireOptions) AddFlags(f *pflag.FlagSet) {
	o.writeOptions.AddFlags(f)
	f.StringVar(&o.Key, "key", "", "vault key of the image (default cases/<case>/evidence/<source>.img)")
	f.StringVar(&o.Hash, "hash", "sha256", "whole-image hashes, comma-separated: sha256 (always), md5, sha1, sha512")
	f.StringVar(&o.Compress, "compress", "", "store the image compressed: zstd (seekable); hashes stay those of the raw image")
	f.BoolVar(&o.Resume, "resume", false, "continue an interrupted acquisition of the same source into the same key")
	f.StringVar(&o.StateDir, "state-dir", "", "where progress is saved for --resume (default <user cache dir>/impound/acquire)")
	f.IntVar(&o.Workers, "workers", 0, "parallel block reads (default: 64 for snapshots, CPU cores minus one for files)")
	f.IntVar(&o.Window, "window", acquire.NewOptions().Window, "blocks read ahead of the hash (512 KiB each)")
	f.StringVar(&o.SHA256Impl, "sha256-impl", acquire.ImplStdlib, "SHA-256 implementation: stdlib or simd (see the benchmarks)")
	f.StringVar(&o.Mode, "mode", "", "retention mode: compliance or governance (default: the vault's)")
	f.StringVar(&o.RetainUntil, "retain-until", "", "retain until this RFC 3339 time (default: the vault's retention)")
	f.BoolVar(&o.LegalHold, "legal-hold", false, "put the image under legal hold")
	f.StringVar(&o.KMSKey, "kms-key", "", "SSE-KMS key for the stored objects (default: the bucket's)")
	f.StringVar(&o.InstanceID, "instance-id", "", "instance the source belongs to, recorded in the evidence")
	f.StringVar(&o.VolumeID, "volume-id", "", "volume the source belongs to, recorded in the evidence")
	f.StringVar(&o.DeviceName, "device-name", "", "device name on the instance (e.g. /dev/xvdf), recorded in the evidence")
}

// libraryOptions maps the flags onto acquire.Options for src.
func (o *acquireOptions) libraryOptions(ctx context.Context, info acquire.SourceInfo) (acquire.Options, error) {
	opts := acquire.NewOptions()
	if err := vault.CheckCaseID(o.Case); err != nil {
		return opts, usageError{err}
	}
	opts.Case = o.Case
	hashes, err := acquire.ParseHashes(o.Hash)
	if err != nil {
		return opts, usageError{err}
	}
	opts.Hashes = hashes
	switch strings.ToLower(o.Compress) {
	case "", "none":
		opts.Compression = acquire.CompressNone
	case "zstd":
		opts.Compression = acquire.CompressZstd
	default:
		return opts, usagef("--compress %q: want zstd or none", o.Compress)
	}
	opts.SHA256Impl = o.SHA256Impl
	opts.Workers = o.Workers
	opts.Window = o.Window
	opts.Resume = o.Resume
	opts.Key = o.Key
	if opts.Key == "" {
		if opts.Key, err = acquire.DefaultKey(o.Case, info, opts.Compression); err != nil {
			return opts, fmt.Errorf("%w; name the image with --key", err)
		}
	}
	opts.StateDir = o.StateDir
	if opts.StateDir == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			return opts, fmt.Errorf("no cache directory for the resume state (%w); give one with --state-dir", err)
		}
		opts.StateDir = filepath.Join(dir, "impound", "acquire")
	}
	switch strings.ToLower(o.Mode) {
	case "":
	case "compliance":
		opts.Put.RetentionMode = vault.ModeCompliance
	case "governance":
		opts.Put.RetentionMode = vault.ModeGovernance
	default:
		return opts, usagef("--mode %q: want compliance or governance", o.Mode)
	}
	if o.RetainUntil != "" {
		t, err := time.Parse(time.RFC3339, o.RetainUntil)
		if err != nil {
			return opts, usagef("--retain-until %q: want an RFC 3339 time such as 2033-01-01T00:00:00Z", o.RetainUntil)
		}
		opts.Put.RetainUntil = t
	}
	opts.Put.LegalHold = o.LegalHold
	opts.Put.KMSKeyID = o.KMSKey
	tool, _ := thisTool(ctx, "evidence record")
	opts.Tool = acquire.Tool{Name: tool.Name, Version: tool.Version, BinarySHA256: tool.BinarySHA256}
	return opts, nil
}

func (o *acquireOptions) info(kind string) acquire.SourceInfo {
	return acquire.SourceInfo{Kind: kind, InstanceID: o.InstanceID, VolumeID: o.VolumeID, DevicePath: o.DeviceName}
}

// --- snapshot ---

type acquireSnapshotOptions struct {
	acquireOptions
	// ForensicsRoleARN reads the snapshot, and reaches the vault, as the
	// forensics account's role.
	ForensicsRoleARN string
	ExternalID       string
	Rate             float64
	AccountRate      float64
	Timeout          time.Duration
	Attempts         int
}

func newAcquireSnapshotCommand(g *globalOptions) *cobra.Command {
	o := &acquireSnapshotOptions{}
	cmd := &cobra.Command{
		Use:   "snapshot SNAPSHOT-ID... --case ID --vault URI",
		Short: "Acquire completed EBS snapshots through the EBS direct APIs (no worker instance)",
		Long: `Reads a completed EBS snapshot with ListSnapshotBlocks and parallel
GetSnapshotBlock requests, verifying each block's SHA-256 checksum, at up to
--rate requests per second (AWS allows 1,000 per snapshot), slowing down when
throttled. Blocks the snapshot does not list are zeros and are not read.
Several snapshots are acquired at once, sharing the account's request budget
(--account-rate), with one progress bar each.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("%s needs at least one snapshot ID", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "case", "vault"); err != nil {
				return err
			}
			return runAcquireSnapshot(cmd.Context(), g, o, args)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// AddFlags adds the EBS direct flags to the common ones.
func (o *acquireSnapshotOptions) AddFlags(f *pflag.FlagSet) {
	o.acquireOptions.AddFlags(f)
	f.StringVar(&o.ForensicsRoleARN, "forensics-role-arn", "", "role to assume in the forensics account, which owns the snapshot and the vault (default: your own credentials)")
	f.StringVar(&o.ExternalID, "external-id", "", "external ID the role requires, if any")
	d := acquire.NewEBSOptions()
	f.Float64Var(&o.Rate, "rate", acquire.DefaultSnapshotRate, "GetSnapshotBlock requests per second for this snapshot (ceiling)")
	f.Float64Var(&o.AccountRate, "account-rate", acquire.DefaultAccountRate, "GetSnapshotBlock requests per second for the whole account")
	f.DurationVar(&o.Timeout, "request-timeout", d.RequestTimeout, "timeout of one EBS request")
	f.IntVar(&o.Attempts, "attempts", d.MaxAttempts, "attempts per EBS request before giving up")
}

// awsConfig is the configuration the snapshot is read with: the forensics
// role's when given (then the vault is reached through it too).
func (o *acquireSnapshotOptions) awsConfig(ctx context.Context, g *globalOptions) (aws.Config, error) {
	cfg, err := g.AWSConfig(ctx)
	if err != nil || o.ForensicsRoleARN == "" {
		return cfg, err
	}
	o.vaultRole = awsconf.Role{ARN: o.ForensicsRoleARN, ExternalID: o.ExternalID, Operator: operatorName(o.Operator), CaseID: o.Case}
	return awsconf.AssumeRole(cfg, o.vaultRole), nil
}

// ebsOptions maps the flags onto the EBS source options for one snapshot.
func (o *acquireSnapshotOptions) ebsOptions(ctx context.Context, cfg aws.Config, kind, id string) acquire.EBSOptions {
	info := o.info(kind)
	info.SnapshotID = id
	info.Region = cfg.Region
	describeSnapshot(ctx, cfg, &info)
	eo := acquire.NewEBSOptions()
	eo.Info = info
	eo.Workers = max(0, o.Workers)
	eo.RequestTimeout = o.Timeout
	eo.MaxAttempts = o.Attempts
	if cc, ok := cfg.Credentials.(*aws.CredentialsCache); ok {
		eo.OnExpiredCredentials = cc.Invalidate
	}
	return eo
}

func (o *acquireSnapshotOptions) governor() *acquire.Governor {
	gov := acquire.NewGovernorOptions()
	gov.SnapshotRate = o.Rate
	gov.AccountRate = o.AccountRate
	return acquire.NewGovernor(gov)
}

func runAcquireSnapshot(ctx context.Context, g *globalOptions, o *acquireSnapshotOptions, args []string) error {
	for _, id := range args {
		if !strings.HasPrefix(id, "snap-") {
			return usagef("%q is not a snapshot ID (snap-…)", id)
		}
	}
	if len(args) > 1 && o.Key != "" {
		return usagef("--key names one image; leave it out to acquire several snapshots")
	}
	cfg, err := o.awsConfig(ctx, g)
	if err != nil {
		return err
	}
	governor := o.governor() // one account: one budget shared by every snapshot
	client := acquire.NewEBSClient(cfg)
	srcs := make([]acquire.Source, 0, len(args))
	for _, id := range args {
		eo := o.ebsOptions(ctx, cfg, acquire.KindSnapshot, id)
		src, err := acquire.NewEBSSource(ctx, client, id, governor, eo)
		if err != nil {
			return fmt.Errorf("%w (is the snapshot completed, and may this role call ebs:ListSnapshotBlocks on it?)", err)
		}
		srcs = append(srcs, src)
	}
	return acquireAll(ctx, g, &o.acquireOptions, srcs)
}

// --- incremental ---

type acquireIncrementalOptions struct {
	acquireSnapshotOptions
	Base string
}

func newAcquireIncrementalCommand(g *globalOptions) *cobra.Command {
	o := &acquireIncrementalOptions{}
	cmd := &cobra.Command{
		Use:   "incremental --base SNAP-A SNAP-B --case ID --vault URI",
		Short: "Acquire a snapshot as an increment over an earlier acquisition of an older snapshot of the same volume",
		Long: `Acquires SNAP-B in full (its image and hashes are those of SNAP-B), but reads
from EBS only the blocks ListChangedBlocks says differ from SNAP-A; every other
block is read from SNAP-A's image, which must already have been acquired in
this case (its ledger entry names the image, its block map and its Merkle
root). The whole base image is read back and must hash to its recorded
Merkle root, or nothing is stored. The evidence records the base and how
many blocks came from EBS and from the base.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("%s needs exactly one snapshot ID (the newer snapshot)", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "case", "vault", "base"); err != nil {
				return err
			}
			return runAcquireIncremental(cmd.Context(), g, o, args[0])
		},
	}
	o.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&o.Base, "base", "", "the older snapshot of the same volume, already acquired in this case (required)")
	return cmd
}

func runAcquireIncremental(ctx context.Context, g *globalOptions, o *acquireIncrementalOptions, id string) error {
	for _, s := range []string{o.Base, id} {
		if !strings.HasPrefix(s, "snap-") {
			return usagef("%q is not a snapshot ID (snap-…)", s)
		}
	}
	if o.Base == id {
		return usagef("--base %s is the snapshot to acquire; name the older snapshot", o.Base)
	}
	if err := vault.CheckCaseID(o.Case); err != nil {
		return usageError{err}
	}
	cfg, err := o.awsConfig(ctx, g)
	if err != nil {
		return err
	}
	// The base is what the case's signed ledger recorded of its acquisition.
	env, err := openForWriting(ctx, g, &o.writeOptions)
	if err != nil {
		return err
	}
	base, err := recordedBase(ctx, env, o.Case, o.Base)
	if err != nil {
		return err
	}
	eo := o.ebsOptions(ctx, cfg, acquire.KindIncremental, id)
	src, err := acquire.NewIncrementalSource(ctx, acquire.NewEBSClient(cfg), env.store, base, id, o.governor(), eo)
	if err != nil {
		if errors.Is(err, acquire.ErrUnrelatedBase) || errors.Is(err, acquire.ErrBaseMismatch) {
			return err
		}
		return fmt.Errorf("%w (is the snapshot completed, and may this role call ebs:ListSnapshotBlocks and ebs:ListChangedBlocks on it?)", err)
	}
	return acquireAll(ctx, g, &o.acquireOptions, []acquire.Source{src})
}

// recordedBase finds the latest successful acquisition of snapshot id in the
// case's ledger.
func recordedBase(ctx context.Context, env *ledgerEnv, caseID, id string) (acquire.BaseAcquisition, error) {
	l, err := custody.Open(ctx, env.store, caseID, env.signer, custody.Options{})
	if err != nil {
		return acquire.BaseAcquisition{}, explainLedgerError(caseID, err)
	}
	entries, err := l.Entries(ctx)
	if err != nil {
		return acquire.BaseAcquisition{}, explainLedgerError(caseID, err)
	}
	var found *custody.EvidenceStored
	for _, e := range entries {
		d, ok := e.Details.(custody.EvidenceStored)
		if !ok || e.Outcome == custody.Failed || d.Evidence != custody.EvidenceDiskImage ||
			d.Acquisition == nil || d.Acquisition.SnapshotID != id || d.Acquisition.BlockMap == nil {
			continue
		}
		found = &d
	}
	if found == nil {
		return acquire.BaseAcquisition{}, fmt.Errorf("case %s records no acquisition of %s; acquire it first with `impound acquire snapshot %s --case %s`, or name another --base",
			caseID, id, id, caseID)
	}
	return acquire.BaseAcquisition{
		SnapshotID: id, Image: found.Receipt, BlockMap: *found.Acquisition.BlockMap,
		Size: found.Acquisition.Size, MerkleRoot: found.MerkleRoot, Compression: found.Acquisition.Compression,
	}, nil
}

// describeSnapshot fills in the volume and owner account when the caller may
// describe the snapshot; the acquisition does not depend on it.
func describeSnapshot(ctx context.Context, cfg aws.Config, info *acquire.SourceInfo) {
	out, err := ec2.NewFromConfig(cfg).DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{info.SnapshotID}})
	if err != nil || len(out.Snapshots) != 1 {
		zerolog.Ctx(ctx).Warn().Err(err).Str("snapshot_id", info.SnapshotID).Msg("cannot describe the snapshot; its volume and owner are not recorded")
		return
	}
	s := out.Snapshots[0]
	if info.VolumeID == "" {
		info.VolumeID = aws.ToString(s.VolumeId)
	}
	info.Account = aws.ToString(s.OwnerId)
}

// --- device and file ---

func newAcquireDeviceCommand(g *globalOptions) *cobra.Command {
	o := &acquireOptions{}
	cmd := &cobra.Command{
		Use:   "device /dev/NAME --case ID --vault URI",
		Short: "Acquire a block device, opened read-only",
		Long: `Reads a block device (its size from BLKGETSIZE64), opened read-only, as on a
forensic worker with the suspect volume attached.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "case", "vault"); err != nil {
				return err
			}
			return runAcquirePath(cmd.Context(), g, o, args[0], acquire.KindDevice)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func newAcquireFileCommand(g *globalOptions) *cobra.Command {
	o := &acquireOptions{}
	cmd := &cobra.Command{
		Use:   "file PATH --case ID --vault URI",
		Short: "Acquire an image file, opened read-only; holes are read as zeros without reading them",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "case", "vault"); err != nil {
				return err
			}
			return runAcquirePath(cmd.Context(), g, o, args[0], acquire.KindFile)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runAcquirePath(ctx context.Context, g *globalOptions, o *acquireOptions, path, kind string) error {
	info := o.info(kind)
	src, err := acquire.OpenFile(path, info)
	if err != nil {
		return err
	}
	defer src.Close()
	if got := src.Info().Kind; got != kind {
		if kind == acquire.KindDevice {
			return fmt.Errorf("%s is not a block device; use 'impound acquire file' for image files", path)
		}
		return fmt.Errorf("%s is a block device; use 'impound acquire device'", path)
	}
	return acquireInto(ctx, g, o, src)
}

// acquireInto acquires one source and prints its evidence.
func acquireInto(ctx context.Context, g *globalOptions, o *acquireOptions, src acquire.Source) error {
	return acquireAll(ctx, g, o, []acquire.Source{src})
}

// acquireAll acquires the sources at once, one progress bar each, and prints
// the evidence of those that succeeded (one record, or a list when several).
// A failed source does not stop the others.
func acquireAll(ctx context.Context, g *globalOptions, o *acquireOptions, srcs []acquire.Source) error {
	optss := make([]acquire.Options, len(srcs))
	for i, src := range srcs {
		var err error
		if optss[i], err = o.libraryOptions(ctx, src.Info()); err != nil {
			return err
		}
		if err := acquire.CheckResume(src.Info(), optss[i]); err != nil {
			return usageError{err}
		}
	}
	// Evidence is recorded in the case's ledger, or not acquired at all.
	env, err := openForWriting(ctx, g, &o.writeOptions)
	if err != nil {
		return err
	}
	store := env.store
	rec, err := openAcquisitionLedger(ctx, env, o, srcs)
	if err != nil {
		return err
	}
	pg := newProgressGroup(ctx, g)
	evs := make([]*acquire.Evidence, len(srcs))
	errs := make([]error, len(srcs))
	var wg sync.WaitGroup
	for i, src := range srcs {
		prog, finish := pg.add(src.Info().ID(), src.Size())
		optss[i].Progress = prog
		wg.Go(func() {
			evs[i], errs[i] = acquire.Run(ctx, src, store, optss[i])
			finish(errs[i] == nil)
		})
	}
	wg.Wait()
	pg.wait()
	for i, src := range srcs {
		if rerr := rec.record(ctx, src.Info(), evs[i], errs[i]); rerr != nil {
			// Not recorded: the evidence stays in the vault but the command fails.
			errs[i] = errors.Join(errs[i], rerr)
			evs[i] = nil
		}
	}
	var done []*acquire.Evidence
	for i, err := range errs {
		switch {
		case err == nil:
			done = append(done, evs[i])
			continue
		case errors.Is(err, acquire.ErrStateExists) && len(srcs) == 1:
			errs[i] = usageError{err}
		case errors.Is(err, context.Canceled):
			errs[i] = fmt.Errorf("%w; progress is saved: rerun the same command with --resume to continue", err)
		}
	}
	if len(done) > 0 {
		var v any = done
		if len(srcs) == 1 {
			v = done[0]
		}
		if err := g.Print(v, func(w io.Writer) error {
			for i, ev := range done {
				if i > 0 {
					fmt.Fprintln(w)
				}
				if err := printEvidence(w, ev); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if len(srcs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

func printEvidence(w io.Writer, ev *acquire.Evidence) error {
	p := func(k, v string) { fmt.Fprintf(w, "%-15s %s\n", k, v) }
	p("source", ev.Source.ID())
	p("key", ev.Image.Key)
	p("uri", ev.Image.URI)
	p("version", ev.Image.VersionID)
	p("size", fmt.Sprint(ev.Size))
	p("blocks", fmt.Sprintf("%d (%d written)", ev.Blocks, ev.WrittenBlocks))
	names := make([]string, 0, len(ev.Hashes))
	for n := range ev.Hashes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p(n, ev.Hashes[n])
	}
	p("merkle-root", ev.MerkleRoot)
	if ev.Compression != "" {
		p("compression", ev.Compression)
		p("stored-size", fmt.Sprint(ev.StoredSize))
	}
	p("stored-sha256", ev.Image.SHA256)
	p("block-map", ev.BlockMap.Key)
	p("retention", ev.Image.RetentionMode+" until "+ev.Image.RetainUntil.Format(time.RFC3339))
	took := ev.Finished.Sub(ev.Started)
	p("took", fmt.Sprintf("%s (%.1f MB/s)", took.Round(time.Millisecond), float64(ev.Size)/1e6/max(took.Seconds(), 1e-9)))
	if ev.Resumed > 0 {
		p("resumed", fmt.Sprint(ev.Resumed))
	}
	return nil
}

// progressGroup reports the progress of the sources acquired by one
// command: a bar each on a terminal, periodic log events otherwise, nothing
// with --no-progress.
type progressGroup struct {
	g   *globalOptions
	log *zerolog.Logger
	p   *mpb.Progress
}

func newProgressGroup(ctx context.Context, g *globalOptions) *progressGroup {
	pg := &progressGroup{g: g, log: zerolog.Ctx(ctx)}
	if !g.NoProgress && g.ShowProgress() {
		pg.p = mpb.NewWithContext(ctx, mpb.WithOutput(g.Stderr), mpb.WithWidth(40))
	}
	return pg
}

func (pg *progressGroup) add(name string, total int64) (acquire.Progress, func(ok bool)) {
	switch {
	case pg.g.NoProgress:
		return nil, func(bool) {}
	case pg.p != nil:
		bar := pg.p.AddBar(total,
			mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR), decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace)),
			mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace), decor.Name(" ETA "), decor.AverageETA(decor.ET_STYLE_GO)),
		)
		return barProgress{bar}, func(ok bool) {
			if !ok {
				bar.Abort(false)
			}
		}
	}
	l := pg.log.With().Str("source", name).Logger()
	return &logProgress{log: &l, every: 5 * time.Second, start: time.Now()}, func(bool) {}
}

func (pg *progressGroup) wait() {
	if pg.p != nil {
		pg.p.Wait()
	}
}

type barProgress struct{ bar *mpb.Bar }

func (b barProgress) Update(done, total int64) { b.bar.SetCurrent(done) }

// logProgress logs a progress event every so often (JSON log mode and
// non-terminals).
type logProgress struct {
	log   *zerolog.Logger
	every time.Duration
	start time.Time

	mu   sync.Mutex
	last time.Time
}

func (l *logProgress) Update(done, total int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.last) < l.every && done != total {
		return
	}
	l.last = now
	el := now.Sub(l.start).Seconds()
	ev := l.log.Info().Int64("done_bytes", done).Int64("total_bytes", total)
	if total > 0 {
		ev = ev.Float64("percent", float64(done*1000/total)/10)
	}
	if el > 0 {
		rate := float64(done) / el
		ev = ev.Int64("bytes_per_second", int64(rate))
		if rate > 0 {
			ev = ev.Int64("eta_seconds", int64(float64(total-done)/rate))
		}
	}
	ev.Msg("acquire progress")
}

// acquisitionLedger records acquisitions in the case's ledger.
type acquisitionLedger struct {
	ledger *custody.Ledger
	actor  custody.Actor
}

// openAcquisitionLedger opens the case's ledger, opening the case first when
// this acquisition is its first action.
func openAcquisitionLedger(ctx context.Context, env *ledgerEnv, o *acquireOptions, srcs []acquire.Source) (*acquisitionLedger, error) {
	l, err := custody.Open(ctx, env.store, o.Case, env.signer, custody.Options{})
	if err != nil {
		return nil, explainLedgerError(o.Case, err)
	}
	if l.Size() == 0 {
		tool, _ := thisTool(ctx, "record")
		ids := make([]string, len(srcs))
		for i, s := range srcs {
			ids[i] = s.Info().ID()
		}
		_, err := l.Append(ctx, custody.Entry{Actor: env.actor, Details: custody.CaseOpened{
			Title:      "acquisition of " + strings.Join(ids, ", "),
			Trigger:    "manual",
			Tool:       &tool,
			Attributes: map[string]string{"vault": env.store.URI(), "hashes": o.Hash},
		}})
		if err != nil {
			return nil, explainLedgerError(o.Case, err)
		}
	}
	return &acquisitionLedger{ledger: l, actor: env.actor}, nil
}

// record appends the acquisition of one source: evidence-stored when it
// succeeded, a failed action when it did not.
func (a *acquisitionLedger) record(ctx context.Context, info acquire.SourceInfo, ev *acquire.Evidence, runErr error) error {
	e := custody.Entry{Actor: a.actor}
	for _, r := range []string{info.SnapshotARN, info.VolumeARN, info.InstanceARN} {
		if r != "" {
			e.Resources = append(e.Resources, r)
		}
	}
	if runErr != nil {
		e.Outcome, e.Error = custody.Failed, runErr.Error()
		e.Details = custody.AWSAction{Action: "acquire." + info.Kind, Account: info.Account, Region: info.Region,
			Details: map[string]string{"source": info.ID()}}
	} else {
		e.Resources = append(e.Resources, ev.Image.URI)
		e.Details = *respond.EvidenceStored(ev)
	}
	if _, err := a.ledger.Append(ctx, e); err != nil {
		return explainLedgerError(a.ledger.Case(), err)
	}
	return nil
}
