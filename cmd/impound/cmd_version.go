package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

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
