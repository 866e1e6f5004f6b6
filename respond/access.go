package respond

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/vault"
)

// UnreachableError is a role of the case's that could not be assumed: a
// role that does not exist, a trust policy that does not name the caller.
type UnreachableError struct {
	Which   string // "member" or "forensics"
	RoleARN string
	Err     error // says what to check
}

func (e *UnreachableError) Error() string { return e.Err.Error() }
func (e *UnreachableError) Unwrap() error { return e.Err }

// RecordUnreachable records in the case's ledger that one of its accounts
// could not be reached, opening the case first when it is new, so that the
// failure is part of the record and not only of a terminal or a log. acc
// holds what is known of the accounts; an account ID not yet known is taken
// from the role's ARN. It returns ue, joined with any error recording it.
func RecordUnreachable(ctx context.Context, store vault.Store, signer custody.Signer, o Options, acc Accounts, ue *UnreachableError) error {
	account := accountOf(ue.RoleARN)
	if acc.MemberID == "" && ue.Which == "member" {
		acc.MemberID = account
	}
	if acc.ForensicsID == "" && ue.Which == "forensics" {
		acc.ForensicsID = account
	}
	c, err := Open(ctx, acc, store, signer, o)
	if err != nil {
		return errors.Join(ue, fmt.Errorf("record the failure in case %s: %w", o.CaseID, err))
	}
	_, err = c.append(ctx, "", []string{ue.RoleARN}, &custody.AWSAction{
		Action: "sts.assume-role", Account: account, Region: o.Region,
		Details: map[string]string{"role_arn": ue.RoleARN, "account_of": ue.Which}}, ue)
	return errors.Join(ue, err)
}

// accountOf returns the account ID of an IAM ARN (arn:aws:iam::ID:role/x),
// or "".
func accountOf(arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) < 6 || parts[0] != "arn" {
		return ""
	}
	return parts[4]
}
