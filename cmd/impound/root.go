package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newRootCommand(g *globalOptions) *cobra.Command {
	root := &cobra.Command{
		Use:   "impound",
		Short: "Isolate a compromised EC2 instance and acquire its evidence with a verifiable custody record",
		Long: `impound isolates a compromised EC2 instance, snapshots its EBS volumes into a
forensics account, streams the volume data into S3 under Object Lock while
hashing it, and records every action in a signed, hash-chained custody ledger.

Start with 'impound drill' to run a whole response against a simulated account.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := g.validate(); err != nil {
				return err
			}
			cmd.SetContext(g.setupLogging(cmd.Context()))
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	g.AddFlags(root.PersistentFlags())

	root.AddCommand(newVersionCommand(g))
	root.AddCommand(newSimCommand(g))
	root.AddCommand(newVaultCommand(g))
	root.AddCommand(newLedgerCommand(g))
	root.AddCommand(newAcquireCommand(g))
	root.AddCommand(newCollectCommand(g))
	root.AddCommand(newIsolateCommand(g))
	root.AddCommand(newReleaseCommand(g))
	root.AddCommand(newSnapshotCommand(g))
	root.AddCommand(newRespondCommand(g))
	root.AddCommand(newReportCommand(g))
	root.AddCommand(newDrillCommand(g))

	// Unknown subcommands and stray arguments are usage errors.
	root.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef("unknown command %q", strings.Join(args, " "))
		}
		return nil
	}
	root.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
	return root
}

// exactArgs is cobra.ExactArgs with impound's usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %d argument(s), got %d", cmd.CommandPath(), n, len(args))
		}
		return nil
	}
}

// requireFlags reports the first of names left empty, as a usage error.
func requireFlags(cmd *cobra.Command, names ...string) error {
	for _, n := range names {
		f := cmd.Flags().Lookup(n)
		if f == nil {
			panic(fmt.Sprintf("requireFlags: no flag %q on %s", n, cmd.CommandPath()))
		}
		if f.Value.String() == "" {
			return usagef("%s needs --%s", cmd.CommandPath(), n)
		}
	}
	return nil
}
