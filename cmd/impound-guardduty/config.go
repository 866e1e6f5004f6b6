package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/respond"
	"github.com/impound-ir/impound/vault"
)

// config is the function's configuration, read from its environment (see
// the package documentation for the variables).
type config struct {
	Region           string
	Vault            string
	SigningKey       string
	MemberRoleName   string
	ForensicsRoleARN string
	ExternalID       string
	MinSeverity      float64
	FindingTypes     []string
	Isolate          bool
	AllowSSM         bool
	AllowDefaultVPC  bool
	ForensicsKMSKey  string
	MemberKMSKey     string
	RetentionDays    int
	RetentionMode    string
	Cluster          string
	TaskDefinition   string
	Subnets          []string
	SecurityGroups   []string
	Container        string
}

// loadConfig reads the configuration through getenv (os.Getenv). Every
// error names the variable and what to set.
func loadConfig(getenv func(string) string) (*config, error) {
	c := &config{
		Region:           strings.TrimSpace(getenv("AWS_REGION")),
		Vault:            strings.TrimSpace(getenv("IMPOUND_VAULT")),
		SigningKey:       strings.TrimSpace(getenv("IMPOUND_SIGNING_KEY")),
		MemberRoleName:   strings.TrimSpace(getenv("IMPOUND_MEMBER_ROLE_NAME")),
		ForensicsRoleARN: strings.TrimSpace(getenv("IMPOUND_FORENSICS_ROLE_ARN")),
		ExternalID:       strings.TrimSpace(getenv("IMPOUND_EXTERNAL_ID")),
		FindingTypes:     splitList(getenv("IMPOUND_FINDING_TYPES")),
		ForensicsKMSKey:  strings.TrimSpace(getenv("IMPOUND_FORENSICS_KMS_KEY")),
		MemberKMSKey:     strings.TrimSpace(getenv("IMPOUND_MEMBER_KMS_KEY")),
		Cluster:          strings.TrimSpace(getenv("IMPOUND_ACQUIRE_CLUSTER")),
		TaskDefinition:   strings.TrimSpace(getenv("IMPOUND_ACQUIRE_TASK_DEFINITION")),
		Subnets:          splitList(getenv("IMPOUND_ACQUIRE_SUBNETS")),
		SecurityGroups:   splitList(getenv("IMPOUND_ACQUIRE_SECURITY_GROUPS")),
		Container:        strings.TrimSpace(getenv("IMPOUND_ACQUIRE_CONTAINER")),
	}
	if c.Region == "" {
		return nil, fmt.Errorf("AWS_REGION is not set: the Lambda runtime sets it; set it to the Region this function responds in")
	}
	switch {
	case c.Vault == "":
		return nil, fmt.Errorf("IMPOUND_VAULT is required: set it to the vault, s3://bucket[/prefix] (create it with `impound vault init`)")
	case strings.HasPrefix(c.Vault, "s3://"):
		if strings.TrimPrefix(c.Vault, "s3://") == "" || strings.HasPrefix(c.Vault, "s3:///") {
			return nil, fmt.Errorf("IMPOUND_VAULT %q names no bucket: set it to s3://bucket[/prefix]", c.Vault)
		}
	default:
		return nil, fmt.Errorf("IMPOUND_VAULT %q is not an S3 vault: set it to s3://bucket[/prefix]", c.Vault)
	}
	switch {
	case c.SigningKey == "":
		return nil, fmt.Errorf("IMPOUND_SIGNING_KEY is required: set it to the ledger's signing key, awskms:///KEY-ARN")
	case strings.HasPrefix(c.SigningKey, custody.KMSKeyPrefix):
		if _, _, err := custody.ParseKMSRef(c.SigningKey); err != nil {
			return nil, fmt.Errorf("IMPOUND_SIGNING_KEY: %w", err)
		}
	case strings.HasPrefix(c.SigningKey, custody.FileKeyPrefix) && len(c.SigningKey) > len(custody.FileKeyPrefix):
	default:
		return nil, fmt.Errorf("IMPOUND_SIGNING_KEY %q: set it to awskms:///KEY-ARN (or file:PATH)", c.SigningKey)
	}
	// A path is fine in a role name ("impound/responder"), an ARN is not.
	if strings.HasPrefix(c.MemberRoleName, "arn:") {
		return nil, fmt.Errorf("IMPOUND_MEMBER_ROLE_NAME %q is an ARN: set the role's name only (the account comes from each finding)", c.MemberRoleName)
	}
	var err error
	if c.MinSeverity, err = parseFloatVar(getenv, "IMPOUND_MIN_SEVERITY", respond.DefaultMinSeverity); err != nil {
		return nil, err
	}
	if c.MinSeverity < 0 || c.MinSeverity > 10 {
		return nil, fmt.Errorf("IMPOUND_MIN_SEVERITY %g: set a severity from 0 to 10 (7 is GuardDuty's High)", c.MinSeverity)
	}
	if c.Isolate, err = parseBoolVar(getenv, "IMPOUND_ISOLATE", true); err != nil {
		return nil, err
	}
	if c.AllowSSM, err = parseBoolVar(getenv, "IMPOUND_ALLOW_SSM", false); err != nil {
		return nil, err
	}
	if c.AllowDefaultVPC, err = parseBoolVar(getenv, "IMPOUND_ALLOW_DEFAULT_VPC", false); err != nil {
		return nil, err
	}
	if s := strings.TrimSpace(getenv("IMPOUND_RETENTION_DAYS")); s != "" {
		if c.RetentionDays, err = strconv.Atoi(s); err != nil || c.RetentionDays < 0 {
			return nil, fmt.Errorf("IMPOUND_RETENTION_DAYS %q: set a number of days, or leave it empty for the bucket's default retention", s)
		}
	}
	switch m := strings.ToLower(strings.TrimSpace(getenv("IMPOUND_RETENTION_MODE"))); m {
	case "", "compliance":
		c.RetentionMode = vault.ModeCompliance
	case "governance":
		c.RetentionMode = vault.ModeGovernance
	default:
		return nil, fmt.Errorf("IMPOUND_RETENTION_MODE %q: set compliance or governance", m)
	}
	if c.Container == "" {
		c.Container = "impound"
	}
	if c.Cluster != "" {
		if c.TaskDefinition == "" {
			return nil, fmt.Errorf("IMPOUND_ACQUIRE_TASK_DEFINITION is required with IMPOUND_ACQUIRE_CLUSTER: set the acquisition task definition (family[:revision] or ARN)")
		}
		if len(c.Subnets) == 0 {
			return nil, fmt.Errorf("IMPOUND_ACQUIRE_SUBNETS is required with IMPOUND_ACQUIRE_CLUSTER: set the comma-separated subnets the Fargate task runs in")
		}
	}
	return c, nil
}

func parseBoolVar(getenv func(string) string, name string, def bool) (bool, error) {
	s := strings.TrimSpace(getenv(name))
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("%s %q: set true or false", name, s)
	}
	return v, nil
}

func parseFloatVar(getenv func(string) string, name string, def float64) (float64, error) {
	s := strings.TrimSpace(getenv(name))
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q: set a number", name, s)
	}
	return v, nil
}

// splitList splits a comma-separated value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// policy is the finding policy of the configuration.
func (c *config) policy() respond.FindingPolicy {
	p := respond.NewFindingPolicy(c.Region)
	p.MinSeverity, p.TypePrefixes = c.MinSeverity, c.FindingTypes
	return p
}

// memberRoleARN is the role to assume in the finding's account, "" when the
// function's own credentials are used (no role name, or the finding is in
// the function's own account).
func (c *config) memberRoleARN(partition, account, ownAccount string) string {
	if c.MemberRoleName == "" || account == ownAccount {
		return ""
	}
	if partition == "" {
		partition = "aws"
	}
	return "arn:" + partition + ":iam::" + account + ":role/" + strings.TrimPrefix(c.MemberRoleName, "/")
}
