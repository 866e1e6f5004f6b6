// Package controlplane collects what the AWS API knows about a compromised
// instance (its description, volumes, network interfaces, security groups,
// instance profile and role policies, tags, console output and screenshot,
// and the CloudTrail events about it and its role) and stores each as
// evidence in the vault.
//
// # Guarantees
//
//   - Each item is stored write-once with its SHA-256 computed while
//     streaming, and reported to the Recorder with its receipt.
//   - An item that cannot be collected (a permission missing, a screenshot the
//     instance type does not support) is reported as failed with the API's
//     error, and the other items are still collected.
//   - Items are JSON documents with a fixed envelope (what was called, in
//     which account and Region, when) around the API's answer; console output
//     and the screenshot are stored as the decoded bytes AWS returned.
package controlplane

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail"
	cttypes "github.com/aws/aws-sdk-go-v2/service/cloudtrail/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
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
	ItemScreenshot        = "console-screenshot.jpg"
	ItemCloudTrail        = "cloudtrail-events.json"
	ItemFinding           = "guardduty-finding.json"
)

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
	CloudTrail cloudtrailAPI
}

// NewClients builds Clients from the member account's configuration.
func NewClients(cfg aws.Config) Clients {
	return Clients{EC2: ec2.NewFromConfig(cfg), IAM: iam.NewFromConfig(cfg), CloudTrail: cloudtrail.NewFromConfig(cfg)}
}

// Result is one collected (or failed) item.
type Result struct {
	Item    string
	Key     string
	Receipt *vault.Receipt // nil when Err is set
	Err     error
}

// Recorder records one item's outcome; an error stops the collection.
type Recorder func(ctx context.Context, r Result) error

// Options configures a collection. Start from NewOptions.
type Options struct {
	AccountID string
	Region    string
	LookBack  time.Duration // CloudTrail look-back window
	Now       func() time.Time
	// Key returns the vault key of an item.
	Key func(item string) string
	// Finding is the triggering GuardDuty finding (the EventBridge event's
	// detail), stored as is when set.
	Finding json.RawMessage
	Put     vault.PutOptions
	Record  Recorder
}

// NewOptions returns the defaults.
func NewOptions() Options {
	return Options{LookBack: DefaultLookBack, Now: time.Now, Record: func(context.Context, Result) error { return nil }}
}

// Envelope wraps every JSON item: what was asked, of whom, when.
type Envelope struct {
	Format     string    `json:"format"` // "impound-control-plane/1"
	Item       string    `json:"item"`
	InstanceID string    `json:"instance_id"`
	AccountID  string    `json:"account_id"`
	Region     string    `json:"region"`
	Calls      []string  `json:"calls"` // API operations made, in order
	Collected  time.Time `json:"collected"`
	Data       any       `json:"data"`
}

// Collect gathers every item about instanceID and stores each in store. It
// returns every item's result; the error is non-nil if any item failed or a
// result could not be recorded.
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
	if o.Record == nil {
		o.Record = func(context.Context, Result) error { return nil }
	}
	col := &collector{c: c, store: store, id: instanceID, o: o}
	inst, err := col.instance(ctx)
	if err != nil {
		// Without the instance nothing else can be found; record and stop.
		res := Result{Item: ItemInstance, Key: o.Key(ItemInstance), Err: err}
		return []Result{res}, errors.Join(err, o.Record(ctx, res))
	}
	steps := []struct {
		item string
		fn   func(context.Context, *ec2types.Instance) (any, []string, error)
	}{
		{ItemInstance, func(context.Context, *ec2types.Instance) (any, []string, error) {
			return inst, []string{"ec2:DescribeInstances"}, nil
		}},
		{ItemVolumes, col.volumes},
		{ItemNetworkInterfaces, col.networkInterfaces},
		{ItemSecurityGroups, col.securityGroups},
		{ItemIAM, col.iam},
		{ItemTags, col.tags},
		{ItemCloudTrail, col.cloudTrail},
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
	for _, s := range steps {
		data, calls, err := s.fn(ctx, inst)
		r := Result{Item: s.item, Key: o.Key(s.item), Err: err}
		if err == nil {
			r.Receipt, r.Err = col.putJSON(ctx, s.item, calls, data)
		}
		if err := record(r); err != nil {
			return results, err
		}
	}
	for _, raw := range []struct {
		item string
		fn   func(context.Context) ([]byte, error)
	}{
		{ItemConsoleOutput, col.consoleOutput},
		{ItemScreenshot, col.screenshot},
	} {
		data, err := raw.fn(ctx)
		r := Result{Item: raw.item, Key: o.Key(raw.item), Err: err}
		if err == nil {
			r.Receipt, r.Err = col.put(ctx, raw.item, data)
		}
		if err := record(r); err != nil {
			return results, err
		}
	}
	if len(o.Finding) > 0 {
		var v any
		r := Result{Item: ItemFinding, Key: o.Key(ItemFinding)}
		if err := json.Unmarshal(o.Finding, &v); err != nil {
			r.Err = fmt.Errorf("the GuardDuty finding is not JSON: %w", err)
		} else {
			r.Receipt, r.Err = col.putJSON(ctx, ItemFinding, []string{"events:GuardDuty Finding"}, v)
		}
		if err := record(r); err != nil {
			return results, err
		}
	}
	return results, errors.Join(errs...)
}

type collector struct {
	c     Clients
	store vault.Store
	id    string
	o     Options
}

func (col *collector) putJSON(ctx context.Context, item string, calls []string, data any) (*vault.Receipt, error) {
	env := Envelope{Format: "impound-control-plane/1", Item: item, InstanceID: col.id, AccountID: col.o.AccountID,
		Region: col.o.Region, Calls: calls, Collected: col.o.Now().UTC(), Data: data}
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

func (col *collector) volumes(ctx context.Context, inst *ec2types.Instance) (any, []string, error) {
	var ids []string
	for _, b := range inst.BlockDeviceMappings {
		if b.Ebs != nil {
			ids = append(ids, aws.ToString(b.Ebs.VolumeId))
		}
	}
	if len(ids) == 0 {
		return []ec2types.Volume{}, nil, nil
	}
	out, err := col.c.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: ids})
	if err != nil {
		return nil, nil, fmt.Errorf("describe volumes: %w", err)
	}
	return out.Volumes, []string{"ec2:DescribeVolumes"}, nil
}

func (col *collector) networkInterfaces(ctx context.Context, inst *ec2types.Instance) (any, []string, error) {
	var all []ec2types.NetworkInterface
	p := ec2.NewDescribeNetworkInterfacesPaginator(col.c.EC2, &ec2.DescribeNetworkInterfacesInput{
		Filters: []ec2types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{col.id}}}})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("describe network interfaces: %w", err)
		}
		all = append(all, page.NetworkInterfaces...)
	}
	return all, []string{"ec2:DescribeNetworkInterfaces"}, nil
}

func (col *collector) securityGroups(ctx context.Context, inst *ec2types.Instance) (any, []string, error) {
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
		return []ec2types.SecurityGroup{}, nil, nil
	}
	var list []string
	for id := range ids {
		list = append(list, id)
	}
	sort.Strings(list)
	out, err := col.c.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: list})
	if err != nil {
		return nil, nil, fmt.Errorf("describe security groups: %w", err)
	}
	return out.SecurityGroups, []string{"ec2:DescribeSecurityGroups"}, nil
}

// IAMRecord is the instance profile and everything its roles may do.
type IAMRecord struct {
	InstanceProfile any          `json:"instance_profile"`
	Roles           []RoleRecord `json:"roles"`
}

// RoleRecord is one role with its inline and attached policies.
type RoleRecord struct {
	Role             any               `json:"role"`
	InlinePolicies   map[string]string `json:"inline_policies"` // name -> policy document (decoded JSON text)
	AttachedPolicies any               `json:"attached_policies"`
}

func (col *collector) iam(ctx context.Context, inst *ec2types.Instance) (any, []string, error) {
	if inst.IamInstanceProfile == nil {
		return IAMRecord{}, nil, nil
	}
	arn := aws.ToString(inst.IamInstanceProfile.Arn)
	name := arn[strings.LastIndexByte(arn, '/')+1:]
	calls := []string{"iam:GetInstanceProfile"}
	prof, err := col.c.IAM.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String(name)})
	if err != nil {
		return nil, nil, fmt.Errorf("get instance profile %s: %w", name, err)
	}
	rec := IAMRecord{InstanceProfile: prof.InstanceProfile}
	for _, r := range prof.InstanceProfile.Roles {
		rn := r.RoleName
		role, err := col.c.IAM.GetRole(ctx, &iam.GetRoleInput{RoleName: rn})
		if err != nil {
			return nil, nil, fmt.Errorf("get role %s: %w", aws.ToString(rn), err)
		}
		rr := RoleRecord{Role: role.Role, InlinePolicies: map[string]string{}}
		pp := iam.NewListRolePoliciesPaginator(col.c.IAM, &iam.ListRolePoliciesInput{RoleName: rn})
		for pp.HasMorePages() {
			page, err := pp.NextPage(ctx)
			if err != nil {
				return nil, nil, fmt.Errorf("list role policies of %s: %w", aws.ToString(rn), err)
			}
			for _, pn := range page.PolicyNames {
				p, err := col.c.IAM.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: rn, PolicyName: aws.String(pn)})
				if err != nil {
					return nil, nil, fmt.Errorf("get role policy %s of %s: %w", pn, aws.ToString(rn), err)
				}
				// IAM returns policy documents URL-encoded.
				doc, err := url.QueryUnescape(aws.ToString(p.PolicyDocument))
				if err != nil {
					doc = aws.ToString(p.PolicyDocument)
				}
				rr.InlinePolicies[pn] = doc
			}
		}
		var attached []any
		ap := iam.NewListAttachedRolePoliciesPaginator(col.c.IAM, &iam.ListAttachedRolePoliciesInput{RoleName: rn})
		for ap.HasMorePages() {
			page, err := ap.NextPage(ctx)
			if err != nil {
				return nil, nil, fmt.Errorf("list attached policies of %s: %w", aws.ToString(rn), err)
			}
			for _, a := range page.AttachedPolicies {
				attached = append(attached, a)
			}
		}
		rr.AttachedPolicies = attached
		rec.Roles = append(rec.Roles, rr)
	}
	calls = append(calls, "iam:GetRole", "iam:ListRolePolicies", "iam:GetRolePolicy", "iam:ListAttachedRolePolicies")
	return rec, calls, nil
}

func (col *collector) tags(ctx context.Context, inst *ec2types.Instance) (any, []string, error) {
	ids := []string{col.id}
	for _, b := range inst.BlockDeviceMappings {
		if b.Ebs != nil {
			ids = append(ids, aws.ToString(b.Ebs.VolumeId))
		}
	}
	var all []ec2types.TagDescription
	p := ec2.NewDescribeTagsPaginator(col.c.EC2, &ec2.DescribeTagsInput{
		Filters: []ec2types.Filter{{Name: aws.String("resource-id"), Values: ids}}})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("describe tags: %w", err)
		}
		all = append(all, page.Tags...)
	}
	return all, []string{"ec2:DescribeTags"}, nil
}

// maxTrailEvents bounds one collection; CloudTrail's LookupEvents is 2 req/s per account.
const maxTrailEvents = 50_000

func (col *collector) cloudTrail(ctx context.Context, inst *ec2types.Instance) (any, []string, error) {
	end := col.o.Now().UTC()
	start := end.Add(-col.o.LookBack)
	names := []string{col.id}
	if inst.IamInstanceProfile != nil {
		// Events about the instance's role (credentials used from the instance
		// carry the instance ID as the session name).
		arn := aws.ToString(inst.IamInstanceProfile.Arn)
		names = append(names, arn[strings.LastIndexByte(arn, '/')+1:])
	}
	log := zerolog.Ctx(ctx)
	seen := map[string]bool{}
	var events []cttypes.Event
	for _, name := range names {
		p := cloudtrail.NewLookupEventsPaginator(col.c.CloudTrail, &cloudtrail.LookupEventsInput{
			LookupAttributes: []cttypes.LookupAttribute{{AttributeKey: cttypes.LookupAttributeKeyResourceName, AttributeValue: aws.String(name)}},
			StartTime:        aws.Time(start), EndTime: aws.Time(end),
		})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, nil, fmt.Errorf("cloudtrail lookup-events %s: %w", name, err)
			}
			for _, e := range page.Events {
				if id := aws.ToString(e.EventId); !seen[id] {
					seen[id] = true
					events = append(events, e)
				}
			}
			if len(events) >= maxTrailEvents {
				log.Warn().Int("events", len(events)).Msg("CloudTrail look-up stopped at its limit; query the trail's S3 logs for the rest")
				break
			}
		}
	}
	sort.Slice(events, func(i, j int) bool { return aws.ToTime(events[i].EventTime).Before(aws.ToTime(events[j].EventTime)) })
	return struct {
		Start  time.Time       `json:"start"`
		End    time.Time       `json:"end"`
		Names  []string        `json:"resource_names"`
		Events []cttypes.Event `json:"events"`
	}{start, end, names, events}, []string{"cloudtrail:LookupEvents"}, nil
}

func (col *collector) consoleOutput(ctx context.Context) ([]byte, error) {
	out, err := col.c.EC2.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(col.id), Latest: aws.Bool(true)})
	if err != nil {
		return nil, fmt.Errorf("get console output: %w", err)
	}
	b, err := base64.StdEncoding.DecodeString(aws.ToString(out.Output))
	if err != nil {
		return nil, fmt.Errorf("console output is not base64: %w", err)
	}
	return b, nil
}

func (col *collector) screenshot(ctx context.Context) ([]byte, error) {
	out, err := col.c.EC2.GetConsoleScreenshot(ctx, &ec2.GetConsoleScreenshotInput{InstanceId: aws.String(col.id), WakeUp: aws.Bool(false)})
	if err != nil {
		return nil, fmt.Errorf("get console screenshot: %w", err)
	}
	b, err := base64.StdEncoding.DecodeString(aws.ToString(out.ImageData))
	if err != nil {
		return nil, fmt.Errorf("console screenshot is not base64: %w", err)
	}
	return b, nil
}
