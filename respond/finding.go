package respond

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/impound-ir/impound/acquire/controlplane"
	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/vault"
)

// GuardDuty findings as EventBridge delivers them.
const (
	FindingSource     = "aws.guardduty"
	FindingDetailType = "GuardDuty Finding"
	// MaxFindingSize caps what ParseFinding reads: EventBridge events are
	// at most 256 KiB.
	MaxFindingSize = 1 << 20
	// DefaultMinSeverity is GuardDuty's "High": 7.0 to 8.9.
	DefaultMinSeverity = 7.0
	// FindingCasePrefix starts the ID of every case a finding opens:
	// gd-<instance ID>, then gd-<instance ID>-2, -3, … once one is closed.
	FindingCasePrefix = "gd-"
	// maxFindingCases bounds the search for a case that is not closed.
	maxFindingCases = 1000
)

// ErrNotFinding is what ParseFinding's errors wrap.
var ErrNotFinding = errors.New("not a GuardDuty finding")

var (
	instanceIDRe = regexp.MustCompile(`^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$`)
	accountIDRe  = regexp.MustCompile(`^[0-9]{12}$`)
)

// Finding is what impound reads of a GuardDuty finding.
type Finding struct {
	ID        string
	Type      string  // e.g. "Backdoor:EC2/C&CActivity.B"
	Severity  float64 // 0 to 10
	AccountID string  // the account the finding is about (detail.accountId)
	Region    string
	Partition string // "aws" when the finding names none
	// ResourceType is "Instance" for EC2 findings, InstanceID its instance.
	ResourceType string
	InstanceID   string
	// Sample findings are generated for testing (detail.service.additionalInfo.sample).
	Sample bool
	// Count is how many times GuardDuty saw the activity (detail.service.count):
	// the same finding is delivered again as it grows.
	Count     int64
	UpdatedAt string
	// Detail is the finding as GuardDuty wrote it (the event's detail), byte
	// for byte: what is stored as evidence.
	Detail json.RawMessage
	// Event is the whole EventBridge event; nil when a bare detail was parsed.
	Event json.RawMessage
}

// findingEvent is the EventBridge envelope.
type findingEvent struct {
	Source     *string         `json:"source"`
	DetailType *string         `json:"detail-type"`
	Detail     json.RawMessage `json:"detail"`
}

type findingDetail struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Severity  json.RawMessage `json:"severity"`
	AccountID string          `json:"accountId"`
	Region    string          `json:"region"`
	Partition string          `json:"partition"`
	UpdatedAt string          `json:"updatedAt"`
	Resource  struct {
		ResourceType    string `json:"resourceType"`
		InstanceDetails struct {
			InstanceID string `json:"instanceId"`
		} `json:"instanceDetails"`
	} `json:"resource"`
	Service struct {
		Count          json.RawMessage `json:"count"`
		AdditionalInfo struct {
			Sample json.RawMessage `json:"sample"`
		} `json:"additionalInfo"`
	} `json:"service"`
}

// ParseFinding reads a GuardDuty finding, either the EventBridge event
// (source aws.guardduty, detail-type "GuardDuty Finding") or its bare
// detail. Its errors wrap ErrNotFinding and say what is wrong.
func ParseFinding(b []byte) (*Finding, error) {
	if len(b) > MaxFindingSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrNotFinding, len(b), MaxFindingSize)
	}
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(trimmed) {
		return nil, fmt.Errorf("%w: not a JSON object", ErrNotFinding)
	}
	var ev findingEvent
	if err := json.Unmarshal(trimmed, &ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotFinding, err)
	}
	f := &Finding{}
	detail := trimmed
	if ev.Source != nil || ev.DetailType != nil || ev.Detail != nil {
		switch {
		case ev.Source == nil || *ev.Source != FindingSource:
			return nil, fmt.Errorf("%w: source is %q, want %q", ErrNotFinding, deref(ev.Source), FindingSource)
		case ev.DetailType == nil || *ev.DetailType != FindingDetailType:
			return nil, fmt.Errorf("%w: detail-type is %q, want %q", ErrNotFinding, deref(ev.DetailType), FindingDetailType)
		}
		detail = bytes.TrimSpace(ev.Detail)
		if len(detail) == 0 || detail[0] != '{' {
			return nil, fmt.Errorf("%w: the event's detail is not a JSON object", ErrNotFinding)
		}
		f.Event = append(json.RawMessage(nil), trimmed...)
	}
	if err := parseFindingDetail(detail, f); err != nil {
		return nil, err
	}
	return f, nil
}

// parseFindingDetail reads a finding's detail into f.
func parseFindingDetail(detail []byte, f *Finding) error {
	var d findingDetail
	if err := json.Unmarshal(detail, &d); err != nil {
		return fmt.Errorf("%w: detail: %v", ErrNotFinding, err)
	}
	switch {
	case d.ID == "":
		return fmt.Errorf("%w: no id", ErrNotFinding)
	case d.Type == "":
		return fmt.Errorf("%w: no type", ErrNotFinding)
	case !accountIDRe.MatchString(d.AccountID):
		return fmt.Errorf("%w: accountId %q is not a 12-digit account ID", ErrNotFinding, d.AccountID)
	case d.Region == "":
		return fmt.Errorf("%w: no region", ErrNotFinding)
	}
	sev, err := strconv.ParseFloat(string(d.Severity), 64)
	if err != nil || len(d.Severity) == 0 || d.Severity[0] == '"' || sev < 0 || sev > 10 {
		return fmt.Errorf("%w: severity %s is not a number from 0 to 10", ErrNotFinding, orNone(d.Severity))
	}
	if len(d.Service.Count) > 0 && string(d.Service.Count) != "null" {
		if f.Count, err = strconv.ParseInt(string(d.Service.Count), 10, 64); err != nil || f.Count < 0 {
			return fmt.Errorf("%w: service.count %s is not a count", ErrNotFinding, d.Service.Count)
		}
	}
	switch s := string(d.Service.AdditionalInfo.Sample); s {
	case "", "null", "false", `"false"`:
	case "true", `"true"`:
		f.Sample = true
	default:
		return fmt.Errorf("%w: service.additionalInfo.sample %s is not a boolean", ErrNotFinding, s)
	}
	f.ID, f.Type, f.Severity, f.AccountID, f.Region = d.ID, d.Type, sev, d.AccountID, d.Region
	f.Partition, f.UpdatedAt = d.Partition, d.UpdatedAt
	if f.Partition == "" {
		f.Partition = "aws"
	}
	f.ResourceType, f.InstanceID = d.Resource.ResourceType, d.Resource.InstanceDetails.InstanceID
	f.Detail = append(json.RawMessage(nil), detail...)
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func orNone(b []byte) string {
	if len(b) == 0 {
		return "(none)"
	}
	return string(b)
}

// FindingPolicy decides which findings are acted on. Start from NewFindingPolicy.
type FindingPolicy struct {
	// MinSeverity is the least severity acted on.
	MinSeverity float64
	// TypePrefixes, when set, are the finding types acted on, by prefix
	// ("Backdoor:EC2/", "CryptoCurrency:EC2/BitcoinTool.B").
	TypePrefixes []string
	// Region is where impound is deployed: findings of other Regions are
	// for the deployment there. Required.
	Region string
}

// NewFindingPolicy returns the defaults: findings of severity High and above, of any type.
func NewFindingPolicy(region string) FindingPolicy {
	return FindingPolicy{MinSeverity: DefaultMinSeverity, Region: region}
}

// Actionable says whether a response should start for the finding and, when
// not, why.
func (f *Finding) Actionable(p FindingPolicy) (ok bool, why string) {
	switch {
	case f.Sample:
		return false, "sample finding (service.additionalInfo.sample is true)"
	case f.ResourceType != "Instance":
		return false, fmt.Sprintf("resource type is %q, not Instance", f.ResourceType)
	case f.InstanceID == "":
		return false, "the finding names no instance"
	case !instanceIDRe.MatchString(f.InstanceID):
		return false, fmt.Sprintf("instance ID %q is not an EC2 instance ID", f.InstanceID)
	case p.Region == "":
		return false, "no deployment Region configured"
	case f.Region != p.Region:
		return false, fmt.Sprintf("finding is in Region %s, this deployment responds in %s", f.Region, p.Region)
	case f.Severity < p.MinSeverity:
		return false, fmt.Sprintf("severity %g is below %g", f.Severity, p.MinSeverity)
	}
	if len(p.TypePrefixes) > 0 {
		matched := false
		for _, pre := range p.TypePrefixes {
			if pre != "" && strings.HasPrefix(f.Type, pre) {
				matched = true
				break
			}
		}
		if !matched {
			return false, fmt.Sprintf("type %s matches none of %s", f.Type, strings.Join(p.TypePrefixes, ", "))
		}
	}
	return true, ""
}

// FindingCaseID returns the case that a finding about instance belongs to:
// gd-<instance> or, once that case is closed, gd-<instance>-2, -3, …, the
// first that is not closed. existing says whether that case was opened
// already. A case counts as closed when its ledger records a case-closed
// entry that succeeded, as the respond stages read it (a note appended
// after closing does not reopen it). Reading a ledger needs the case's key:
// a case opened with another one fails with custody.ErrWrongKey.
func FindingCaseID(ctx context.Context, store vault.Store, signer custody.Signer, instance string) (id string, existing bool, err error) {
	if !instanceIDRe.MatchString(instance) {
		return "", false, fmt.Errorf("instance ID %q is not an EC2 instance ID", instance)
	}
	for n := 1; n <= maxFindingCases; n++ {
		id = FindingCasePrefix + instance
		if n > 1 {
			id += "-" + strconv.Itoa(n)
		}
		if err := vault.CheckCaseID(id); err != nil {
			return "", false, err
		}
		l, err := custody.Open(ctx, store, id, signer, custody.NewOptions())
		if err != nil {
			return "", false, fmt.Errorf("read the ledger of case %s: %w", id, err)
		}
		if l.Size() == 0 {
			return id, false, nil
		}
		entries, err := l.Entries(ctx)
		if err != nil {
			return "", false, fmt.Errorf("read the ledger of case %s: %w", id, err)
		}
		if !hasClosed(entries) {
			return id, true, nil
		}
	}
	return "", false, fmt.Errorf("instance %s already has %d closed cases", instance, maxFindingCases)
}

// findingsRecorded counts the findings that reached the case before.
func findingsRecorded(entries []*custody.Entry) int {
	n := 0
	for _, e := range entries {
		if a, ok := e.Details.(custody.AWSAction); ok && a.Action == FindingAction {
			n++
		}
	}
	return n
}

func hasClosed(entries []*custody.Entry) bool {
	for _, e := range entries {
		if e.Kind() == custody.KindCaseClosed && e.Outcome != custody.Failed {
			return true
		}
	}
	return false
}

// FindingAction is the action recorded each time a finding reaches a case.
const FindingAction = "guardduty.finding"

// RecordFinding records in the ledger that the finding reached the case
// (its ID, type, severity and count: GuardDuty delivers a finding again as
// it is updated), and stores it as evidence when it is a finding the case
// has not seen before and the case has already collected its control-plane
// evidence (a later, different finding about the same instance), or when
// the case collected without any finding. A case not yet collected gets the
// finding from its collect stage (Options.Finding); an update of a finding
// the case has seen is recorded, not stored again.
func (c *Case) RecordFinding(ctx context.Context, f *Finding) error {
	entries, err := c.entries(ctx)
	if err != nil {
		return err
	}
	seen := false
	for _, e := range entries {
		if a, ok := e.Details.(custody.AWSAction); ok && a.Action == FindingAction && a.Details["finding_id"] == f.ID {
			seen = true
			break
		}
	}
	details := map[string]string{
		"finding_id": f.ID, "type": f.Type,
		"severity": strconv.FormatFloat(f.Severity, 'f', -1, 64), "count": strconv.FormatInt(f.Count, 10),
	}
	if f.UpdatedAt != "" {
		details["updated_at"] = f.UpdatedAt
	}
	resources := []string{c.instanceARN(), fmt.Sprintf("arn:%s:guardduty:%s:%s:finding/%s", f.Partition, f.Region, f.AccountID, f.ID)}
	if _, err := c.append(ctx, c.acc.MemberCaller, resources, &custody.AWSAction{
		Action: FindingAction, Account: f.AccountID, Region: f.Region, Details: details}, nil); err != nil {
		return err
	}
	st, err := c.state(ctx)
	if err != nil {
		return err
	}
	if !st.collected {
		return nil
	}
	if !seen && findingsRecorded(entries) > 0 {
		return c.storeFinding(ctx, f)
	}
	for _, e := range st.stored {
		if e.Evidence == custody.EvidenceControlPlane && strings.HasSuffix(e.Receipt.Key, "/"+controlplane.ItemFinding) {
			return nil
		}
	}
	return c.storeFinding(ctx, f)
}

// storeFinding stores the finding as control-plane evidence, in the form
// the collect stage gives it (controlplane.FindingRecord: the detail as
// given, with the SHA-256 of its bytes).
func (c *Case) storeFinding(ctx context.Context, f *Finding) error {
	now := c.o.Now().UTC()
	sum := sha256.Sum256(f.Detail)
	rec := controlplane.FindingRecord{Shape: controlplane.FindingShapeDetail, GivenSHA256: hex.EncodeToString(sum[:]),
		GivenSize: len(f.Detail), ID: f.ID, Type: f.Type, InstanceID: f.InstanceID, Sample: f.Sample, Given: f.Detail}
	env := controlplane.Envelope{Format: "impound-control-plane/1", Item: controlplane.ItemFinding, InstanceID: c.o.InstanceID,
		AccountID: c.acc.MemberID, Region: c.o.Region, Calls: []string{}, Collected: now, Data: rec}
	if f.InstanceID != c.o.InstanceID {
		env.Notes = append(env.Notes, fmt.Sprintf("the finding is about instance %q, not %s", f.InstanceID, c.o.InstanceID))
	}
	if f.Sample {
		env.Notes = append(env.Notes, "the finding is one of GuardDuty's sample findings")
	}
	b, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the GuardDuty finding: %w", err)
	}
	b = append(b, '\n')
	// The bytes as received first (their SHA-256 is the record's
	// given_sha256), then the record, under one prefix, as collect does.
	prefix := "control-plane/" + now.Format("20060102T150405.000000000Z") + "/"
	for _, it := range []struct {
		item string
		b    []byte
	}{{controlplane.ItemFindingGiven, f.Detail}, {controlplane.ItemFinding, b}} {
		key, err := vault.CaseKey(c.o.CaseID, vault.AreaEvidence, prefix+it.item)
		if err != nil {
			return err
		}
		opts := c.o.Put
		opts.ContentType, opts.SizeHint = "application/json", int64(len(it.b))
		r, err := vault.Put(ctx, c.store, key, bytes.NewReader(it.b), opts)
		if err != nil {
			_, rerr := c.append(ctx, c.acc.MemberCaller, []string{c.instanceARN()}, &custody.AWSAction{
				Action: "collect." + it.item, Account: c.acc.MemberID, Region: c.o.Region,
				Details: map[string]string{"key": key}}, err)
			return errors.Join(fmt.Errorf("store the GuardDuty finding: %w", err), rerr)
		}
		if _, err := c.append(ctx, c.acc.MemberCaller, []string{c.instanceARN(), r.URI}, &custody.EvidenceStored{
			Receipt: *r, Source: "control-plane:" + it.item + ":" + c.o.InstanceID, Evidence: custody.EvidenceControlPlane}, nil); err != nil {
			return err
		}
	}
	return nil
}
