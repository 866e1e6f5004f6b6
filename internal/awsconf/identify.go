package awsconf

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// Identity is who a configuration's credentials are, as STS reports it.
type Identity struct {
	Account string // the 12-digit account ID
	ARN     string // the caller ARN, recorded as the actor of each action
}

// Identify asks STS who cfg's credentials are. With an assumed-role
// configuration it assumes the role, so a role that cannot be assumed fails
// here, before anything is changed.
func Identify(ctx context.Context, cfg aws.Config) (Identity, error) {
	out, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return Identity{}, fmt.Errorf("sts get-caller-identity: %w", err)
	}
	return Identity{Account: aws.ToString(out.Account), ARN: aws.ToString(out.Arn)}, nil
}
