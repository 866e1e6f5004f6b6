// Package awsconf builds the AWS configurations impound works with: the
// responder's own (profile, Region, endpoint overrides) and, from it, the
// member account's and the forensics account's through STS AssumeRole.
//
// Assumed-role credentials refresh themselves before they expire, so an
// acquisition that runs for many hours keeps working. The role session name
// carries the operator and the case, so the member account's CloudTrail ties
// every call back to the custody record.
package awsconf

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// Options selects the base configuration, following the AWS CLI's conventions.
// Empty fields fall back to the SDK's own sources (environment, shared config
// files, instance metadata), including AWS_ENDPOINT_URL and
// AWS_ENDPOINT_URL_<SERVICE>, so a simulator and an S3 server can be targeted
// separately.
type Options struct {
	Profile     string
	Region      string
	EndpointURL string // one endpoint for every service; overrides AWS_ENDPOINT_URL
}

// Load returns the base configuration.
func Load(ctx context.Context, o Options) (aws.Config, error) {
	var opts []func(*config.LoadOptions) error
	if o.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(o.Profile))
	}
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	if o.EndpointURL != "" {
		opts = append(opts, config.WithBaseEndpoint(o.EndpointURL))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, fmt.Errorf("no AWS Region configured: pass --region, set AWS_REGION, or set region in your AWS profile")
	}
	return cfg, nil
}

// Role says which role to assume and on whose behalf.
type Role struct {
	ARN        string
	ExternalID string
	Operator   string // the person responding; goes into the session name
	CaseID     string
	// Duration of each session; zero means one hour.
	// Credentials are refreshed before they expire whatever the duration.
	Duration time.Duration
}

// AssumeRole returns a copy of base whose credentials come from assuming
// r.ARN with base's credentials. Nothing is called until the first request;
// use [CallerARN] to check the role can be assumed before starting work.
func AssumeRole(base aws.Config, r Role) aws.Config {
	cfg := base.Copy()
	provider := stscreds.NewAssumeRoleProvider(sts.NewFromConfig(base), r.ARN, func(o *stscreds.AssumeRoleOptions) {
		o.RoleSessionName = SessionName(r.Operator, r.CaseID)
		if r.ExternalID != "" {
			o.ExternalID = aws.String(r.ExternalID)
		}
		// stscreds asks for 15 minutes when told nothing; an hour is what
		// STS allows a chained role session at most, and what we promise.
		o.Duration = time.Hour
		if r.Duration > 0 {
			o.Duration = r.Duration
		}
	})
	// The cache refreshes ahead of expiry, so long runs never present stale credentials.
	cfg.Credentials = aws.NewCredentialsCache(provider, func(o *aws.CredentialsCacheOptions) {
		o.ExpiryWindow = 5 * time.Minute
	})
	return cfg
}

// CallerARN returns the ARN STS reports for cfg's credentials: the identity the
// custody ledger records as the actor.
func CallerARN(ctx context.Context, cfg aws.Config) (string, error) {
	id, err := Identify(ctx, cfg)
	return id.ARN, err
}

// maxSessionName is STS's limit on RoleSessionName.
const maxSessionName = 64

var disallowed = regexp.MustCompile(`[^\w+=,.@-]`)

// SessionName returns "impound-<operator>-<case>" reduced to the characters STS
// allows in a RoleSessionName ([\w+=,.@-]) and at most 64 of them. Disallowed
// characters become '-'; when too long, the operator is shortened first so the
// case ID, which ties CloudTrail to the ledger, survives whole where it can.
func SessionName(operator, caseID string) string {
	op := disallowed.ReplaceAllString(operator, "-")
	cs := disallowed.ReplaceAllString(caseID, "-")
	if op == "" {
		op = "unknown"
	}
	name := "impound-" + op + "-" + cs
	if len(name) <= maxSessionName {
		return strings.TrimSuffix(name, "-")
	}
	room := maxSessionName - len("impound-") - len("-") - len(cs)
	if room >= 4 {
		return "impound-" + op[:min(len(op), room)] + "-" + cs
	}
	return name[:maxSessionName]
}
