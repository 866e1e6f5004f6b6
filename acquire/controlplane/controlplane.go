// Package controlplane collects what the AWS API knows about a compromised
// instance (its description, volumes, network interfaces, security groups,
// instance profile and role policies, tags, console output and screenshot,
// the CloudTrail events about it and its role, and the triggering GuardDuty
// finding) and stores each as evidence in the vault.
//
// # Guarantees
//
//   - Each item is stored write-once with its SHA-256 computed while
//     streaming, and reported to the Recorder with its receipt, the calls
//     made and the notes an examiner needs.
//   - An item that could not be collected (a permission missing, a call
//     throttled or failed) is reported as failed with the API's error, and
//     the other items are still collected; Options.Items collects only some
//     items, so that a later run can collect again the ones that failed.
//   - An item that can never be collected is reported as unavailable
//     (Result.Unavailable says why), not as failed, so that it does not
//     keep a case from completing: the screenshot of an instance type
//     without one (GetConsoleScreenshot answers UnsupportedOperation) or of
//     an instance that is not running (IncorrectInstanceState), the
//     finding's record when the finding given is not JSON.
//   - Items are JSON documents with a fixed envelope (what was called, in
//     which account and Region, when, and notes such as a fallback used or a
//     look-up cut short) around the API's answer; console output and the
//     screenshot are stored as the decoded bytes AWS returned, and
//     console-output.json says how the output was obtained (Latest or not,
//     AWS's timestamp) and names its hash.
//   - CloudTrail events are looked up over the whole window
//     (Options.LookBack, 7 days by default) by the instance ID as a resource
//     and as the role session name (Username), and by the instance
//     profile's name and each of its roles' names and ARNs, in the
//     instance's Region and again in the partition's global Region
//     (us-east-1), which alone holds IAM's events; they are merged,
//     de-duplicated by EventId and ordered by time. A look-up that reaches
//     Options.MaxCloudTrailEvents stops and the item says so (truncated); a
//     look-up in the instance's Region that fails fails the item, one in the
//     global Region is recorded with its error and a note.
//   - The GuardDuty finding is stored twice: its bytes exactly as given
//     (guardduty-finding.given.json, whose receipt's SHA-256 is the record's
//     given_sha256), and a record of it with its values as given,
//     EventBridge event or bare detail, and what it says
//     (guardduty-finding.json).
//   - Paired items are collected together, under the same keys' prefix:
//     console-output.txt and the console-output.json that describes it,
//     guardduty-finding.given.json and guardduty-finding.json.
package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail"
	cttypes "github.com/aws/aws-sdk-go-v2/service/cloudtrail/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"
	"github.com/aws/smithy-go"
	"github.com/rs/zerolog"

	"github.com/impound-ir/impound/vault"
)

// DefaultLookBack is how far back CloudTrail events are collected.
const DefaultLookBack = 7 * 24 * time.Hour

// Item names, also the last element of each item's vault key.
const (
	ItemInstance          = "instance.json"
	ItemVolumes           = "volumes.json"
	ItemNetworkInterfaces = "network-interfaces.json"
	ItemSecurityGroups    = "security-groups.json"
	ItemIAM               = "iam.json"
	ItemTags              = "tags.json"
	ItemConsoleOutput     = "console-output.txt"
	// ItemConsoleOutputRecord says how the console output was obtained.
	ItemConsoleOutputRecord = "console-output.json"
	ItemScreenshot          = "console-screenshot.jpg"
	ItemCloudTrail          = "cloudtrail-events.json"
	ItemFinding             = "guardduty-finding.json"
	// ItemFindingGiven is the GuardDuty finding's bytes exactly as given.
	ItemFindingGiven = "guardduty-finding.given.json"
)

// Items returns the names of every item Collect produces, in the order it
// collects them; ItemFindingGiven and ItemFinding only when
// Options.Finding is set.
func Items() []string {
	return []string{ItemInstance, ItemVolumes, ItemNetworkInterfaces, ItemSecurityGroups, ItemIAM, ItemTags, ItemCloudTrail,
		ItemConsoleOutput, ItemConsoleOutputRecord, ItemScreenshot, ItemFindingGiven, ItemFinding}
}

// FindingItem reports whether item is one of the GuardDuty finding's items,
// collected only when a finding is given.
func FindingItem(item string) bool { return item == ItemFinding || item == ItemFindingGiven }

// pairs are the items collected together: either asked for collects both.
var pairs = map[string]string{
	ItemConsoleOutput: ItemConsoleOutputRecord, ItemConsoleOutputRecord: ItemConsoleOutput,
	ItemFinding: ItemFindingGiven, ItemFindingGiven: ItemFinding,
}

// ErrUnknownItem is returned for an Options.Items entry that is not one of Items().
var ErrUnknownItem = errors.New("controlplane: unknown item")

type ec2API interface {
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeVolumes(context.Context, *ec2.DescribeVolumesInput, ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error)
	DescribeNetworkInterfaces(context.Context, *ec2.DescribeNetworkInterfacesInput, ...func(*ec2.Options)) (*ec2.DescribeNetworkInterfacesOutput, error)
	DescribeSecurityGroups(context.Context, *ec2.DescribeSecurityGroupsInput, ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error)
	DescribeTags(context.Context, *ec2.DescribeTagsInput, ...func(*ec2.Options)) (*ec2.DescribeTagsOutput, error)
	GetConsoleOutput(context.Context, *ec2.GetConsoleOutputInput, ...func(*ec2.Options)) (*ec2.GetConsoleOutputOutput, error)
	GetConsoleScreenshot(context.Context, *ec2.GetConsoleScreenshotInput, ...func(*ec2.Options)) (*ec2.GetConsoleScreenshotOutput, error)
}

type iamAPI interface {
	GetInstanceProfile(context.Context, *iam.GetInstanceProfileInput, ...func(*iam.Options)) (*iam.GetInstanceProfileOutput, error)
	GetRole(context.Context, *iam.GetRoleInput, ...func(*iam.Options)) (*iam.GetRoleOutput, error)
	ListRolePolicies(context.Context, *iam.ListRolePoliciesInput, ...func(*iam.Options)) (*iam.ListRolePoliciesOutput, error)
	GetRolePolicy(context.Context, *iam.GetRolePolicyInput, ...func(*iam.Options)) (*iam.GetRolePolicyOutput, error)
	ListAttachedRolePolicies(context.Context, *iam.ListAttachedRolePoliciesInput, ...func(*iam.Options)) (*iam.ListAttachedRolePoliciesOutput, error)
}

type cloudtrailAPI interface {
	LookupEvents(context.Context, *cloudtrail.LookupEventsInput, ...func(*cloudtrail.Options)) (*cloudtrail.LookupEventsOutput, error)
}

// Clients are the member account's API clients.
type Clients struct {
	EC2        ec2API
	IAM        iamAPI
	CloudTrail cloudtrailAPI // in the instance's Region
	// GlobalCloudTrail is CloudTrail in GlobalRegion, where the events of
	// global services (IAM, STS's global endpoint) are kept; nil when that
	// is the instance's Region.
	GlobalCloudTrail cloudtrailAPI
	GlobalRegion     string
}

// NewClients builds Clients from the member account's configuration.
func NewClients(cfg aws.Config) Clients {
	c := Clients{EC2: ec2.NewFromConfig(cfg), IAM: iam.NewFromConfig(cfg), CloudTrail: cloudtrail.NewFromConfig(cfg)}
	if g := GlobalRegion(cfg.Region); cfg.Region != "" && g != cfg.Region {
		c.GlobalCloudTrail = cloudtrail.NewFromConfig(cfg, func(o *cloudtrail.Options) { o.Region = g })
		c.GlobalRegion = g
	}
	return c
}

// GlobalRegion is the Region whose CloudTrail event history holds the
// events of global services (IAM, STS's global endpoint) for the partition
// of region.
func GlobalRegion(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "cn-north-1"
	case strings.HasPrefix(region, "us-gov-"):
		return "us-gov-west-1"
	}
	return "us-east-1"
}

// Result is one collected (or failed, or unavailable) item.
type Result struct {
	Item    string
	Key     string
	Receipt *vault.Receipt // nil when Err or Unavailable is set
	Err     error
	// Unavailable, when set, says why the item can never be collected (the
	// instance type has no console screenshot): the item is done, with
	// nothing stored, and is not an error.
	Unavailable string
	// Calls are the API operations made for the item, with the parameters
	// that change what AWS answers ("ec2:GetConsoleOutput Latest=true").
	Calls []string
	// Notes are what an examiner must know about the item: a fallback
	// used, a look-up cut short. They are also in the item's envelope.
	Notes []string
}

// Recorder records one item's outcome; an error stops the collection.
type Recorder func(ctx context.Context, r Result) error

// Options configures a collection. Start from NewOptions.
type Options struct {
	AccountID string
	Region    string
	// LookBack is the CloudTrail window: events from Now-LookBack to Now
	// are collected (DefaultLookBack when 0).
	LookBack time.Duration
	// MaxCloudTrailEvents bounds each CloudTrail look-up
	// (DefaultMaxCloudTrailEvents when 0); a look-up that reaches it stops,
	// and the item says so (truncated).
	MaxCloudTrailEvents int
	Now                 func() time.Time
	// Key returns the vault key of an item.
	Key func(item string) string
	// Finding is the triggering GuardDuty finding, either the EventBridge
	// event or its detail; it is stored as given (see FindingRecord).
	Finding json.RawMessage
	// Items, when not empty, are the only items collected (see Items; an
	// item paired with one of them is collected too); the instance is
	// described all the same, and IAM looked up for the CloudTrail item,
	// without storing them.
	Items  []string
	Put    vault.PutOptions
	Record Recorder
}

// NewOptions returns the defaults.
func NewOptions() Options {
	return Options{LookBack: DefaultLookBack, MaxCloudTrailEvents: DefaultMaxCloudTrailEvents, Now: time.Now,
		Record: func(context.Context, Result) error { return nil }}
}

// Envelope wraps every JSON item: what was asked, of whom, when.
type Envelope struct {
	Format     string    `json:"format"` // "impound-control-plane/1"
	Item       string    `json:"item"`
	InstanceID string    `json:"instance_id"`
	AccountID  string    `json:"account_id"`
	Region     string    `json:"region"`
	Calls      []string  `json:"calls"` // API operations made, in order
	Notes      []string  `json:"notes,omitempty"`
	Collected  time.Time `json:"collected"`
	Data       any       `json:"data"`
}

// collected is what one step gathered: the item's data and how.
type collected struct {
	data  any
	calls []string
	notes []string
}

// Collect gathers every item about instanceID (or those of Options.Items)
// and stores each in store. It returns every item's result; the error is
// non-nil if any item failed or a result could not be recorded (an
// unavailable item is not a failure).
func Collect(ctx context.Context, c Clients, store vault.Store, instanceID string, o Options) ([]Result, error) {
	if o.Key == nil {
		return nil, errors.New("controlplane: no key function")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LookBack <= 0 {
		o.LookBack = DefaultLookBack
	}
	if o.MaxCloudTrailEvents <= 0 {
		o.MaxCloudTrailEvents = DefaultMaxCloudTrailEvents
	}
	if o.Record == nil {
		o.Record = func(context.Context, Result) error { return nil }
	}
	want, err := wanted(o.Items, len(o.Finding) > 0)
	if err != nil {
		return nil, err
	}
	if len(want) == 0 {
		return nil, nil
	}
	col := &collector{c: c, store: store, id: instanceID, o: o}
	inst, err := col.instance(ctx)
	if err != nil {
		// Without the instance nothing else can be found; record and stop:
		// the instance item's failure, or when it is not asked for, each
		// item asked for.
		var results []Result
		var rerrs []error
		for _, item := range Items() {
			if want[item] && (want[ItemInstance] == (item == ItemInstance)) {
				r := Result{Item: item, Key: o.Key(item), Err: err, Calls: []string{"ec2:DescribeInstances"}}
				results = append(results, r)
				rerrs = append(rerrs, o.Record(ctx, r))
			}
		}
		return results, errors.Join(append([]error{err}, rerrs...)...)
	}
	var results []Result
	var errs []error
	record := func(r Result) error {
		results = append(results, r)
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Item, r.Err))
		}
		return o.Record(ctx, r)
	}
	storeJSON := func(item string, cd collected, err error) error {
		r := Result{Item: item, Key: o.Key(item), Err: err, Calls: cd.calls, Notes: cd.notes}
		if err == nil {
			r.Receipt, r.Err = col.putJSON(ctx, item, cd)
		}
		return record(r)
	}
	unavailable := func(item string, calls []string, why string) error {
		zerolog.Ctx(ctx).Warn().Str("item", item).Str("reason", why).Msg("control-plane item unavailable")
		return record(Result{Item: item, Key: o.Key(item), Calls: calls, Unavailable: why})
	}
	steps := []struct {
		item string
		fn   func(context.Context, *ec2types.Instance) (collected, error)
	}{
		{ItemInstance, func(context.Context, *ec2types.Instance) (collected, error) {
			return collected{data: inst, calls: []string{"ec2:DescribeInstances"}}, nil
		}},
		{ItemVolumes, col.volumes},
		{ItemNetworkInterfaces, col.networkInterfaces},
		{ItemSecurityGroups, col.securityGroups},
		{ItemIAM, col.iam},
		{ItemTags, col.tags},
		{ItemCloudTrail, col.cloudTrail}, // after ItemIAM: it looks up the roles IAM named
	}
	for _, s := range steps {
		if !want[s.item] {
			if s.item == ItemIAM && want[ItemCloudTrail] {
				// The CloudTrail item looks up the roles IAM names.
				_, _ = s.fn(ctx, inst)
			}
			continue
		}
		cd, err := s.fn(ctx, inst)
		if err := storeJSON(s.item, cd, err); err != nil {
			return results, err
		}
	}
	if want[ItemConsoleOutput] {
		if err := col.consoleOutputItems(ctx, record, storeJSON); err != nil {
			return results, err
		}
	}

	if want[ItemScreenshot] {
		calls := []string{"ec2:GetConsoleScreenshot WakeUp=false"}
		shot, why, err := col.screenshot(ctx)
		if why != "" {
			if err := unavailable(ItemScreenshot, calls, why); err != nil {
				return results, err
			}
		} else {
			r := Result{Item: ItemScreenshot, Key: o.Key(ItemScreenshot), Err: err, Calls: calls}
			if err == nil {
				r.Receipt, r.Err = col.put(ctx, ItemScreenshot, shot)
			}
			if err := record(r); err != nil {
				return results, err
			}
		}
	}

	if want[ItemFinding] {
		// The bytes as given first: the record says what they hash to.
		r := Result{Item: ItemFindingGiven, Key: o.Key(ItemFindingGiven), Calls: []string{}}
		r.Receipt, r.Err = col.put(ctx, ItemFindingGiven, o.Finding)
		if err := record(r); err != nil {
			return results, err
		}
		cd, why := col.finding()
		if why != "" {
			err = unavailable(ItemFinding, cd.calls, why)
		} else {
			err = storeJSON(ItemFinding, cd, nil)
		}
		if err != nil {
			return results, err
		}
	}
	return results, errors.Join(errs...)
}

// wanted is the set of items to collect: items (every item when empty) and
// the items paired with them, the finding's only when one is given.
func wanted(items []string, finding bool) (map[string]bool, error) {
	all := Items()
	if len(items) == 0 {
		items = all
	}
	want := map[string]bool{}
	for _, item := range items {
		if !slices.Contains(all, item) {
			return nil, fmt.Errorf("%w %q: the items are %s", ErrUnknownItem, item, strings.Join(all, ", "))
		}
		if FindingItem(item) && !finding {
			continue
		}
		want[item] = true
		if p := pairs[item]; p != "" {
			want[p] = true
		}
	}
	return want, nil
}

// consoleOutputItems collects the console output, the bytes as AWS returned
// them, then how they were obtained.
func (col *collector) consoleOutputItems(ctx context.Context, record func(Result) error,
	storeJSON func(string, collected, error) error) error {
	o := col.o
	out, cd, err := col.consoleOutput(ctx)
	r := Result{Item: ItemConsoleOutput, Key: o.Key(ItemConsoleOutput), Err: err, Calls: cd.calls, Notes: cd.notes}
	if err == nil {
		r.Receipt, r.Err = col.put(ctx, ItemConsoleOutput, out)
	}
	if err := record(r); err != nil {
		return err
	}
	if r.Err != nil {
		// console-output.json describes a stored output; its failure is
		// the output's, recorded so that both are collected again.
		return record(Result{Item: ItemConsoleOutputRecord, Key: o.Key(ItemConsoleOutputRecord), Calls: cd.calls,
			Err: fmt.Errorf("%s was not stored: %w", ItemConsoleOutput, r.Err)})
	}
	cd.data = ConsoleOutputRecord{ConsoleOutput: cd.data.(ConsoleOutputRecord).ConsoleOutput, Key: r.Key,
		VersionID: r.Receipt.VersionID, SHA256: r.Receipt.SHA256, Size: r.Receipt.Size}
	return storeJSON(ItemConsoleOutputRecord, cd, nil)
}

type collector struct {
	c     Clients
	store vault.Store
	id    string
	o     Options

	// roles are the instance profile's roles, as IAM named them; iamErr is
	// why they are unknown.
	roles  []iamtypes.Role
	iamErr error
}

func (col *collector) putJSON(ctx context.Context, item string, cd collected) (*vault.Receipt, error) {
	env := Envelope{Format: "impound-control-plane/1", Item: item, InstanceID: col.id, AccountID: col.o.AccountID,
		Region: col.o.Region, Calls: cd.calls, Notes: cd.notes, Collected: col.o.Now().UTC(), Data: cd.data}
	if env.Calls == nil {
		env.Calls = []string{}
	}
	b, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return col.put(ctx, item, append(b, '\n'))
}

func (col *collector) put(ctx context.Context, item string, data []byte) (*vault.Receipt, error) {
	opts := col.o.Put
	opts.SizeHint = int64(len(data))
	switch {
	case strings.HasSuffix(item, ".json"):
		opts.ContentType = "application/json"
	case strings.HasSuffix(item, ".txt"):
		opts.ContentType = "text/plain; charset=utf-8"
	case strings.HasSuffix(item, ".jpg"):
		opts.ContentType = "image/jpeg"
	}
	rc, err := vault.Put(ctx, col.store, col.o.Key(item), bytes.NewReader(data), opts)
	if err != nil {
		return nil, fmt.Errorf("store in vault: %w", err)
	}
	return rc, nil
}

func (col *collector) instance(ctx context.Context) (*ec2types.Instance, error) {
	out, err := col.c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{col.id}})
	if err != nil {
		return nil, fmt.Errorf("describe instance %s (check the ID, --region and --role-arn): %w", col.id, err)
	}
	for _, r := range out.Reservations {
		for i := range r.Instances {
			if aws.ToString(r.Instances[i].InstanceId) == col.id {
				return &r.Instances[i], nil
			}
		}
	}
	return nil, fmt.Errorf("instance %s not found in account %s, Region %s", col.id, col.o.AccountID, col.o.Region)
}

func (col *collector) volumes(ctx context.Context, inst *ec2types.Instance) (collected, error) {
	var ids []string
	for _, b := range inst.BlockDeviceMappings {
		if b.Ebs != nil {
			ids = append(ids, aws.ToString(b.Ebs.VolumeId))
		}
	}
	if len(ids) == 0 {
		return collected{data: []ec2types.Volume{}}, nil
	}
	calls := []string{"ec2:DescribeVolumes"}
	out, err := col.c.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: ids})
	if err != nil {
		return collected{calls: calls}, fmt.Errorf("describe volumes: %w", err)
	}
	return collected{data: out.Volumes, calls: calls}, nil
}

func (col *collector) networkInterfaces(ctx context.Context, inst *ec2types.Instance) (collected, error) {
	calls := []string{"ec2:DescribeNetworkInterfaces attachment.instance-id=" + col.id}
	all := []ec2types.NetworkInterface{}
	p := ec2.NewDescribeNetworkInterfacesPaginator(col.c.EC2, &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{col.id}}}})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return collected{calls: calls}, fmt.Errorf("describe network interfaces: %w", err)
		}
		all = append(all, page.NetworkInterfaces...)
	}
	return collected{data: all, calls: calls}, nil
}

func (col *collector) securityGroups(ctx context.Context, inst *ec2types.Instance) (collected, error) {
	ids := map[string]bool{}
	for _, g := range inst.SecurityGroups {
		ids[aws.ToString(g.GroupId)] = true
	}
	for _, ni := range inst.NetworkInterfaces {
		for _, g := range ni.Groups {
			ids[aws.ToString(g.GroupId)] = true
		}
	}
	if len(ids) == 0 {
		return collected{data: []ec2types.SecurityGroup{}}, nil
	}
	var list []string
	for id := range ids {
		list = append(list, id)
	}
	sort.Strings(list)
	calls := []string{"ec2:DescribeSecurityGroups"}
	out, err := col.c.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: list})
	if err != nil {
		return collected{calls: calls}, fmt.Errorf("describe security groups: %w", err)
	}
	return collected{data: out.SecurityGroups, calls: calls}, nil
}

// IAMRecord is the instance profile and everything its roles may do.
type IAMRecord struct {
	InstanceProfile any          `json:"instance_profile"`
	Roles           []RoleRecord `json:"roles"`
}

// RoleRecord is one role with its inline and attached policies.
type RoleRecord struct {
	Role any `json:"role"`
	// TrustPolicy is the role's AssumeRolePolicyDocument, decoded.
	TrustPolicy      string            `json:"trust_policy"`
	InlinePolicies   map[string]string `json:"inline_policies"` // name -> policy document (decoded JSON text)
	AttachedPolicies any               `json:"attached_policies"`
}

func (col *collector) iam(ctx context.Context, inst *ec2types.Instance) (collected, error) {
	cd, err := col.iamRecord(ctx, inst)
	col.iamErr = err
	return cd, err
}

func (col *collector) iamRecord(ctx context.Context, inst *ec2types.Instance) (collected, error) {
	if inst.IamInstanceProfile == nil {
		return collected{data: IAMRecord{Roles: []RoleRecord{}}, notes: []string{"the instance has no instance profile"}}, nil
	}
	name := profileName(inst)
	calls := []string{"iam:GetInstanceProfile"}
	prof, err := col.c.IAM.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(name)})
	if err != nil {
		return collected{calls: calls}, fmt.Errorf("get instance profile %s: %w", name, err)
	}
	col.roles = prof.InstanceProfile.Roles
	rec := IAMRecord{InstanceProfile: prof.InstanceProfile, Roles: []RoleRecord{}}
	if len(col.roles) > 0 {
		calls = append(calls, "iam:GetRole", "iam:ListRolePolicies", "iam:GetRolePolicy", "iam:ListAttachedRolePolicies")
	}
	for _, r := range col.roles {
		rn := r.RoleName
		role, err := col.c.IAM.GetRole(ctx, &iam.GetRoleInput{RoleName: rn})
		if err != nil {
			return collected{calls: calls}, fmt.Errorf("get role %s: %w", aws.ToString(rn), err)
		}
		rr := RoleRecord{Role: role.Role, TrustPolicy: policyDocument(role.Role.AssumeRolePolicyDocument), InlinePolicies: map[string]string{}}
		pp := iam.NewListRolePoliciesPaginator(col.c.IAM, &iam.ListRolePoliciesInput{RoleName: rn})
		for pp.HasMorePages() {
			page, err := pp.NextPage(ctx)
			if err != nil {
				return collected{calls: calls}, fmt.Errorf("list role policies of %s: %w", aws.ToString(rn), err)
			}
			for _, pn := range page.PolicyNames {
				p, err := col.c.IAM.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: rn, PolicyName: aws.String(pn)})
				if err != nil {
					return collected{calls: calls}, fmt.Errorf("get role policy %s of %s: %w", pn, aws.ToString(rn), err)
				}
				rr.InlinePolicies[pn] = policyDocument(p.PolicyDocument)
			}
		}
		attached := []iamtypes.AttachedPolicy{}
		ap := iam.NewListAttachedRolePoliciesPaginator(col.c.IAM, &iam.ListAttachedRolePoliciesInput{RoleName: rn})
		for ap.HasMorePages() {
			page, err := ap.NextPage(ctx)
			if err != nil {
				return collected{calls: calls}, fmt.Errorf("list attached policies of %s: %w", aws.ToString(rn), err)
			}
			attached = append(attached, page.AttachedPolicies...)
		}
		rr.AttachedPolicies = attached
		rec.Roles = append(rec.Roles, rr)
	}
	return collected{data: rec, calls: calls}, nil
}

// policyDocument decodes a policy document as IAM returns it, URL-encoded
// (RFC 3986, so a + is a plus sign); a document that is not valid
// URL-encoding is returned as is.
func policyDocument(p *string) string {
	doc, err := url.PathUnescape(aws.ToString(p))
	if err != nil {
		return aws.ToString(p)
	}
	return doc
}

// profileName is the name in the instance profile's ARN
// (arn:aws:iam::111111111111:instance-profile/path/name).
func profileName(inst *ec2types.Instance) string {
	arn := aws.ToString(inst.IamInstanceProfile.Arn)
	return arn[strings.LastIndexByte(arn, '/')+1:]
}

func (col *collector) tags(ctx context.Context, inst *ec2types.Instance) (collected, error) {
	ids := []string{col.id}
	for _, b := range inst.BlockDeviceMappings {
		if b.Ebs != nil {
			ids = append(ids, aws.ToString(b.Ebs.VolumeId))
		}
	}
	calls := []string{"ec2:DescribeTags"}
	all := []ec2types.TagDescription{}
	p := ec2.NewDescribeTagsPaginator(col.c.EC2, &ec2.DescribeTagsInput{
		Filters: []ec2types.Filter{{Name: aws.String("resource-id"), Values: ids}}})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return collected{calls: calls}, fmt.Errorf("describe tags: %w", err)
		}
		all = append(all, page.Tags...)
	}
	return collected{data: all, calls: calls}, nil
}

// DefaultMaxCloudTrailEvents bounds one CloudTrail look-up: LookupEvents
// serves 50 events a call at 2 calls a second per account and Region, so
// 50,000 events take about 8 minutes. Beyond that, the trail's S3 logs are
// the place to look.
const DefaultMaxCloudTrailEvents = 50_000

// trailPageSize is LookupEvents' largest page.
const trailPageSize = 50

// trailAttempts is how many times a LookupEvents call is tried: at 2 calls
// a second per account and Region, a collection's look-ups are throttled
// as a matter of course, and the SDK's backoff between attempts paces them.
const trailAttempts = 10

// patientRetries raises a call's attempts to trailAttempts.
func patientRetries(o *cloudtrail.Options) {
	if o.Retryer == nil || o.Retryer.MaxAttempts() < trailAttempts {
		o.RetryMaxAttempts = trailAttempts
	}
}

// TrailRecord is the CloudTrail item: the events about the instance and its
// roles in the window, and the look-ups that found them.
type TrailRecord struct {
	// Start and End bound the window (End is the collection time).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Lookups are the LookupEvents queries made, in order.
	Lookups []TrailLookup `json:"lookups"`
	// EventCount is len(Events): distinct events, by EventId.
	EventCount int `json:"event_count"`
	// Truncated is true when a look-up stopped at the event limit: events
	// in the window may be missing.
	Truncated bool `json:"truncated"`
	// Events are oldest first (ties by EventId).
	Events []cttypes.Event `json:"events"`
}

// TrailLookup is one LookupEvents query, followed through all its pages.
type TrailLookup struct {
	Region         string `json:"region"`
	AttributeKey   string `json:"attribute_key"` // ResourceName or Username
	AttributeValue string `json:"attribute_value"`
	// Why says what the value is ("instance ID", "role name", ...).
	Why    string `json:"why"`
	Pages  int    `json:"pages"`
	Events int    `json:"events"` // events returned, before de-duplication
	// Truncated is true when the look-up stopped at the event limit;
	// LookupEvents answers newest first, so what is missing is older than
	// OldestEvent.
	Truncated   bool       `json:"truncated"`
	OldestEvent *time.Time `json:"oldest_event,omitempty"`
	// Error is why the look-up failed; only a look-up in the global Region
	// may fail without failing the item (the later ones there are not made).
	Error string `json:"error,omitempty"`
}

func (col *collector) cloudTrail(ctx context.Context, inst *ec2types.Instance) (collected, error) {
	end := col.o.Now().UTC()
	start := end.Add(-col.o.LookBack)
	rec := TrailRecord{Start: start, End: end, Lookups: []TrailLookup{}, Events: []cttypes.Event{}}
	var notes []string
	type query struct {
		key      cttypes.LookupAttributeKey
		val, why string
	}
	// Calls made with the instance role's credentials carry the instance
	// ID as the role session name, CloudTrail's Username for them.
	queries := []query{
		{cttypes.LookupAttributeKeyResourceName, col.id, "instance ID"},
		{cttypes.LookupAttributeKeyUsername, col.id, "instance ID as the role session name"},
	}
	if inst.IamInstanceProfile != nil {
		queries = append(queries, query{cttypes.LookupAttributeKeyResourceName, profileName(inst), "instance profile name"})
		for _, r := range col.roles {
			queries = append(queries, query{cttypes.LookupAttributeKeyResourceName, aws.ToString(r.RoleName), "role name"},
				query{cttypes.LookupAttributeKeyResourceName, aws.ToString(r.Arn), "role ARN"})
		}
		if col.iamErr != nil {
			notes = append(notes, "the instance profile's roles are unknown (the IAM item failed), so no look-up was made by role: "+col.iamErr.Error())
		}
	}
	// Every look-up is made in the instance's Region and, when it is not
	// the global Region, again there: IAM changes to the role and IAM or STS
	// calls made with its credentials are only in the global Region's
	// event history.
	type trail struct {
		api    cloudtrailAPI
		region string
	}
	trails := []trail{{col.c.CloudTrail, col.o.Region}}
	if col.c.GlobalCloudTrail != nil {
		trails = append(trails, trail{col.c.GlobalCloudTrail, col.c.GlobalRegion})
	}
	log := zerolog.Ctx(ctx)
	seen := map[string]bool{}
	done := map[string]bool{}
	for _, tr := range trails {
		for _, q := range queries {
			if q.val == "" || done[tr.region+"\x00"+string(q.key)+"\x00"+q.val] {
				continue
			}
			done[tr.region+"\x00"+string(q.key)+"\x00"+q.val] = true
			lk, err := col.lookup(ctx, tr.api, q.key, q.val, start, end, func(e cttypes.Event) {
				if id := aws.ToString(e.EventId); !seen[id] {
					seen[id] = true
					rec.Events = append(rec.Events, e)
				}
			})
			lk.Region, lk.Why = tr.region, q.why
			if err != nil && tr.region == col.o.Region {
				return collected{calls: []string{"cloudtrail:LookupEvents"}},
					fmt.Errorf("cloudtrail lookup-events %s=%s in %s: %w", q.key, q.val, tr.region, err)
			}
			if err != nil && !deniedForGood(err) {
				// A throttled or failed look-up there is worth a retry: the
				// item fails, and the case's next run collects it again.
				return collected{calls: []string{"cloudtrail:LookupEvents"}},
					fmt.Errorf("cloudtrail lookup-events %s=%s in %s, where IAM's events are: %w", q.key, q.val, tr.region, err)
			}
			if err != nil {
				// Denied there (a policy, a Region turned off): keep what the
				// instance's Region gave, and say what is missing.
				lk.Error = err.Error()
				rec.Lookups = append(rec.Lookups, lk)
				notes = append(notes, fmt.Sprintf("the look-ups in %s, where IAM and other global services' events are, failed (%s=%s: %v); "+
					"events such as changes to the role may be missing", tr.region, q.key, q.val, err))
				log.Warn().Err(err).Str("region", tr.region).Msg("CloudTrail look-up in the global Region failed")
				break
			}
			if lk.Truncated {
				rec.Truncated = true
				notes = append(notes, fmt.Sprintf("look-up %s=%s in %s stopped at %d events: events before %s may be missing; query the trail's S3 logs for them",
					q.key, q.val, tr.region, col.o.MaxCloudTrailEvents, lk.OldestEvent.UTC().Format(time.RFC3339)))
				log.Warn().Str("attribute", string(q.key)).Str("value", q.val).Str("region", tr.region).Int("events", lk.Events).
					Msg("CloudTrail look-up stopped at its limit; query the trail's S3 logs for the rest")
			}
			rec.Lookups = append(rec.Lookups, lk)
		}
	}
	sort.SliceStable(rec.Events, func(i, j int) bool {
		ti, tj := aws.ToTime(rec.Events[i].EventTime), aws.ToTime(rec.Events[j].EventTime)
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return aws.ToString(rec.Events[i].EventId) < aws.ToString(rec.Events[j].EventId)
	})
	rec.EventCount = len(rec.Events)
	calls := make([]string, len(rec.Lookups))
	for i, lk := range rec.Lookups {
		calls[i] = "cloudtrail:LookupEvents " + lk.AttributeKey + "=" + lk.AttributeValue
		if lk.Region != col.o.Region {
			calls[i] += " region=" + lk.Region
		}
	}
	return collected{data: rec, calls: calls, notes: notes}, nil
}

// lookup follows one LookupEvents query through its pages, up to
// Options.MaxCloudTrailEvents events, handing each to add.
func (col *collector) lookup(ctx context.Context, api cloudtrailAPI, key cttypes.LookupAttributeKey, val string, start, end time.Time,
	add func(cttypes.Event)) (TrailLookup, error) {
	lk := TrailLookup{AttributeKey: string(key), AttributeValue: val}
	p := cloudtrail.NewLookupEventsPaginator(api, &cloudtrail.LookupEventsInput{
		LookupAttributes: []cttypes.LookupAttribute{{AttributeKey: key, AttributeValue: aws.String(val)}},
		StartTime:        aws.Time(start), EndTime: aws.Time(end), MaxResults: aws.Int32(trailPageSize),
	})
	max := col.o.MaxCloudTrailEvents
	for p.HasMorePages() && !lk.Truncated {
		page, err := p.NextPage(ctx, patientRetries)
		if err != nil {
			return lk, err
		}
		lk.Pages++
		for _, e := range page.Events {
			if lk.Events == max {
				lk.Truncated = true
				break
			}
			lk.Events++
			if t := aws.ToTime(e.EventTime); lk.OldestEvent == nil || t.Before(*lk.OldestEvent) {
				lk.OldestEvent = &t
			}
			add(e)
		}
		if lk.Events == max && p.HasMorePages() {
			lk.Truncated = true
		}
	}
	if !lk.Truncated {
		lk.OldestEvent = nil
	}
	return lk, nil
}

// ConsoleOutputRecord says how the console output item was obtained.
type ConsoleOutputRecord struct {
	ConsoleOutput
	// Key, VersionID, SHA256 and Size identify the stored console output.
	Key       string `json:"key"`
	VersionID string `json:"version_id"`
	SHA256    string `json:"sha256"`
	Size      int64  `json:"size"`
}

// ConsoleOutput is GetConsoleOutput's answer, without the output itself.
type ConsoleOutput struct {
	// Latest is true when the most recent output was asked for (Nitro
	// instance types); false when the instance type refused it and the
	// buffer as last published was taken instead.
	Latest bool `json:"latest"`
	// Timestamp is when AWS last updated the output.
	Timestamp *time.Time `json:"timestamp,omitempty"`
}

func (col *collector) consoleOutput(ctx context.Context) ([]byte, collected, error) {
	cd := collected{calls: []string{"ec2:GetConsoleOutput Latest=true"}}
	rec := ConsoleOutput{Latest: true}
	out, err := col.c.EC2.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(col.id), Latest: aws.Bool(true)})
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == "UnsupportedOperation" {
		// Xen instance types (t2, m4, c4, ...) only have the output as last
		// published, a few minutes behind.
		cd.notes = append(cd.notes, "the instance type does not support the latest console output ("+ae.ErrorCode()+": "+ae.ErrorMessage()+
			"); the output as last published was collected instead")
		cd.calls = append(cd.calls, "ec2:GetConsoleOutput Latest=false")
		rec.Latest = false
		out, err = col.c.EC2.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(col.id)})
	}
	if err != nil {
		return nil, cd, fmt.Errorf("get console output: %w", err)
	}
	b, err := base64.StdEncoding.DecodeString(aws.ToString(out.Output))
	if err != nil {
		return nil, cd, fmt.Errorf("console output is not base64: %w", err)
	}
	rec.Timestamp = out.Timestamp
	cd.data = ConsoleOutputRecord{ConsoleOutput: rec}
	return b, cd, nil
}

// screenshot returns the console screenshot, or why there can never be one
// (unavailable), or the error of a call that may succeed another time.
func (col *collector) screenshot(ctx context.Context) (_ []byte, unavailable string, _ error) {
	out, err := col.c.EC2.GetConsoleScreenshot(ctx, &ec2.GetConsoleScreenshotInput{InstanceId: aws.String(col.id), WakeUp: aws.Bool(false)})
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "UnsupportedOperation":
			// Bare-metal instance types have no virtual console.
			return nil, "the instance type does not support console screenshots (" + ae.ErrorCode() + ": " + ae.ErrorMessage() + ")", nil
		case "IncorrectInstanceState":
			// Only a running instance has a console to capture; starting a
			// stopped suspect instance is not impound's to do.
			return nil, "the instance is not running, so it has no console to capture (" + ae.ErrorCode() + ": " + ae.ErrorMessage() + ")", nil
		}
	}
	if err != nil {
		return nil, "", fmt.Errorf("get console screenshot: %w", err)
	}
	b, err := base64.StdEncoding.DecodeString(aws.ToString(out.ImageData))
	if err != nil {
		return nil, "", fmt.Errorf("console screenshot is not base64: %w", err)
	}
	return b, "", nil
}

// Shapes of a GuardDuty finding as given in Options.Finding.
const (
	FindingShapeEvent   = "eventbridge-event" // the EventBridge event; the finding is its detail
	FindingShapeDetail  = "finding"           // the finding itself (the event's detail)
	FindingShapeUnknown = "unrecognised"      // JSON, but neither: stored as given all the same
)

// FindingRecord is the GuardDuty finding item: the JSON exactly as given
// (its values unchanged; only its layout follows the envelope's) with the
// SHA-256 of the bytes given, and what the finding says.
type FindingRecord struct {
	Shape string `json:"shape"` // FindingShapeEvent, FindingShapeDetail or FindingShapeUnknown
	// GivenSHA256 and GivenSize are of Options.Finding's bytes, to match
	// the file or message the finding came from; those bytes are stored
	// unchanged as ItemFindingGiven, whose receipt has this SHA-256.
	GivenSHA256 string `json:"given_sha256"`
	GivenSize   int    `json:"given_size"`
	ID          string `json:"id,omitempty"`
	Type        string `json:"type,omitempty"`
	// InstanceID is the instance the finding names.
	InstanceID string `json:"instance_id,omitempty"`
	// Sample is true for GuardDuty's sample findings.
	Sample bool            `json:"sample,omitempty"`
	Given  json.RawMessage `json:"given"`
}

// finding returns the finding's record, or why there can be none
// (unavailable: the finding given is not JSON).
func (col *collector) finding() (collected, string) {
	cd := collected{calls: []string{}}
	if !json.Valid(col.o.Finding) {
		return cd, "the GuardDuty finding given is not JSON; its bytes as given are in " + ItemFindingGiven
	}
	sum := sha256.Sum256(col.o.Finding)
	rec := FindingRecord{Shape: FindingShapeUnknown, GivenSHA256: hex.EncodeToString(sum[:]), GivenSize: len(col.o.Finding),
		Given: col.o.Finding}
	cd.data = rec
	type finding struct {
		ID       string `json:"id"`
		Type     string `json:"type"`
		Resource struct {
			InstanceDetails struct {
				InstanceID string `json:"instanceId"`
			} `json:"instanceDetails"`
		} `json:"resource"`
		Service struct {
			AdditionalInfo struct {
				Sample bool `json:"sample"`
			} `json:"additionalInfo"`
		} `json:"service"`
	}
	var doc struct {
		Source     string   `json:"source"`
		DetailType string   `json:"detail-type"`
		Detail     *finding `json:"detail"`
		finding
	}
	f := &doc.finding
	switch err := json.Unmarshal(col.o.Finding, &doc); {
	case err != nil:
		cd.notes = []string{"the finding is not a GuardDuty finding's JSON: " + err.Error()}
		return cd, ""
	case doc.Source == "aws.guardduty" && doc.DetailType == "GuardDuty Finding" && doc.Detail != nil:
		rec.Shape, f = FindingShapeEvent, doc.Detail
	case doc.Source == "" && doc.DetailType == "" && f.ID != "" && f.Type != "":
		rec.Shape = FindingShapeDetail
	default:
		cd.notes = []string{"the finding is neither a GuardDuty Finding EventBridge event nor its detail; stored as given"}
		return cd, ""
	}
	rec.ID, rec.Type, rec.InstanceID, rec.Sample = f.ID, f.Type, f.Resource.InstanceDetails.InstanceID, f.Service.AdditionalInfo.Sample
	if rec.InstanceID != col.id {
		cd.notes = append(cd.notes, fmt.Sprintf("the finding is about instance %q, not %s", rec.InstanceID, col.id))
	}
	if rec.Sample {
		cd.notes = append(cd.notes, "the finding is one of GuardDuty's sample findings")
	}
	cd.data = rec
	return cd, ""
}

// deniedForGood reports whether a CloudTrail look-up failed in a way no
// retry changes: access denied by a policy, a Region not enabled for the
// account, credentials not valid there.
func deniedForGood(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch code := ae.ErrorCode(); {
	case strings.Contains(code, "AccessDenied"), code == "UnauthorizedOperation", code == "OptInRequired",
		code == "UnrecognizedClientException", code == "InvalidClientTokenId":
		return true
	}
	return false
}
