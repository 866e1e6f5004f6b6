package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/impound-ir/impound/internal/awssim"
)

func newSimCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run impound's simulated AWS accounts (STS, EC2, EBS direct, KMS)",
		Long: `The simulator answers the real AWS SDKs and the AWS CLI for the operations
impound uses, with a member and a forensics account. See docs/simulator.md.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newSimServeCommand(g))
	return cmd
}

type simServeOptions struct {
	Addr               string
	MemberAccountID    string
	ForensicsAccountID string
	Seed               uint64
	RootGiB, DataGiB   int32
	AWSQuotas          bool
}

func (o *simServeOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.Addr, "addr", "127.0.0.1:4566", "address to listen on (port 0 picks a free port)")
	f.StringVar(&o.MemberAccountID, "member-account", "111111111111", "ID of the simulated member account (holds the compromised instance)")
	f.StringVar(&o.ForensicsAccountID, "forensics-account", "222222222222", "ID of the simulated forensics account")
	f.Uint64Var(&o.Seed, "seed", 1, "seed of generated IDs and volume content (same seed, same demo)")
	f.Int32Var(&o.RootGiB, "root-gib", 8, "size of the compromised instance's root volume in GiB")
	f.Int32Var(&o.DataGiB, "data-gib", 4, "size of its aws/ebs-encrypted data volume in GiB")
	f.BoolVar(&o.AWSQuotas, "aws-quotas", false, "throttle the EBS direct APIs at AWS's default quotas (GetSnapshotBlock 1,000/s per snapshot and per account, List* 50/s)")
}

func newSimServeCommand(g *globalOptions) *cobra.Command {
	o := &simServeOptions{}
	cmd := &cobra.Command{
		Use:   "serve [-- command [args...]]",
		Short: "Serve a seeded demo member and forensics account until interrupted",
		Long: `Serve the simulator with a demo member account (a compromised instance with an
unencrypted root volume and an aws/ebs-encrypted data volume, both holding
data) and a forensics account with its KMS keys. It prints the endpoint and,
for each account, the credentials to export for the AWS CLI or impound.

With a command after --, the simulator runs only while that command does,
with the member account's credentials, AWS_ENDPOINT_URL and AWS_REGION in its
environment (the forensics account's as IMPOUND_SIM_FORENSICS_ACCESS_KEY_ID
and IMPOUND_SIM_FORENSICS_SECRET_ACCESS_KEY); impound fails if the command fails.`,
		Example: `  impound sim serve
  impound sim serve --addr 127.0.0.1:0 -- aws ec2 describe-instances`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() < 0 && len(args) > 0 {
				return usagef("%s takes no arguments; put a command to run after --", cmd.CommandPath())
			}
			return runSimServe(cmd.Context(), g, o, args)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// simAccountInfo is what a user needs to reach one simulated account.
type simAccountInfo struct {
	Role            string `json:"role"`
	AccountID       string `json:"account_id"`
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
}

type simInfo struct {
	Endpoint     string           `json:"endpoint"`
	Region       string           `json:"region"`
	Accounts     []simAccountInfo `json:"accounts"`
	InstanceID   string           `json:"instance_id"`
	RootVolumeID string           `json:"root_volume_id"`
	DataVolumeID string           `json:"data_volume_id"`
	TransferKey  string           `json:"transfer_key_arn"`
	EvidenceKey  string           `json:"evidence_key_arn"`
	LedgerKey    string           `json:"ledger_key_arn"`
}

func runSimServe(ctx context.Context, g *globalOptions, o *simServeOptions, command []string) error {
	log := zerolog.Ctx(ctx)
	region := g.Region
	if region == "" {
		region = awssim.DefaultRegion
	}
	sim := awssim.New(awssim.Options{Region: region, Seed: o.Seed})
	demo, err := awssim.SeedDemo(sim, awssim.DemoOptions{MemberAccountID: o.MemberAccountID, ForensicsAccountID: o.ForensicsAccountID, DataSeed: o.Seed,
		RootGiB: o.RootGiB, DataGiB: o.DataGiB})
	if err != nil {
		return usageError{err}
	}
	if o.AWSQuotas {
		sim.ApplyAWSQuotas()
	}
	srv, err := awssim.Listen(ctx, o.Addr, sim)
	if err != nil {
		return fmt.Errorf("%w; pick another with --addr, or port 0 for a free one", err)
	}
	defer srv.Close()

	info := simInfo{
		Endpoint: srv.URL(), Region: region, InstanceID: demo.InstanceID,
		RootVolumeID: demo.RootVolumeID, DataVolumeID: demo.DataVolumeID,
		TransferKey: demo.TransferKeyARN, EvidenceKey: demo.EvidenceKeyARN, LedgerKey: demo.LedgerKeyARN,
	}
	for _, a := range []struct {
		role string
		acct *awssim.Account
	}{{"member", demo.Member}, {"forensics", demo.Forensics}} {
		c := a.acct.Credentials()
		info.Accounts = append(info.Accounts, simAccountInfo{Role: a.role, AccountID: a.acct.ID(), AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey})
	}
	if err := g.Print(info, func(w io.Writer) error { return printSimInfo(w, info, len(command) == 0) }); err != nil {
		return err
	}
	log.Info().Str("endpoint", srv.URL()).Str("region", region).Msg("AWS simulator serving")

	if len(command) == 0 {
		<-ctx.Done()
		log.Info().Msg("AWS simulator stopped")
		return nil
	}
	return runWithSim(ctx, g, info, command)
}

func printSimInfo(w io.Writer, info simInfo, interactive bool) error {
	var b strings.Builder
	fmt.Fprintf(&b, "impound AWS simulator at %s (Region %s)\n", info.Endpoint, info.Region)
	fmt.Fprintf(&b, "compromised instance %s in the member account: root volume %s, data volume %s (aws/ebs)\n",
		info.InstanceID, info.RootVolumeID, info.DataVolumeID)
	fmt.Fprintf(&b, "KMS keys: transfer %s, evidence %s, ledger %s\n", info.TransferKey, info.EvidenceKey, info.LedgerKey)
	for _, a := range info.Accounts {
		fmt.Fprintf(&b, "\n# %s account %s: paste these lines to act as it\n", a.Role, a.AccountID)
		fmt.Fprintf(&b, "export AWS_ENDPOINT_URL=%s\n", info.Endpoint)
		fmt.Fprintf(&b, "export AWS_REGION=%s AWS_DEFAULT_REGION=%s\n", info.Region, info.Region)
		fmt.Fprintf(&b, "export AWS_ACCESS_KEY_ID=%s\n", a.AccessKeyID)
		fmt.Fprintf(&b, "export AWS_SECRET_ACCESS_KEY=%s\n", a.SecretAccessKey)
		fmt.Fprintf(&b, "unset AWS_SESSION_TOKEN AWS_PROFILE\n")
	}
	fmt.Fprintf(&b, "\n# then, for example:\naws --endpoint-url %s ec2 describe-instances\n", info.Endpoint)
	if interactive {
		fmt.Fprintf(&b, "\nPress Ctrl-C to stop.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// runWithSim runs command with the member account's credentials.
func runWithSim(ctx context.Context, g *globalOptions, info simInfo, command []string) error {
	cmd := exec.CommandContext(ctx, command[0], command[1:]...)
	env := make([]string, 0, len(os.Environ())+10)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL":
			continue
		}
		if strings.HasPrefix(k, "AWS_ENDPOINT_URL_") {
			continue
		}
		env = append(env, kv)
	}
	member, forensics := info.Accounts[0], info.Accounts[1]
	env = append(env,
		"AWS_ENDPOINT_URL="+info.Endpoint,
		"AWS_REGION="+info.Region, "AWS_DEFAULT_REGION="+info.Region,
		"AWS_ACCESS_KEY_ID="+member.AccessKeyID, "AWS_SECRET_ACCESS_KEY="+member.SecretAccessKey,
		"AWS_CONFIG_FILE="+os.DevNull, "AWS_SHARED_CREDENTIALS_FILE="+os.DevNull,
		"IMPOUND_SIM_MEMBER_ACCOUNT_ID="+member.AccountID,
		"IMPOUND_SIM_FORENSICS_ACCOUNT_ID="+forensics.AccountID,
		"IMPOUND_SIM_FORENSICS_ACCESS_KEY_ID="+forensics.AccessKeyID,
		"IMPOUND_SIM_FORENSICS_SECRET_ACCESS_KEY="+forensics.SecretAccessKey,
		"IMPOUND_SIM_INSTANCE_ID="+info.InstanceID,
	)
	cmd.Env = env
	cmd.Stdin = os.Stdin
	cmd.Stdout = g.Stdout
	cmd.Stderr = g.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("%s exited with status %d", command[0], ee.ExitCode())
		}
		return fmt.Errorf("run %s: %w", command[0], err)
	}
	return nil
}
