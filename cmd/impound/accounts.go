package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/spf13/pflag"

	"github.com/impound-ir/impound/internal/awsconf"
	"github.com/impound-ir/impound/respond"
)

// accountOptions reach the member (compromised) account and the forensics
// account, each through an assumed role or with the responder's own
// credentials.
type accountOptions struct {
	RoleARN          string
	ForensicsRoleARN string
	ExternalID       string
}

func (o *accountOptions) AddFlags(f *pflag.FlagSet) {
	f.StringVar(&o.RoleARN, "role-arn", "", "role to assume in the compromised (member) account (default: your own credentials)")
	f.StringVar(&o.ForensicsRoleARN, "forensics-role-arn", "", "role to assume in the forensics account (default: your own credentials)")
	f.StringVar(&o.ExternalID, "external-id", "", "external ID the roles require, if any")
}

// resolve builds both accounts' configurations and learns their IDs and
// caller ARNs through STS, so a role that cannot be assumed fails here,
// before anything is changed.
func (o *accountOptions) resolve(ctx context.Context, g *globalOptions, operator, caseID string) (respond.Accounts, error) {
	base, err := g.AWSConfig(ctx)
	if err != nil {
		return respond.Accounts{}, err
	}
	member, forensics := base, base
	if o.RoleARN != "" {
		member = awsconf.AssumeRole(base, awsconf.Role{ARN: o.RoleARN, ExternalID: o.ExternalID, Operator: operator, CaseID: caseID})
	}
	if o.ForensicsRoleARN != "" {
		forensics = awsconf.AssumeRole(base, awsconf.Role{ARN: o.ForensicsRoleARN, ExternalID: o.ExternalID, Operator: operator, CaseID: caseID})
	}
	acc := respond.Accounts{Member: member, Forensics: forensics}
	if acc.MemberID, acc.MemberCaller, err = identify(ctx, member, "member", o.RoleARN, "--role-arn"); err != nil {
		return acc, err
	}
	if acc.ForensicsID, acc.ForensicsCaller, err = identify(ctx, forensics, "forensics", o.ForensicsRoleARN, "--forensics-role-arn"); err != nil {
		return acc, err
	}
	return acc, nil
}

func identify(ctx context.Context, cfg aws.Config, which, role, flag string) (id, arn string, err error) {
	me, err := awsconf.Identify(ctx, cfg)
	if err != nil {
		if role != "" {
			return "", "", &respond.UnreachableError{Which: which, RoleARN: role,
				Err: fmt.Errorf("cannot assume %s in the %s account: check %s, the role's trust policy and your credentials: %w", role, which, flag, err)}
		}
		return "", "", fmt.Errorf("identify your credentials for the %s account (configure AWS credentials, or pass %s): %w", which, flag, err)
	}
	return me.Account, me.ARN, nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
