package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/internal/awsconf"
	"github.com/impound-ir/impound/report"
)

type reportOptions struct {
	writeOptions
	Bundle   string
	Key      string
	Formats  []string
	Out      string
	NoVerify bool
	// ForensicsRoleARN reaches the vault and a KMS signing key, which live
	// in the forensics account.
	ForensicsRoleARN string
	ExternalID       string
}

func (o *reportOptions) AddFlags(f *pflag.FlagSet) {
	o.writeOptions.AddFlags(f)
	f.StringVar(&o.Bundle, "bundle", "", "render from an exported ledger bundle instead of the vault's ledger (with --vault, the evidence is still re-read from the vault)")
	f.StringVar(&o.Key, "key", "", "the case's verifier key, obtained out of band: a .pub file, the key itself, or awskms:///KEY-ARN")
	f.StringSliceVar(&o.Formats, "format", []string{report.FormatHTML, report.FormatMarkdown, report.FormatJSON}, "formats to render: html, md, json (comma-separated)")
	f.StringVar(&o.Out, "out", ".", "directory to write the reports to (files are never overwritten)")
	f.BoolVar(&o.NoVerify, "no-verify-evidence", false, "do not re-read every evidence object from the vault while rendering")
	f.StringVar(&o.ForensicsRoleARN, "forensics-role-arn", "", "role to assume in the forensics account, where the vault and a KMS signing key live (default: your own credentials)")
	f.StringVar(&o.ExternalID, "external-id", "", "external ID the role requires, if any")
}

func newReportCommand(g *globalOptions) *cobra.Command {
	var o reportOptions
	cmd := &cobra.Command{
		Use:   "report --case ID (--vault URI | --bundle FILE) [--format html,md,json] [--out DIR]",
		Short: "Render a case's final report (HTML, Markdown, JSON) from its custody ledger",
		Long: `Verify a case's custody ledger and render its report: case summary, timeline,
isolation steps, evidence with every hash, failed and skipped steps, methods,
and the commands to check it all independently. See docs/report.md.

The report is rendered from the ledger alone (and the vault, to re-read the
evidence), so anyone with an exported bundle can regenerate it byte for byte
with --bundle. With --signing-key (or $` + signingKeyEnv + `) each rendering is
also stored write-once in the vault under the case and recorded in the
ledger as a report-generated entry.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Bundle == "" {
				if err := requireCase(cmd, &o.caseOptions); err != nil {
					return err
				}
			} else if o.SigningKey != "" {
				return usagef("--bundle renders offline: it cannot store the report; drop --signing-key, or render from --vault")
			}
			for _, f := range o.Formats {
				if !slices.Contains(report.Formats, f) {
					return usagef("--format %q: want html, md or json", f)
				}
			}
			return runReport(cmd.Context(), g, &o)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// reportResult is what report prints.
type reportResult struct {
	Case      string            `json:"case"`
	Entries   int64             `json:"entries"`
	Signed    int64             `json:"signed"`
	Problems  int               `json:"problems"`
	Files     []string          `json:"files"`
	Published []publishedReport `json:"published,omitempty"`
}

type publishedReport struct {
	Format    string `json:"format"`
	URI       string `json:"uri"`
	VersionID string `json:"version_id"`
	SHA256    string `json:"sha256"`
	Seq       int64  `json:"seq"`
}

func runReport(ctx context.Context, g *globalOptions, o *reportOptions) error {
	o.vaultRole = awsconf.Role{ARN: o.ForensicsRoleARN, ExternalID: o.ExternalID, Operator: operatorName(o.Operator), CaseID: o.Case}
	key, err := loadVerifierKey(ctx, g, o.Key)
	if err != nil {
		return err
	}
	var src *report.Source
	if o.Bundle != "" {
		f, err := os.Open(o.Bundle)
		if err != nil {
			return fmt.Errorf("open bundle: %w", err)
		}
		defer f.Close()
		if src, err = report.FromBundle(ctx, f, key, o.Vault); err != nil {
			return fmt.Errorf("%w (no report written: run `impound ledger verify --bundle %s` for details)", err, o.Bundle)
		}
		if o.Case != "" && src.Entries[0].Case != o.Case {
			return fmt.Errorf("bundle %s holds case %s, not %s", o.Bundle, src.Entries[0].Case, o.Case)
		}
		if o.Vault != "" && !o.NoVerify {
			// The vault re-reads the evidence: the report is then the same
			// as one rendered from the vault.
			if src.Vault, _, err = o.openVault(ctx, g, false); err != nil {
				return err
			}
		}
	} else {
		st, _, err := o.openVault(ctx, g, false)
		if err != nil {
			return err
		}
		if src, err = report.FromVault(ctx, st, o.Case, key); err != nil {
			return fmt.Errorf("%w (no report written: run `impound ledger verify --case %s --vault %s` for details)", explainLedgerError(o.Case, err), o.Case, o.Vault)
		}
	}
	opts := report.Options{VerifyLive: !o.NoVerify && src.Vault != nil}
	if tool, ok := thisTool(ctx, "report"); ok {
		opts.Generator = &tool
	}
	if o.Key != "" && !strings.Contains(o.Key, "+") {
		opts.KeyFile = filepath.Base(strings.TrimPrefix(o.Key, custody.FileKeyPrefix))
	}
	rep, err := report.Build(ctx, src, opts)
	if err != nil {
		return err
	}
	files, err := writeReports(rep, o.Formats, o.Out)
	if err != nil {
		return err
	}
	res := reportResult{Case: rep.Case.ID, Entries: rep.Ledger.Size, Signed: rep.Ledger.Signed, Problems: len(rep.Problems), Files: files}

	if o.Bundle == "" && (o.SigningKey != "" || os.Getenv(signingKeyEnv) != "") {
		l, actor, err := openCaseLedger(ctx, g, &o.writeOptions)
		if err != nil {
			return err
		}
		pub, err := report.Publish(ctx, l, src.Vault, rep, o.Formats, report.PublishOptions{Actor: actor})
		for _, p := range pub {
			res.Published = append(res.Published, publishedReport{Format: p.Format, URI: p.Receipt.URI, VersionID: p.Receipt.VersionID, SHA256: p.Receipt.SHA256, Seq: p.Recorded.Seq})
		}
		if err != nil {
			return explainLedgerError(o.Case, err)
		}
	}
	return g.Print(res, func(w io.Writer) error {
		fmt.Fprintf(w, "report of case %s: %d entries (%d signed), %d problem(s)\n", res.Case, res.Entries, res.Signed, res.Problems)
		for _, f := range res.Files {
			fmt.Fprintf(w, "wrote %s\n", f)
		}
		for _, p := range res.Published {
			fmt.Fprintf(w, "stored %s report %s version %s sha256 %s, recorded as entry %d\n", p.Format, p.URI, p.VersionID, p.SHA256, p.Seq)
		}
		return nil
	})
}

// writeReports writes each format to dir as report-<case>.<ext>, refusing
// to overwrite anything and leaving no partial file behind.
func writeReports(rep *report.Report, formats []string, dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create --out directory: %w", err)
	}
	paths := make([]string, len(formats))
	for i, f := range formats {
		paths[i] = filepath.Join(dir, "report-"+rep.Case.ID+"."+f)
		if _, err := os.Lstat(paths[i]); err == nil {
			return nil, fmt.Errorf("%s already exists; choose another --out (nothing written)", paths[i])
		}
	}
	var written []string
	for i, f := range formats {
		if err := writeOnceFile(paths[i], func(w io.Writer) error { return rep.Render(w, f) }); err != nil {
			for _, p := range written {
				os.Remove(p)
			}
			return nil, err
		}
		written = append(written, paths[i])
	}
	return written, nil
}

// writeOnceFile writes path through a temporary file linked into place.
func writeOnceFile(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	err = write(tmp)
	if err == nil {
		err = tmp.Chmod(0o444)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists; choose another --out", path)
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
