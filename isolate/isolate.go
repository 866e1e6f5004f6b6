// Package isolate contains a compromised EC2 instance in a fixed, recorded,
// reversible order, and puts it back.
//
// [Run] performs the sequence below; [Release] undoes it from the [State] Run
// returned. Every step reads the state of what it touches from AWS before
// and after acting, and hands both to the caller's [Recorder] before the next
// step begins:
//
//  1. record-state: the starting state of everything later steps touch.
//     An instance in a default VPC is refused unless
//     Options.AllowDefaultVPC ([ErrDefaultVPC]).
//  2. auto-scaling: EnterStandby (or DetachInstances), so failing health
//     checks cannot replace and terminate the instance.
//  3. load-balancers: deregistration from every ELBv2 target group (instance
//     and IP targets) and classic ELB that holds the instance.
//  4. protect: DisableApiTermination, shutdown behaviour "stop",
//     DeleteOnTermination=false on every attached EBS volume.
//  5. prepare, then network:<eni> per interface: an all-open group (IPv4 and
//     IPv6, both directions) so established flows become untracked, then the
//     isolation group alone, then connection-tracking timeouts at their
//     minimum; network-acl:<subnet> only when asked.
//  6. elastic-ips: every Elastic IP disassociated.
//  7. instance-profile (replaced by an empty isolation profile) and
//     revoke-sessions (an inline deny on the old roles for sessions issued
//     before the step ran, and never before the profile was replaced).
//  8. tags on the instance and its volumes.
//
// # Guarantees
//
//   - Nothing is changed that has not been read first, and no step starts
//     before the previous one was recorded: a Recorder error stops the run.
//   - A step that fails is recorded as failed; later steps that are still safe
//     run (network changes never run when the instance could not be taken out
//     of its Auto Scaling group), and the run returns an error wrapping
//     [ErrPartial].
//   - Runs are idempotent: each step compares what AWS holds now with what
//     the step wants and does nothing when they match, so a re-run with the
//     prior State continues where the last one stopped.
//   - A step that ran is saved and recorded even when ctx is cancelled
//     meanwhile; an interface opened to all traffic always gets the
//     isolation group (or its previous groups back), cancelled or not, and
//     the State is saved with that step pending before it is opened.
//   - Roles are never edited beyond one inline deny policy named for the case;
//     groups, profile and network ACL are created once per VPC or account,
//     named and tagged as impound's, and reused. A group or profile with
//     impound's name but not its managed tag is never adopted
//     ([ErrNotManaged]).
//   - [Release] restores the recorded starting state of every step that was
//     applied, and leaves the inline deny in place unless asked.
package isolate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/smithy-go"
)

// Errors callers can test with errors.Is.
var (
	// ErrPartial: some steps failed (and were recorded as failed) while
	// others completed.
	ErrPartial = errors.New("isolation incomplete: some steps failed")
	// ErrInstanceNotFound: the instance does not exist in this account and Region.
	ErrInstanceNotFound = errors.New("instance not found")
	// ErrInstanceTerminated: the instance is shutting down or terminated.
	ErrInstanceTerminated = errors.New("instance is terminated")
	// ErrNotInVPC: the instance has no VPC, so it has no network interfaces
	// to isolate.
	ErrNotInVPC = errors.New("instance is not in a VPC")
	// ErrDefaultVPC: the instance is in a default VPC and
	// Options.AllowDefaultVPC was not set. Default subnets are shared by
	// every instance launched without a subnet and auto-assign public IPv4
	// addresses that isolation cannot remove.
	ErrDefaultVPC = errors.New("refusing to isolate an instance in a default VPC without --allow-default-vpc")
	// ErrDefaultVPCNACL: --nacl was asked for an instance in a default VPC,
	// whose subnets every untagged launch shares.
	ErrDefaultVPCNACL = errors.New("refusing a deny-all network ACL in a default VPC")
	// ErrAccessDenied: AWS refused a call for lack of permission.
	ErrAccessDenied = errors.New("access denied")
	// ErrAlreadyIsolated: the instance carries impound's isolation tags but
	// no prior State was given, so its starting state cannot be known.
	ErrAlreadyIsolated = errors.New("instance already isolated by impound")
	// ErrStateMismatch: the State given belongs to another instance or case,
	// or has an unknown version.
	ErrStateMismatch = errors.New("state does not match")
	// ErrNoSSMEndpoints: --allow-ssm was asked but the VPC has no SSM
	// interface endpoints to allow.
	ErrNoSSMEndpoints = errors.New("no SSM VPC endpoints")
	// ErrNotManaged: a security group or instance profile carries the name
	// of one of impound's but not its managed tag, so impound did not
	// create it and will not use it.
	ErrNotManaged = errors.New("resource not created by impound")
	// ErrNotApplied: AWS accepted a change but reading back does not show it.
	ErrNotApplied = errors.New("change not visible after applying it")
)

// Names and tags of what impound creates and sets.
const (
	IsolationGroupName    = "impound-isolation"
	IsolationSSMGroupName = "impound-isolation-ssm"
	AllOpenGroupName      = "impound-all-open"
	IsolationProfileName  = "impound-isolation"
	DenyNACLName          = "impound-deny-all"

	TagManaged = "impound:managed" // "true" on everything impound creates
	TagCase    = "impound:case"
	TagStatus  = "impound:status" // isolated, partially-isolated, released
	TagTime    = "impound:time"   // RFC 3339, UTC

	// Connection-tracking timeouts at their minimum (seconds).
	MinTCPEstablishedTimeout = 60
	MinUDPStreamTimeout      = 60
	MinUDPTimeout            = 30
	// AWS defaults, restored when the interface had no explicit setting (an
	// interface's timeouts cannot be unset once set).
	DefaultTCPEstablishedTimeout = 432000
	// NitroV6TCPEstablishedTimeout is the TCP default of Nitro v6 types,
	// which release does not guess from the instance type; it says so.
	NitroV6TCPEstablishedTimeout = 350
	DefaultUDPStreamTimeout      = 180
	DefaultUDPTimeout            = 30
)

// Step is one recorded action: what it touched, the state before and after as
// read from AWS, and how it ended.
type Step struct {
	Name      string   // e.g. "auto-scaling", "network:eni-0abc"
	Resources []string // ARNs
	Before    any      // JSON-serialisable
	After     any
	Status    Status
	Note      string // why skipped, what was passed through, warnings
	Err       error  // set when Status is StatusFailed
}

// Status is how a step ended.
type Status string

const (
	StatusDone    Status = "done"         // changed and verified
	StatusAlready Status = "already-done" // AWS already held the wanted state
	StatusFailed  Status = "failed"
	StatusSkipped Status = "skipped" // not applicable, or unsafe after a failure
	StatusPlanned Status = "planned" // dry run: would change
)

// Recorder receives every step before the next begins. An error stops the
// run: nothing unrecorded is done.
type Recorder func(ctx context.Context, s Step) error

// Options configures Run and Release. Use NewOptions for defaults.
type Options struct {
	CaseID    string
	DryRun    bool // plan only: read, record nothing, change nothing
	AllowSSM  bool // isolation group keeps HTTPS egress to the VPC's SSM and S3 endpoints
	NACL      bool // also swap each subnet's network ACL for a deny-all one (cuts the whole subnet)
	ASGDetach bool // DetachInstances instead of EnterStandby
	// AllowDefaultVPC isolates an instance in a default VPC, which is
	// otherwise refused with ErrDefaultVPC (never together with NACL).
	AllowDefaultVPC bool
	// RevokeDeny makes Release delete the inline deny policy too.
	RevokeDeny bool
	// UntrackWait is how long an interface holds the all-open group before
	// the isolation group replaces it.
	UntrackWait time.Duration
	// Record receives every step; nil records nothing (tests, dry runs).
	Record Recorder
	// SaveState is called with the State after every recorded step, so the
	// caller can persist it; an error stops the run.
	SaveState func(ctx context.Context, s *State) error
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// NewOptions returns the defaults.
func NewOptions() Options {
	return Options{UntrackWait: 0}
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now().UTC()
	}
	return time.Now().UTC()
}

// Clients are the member-account APIs isolation uses.
type Clients struct {
	Region      string
	EC2         EC2API
	AutoScaling AutoScalingAPI
	ELBv2       ELBv2API
	ELB         ELBAPI
	IAM         IAMAPI
}

// NewClients builds Clients from a member-account configuration.
func NewClients(cfg aws.Config) Clients {
	return Clients{
		Region:      cfg.Region,
		EC2:         ec2.NewFromConfig(cfg),
		AutoScaling: autoscaling.NewFromConfig(cfg),
		ELBv2:       elbv2.NewFromConfig(cfg),
		ELB:         elb.NewFromConfig(cfg),
		IAM:         iam.NewFromConfig(cfg),
	}
}

// apiCode returns the AWS error code of err, or "".
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// classify wraps AWS permission errors with ErrAccessDenied.
func classify(err error) error {
	switch apiCode(err) {
	case "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Client.UnauthorizedOperation", "AuthFailure":
		return fmt.Errorf("%w (give the member-account role the permissions in deploy/iam/isolate-policy.json): %w", ErrAccessDenied, err)
	}
	return err
}

// jsonValue normalises v through JSON so states compare as they are recorded.
func jsonValue(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	err = json.Unmarshal(b, &out)
	return out, err
}
