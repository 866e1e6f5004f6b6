package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/internal/awsconf"
	"github.com/impound-ir/impound/vault"
)

// signingKeyEnv and vaultEnv name the environment variables --signing-key
// and --vault default to.
const (
	signingKeyEnv = "IMPOUND_SIGNING_KEY"
	vaultEnv      = "IMPOUND_VAULT"
)

func newLedgerCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Create signing keys, write to, show, verify and export a case's custody ledger",
		Long: `The custody ledger records every action taken on a case, in order, signed,
hash-chained and logged in a Merkle tree. Anyone holding it (or an exported
bundle) can check that nothing was added, removed, reordered or altered.
See docs/ledger.md.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newLedgerKeygenCommand(g), newLedgerOpenCommand(g), newLedgerNoteCommand(g),
		newLedgerShowCommand(g), newLedgerVerifyCommand(g), newLedgerExportCommand(g), newLedgerProveCommand(g))
	return cmd
}

// caseOptions name a case's ledger in a vault.
type caseOptions struct {
	Case  string
	Vault string
}

func (o *caseOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Case, "case", "", "case ID")
	f.StringVar(&o.Vault, "vault", os.Getenv(vaultEnv), "vault URI: s3://bucket[/prefix], file:///path or a directory (default $"+vaultEnv+")")
}

// writeOptions are what writing to a ledger needs beyond the case.
type writeOptions struct {
	caseOptions
	SigningKey string
	Operator   string
	// vaultRole, when its ARN is set, is the role the vault and a KMS
	// signing key are reached through: the forensics account's, where both
	// live (set from --forensics-role-arn by the commands that take it).
	vaultRole awsconf.Role
}

func (o *writeOptions) AddFlags(f *pflag.FlagSet) {
	o.caseOptions.AddFlags(f)
	f.StringVar(&o.SigningKey, "signing-key", "", "the case's signing key: file:PATH or awskms:///KEY-ARN (default $"+signingKeyEnv+")")
	f.StringVar(&o.Operator, "operator", "", "your name, as recorded in the ledger (default $IMPOUND_OPERATOR or $USER)")
}

// ledgerEnv is what a ledger command works with, AWS only when needed.
type ledgerEnv struct {
	store  vault.Store
	cfg    *aws.Config // nil when no AWS is involved
	signer custody.Signer
	actor  custody.Actor
}

// openLedgerVault opens the vault, loading the AWS configuration when the vault
// is in S3 (or always, with needAWS).
func openLedgerVault(ctx context.Context, g *globalOptions, uri string, needAWS bool) (vault.Store, *aws.Config, error) {
	return (&writeOptions{caseOptions: caseOptions{Vault: uri}}).openVault(ctx, g, needAWS)
}

// openVault opens o's vault, through o.vaultRole when it is set.
func (o *writeOptions) openVault(ctx context.Context, g *globalOptions, needAWS bool) (vault.Store, *aws.Config, error) {
	var cfg *aws.Config
	if needAWS || o.vaultRole.ARN != "" || strings.HasPrefix(o.Vault, "s3://") {
		c, err := g.AWSConfig(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("load AWS configuration: %w", err)
		}
		if o.vaultRole.ARN != "" {
			c = awsconf.AssumeRole(c, o.vaultRole)
		}
		cfg = &c
	}
	opts := vault.Options{}
	if cfg != nil {
		opts.AWS, opts.PathStyle = *cfg, g.s3PathStyle()
	}
	st, err := vault.Open(ctx, o.Vault, opts)
	if err != nil {
		if o.vaultRole.ARN != "" {
			return nil, nil, fmt.Errorf("open vault %s through %s: %w", o.Vault, o.vaultRole.ARN, err)
		}
		return nil, nil, fmt.Errorf("open vault %s: %w", o.Vault, err)
	}
	return st, cfg, nil
}

// openForWriting opens the vault and the signing key and resolves the actor.
func openForWriting(ctx context.Context, g *globalOptions, o *writeOptions) (*ledgerEnv, error) {
	ref := o.SigningKey
	if ref == "" {
		ref = os.Getenv(signingKeyEnv)
	}
	if ref == "" {
		return nil, usagef("no signing key: pass --signing-key file:PATH or awskms:///KEY-ARN, or set %s (create a key with `impound ledger keygen --out PATH`)", signingKeyEnv)
	}
	isKMS := strings.HasPrefix(ref, custody.KMSKeyPrefix)
	st, cfg, err := o.openVault(ctx, g, isKMS)
	if err != nil {
		return nil, err
	}
	var kc custody.KMSClient
	if isKMS {
		endpoint, _, err := custody.ParseKMSRef(ref)
		if err != nil {
			return nil, usageError{err}
		}
		kc = kms.NewFromConfig(*cfg, func(ko *kms.Options) {
			if endpoint != "" {
				ko.BaseEndpoint = aws.String("https://" + endpoint)
			}
		})
	}
	signer, err := custody.LoadSigner(ctx, ref, kc)
	if err != nil {
		return nil, err
	}
	return &ledgerEnv{store: st, cfg: cfg, signer: signer, actor: resolveActor(ctx, cfg, operatorName(o.Operator))}, nil
}

// openCaseLedger opens the case's ledger for writing with the signing key
// and actor of o: what every command that writes to a ledger uses (give it
// writeOptions' flags). A case opened with another key fails with
// custody.ErrWrongKey, explained.
func openCaseLedger(ctx context.Context, g *globalOptions, o *writeOptions) (*custody.Ledger, custody.Actor, error) {
	env, err := openForWriting(ctx, g, o)
	if err != nil {
		return nil, custody.Actor{}, err
	}
	l, err := custody.Open(ctx, env.store, o.Case, env.signer, custody.Options{})
	if err != nil {
		return nil, custody.Actor{}, explainLedgerError(o.Case, err)
	}
	return l, env.actor, nil
}

// resolveActor is who is acting: the operator's name and, when AWS is
// configured, the STS caller ARN of the credentials in use. Without AWS, or
// when STS cannot be reached, the ARN is left out (and a warning logged):
// local-only work records the operator alone.
func resolveActor(ctx context.Context, cfg *aws.Config, operator string) custody.Actor {
	a := custody.Actor{Operator: operator}
	if cfg == nil {
		return a
	}
	ctx2, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := sts.NewFromConfig(*cfg).GetCallerIdentity(ctx2, &sts.GetCallerIdentityInput{})
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot identify the AWS caller; the ledger records the operator name only")
		return a
	}
	a.CallerARN = aws.ToString(out.Arn)
	return a
}

func requireCase(cmd *cobra.Command, o *caseOptions) error {
	if err := requireFlags(cmd, "case", "vault"); err != nil {
		return err
	}
	if err := custody.CheckCaseID(o.Case); err != nil {
		return usageError{err}
	}
	return nil
}

// ---- keygen

type ledgerKeygenOptions struct {
	Out  string
	Name string
}

func (o *ledgerKeygenOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Out, "out", "", "where to write the private key (mode 0600); the public verifier key goes to PATH.pub")
	f.StringVar(&o.Name, "name", "", "key name in signatures, e.g. ir.example.com/alice (default impound/<user>)")
}

func newLedgerKeygenCommand(g *globalOptions) *cobra.Command {
	var o ledgerKeygenOptions
	cmd := &cobra.Command{
		Use:   "keygen --out PATH",
		Short: "Create an Ed25519 signing key for case ledgers",
		Long: `Create an Ed25519 signing key in golang.org/x/mod/sumdb/note format. The
private key is written to PATH (mode 0600, never overwriting), the verifier
key to PATH.pub. Give PATH.pub to whoever must verify your ledgers; use
--signing-key file:PATH when writing.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "out"); err != nil {
				return err
			}
			return runLedgerKeygen(cmd.Context(), g, &o)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runLedgerKeygen(ctx context.Context, g *globalOptions, o *ledgerKeygenOptions) error {
	name := o.Name
	if name == "" {
		name = "impound/" + strings.Map(func(r rune) rune {
			if r == ' ' || r == '+' {
				return '_'
			}
			return r
		}, operatorName(""))
	}
	vkey, err := custody.WriteKeyFiles(o.Out, name)
	if err != nil {
		return err
	}
	zerolog.Ctx(ctx).Info().Str("path", o.Out).Msg("signing key written")
	res := struct {
		PrivateKey  string `json:"private_key"`
		PublicKey   string `json:"public_key"`
		VerifierKey string `json:"verifier_key"`
	}{o.Out, o.Out + ".pub", vkey}
	return g.Print(res, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "private key  %s (keep it secret)\npublic key   %s\nverifier key %s\n", res.PrivateKey, res.PublicKey, vkey)
		return err
	})
}

// ---- open

type ledgerOpenOptions struct {
	writeOptions
	Title   string
	Trigger string
}

func (o *ledgerOpenOptions) AddFlags(f *pflag.FlagSet) {
	o.writeOptions.AddFlags(f)
	f.StringVar(&o.Title, "title", "", "what the case is about")
	f.StringVar(&o.Trigger, "trigger", "", "what opened it: a GuardDuty finding ID, a ticket")
}

func newLedgerOpenCommand(g *globalOptions) *cobra.Command {
	var o ledgerOpenOptions
	cmd := &cobra.Command{
		Use:   "open --case ID --vault URI --signing-key KEY",
		Short: "Open a case: write its first ledger entry, naming the key that signs it",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireCase(cmd, &o.caseOptions); err != nil {
				return err
			}
			return runLedgerOpen(cmd.Context(), g, &o)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runLedgerOpen(ctx context.Context, g *globalOptions, o *ledgerOpenOptions) error {
	l, actor, err := openCaseLedger(ctx, g, &o.writeOptions)
	if err != nil {
		return err
	}
	rec, err := l.Append(ctx, custody.Entry{Actor: actor, Details: custody.CaseOpened{Title: o.Title, Trigger: o.Trigger}})
	if errors.Is(err, custody.ErrCaseExists) {
		return fmt.Errorf("case %s is already open in %s; add to it with `impound ledger note`", o.Case, o.Vault)
	}
	if err != nil {
		return err
	}
	return printRecorded(g, o.Case, rec, "case opened")
}

func printRecorded(g *globalOptions, caseID string, rec custody.Recorded, what string) error {
	res := struct {
		Case string    `json:"case"`
		Seq  int64     `json:"seq"`
		Hash string    `json:"hash"`
		Time time.Time `json:"time"`
	}{caseID, rec.Seq, base64.StdEncoding.EncodeToString(rec.Hash[:]), rec.Time}
	return g.Print(res, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "%s: case %s entry %d %s\n", what, caseID, rec.Seq, res.Hash)
		return err
	})
}

// ---- note

func newLedgerNoteCommand(g *globalOptions) *cobra.Command {
	var o writeOptions
	var from string
	cmd := &cobra.Command{
		Use:   "note --case ID --vault URI (TEXT | --from FILE)",
		Short: "Record an investigator's note in a case's ledger",
		Long: `Record an investigator's note in a case's ledger: TEXT, or with --from one
note per non-empty line of FILE ("-" for standard input), recorded in order
as one batch under one signed checkpoint (a timeline kept during the
response, observations from a ticket).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if from != "" {
				return exactArgs(0)(cmd, args)
			}
			return exactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireCase(cmd, &o.caseOptions); err != nil {
				return err
			}
			if from != "" {
				notes, err := readNotes(cmd.InOrStdin(), from)
				if err != nil {
					return err
				}
				return runLedgerNotes(cmd.Context(), g, &o, notes)
			}
			if strings.TrimSpace(args[0]) == "" {
				return usagef("the note is empty")
			}
			return runLedgerNotes(cmd.Context(), g, &o, []string{args[0]})
		},
	}
	o.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&from, "from", "", `record one note per non-empty line of this file ("-": standard input)`)
	return cmd
}

// readNotes reads one note per non-empty line of path ("-": stdin).
func readNotes(stdin io.Reader, path string) ([]string, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, usagef("--from: %v", err)
		}
		defer f.Close()
		r = f
	}
	var notes []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), custody.MaxDetailsSize)
	for sc.Scan() {
		if t := strings.TrimRight(sc.Text(), "\r"); strings.TrimSpace(t) != "" {
			notes = append(notes, t)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, usagef("--from %s: %v (notes are one per line, each under %d KiB)", path, err, custody.MaxDetailsSize>>10)
	}
	if len(notes) == 0 {
		return nil, usagef("--from %s holds no note", path)
	}
	return notes, nil
}

// noteBatch is how many notes one AppendAll records: one checkpoint each.
const noteBatch = 1000

func runLedgerNotes(ctx context.Context, g *globalOptions, o *writeOptions, notes []string) error {
	l, actor, err := openCaseLedger(ctx, g, o)
	if err != nil {
		return err
	}
	if len(notes) == 1 {
		rec, err := l.Append(ctx, custody.Entry{Actor: actor, Details: custody.Note{Text: notes[0]}})
		if err != nil {
			return explainLedgerError(o.Case, err)
		}
		return printRecorded(g, o.Case, rec, "note recorded")
	}
	var recs []custody.Recorded
	for len(notes) > 0 {
		n := min(len(notes), noteBatch)
		es := make([]custody.Entry, n)
		for i, t := range notes[:n] {
			es[i] = custody.Entry{Actor: actor, Details: custody.Note{Text: t}}
		}
		got, err := l.AppendAll(ctx, es)
		recs = append(recs, got...)
		if err != nil {
			// What was recorded is printed: those notes must not be
			// recorded again.
			_ = printRecordedAll(g, o.Case, recs)
			return fmt.Errorf("%d of %d notes recorded: %w", len(recs), len(recs)+len(notes)-len(got), explainLedgerError(o.Case, err))
		}
		notes = notes[n:]
	}
	return printRecordedAll(g, o.Case, recs)
}

// printRecordedAll reports a batch of entries written.
func printRecordedAll(g *globalOptions, caseID string, recs []custody.Recorded) error {
	type rec struct {
		Seq  int64     `json:"seq"`
		Hash string    `json:"hash"`
		Time time.Time `json:"time"`
	}
	res := struct {
		Case    string `json:"case"`
		Entries []rec  `json:"entries"`
	}{Case: caseID, Entries: []rec{}}
	for _, r := range recs {
		res.Entries = append(res.Entries, rec{r.Seq, base64.StdEncoding.EncodeToString(r.Hash[:]), r.Time})
	}
	return g.Print(res, func(w io.Writer) error {
		if len(recs) == 0 {
			_, err := fmt.Fprintf(w, "no note recorded: case %s\n", caseID)
			return err
		}
		_, err := fmt.Fprintf(w, "%d notes recorded: case %s entries %d to %d\n", len(recs), caseID, recs[0].Seq, recs[len(recs)-1].Seq)
		return err
	})
}

func explainLedgerError(caseID string, err error) error {
	switch {
	case errors.Is(err, custody.ErrNoCase):
		return fmt.Errorf("%w; start it with `impound ledger open --case %s`", err, caseID)
	case errors.Is(err, custody.ErrWrongKey):
		return fmt.Errorf("%w: write with the key the case was opened with", err)
	}
	return err
}

// ---- show

func newLedgerShowCommand(g *globalOptions) *cobra.Command {
	var o caseOptions
	cmd := &cobra.Command{
		Use:   "show --case ID --vault URI",
		Short: "Verify a case's ledger and print its entries",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireCase(cmd, &o); err != nil {
				return err
			}
			return runLedgerShow(cmd.Context(), g, &o)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// entryView is an entry as show prints it in JSON.
type entryView struct {
	Seq       int64           `json:"seq"`
	Time      string          `json:"time"`
	Kind      custody.Kind    `json:"kind"`
	Operator  string          `json:"operator"`
	CallerARN string          `json:"caller_arn,omitempty"`
	Resources []string        `json:"resources,omitempty"`
	Outcome   custody.Outcome `json:"outcome"`
	Error     string          `json:"error,omitempty"`
	Details   json.RawMessage `json:"details"`
	Prev      string          `json:"prev,omitempty"`
	Hash      string          `json:"hash"`
}

func runLedgerShow(ctx context.Context, g *globalOptions, o *caseOptions) error {
	st, _, err := openLedgerVault(ctx, g, o.Vault, false)
	if err != nil {
		return err
	}
	v, err := custody.Verify(ctx, st, o.Case, custody.VerifyOptions{AllowUnsignedTail: true})
	if err != nil {
		return fmt.Errorf("%w (nothing shown: run `impound ledger verify` for details)", err)
	}
	es, err := v.Entries()
	if err != nil {
		return err
	}
	views := make([]entryView, len(es))
	for i, e := range es {
		h := custody.EntryHash(v.Raw(int64(i)))
		d, err := detailsJSON(e.Details)
		if err != nil {
			return err
		}
		views[i] = entryView{Seq: e.Seq, Time: e.Time.Format(custody.TimeLayout), Kind: e.Kind(), Operator: e.Actor.Operator,
			CallerARN: e.Actor.CallerARN, Resources: e.Resources, Outcome: e.Outcome, Error: e.Error, Details: d,
			Hash: base64.StdEncoding.EncodeToString(h[:])}
		if e.Seq > 0 {
			views[i].Prev = base64.StdEncoding.EncodeToString(e.Prev[:])
		}
	}
	res := struct {
		Case    string      `json:"case"`
		Size    int64       `json:"size"`
		Signed  int64       `json:"signed"`
		Entries []entryView `json:"entries"`
	}{o.Case, v.Size, v.Signed, views}
	return g.Print(res, func(w io.Writer) error {
		fmt.Fprintf(w, "case %s: %d entries, %d signed\n", o.Case, v.Size, v.Signed)
		for _, e := range views {
			fmt.Fprintf(w, "%5d  %s  %-18s %-9s %s", e.Seq, e.Time, e.Kind, e.Outcome, e.Operator)
			if len(e.Resources) > 0 {
				fmt.Fprintf(w, "  %s", strings.Join(e.Resources, ","))
			}
			fmt.Fprintf(w, "\n       %s\n", e.Details)
			if e.Error != "" {
				fmt.Fprintf(w, "       error: %q\n", e.Error)
			}
		}
		return nil
	})
}

func detailsJSON(d custody.Details) (json.RawMessage, error) {
	return custody.EncodeDetails(d)
}

// ---- verify

type ledgerVerifyOptions struct {
	caseOptions
	Bundle            string
	Key               string
	Checkpoints       []string
	Evidence          bool
	AllowUnsignedTail bool
	SaveCheckpoint    string
}

func (o *ledgerVerifyOptions) AddFlags(f *pflag.FlagSet) {
	o.caseOptions.AddFlags(f)
	f.StringVar(&o.Bundle, "bundle", "", "verify an exported bundle offline instead of a vault")
	f.StringVar(&o.Key, "key", "", "the case's verifier key, obtained out of band: a .pub file, the key itself, or awskms:///KEY-ARN")
	f.StringArrayVar(&o.Checkpoints, "checkpoint", nil, "a signed checkpoint seen earlier (file); the ledger must contain it (repeatable)")
	f.BoolVar(&o.Evidence, "evidence", false, "also re-read every stored evidence object and compare it with its receipt")
	f.BoolVar(&o.AllowUnsignedTail, "allow-unsigned-tail", false, "accept entries after the latest checkpoint")
	f.StringVar(&o.SaveCheckpoint, "save-checkpoint", "", "after a successful check, write the latest signed checkpoint to this file (give it to --checkpoint later)")
}

func newLedgerVerifyCommand(g *globalOptions) *cobra.Command {
	var o ledgerVerifyOptions
	cmd := &cobra.Command{
		Use:   "verify (--case ID --vault URI | --bundle FILE) [--key PUB]",
		Short: "Check a case's ledger: encoding, chain, tree, signatures, and optionally the evidence",
		Long: `Check every entry's encoding and the hash chain, every stored checkpoint's
signature and root, the checkpoints given with --checkpoint (a shorter or
rewritten ledger fails), and with --evidence that each recorded evidence
object still exists with the recorded version, size and SHA-256.

Without --key, the key is the one the case's first entry names: that proves
the ledger is intact, not who wrote it. Pin the key you got out of band.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Bundle == "" {
				if err := requireCase(cmd, &o.caseOptions); err != nil {
					return err
				}
			} else if o.Vault != "" || o.Evidence {
				return usagef("--bundle is checked offline: it takes neither --vault nor --evidence")
			}
			return runLedgerVerify(cmd.Context(), g, &o)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runLedgerVerify(ctx context.Context, g *globalOptions, o *ledgerVerifyOptions) error {
	vo := custody.VerifyOptions{AllowUnsignedTail: o.AllowUnsignedTail}
	var err error
	if vo.Key, err = loadVerifierKey(ctx, g, o.Key); err != nil {
		return err
	}
	for _, p := range o.Checkpoints {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("read checkpoint: %w", err)
		}
		vo.Checkpoints = append(vo.Checkpoints, b)
	}
	var v *custody.Verified
	proofs := -1
	if o.Bundle != "" {
		f, err := os.Open(o.Bundle)
		if err != nil {
			return fmt.Errorf("open bundle: %w", err)
		}
		defer f.Close()
		res, err := custody.VerifyBundle(ctx, f, vo)
		if err != nil {
			return err
		}
		v, proofs = res.Verified, res.Proofs
	} else {
		st, _, err := openLedgerVault(ctx, g, o.Vault, false)
		if err != nil {
			return err
		}
		if o.Evidence {
			vo.CheckEvidence = func(ctx context.Context, r *vault.Receipt) error {
				if base := st.URI(); r.URI != strings.TrimSuffix(base, "/")+"/"+r.Key && r.URI != base+r.Key {
					return fmt.Errorf("evidence %s is not in vault %s; verify it with `impound vault verify` against its own vault", r.URI, st.URI())
				}
				return vault.Verify(ctx, st, r)
			}
		}
		if v, err = custody.Verify(ctx, st, o.Case, vo); err != nil {
			return err
		}
	}
	if o.SaveCheckpoint != "" {
		if err := os.WriteFile(o.SaveCheckpoint, v.Checkpoint, 0o644); err != nil {
			return fmt.Errorf("save checkpoint: %w", err)
		}
	}
	return printVerified(g, v, proofs, o.Evidence)
}

func printVerified(g *globalOptions, v *custody.Verified, proofs int, evidence bool) error {
	c, _ := custody.ParseCheckpoint(checkpointBody(v.Checkpoint))
	res := struct {
		Case            string `json:"case"`
		OK              bool   `json:"ok"`
		Size            int64  `json:"size"`
		Signed          int64  `json:"signed"`
		Root            string `json:"root"`
		Key             string `json:"key"`
		KeyFromLedger   bool   `json:"key_from_ledger"`
		Checkpoints     int    `json:"checkpoints"`
		Checkpoint      string `json:"checkpoint"`
		EvidenceChecked int    `json:"evidence_checked"`
		Proofs          int    `json:"proofs,omitempty"`
	}{v.Case, true, v.Size, v.Signed, base64.StdEncoding.EncodeToString(c.Root[:]), v.Key, v.KeyFromLedger,
		v.Checkpoints, string(v.Checkpoint), v.EvidenceChecked, max(proofs, 0)}
	return g.Print(res, func(w io.Writer) error {
		fmt.Fprintf(w, "ledger of case %s: OK\n", v.Case)
		fmt.Fprintf(w, "entries      %d (%d signed)\n", v.Size, v.Signed)
		fmt.Fprintf(w, "root         %s\n", res.Root)
		fmt.Fprintf(w, "checkpoints  %d checked\n", v.Checkpoints)
		src := "given with --key"
		if v.KeyFromLedger {
			src = "named by the ledger itself; pin it with --key to prove who signed"
		}
		fmt.Fprintf(w, "key          %s (%s)\n", v.Key, src)
		if evidence {
			fmt.Fprintf(w, "evidence     %d objects re-read and matched\n", v.EvidenceChecked)
		}
		if proofs >= 0 {
			fmt.Fprintf(w, "proofs       %d inclusion proofs checked\n", proofs)
		}
		_, err := fmt.Fprintf(w, "\nlatest checkpoint (keep a copy to detect later truncation):\n%s", v.Checkpoint)
		return err
	})
}

// checkpointBody is the text of a signed note, before its signatures.
func checkpointBody(msg []byte) []byte {
	if i := strings.LastIndex(string(msg), "\n\n"); i >= 0 {
		return msg[:i+1]
	}
	return nil
}

// loadVerifierKey reads --key: a file (file:PATH or a path), the verifier
// key itself, or awskms:///ARN (its public key from KMS).
func loadVerifierKey(ctx context.Context, g *globalOptions, ref string) (string, error) {
	switch {
	case ref == "":
		return "", nil
	case strings.HasPrefix(ref, custody.KMSKeyPrefix):
		cfg, err := g.AWSConfig(ctx)
		if err != nil {
			return "", fmt.Errorf("load AWS configuration: %w", err)
		}
		s, err := custody.LoadSigner(ctx, ref, kms.NewFromConfig(cfg))
		if err != nil {
			return "", err
		}
		return s.VerifierKey(), nil
	}
	path := strings.TrimPrefix(ref, custody.FileKeyPrefix)
	if b, err := os.ReadFile(path); err == nil {
		ref = strings.TrimSpace(string(b))
	} else if !strings.Contains(ref, "+") {
		return "", fmt.Errorf("--key %s: %w", ref, err)
	}
	if strings.HasPrefix(ref, "PRIVATE+KEY+") {
		return "", usagef("--key %s is a private signing key; give its public half (the .pub file), and keep the private key secret", path)
	}
	if _, err := custody.NewVerifier(ref); err != nil {
		return "", usagef("--key: %v (give the .pub file written by `impound ledger keygen`)", err)
	}
	return ref, nil
}

// ---- export

type ledgerExportOptions struct {
	caseOptions
	Out string
	Key string
}

func (o *ledgerExportOptions) AddFlags(f *pflag.FlagSet) {
	o.caseOptions.AddFlags(f)
	f.StringVar(&o.Out, "out", "", "bundle file to write (a tar archive; never overwritten)")
	f.StringVar(&o.Key, "key", "", "refuse to export unless the case is signed by this verifier key")
}

func newLedgerExportCommand(g *globalOptions) *cobra.Command {
	var o ledgerExportOptions
	cmd := &cobra.Command{
		Use:   "export --case ID --vault URI --out FILE",
		Short: "Verify a case's ledger and write a self-contained bundle for offline verification",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireCase(cmd, &o.caseOptions); err != nil {
				return err
			}
			if err := requireFlags(cmd, "out"); err != nil {
				return err
			}
			return runLedgerExport(cmd.Context(), g, &o)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runLedgerExport(ctx context.Context, g *globalOptions, o *ledgerExportOptions) error {
	key, err := loadVerifierKey(ctx, g, o.Key)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(o.Out); err == nil {
		return fmt.Errorf("%s already exists; choose another --out", o.Out)
	}
	st, _, err := openLedgerVault(ctx, g, o.Vault, false)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(o.Out), "."+filepath.Base(o.Out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	v, err := custody.Export(ctx, st, o.Case, tmp, custody.VerifyOptions{Key: key})
	if err == nil {
		err = tmp.Chmod(0o444)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("export: %w (no bundle written)", err)
	}
	// Link, not rename: never replace a file that appeared meanwhile.
	if err := os.Link(tmp.Name(), o.Out); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	res := struct {
		Case   string `json:"case"`
		Bundle string `json:"bundle"`
		Size   int64  `json:"size"`
		Signed int64  `json:"signed"`
	}{o.Case, o.Out, v.Size, v.Signed}
	return g.Print(res, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "exported case %s: %d entries (%d signed) to %s\nverify it offline with: impound ledger verify --bundle %s --key KEY.pub\n", o.Case, v.Size, v.Signed, o.Out, o.Out)
		return err
	})
}

// ---- prove

type ledgerProveOptions struct {
	caseOptions
	Seq int64
	Key string
}

func (o *ledgerProveOptions) AddFlags(f *pflag.FlagSet) {
	o.caseOptions.AddFlags(f)
	f.Int64Var(&o.Seq, "seq", -1, "sequence number of the entry to prove")
	f.StringVar(&o.Key, "key", "", "refuse unless the case is signed by this verifier key")
}

func newLedgerProveCommand(g *globalOptions) *cobra.Command {
	var o ledgerProveOptions
	cmd := &cobra.Command{
		Use:   "prove --case ID --vault URI --seq N",
		Short: "Print a C2SP tlog-proof that one entry is in the ledger, checkable offline",
		Long: `Verify the ledger, then print an inclusion proof (C2SP tlog-proof) of entry N
against the latest signed checkpoint. The proof carries the entry itself and
is checked with the case's verifier key alone; docs/ledger.md shows how.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireCase(cmd, &o.caseOptions); err != nil {
				return err
			}
			if o.Seq < 0 {
				return usagef("%s needs --seq", cmd.CommandPath())
			}
			return runLedgerProve(cmd.Context(), g, &o)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func runLedgerProve(ctx context.Context, g *globalOptions, o *ledgerProveOptions) error {
	key, err := loadVerifierKey(ctx, g, o.Key)
	if err != nil {
		return err
	}
	st, _, err := openLedgerVault(ctx, g, o.Vault, false)
	if err != nil {
		return err
	}
	v, err := custody.Verify(ctx, st, o.Case, custody.VerifyOptions{Key: key})
	if err != nil {
		return err
	}
	p, err := v.ProveInclusion(o.Seq)
	if err != nil {
		return err
	}
	res := struct {
		Case  string `json:"case"`
		Seq   int64  `json:"seq"`
		Proof string `json:"proof"`
	}{o.Case, o.Seq, string(p)}
	return g.Print(res, func(w io.Writer) error {
		_, err := w.Write(p)
		return err
	})
}
