package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/impound-ir/impound/internal/drill"
	"github.com/impound-ir/impound/respond"
)

type drillOptions struct {
	Out      string
	Vault    string
	Case     string
	KeepOpen bool
	NoFS     bool
}

func (o *drillOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Out, "out", "impound-drill", "directory for the drill's key, vault and report")
	f.StringVar(&o.Vault, "vault", "", "vault URI (default: a local vault in <out>/vault)")
	f.StringVar(&o.Case, "case", "", "case ID (default: a new one)")
	f.BoolVar(&o.KeepOpen, "keep-open", false, "leave the case open")
	f.BoolVar(&o.NoFS, "no-filesystem", false, "do not put an ext4 filesystem on the root volume")
}

func newDrillCommand(g *globalOptions) *cobra.Command {
	o := &drillOptions{}
	cmd := &cobra.Command{
		Use:   "drill [--out DIR] [--vault URI]",
		Short: "Rehearse a whole response against a simulated AWS account",
		Long: `Start a simulated member account and forensics account in this process, seed a
compromised instance (two volumes, one encrypted with aws/ebs, one holding a
real ext4 filesystem when mkfs.ext4 is available) and a GuardDuty finding,
then run a whole response against it into a vault, exactly as
'impound respond' runs against AWS. Prints where the evidence and the ledger
are and how to verify them.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			do := drill.NewOptions()
			do.Dir, do.Respond.CaseID, do.Respond.KeepOpen, do.Filesystem = o.Out, o.Case, o.KeepOpen, !o.NoFS
			if op := operatorName(""); op != "unknown" {
				do.Operator = op
			}
			do.Respond.Tool, _ = thisTool(ctx, "record")
			do.Respond.StateDir = filepath.Join(o.Out, "state")
			if o.Vault != "" {
				st, _, err := openLedgerVault(ctx, g, o.Vault, false)
				if err != nil {
					return err
				}
				do.Store = st
			}
			res, err := drill.Run(ctx, do)
			if res != nil && res.Summary != nil {
				if perr := g.Print(res, func(w io.Writer) error { return printDrill(w, res) }); perr != nil {
					return perr
				}
			}
			if errors.Is(err, respond.ErrIncomplete) {
				return fmt.Errorf("%w: %w", errPartial, err)
			}
			return err
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func printDrill(w io.Writer, r *drill.Result) error {
	if err := printSummary(w, r.Summary); err != nil {
		return err
	}
	vaultArg := r.VaultURI
	fmt.Fprintf(w, `
The drill's instance %s was acquired as case %s.
Vault:        %s
Signing key:  %s (public: %s.pub)

Verify the ledger and re-read every evidence object:
  impound ledger verify --case %s --vault %s --key %s.pub --evidence
Show the ledger:
  impound ledger show --case %s --vault %s
`, r.InstanceID, r.CaseID, r.VaultURI, r.KeyFile, r.KeyFile, r.CaseID, vaultArg, r.KeyFile, r.CaseID, vaultArg)
	for _, rep := range r.Summary.Reports {
		if strings.HasSuffix(rep.Key, ".html") {
			fmt.Fprintf(w, "The report (open it in a browser; also .md and .json beside it):\n  %s\n", rep.URI)
		}
	}
	if r.FilesystemFile != "" && len(r.Summary.Evidence) > 0 {
		fmt.Fprintf(w, "The root volume holds an ext4 filesystem with %s: find it in the image with Sleuth Kit (fls -r, icat).\n", r.FilesystemFile)
	}

	return nil
}
