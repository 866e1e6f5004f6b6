package main

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/impound-ir/impound/internal/awsconf"
	"github.com/impound-ir/impound/respond"
)

// awsAccounts reaches a finding's account through IMPOUND_MEMBER_ROLE_NAME
// and the forensics account through IMPOUND_FORENSICS_ROLE_ARN, from the
// function's own credentials.
type awsAccounts struct {
	base aws.Config
	cfg  *config
}

var _ accountResolver = (*awsAccounts)(nil)

// Resolve builds both accounts' configurations and learns their IDs and
// caller ARNs through STS, so a role that cannot be assumed fails before
// anything is changed, and credentials that reach another account than the
// finding's are refused.
func (a *awsAccounts) Resolve(ctx context.Context, f *respond.Finding, caseID string) (resolved, error) {
	self, err := awsconf.Identify(ctx, a.base)
	if err != nil {
		return resolved{}, fmt.Errorf("identify the function's own credentials: %w", err)
	}
	r := resolved{SelfAccount: self.Account, SelfARN: self.ARN, MemberRoleARN: a.cfg.memberRoleARN(f.Partition, f.AccountID, self.Account)}
	member, forensics := a.base, a.base
	if r.MemberRoleARN != "" {
		member = awsconf.AssumeRole(a.base, awsconf.Role{ARN: r.MemberRoleARN, ExternalID: a.cfg.ExternalID, Operator: operator, CaseID: caseID})
	}
	if a.cfg.ForensicsRoleARN != "" {
		forensics = awsconf.AssumeRole(a.base, awsconf.Role{ARN: a.cfg.ForensicsRoleARN, ExternalID: a.cfg.ExternalID, Operator: operator, CaseID: caseID})
	}
	m, err := awsconf.Identify(ctx, member)
	if err != nil {
		if r.MemberRoleARN != "" {
			return r, &respond.UnreachableError{Which: "member", RoleARN: r.MemberRoleARN,
				Err: fmt.Errorf("cannot assume %s in the finding's account: check IMPOUND_MEMBER_ROLE_NAME, IMPOUND_EXTERNAL_ID and the role's trust policy: %w", r.MemberRoleARN, err)}
		}
		return r, fmt.Errorf("identify the credentials for account %s: %w", f.AccountID, err)
	}
	if m.Account != f.AccountID {
		return r, fmt.Errorf("the finding is about account %s but the credentials reach account %s: set IMPOUND_MEMBER_ROLE_NAME to the role impound assumes in member accounts", f.AccountID, m.Account)
	}
	fo, err := awsconf.Identify(ctx, forensics)
	if err != nil {
		err = fmt.Errorf("cannot reach the forensics account: check IMPOUND_FORENSICS_ROLE_ARN, IMPOUND_EXTERNAL_ID and the role's trust policy: %w", err)
		if a.cfg.ForensicsRoleARN != "" {
			err = &respond.UnreachableError{Which: "forensics", RoleARN: a.cfg.ForensicsRoleARN, Err: err}
		}
		r.Accounts.MemberID, r.Accounts.MemberCaller, r.Accounts.Member = m.Account, m.ARN, member
		return r, err
	}
	r.Accounts = respond.Accounts{MemberID: m.Account, Member: member, MemberCaller: m.ARN,
		ForensicsID: fo.Account, Forensics: forensics, ForensicsCaller: fo.ARN}
	return r, nil
}
