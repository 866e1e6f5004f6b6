package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// bucketAPI is what Check and Init consume of the S3 client.
type bucketAPI interface {
	HeadBucket(context.Context, *s3.HeadBucketInput, ...func(*s3.Options)) (*s3.HeadBucketOutput, error)
	CreateBucket(context.Context, *s3.CreateBucketInput, ...func(*s3.Options)) (*s3.CreateBucketOutput, error)
	GetObjectLockConfiguration(context.Context, *s3.GetObjectLockConfigurationInput, ...func(*s3.Options)) (*s3.GetObjectLockConfigurationOutput, error)
	PutObjectLockConfiguration(context.Context, *s3.PutObjectLockConfigurationInput, ...func(*s3.Options)) (*s3.PutObjectLockConfigurationOutput, error)
	GetBucketVersioning(context.Context, *s3.GetBucketVersioningInput, ...func(*s3.Options)) (*s3.GetBucketVersioningOutput, error)
	GetBucketEncryption(context.Context, *s3.GetBucketEncryptionInput, ...func(*s3.Options)) (*s3.GetBucketEncryptionOutput, error)
	PutBucketEncryption(context.Context, *s3.PutBucketEncryptionInput, ...func(*s3.Options)) (*s3.PutBucketEncryptionOutput, error)
	GetPublicAccessBlock(context.Context, *s3.GetPublicAccessBlockInput, ...func(*s3.Options)) (*s3.GetPublicAccessBlockOutput, error)
	PutPublicAccessBlock(context.Context, *s3.PutPublicAccessBlockInput, ...func(*s3.Options)) (*s3.PutPublicAccessBlockOutput, error)
	GetBucketPolicy(context.Context, *s3.GetBucketPolicyInput, ...func(*s3.Options)) (*s3.GetBucketPolicyOutput, error)
	PutBucketPolicy(context.Context, *s3.PutBucketPolicyInput, ...func(*s3.Options)) (*s3.PutBucketPolicyOutput, error)
}

// ErrBucketUnfit: the bucket cannot keep evidence as it is. A CheckReport's
// Err wraps it and names every problem and its fix.
var ErrBucketUnfit = errors.New("vault: bucket is not fit to keep evidence")

// CheckOptions say which of the preflight checks are required. The zero
// value is lenient; use NewCheckOptions for the production defaults.
type CheckOptions struct {
	RequireEncryption        bool // default encryption SSE-KMS or SSE-S3
	RequirePublicAccessBlock bool // all four public-access-block settings
	RequirePolicy            bool // impound's deny statements in the bucket policy
}

// NewCheckOptions requires everything. S3-compatible servers without a KMS
// or public access blocks (MinIO in tests) need some checks relaxed.
func NewCheckOptions() CheckOptions {
	return CheckOptions{RequireEncryption: true, RequirePublicAccessBlock: true, RequirePolicy: true}
}

// Finding is the outcome of one preflight check.
type Finding struct {
	Check  string // "exists", "object-lock", "versioning", "default-retention", "encryption", "public-access-block", "policy"
	OK     bool
	Detail string // what was found
	Fix    string `json:",omitempty"` // what to do, when not OK
	// Required is false for a check the CheckOptions relaxed: a failure
	// is reported but does not make the bucket unfit.
	Required bool
}

// CheckReport is the preflight of one bucket.
type CheckReport struct {
	Bucket   string
	Findings []Finding
}

// Err returns nil when every required check passed, otherwise an error
// wrapping ErrBucketUnfit that names each problem and how to fix it.
func (r *CheckReport) Err() error {
	var msgs []string
	for _, f := range r.Findings {
		if !f.OK && f.Required {
			msgs = append(msgs, fmt.Sprintf("%s: %s; %s", f.Check, f.Detail, f.Fix))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: s3://%s:\n  %s", ErrBucketUnfit, r.Bucket, strings.Join(msgs, "\n  "))
}

func (r *CheckReport) add(f Finding) { r.Findings = append(r.Findings, f) }

// Check runs the preflight on the bucket of an s3:// URI: it exists, has
// Object Lock (hence versioning) with a default retention, default
// encryption, all public access blocked and impound's bucket policy.
func Check(ctx context.Context, uri string, opts Options, co CheckOptions) (*CheckReport, error) {
	bucket, _, err := parseS3URI(uri)
	if err != nil {
		return nil, err
	}
	return check(ctx, NewS3Client(opts.AWS, opts), bucket, co)
}

func check(ctx context.Context, c bucketAPI, bucket string, co CheckOptions) (*CheckReport, error) {
	r := &CheckReport{Bucket: bucket}
	initFix := "create a bucket that passes with `impound vault init s3://NEW-BUCKET` and use it"
	_, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &bucket})
	switch code := apiCode(err); {
	case err == nil:
		r.add(Finding{Check: "exists", OK: true, Required: true, Detail: "bucket exists and is reachable"})
	case code == "NotFound" || code == "NoSuchBucket":
		r.add(Finding{Check: "exists", Required: true, Detail: "no such bucket", Fix: fmt.Sprintf("create it with `impound vault init s3://%s`", bucket)})
		return r, nil
	case code == "Forbidden" || code == "AccessDenied" || code == "403":
		r.add(Finding{Check: "exists", Required: true, Detail: "access denied", Fix: "check the credentials, region and the bucket's owner"})
		return r, nil
	default:
		return nil, fmt.Errorf("vault: check s3://%s: %w", bucket, err)
	}

	lock, err := c.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: &bucket})
	switch {
	case err == nil && lock.ObjectLockConfiguration != nil && lock.ObjectLockConfiguration.ObjectLockEnabled == types.ObjectLockEnabledEnabled:
		r.add(Finding{Check: "object-lock", OK: true, Required: true, Detail: "Object Lock enabled"})
		rule := lock.ObjectLockConfiguration.Rule
		if rule != nil && rule.DefaultRetention != nil && rule.DefaultRetention.Mode != "" {
			d := rule.DefaultRetention
			period := fmt.Sprintf("%d days", aws.ToInt32(d.Days))
			if d.Years != nil {
				period = fmt.Sprintf("%d years", aws.ToInt32(d.Years))
			}
			r.add(Finding{Check: "default-retention", OK: true, Required: true, Detail: fmt.Sprintf("%s for %s", d.Mode, period)})
		} else {
			r.add(Finding{Check: "default-retention", Required: true, Detail: "no default retention rule",
				Fix: fmt.Sprintf("set one with `aws s3api put-object-lock-configuration --bucket %s --object-lock-configuration '{\"ObjectLockEnabled\":\"Enabled\",\"Rule\":{\"DefaultRetention\":{\"Mode\":\"COMPLIANCE\",\"Days\":365}}}'`", bucket)})
		}
	case err == nil || apiCode(err) == "ObjectLockConfigurationNotFoundError":
		r.add(Finding{Check: "object-lock", Required: true, Detail: "Object Lock is not enabled (it can only be enabled when a bucket is created)", Fix: initFix})
	default:
		return nil, fmt.Errorf("vault: check s3://%s: object lock: %w", bucket, err)
	}

	ver, err := c.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: &bucket})
	if err != nil {
		return nil, fmt.Errorf("vault: check s3://%s: versioning: %w", bucket, err)
	}
	if ver.Status == types.BucketVersioningStatusEnabled {
		r.add(Finding{Check: "versioning", OK: true, Required: true, Detail: "versioning enabled"})
	} else {
		r.add(Finding{Check: "versioning", Required: true, Detail: fmt.Sprintf("versioning is %q", ver.Status), Fix: initFix})
	}

	enc, err := c.GetBucketEncryption(ctx, &s3.GetBucketEncryptionInput{Bucket: &bucket})
	switch {
	case err == nil && enc.ServerSideEncryptionConfiguration != nil && len(enc.ServerSideEncryptionConfiguration.Rules) > 0 &&
		enc.ServerSideEncryptionConfiguration.Rules[0].ApplyServerSideEncryptionByDefault != nil:
		d := enc.ServerSideEncryptionConfiguration.Rules[0].ApplyServerSideEncryptionByDefault
		detail := string(d.SSEAlgorithm)
		if d.KMSMasterKeyID != nil {
			detail += " with key " + *d.KMSMasterKeyID
		}
		r.add(Finding{Check: "encryption", OK: true, Required: co.RequireEncryption, Detail: detail})
	case err == nil || apiCode(err) == "ServerSideEncryptionConfigurationNotFoundError" || apiCode(err) == "NotImplemented":
		r.add(Finding{Check: "encryption", Required: co.RequireEncryption, Detail: "no default encryption",
			Fix: fmt.Sprintf("`aws s3api put-bucket-encryption --bucket %s --server-side-encryption-configuration '{\"Rules\":[{\"ApplyServerSideEncryptionByDefault\":{\"SSEAlgorithm\":\"aws:kms\",\"KMSMasterKeyID\":\"KEY-ARN\"},\"BucketKeyEnabled\":true}]}'`", bucket)})
	default:
		return nil, fmt.Errorf("vault: check s3://%s: encryption: %w", bucket, err)
	}

	pab, err := c.GetPublicAccessBlock(ctx, &s3.GetPublicAccessBlockInput{Bucket: &bucket})
	pabFix := fmt.Sprintf("`aws s3api put-public-access-block --bucket %s --public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true`", bucket)
	switch {
	case err == nil && pab.PublicAccessBlockConfiguration != nil:
		p := pab.PublicAccessBlockConfiguration
		if aws.ToBool(p.BlockPublicAcls) && aws.ToBool(p.IgnorePublicAcls) && aws.ToBool(p.BlockPublicPolicy) && aws.ToBool(p.RestrictPublicBuckets) {
			r.add(Finding{Check: "public-access-block", OK: true, Required: co.RequirePublicAccessBlock, Detail: "all public access blocked"})
		} else {
			r.add(Finding{Check: "public-access-block", Required: co.RequirePublicAccessBlock, Detail: "public access is not fully blocked", Fix: pabFix})
		}
	case err == nil || apiCode(err) == "NoSuchPublicAccessBlockConfiguration" || apiCode(err) == "NotImplemented":
		r.add(Finding{Check: "public-access-block", Required: co.RequirePublicAccessBlock, Detail: "no public access block", Fix: pabFix})
	default:
		return nil, fmt.Errorf("vault: check s3://%s: public access block: %w", bucket, err)
	}

	pol, err := c.GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: &bucket})
	polFix := fmt.Sprintf("apply impound's policy with `impound vault init s3://%s` (it keeps existing settings)", bucket)
	switch {
	case err == nil:
		missing := policyMissing(aws.ToString(pol.Policy))
		if len(missing) == 0 {
			r.add(Finding{Check: "policy", OK: true, Required: co.RequirePolicy, Detail: "denies deleting object versions and non-TLS access"})
		} else {
			r.add(Finding{Check: "policy", Required: co.RequirePolicy, Detail: "the bucket policy lacks: " + strings.Join(missing, ", "), Fix: polFix})
		}
	case apiCode(err) == "NoSuchBucketPolicy" || apiCode(err) == "NotImplemented":
		r.add(Finding{Check: "policy", Required: co.RequirePolicy, Detail: "no bucket policy", Fix: polFix})
	default:
		return nil, fmt.Errorf("vault: check s3://%s: policy: %w", bucket, err)
	}
	return r, nil
}

// Statement IDs of the bucket policy Init writes.
const (
	sidDenyDelete = "ImpoundDenyDeleteObjectVersions"
	sidDenyNoTLS  = "ImpoundDenyInsecureTransport"
)

func bucketPolicy(bucket string) string {
	arn := "arn:aws:s3:::" + bucket
	p := map[string]any{
		"Version": "2012-10-17",
		"Statement": []map[string]any{
			{"Sid": sidDenyDelete, "Effect": "Deny", "Principal": "*",
				"Action":   "s3:DeleteObjectVersion",
				"Resource": []string{arn, arn + "/*"}},
			{"Sid": sidDenyNoTLS, "Effect": "Deny", "Principal": "*", "Action": "s3:*",
				"Resource":  []string{arn, arn + "/*"},
				"Condition": map[string]any{"Bool": map[string]string{"aws:SecureTransport": "false"}}},
		},
	}
	b, _ := json.Marshal(p)
	return string(b)
}

// policyMissing names impound's statements a bucket policy lacks.
func policyMissing(policy string) []string {
	var p struct {
		Statement []struct {
			Sid    string
			Effect string
		}
	}
	json.Unmarshal([]byte(policy), &p)
	have := map[string]bool{}
	for _, s := range p.Statement {
		if s.Effect == "Deny" {
			have[s.Sid] = true
		}
	}
	var missing []string
	if !have[sidDenyDelete] {
		missing = append(missing, "a deny of s3:DeleteObjectVersion")
	}
	if !have[sidDenyNoTLS] {
		missing = append(missing, "a deny of non-TLS access")
	}
	return missing
}

// Encryption choices for Init.
const (
	EncryptionKMS  = "aws:kms" // SSE-KMS: with InitOptions.KMSKeyID, or the aws/s3 key
	EncryptionS3   = "AES256"  // SSE-S3
	EncryptionNone = "none"    // leave the bucket's encryption as it is (S3-compatible servers without a KMS)
)

// InitOptions describe the bucket Init creates.
type InitOptions struct {
	Region        string // where to create it; "" is the client's region
	RetentionDays int32  // default retention, > 0
	Mode          string // ModeCompliance or ModeGovernance
	Encryption    string // EncryptionKMS (default when KMSKeyID is set), EncryptionS3 (default otherwise) or EncryptionNone
	KMSKeyID      string
	// SkipPublicAccessBlock and SkipPolicy leave those settings alone, for
	// S3-compatible servers that lack them.
	SkipPublicAccessBlock bool
	SkipPolicy            bool
	Check                 CheckOptions // the preflight Init ends with
}

// NewInitOptions returns one year of COMPLIANCE retention, SSE-S3, and
// every check required.
func NewInitOptions() InitOptions {
	return InitOptions{RetentionDays: DefaultRetentionDays, Mode: ModeCompliance, Check: NewCheckOptions()}
}

// Init creates the bucket of an s3:// URI so that it passes Check: Object
// Lock with a default retention, default encryption, all public access
// blocked, and a policy denying deletes of object versions and non-TLS
// access. On an existing bucket it applies the settings that can still be
// applied (Object Lock cannot be added afterwards) and reports the rest.
func Init(ctx context.Context, uri string, opts Options, in InitOptions) (*CheckReport, error) {
	bucket, _, err := parseS3URI(uri)
	if err != nil {
		return nil, err
	}
	return initBucket(ctx, NewS3Client(opts.AWS, opts), bucket, opts.AWS.Region, in)
}

func initBucket(ctx context.Context, c bucketAPI, bucket, clientRegion string, o InitOptions) (*CheckReport, error) {
	mode := strings.ToUpper(o.Mode)
	if mode == "" {
		mode = ModeCompliance
	}
	if mode != ModeCompliance && mode != ModeGovernance {
		return nil, fmt.Errorf("vault: init: retention mode %q: want compliance or governance", o.Mode)
	}
	if o.RetentionDays <= 0 {
		return nil, fmt.Errorf("vault: init: retention of %d days: want at least 1", o.RetentionDays)
	}
	in := &s3.CreateBucketInput{Bucket: &bucket, ObjectLockEnabledForBucket: aws.Bool(true)}
	if region := cmpOr(o.Region, clientRegion); region != "" && region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{LocationConstraint: types.BucketLocationConstraint(region)}
	}
	if _, err := c.CreateBucket(ctx, in); err != nil && apiCode(err) != "BucketAlreadyOwnedByYou" {
		if apiCode(err) == "BucketAlreadyExists" {
			return nil, fmt.Errorf("vault: init s3://%s: the name belongs to another account; choose another bucket name", bucket)
		}
		return nil, fmt.Errorf("vault: init s3://%s: create bucket: %w", bucket, err)
	}
	_, err := c.PutObjectLockConfiguration(ctx, &s3.PutObjectLockConfigurationInput{Bucket: &bucket,
		ObjectLockConfiguration: &types.ObjectLockConfiguration{
			ObjectLockEnabled: types.ObjectLockEnabledEnabled,
			Rule:              &types.ObjectLockRule{DefaultRetention: &types.DefaultRetention{Mode: types.ObjectLockRetentionMode(mode), Days: aws.Int32(o.RetentionDays)}},
		}})
	if err != nil && apiCode(err) != "InvalidBucketState" {
		return nil, fmt.Errorf("vault: init s3://%s: default retention: %w", bucket, err)
	}
	enc := o.Encryption
	if enc == "" {
		enc = EncryptionS3
		if o.KMSKeyID != "" {
			enc = EncryptionKMS
		}
	}
	if enc != EncryptionNone {
		d := &types.ServerSideEncryptionByDefault{SSEAlgorithm: types.ServerSideEncryption(enc)}
		if enc == EncryptionKMS && o.KMSKeyID != "" {
			d.KMSMasterKeyID = &o.KMSKeyID
		}
		_, err := c.PutBucketEncryption(ctx, &s3.PutBucketEncryptionInput{Bucket: &bucket,
			ServerSideEncryptionConfiguration: &types.ServerSideEncryptionConfiguration{Rules: []types.ServerSideEncryptionRule{
				{ApplyServerSideEncryptionByDefault: d, BucketKeyEnabled: aws.Bool(enc == EncryptionKMS)},
			}}})
		if err != nil {
			return nil, fmt.Errorf("vault: init s3://%s: default encryption: %w", bucket, err)
		}
	}
	if !o.SkipPublicAccessBlock {
		_, err := c.PutPublicAccessBlock(ctx, &s3.PutPublicAccessBlockInput{Bucket: &bucket,
			PublicAccessBlockConfiguration: &types.PublicAccessBlockConfiguration{
				BlockPublicAcls: aws.Bool(true), IgnorePublicAcls: aws.Bool(true), BlockPublicPolicy: aws.Bool(true), RestrictPublicBuckets: aws.Bool(true),
			}})
		if err != nil {
			return nil, fmt.Errorf("vault: init s3://%s: public access block: %w", bucket, err)
		}
	}
	if !o.SkipPolicy {
		if _, err := c.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: &bucket, Policy: aws.String(bucketPolicy(bucket))}); err != nil {
			return nil, fmt.Errorf("vault: init s3://%s: bucket policy: %w", bucket, err)
		}
	}
	return check(ctx, c, bucket, o.Check)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
