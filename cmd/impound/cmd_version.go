package main

import (
	"context"
	"fmt"
	"io"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/internal/buildinfo"
)

func newVersionCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print impound's version, commit, Go version and the SHA-256 of this binary",
		Long: `Print impound's version, commit, Go version and the SHA-256 of the running
binary. Examiners record the binary's hash beside the evidence it produced.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVersion(g)
		},
	}
}

// thisTool identifies the running impound for records (the ledger's first
// entry, evidence, reports). ok is false, and a warning logged naming what
// the record is for, when the binary cannot be hashed.
func thisTool(ctx context.Context, what string) (tool custody.Tool, ok bool) {
	bi, err := buildinfo.Read()
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("cannot hash the impound binary for the " + what)
	}
	return custody.Tool{Name: "impound", Version: bi.Version, Commit: bi.Commit, BinarySHA256: bi.BinarySHA256}, err == nil
}

func runVersion(g *globalOptions) error {
	info, err := buildinfo.Read()
	if err != nil {
		return fmt.Errorf("version: %w", err)
	}
	return g.Print(info, func(w io.Writer) error {
		commit := info.Commit
		if commit == "" {
			commit = "unknown"
		}
		if info.Modified {
			commit += " (modified)"
		}
		_, err := fmt.Fprintf(w, "impound %s\ncommit  %s\ngo      %s %s\nbinary  %s\nsha256  %s\n",
			info.Version, commit, info.GoVersion, info.Platform, info.BinaryPath, info.BinarySHA256)
		return err
	})
}
