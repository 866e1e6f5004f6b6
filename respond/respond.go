// Package respond runs one case end to end: it opens the case in the custody
// ledger, collects what the AWS API knows about the instance, isolates it,
// snapshots its volumes into the forensics account, acquires every volume
// through the EBS direct APIs into the vault, verifies every stored object by
// reading it back, and closes the case.
//
// # Guarantees
//
//   - A case is a composition of stages ([Case.Collect], [Case.Isolate],
//     [Case.Snapshot], [Case.Acquire], [Case.Verify], [Case.Report],
//     [Case.Close]) that can also run one at a time, in separate processes:
//     the ledger in the vault is the case's saved state, and each stage
//     reads it to find what is already done. Re-running a case resumes it.
//   - Every action is recorded in the ledger, succeeded or failed. A stage
//     that fails is recorded as failed and the safe stages after it still
//     run; [Run] reports exactly which stages did what.
//   - Nothing is recorded as evidence that was not completely stored and
//     hashed: a failed acquisition is recorded as a failed action, never as
//     evidence.
//   - No volume drops out of a case: the snapshot stage records the
//     instance's volumes before snapshotting, a snapshot made by a run that
//     could not record it is recorded when a later run finds it, and
//     [Case.Close] refuses to close the case until every one of those
//     volumes has an acquired image.
package respond

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/impound-ir/impound/acquire"
	"github.com/impound-ir/impound/acquire/controlplane"
	"github.com/impound-ir/impound/acquire/snapshot"
	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/isolate"
	"github.com/impound-ir/impound/report"
	"github.com/impound-ir/impound/vault"
)

// ErrEvidenceMissing is Close's refusal while a control-plane item the
// case should hold was not collected.
var ErrEvidenceMissing = errors.New("respond: evidence missing")

// ErrNotVerified is Close's refusal while a stored object was not read back
// and matched, or no report is stored.
var ErrNotVerified = errors.New("respond: evidence not verified or not reported")

// ErrIncomplete wraps the errors of a run in which some stages failed.
var ErrIncomplete = errors.New("respond: the case is incomplete")

// Accounts are where the suspect instance lives and where the evidence goes.
// They may be one account.
type Accounts struct {
	MemberID    string
	Member      aws.Config
	ForensicsID string
	Forensics   aws.Config
	// The STS caller ARNs of the two configurations, recorded as the actor
	// of each action; see awsconf.CallerARN.
	MemberCaller, ForensicsCaller string
}

// Options configure a case. Start from NewOptions.
type Options struct {
	CaseID     string
	InstanceID string
	Region     string
	Operator   string
	Title      string
	// Trigger is what opened the case: "guardduty:<finding ID>", a ticket.
	Trigger string
	// Finding is the triggering GuardDuty finding, stored as evidence.
	Finding json.RawMessage

	// Hashes computed while acquiring, besides SHA-256 ("md5", "sha1", "sha512").
	Hashes      []string
	Compression string // "" or "zstd"
	// Put says how evidence is kept: retention, legal hold, KMS key.
	Put vault.PutOptions
	// RetentionDays is recorded with the case's configuration.
	RetentionDays int

	ForensicsKMSKey string // encrypts the forensics account's snapshot copies
	MemberKMSKey    string // re-encrypts aws/ebs snapshots so they can be shared
	// SnapshotPollInterval between snapshot progress checks.
	SnapshotPollInterval time.Duration
	// CloudTrailLookBack is how far back CloudTrail events are collected
	// (controlplane.DefaultLookBack when 0); CloudTrailMaxEvents bounds each
	// look-up (controlplane.DefaultMaxCloudTrailEvents when 0).
	CloudTrailLookBack  time.Duration
	CloudTrailMaxEvents int
	// SnapshotTimeout is how long one snapshot may take to complete, from
	// its size; nil: snapshot.DefaultTimeout.
	SnapshotTimeout func(sizeGiB int32) time.Duration

	// EBS tunes the EBS direct reads; Governor paces them for the account.
	EBS      acquire.EBSOptions
	Governor acquire.GovernorOptions
	// ParallelVolumes is how many volumes are acquired at once.
	ParallelVolumes int
	// StateDir keeps acquisitions' resume state; empty: no resume.
	StateDir string
	// Progress, when set, returns a progress sink for one volume.
	Progress func(label string) acquire.Progress

	// Isolate contains the instance before it is snapshotted, with Isolation's options.
	Isolate   bool
	Isolation isolate.Options

	KeepOpen bool
	Tool     custody.Tool
	// Attributes are further configuration to record in the case-opened entry.
	Attributes map[string]string
	Now        func() time.Time
}

// NewOptions returns the defaults.
func NewOptions() Options {
	return Options{
		Hashes:               []string{acquire.SHA256},
		SnapshotPollInterval: 15 * time.Second,
		EBS:                  acquire.NewEBSOptions(),
		Governor:             acquire.NewGovernorOptions(),
		Isolate:              true,
		Isolation:            isolate.NewOptions(),
		ParallelVolumes:      4,
		Now:                  time.Now,
	}
}

// Case is one case being worked on.
type Case struct {
	acc    Accounts
	store  vault.Store
	ledger *custody.Ledger
	signer custody.Signer
	o      Options
	gov    *acquire.Governor

	mu   sync.Mutex
	read []*custody.Entry // the ledger's entries read so far (see entries)
}

// entries returns every entry of the case's ledger, reading from the vault
// only those appended since the last call: the stages rebuild the case's
// state from the ledger before each step, and a long ledger (a timeline of
// thousands of notes) is not read again each time.
func (c *Case) entries(ctx context.Context) ([]*custody.Entry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	more, err := c.ledger.EntriesFrom(ctx, int64(len(c.read)))
	if err != nil {
		return nil, err
	}
	c.read = append(c.read, more...)
	return c.read[:len(c.read):len(c.read)], nil
}

// Open opens the case's ledger, writing its first entry if it is new. An
// existing case must be about the same instance.
func Open(ctx context.Context, acc Accounts, store vault.Store, signer custody.Signer, o Options) (*Case, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ParallelVolumes <= 0 {
		o.ParallelVolumes = 1
	}
	if err := vault.CheckCaseID(o.CaseID); err != nil {
		return nil, err
	}
	l, err := custody.Open(ctx, store, o.CaseID, signer, custody.NewOptions())
	if err != nil {
		return nil, fmt.Errorf("open the ledger of case %s: %w", o.CaseID, err)
	}
	c := &Case{acc: acc, store: store, ledger: l, signer: signer, o: o, gov: acquire.NewGovernor(o.Governor)}
	if l.Size() > 0 {
		entries, err := c.entries(ctx)
		if err != nil {
			return nil, err
		}
		opened, ok := entries[0].Details.(custody.CaseOpened)
		if !ok {
			return nil, fmt.Errorf("case %s: entry 0 is %s, not case-opened", o.CaseID, entries[0].Kind())
		}
		if o.InstanceID != "" && opened.InstanceID != "" && opened.InstanceID != o.InstanceID {
			return nil, fmt.Errorf("case %s is about instance %s, not %s: use another case ID", o.CaseID, opened.InstanceID, o.InstanceID)
		}
		if o.InstanceID == "" {
			c.o.InstanceID = opened.InstanceID
		}
		if differ := keepRecorded(&c.o, opened.Attributes, c.o.Now()); len(differ) > 0 {
			zerolog.Ctx(ctx).Warn().Str("case", o.CaseID).Strs("options", differ).
				Msg("this run's options differ from the case's recorded configuration, which is kept: open a new case to change it")
		}
		return c, nil
	}
	if o.InstanceID == "" {
		return nil, fmt.Errorf("case %s is new: say which instance it is about", o.CaseID)
	}
	attrs := map[string]string{
		"vault":          store.URI(),
		"hashes":         strings.Join(append([]string{acquire.SHA256}, without(o.Hashes, acquire.SHA256)...), ","),
		"retention_mode": retentionMode(o.Put),
		"verifier_key":   signer.VerifierKey(),
	}
	if o.RetentionDays > 0 {
		attrs["retention_days"] = strconv.Itoa(o.RetentionDays)
	}
	if o.Compression != "" {
		attrs["compression"] = o.Compression
	}
	if o.ForensicsKMSKey != "" {
		attrs["forensics_kms_key"] = o.ForensicsKMSKey
	}
	if o.MemberKMSKey != "" {
		attrs["member_kms_key"] = o.MemberKMSKey
	}
	if o.Put.LegalHold {
		attrs["legal_hold"] = "true"
	}
	if o.Put.KMSKeyID != "" {
		attrs["kms_key"] = o.Put.KMSKeyID
	}
	attrs["cloudtrail_lookback"] = controlplane.DefaultLookBack.String()
	if o.CloudTrailLookBack > 0 {
		attrs["cloudtrail_lookback"] = o.CloudTrailLookBack.String()
	}
	// How the instance is contained is part of the case's configuration,
	// whoever opens it (the CLI, the drill, the GuardDuty Lambda).
	attrs["isolation"] = strconv.FormatBool(o.Isolate)
	if o.Isolate {
		attrs["isolation.allow_ssm"] = strconv.FormatBool(o.Isolation.AllowSSM)
		attrs["isolation.nacl"] = strconv.FormatBool(o.Isolation.NACL)
		attrs["isolation.asg"] = map[bool]string{true: "detach", false: "standby"}[o.Isolation.ASGDetach]
		attrs["isolation.allow_default_vpc"] = strconv.FormatBool(o.Isolation.AllowDefaultVPC)
	}
	for k, v := range o.Attributes {
		attrs[k] = v
	}
	tool := o.Tool
	_, err = c.append(ctx, c.acc.MemberCaller, []string{c.instanceARN()}, &custody.CaseOpened{
		Title: o.Title, Trigger: o.Trigger, Account: acc.MemberID, Region: o.Region,
		InstanceID: o.InstanceID, ForensicsAccount: acc.ForensicsID, Tool: &tool, Attributes: attrs,
	}, nil)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func without(list []string, drop string) []string {
	var out []string
	for _, s := range list {
		if s != drop && s != "" {
			out = append(out, s)
		}
	}
	return out
}

func retentionMode(p vault.PutOptions) string {
	if p.RetentionMode == "" {
		return vault.ModeCompliance
	}
	return p.RetentionMode
}

// ID is the case ID.
func (c *Case) ID() string { return c.o.CaseID }

// Ledger is the case's ledger.
func (c *Case) Ledger() *custody.Ledger { return c.ledger }

// Store is the case's vault.
func (c *Case) Store() vault.Store { return c.store }

func (c *Case) instanceARN() string {
	return fmt.Sprintf("arn:aws:ec2:%s:%s:instance/%s", c.o.Region, c.acc.MemberID, c.o.InstanceID)
}

// recordTimeout bounds the recording of an action once the run has been
// interrupted.
const recordTimeout = 30 * time.Second

// append records one entry; stepErr, when set, records the action as failed.
func (c *Case) append(ctx context.Context, caller string, resources []string, d custody.Details, stepErr error) (custody.Recorded, error) {
	if ctx.Err() != nil {
		// Interrupted (Ctrl-C, a stopped task): what was done or failed up
		// to now is still recorded, within a bounded time.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
		defer cancel()
	}
	e := custody.Entry{Actor: custody.Actor{Operator: c.o.Operator, CallerARN: caller}, Resources: resources, Details: d}
	if stepErr != nil {
		e.Outcome = custody.Failed
		e.Error = stepErr.Error()
	}
	rec, err := c.ledger.Append(ctx, e)
	if err != nil {
		return rec, fmt.Errorf("record %s in the ledger of case %s: %w", d.Kind(), c.o.CaseID, err)
	}
	return rec, nil
}

// caller is the actor ARN for an action in account id.
func (c *Case) caller(id string) string {
	if id == c.acc.ForensicsID && c.acc.ForensicsID != c.acc.MemberID {
		return c.acc.ForensicsCaller
	}
	return c.acc.MemberCaller
}

// state is what the ledger says is done.
type state struct {
	// collected: a collection stored the instance's description (so a
	// later finding is stored on its own, see RecordFinding).
	collected bool
	// items are the control-plane items' outcomes, by item name.
	items map[string]*itemState
	// volumes are the forensics account's copies to acquire: per volume, the
	// latest copy not recorded as failed (snapshot state error).
	volumes []custody.SnapshotCopied
	// inventory lists the instance's volumes as the snapshot stage last
	// recorded them; inventoryKey identifies that record.
	inventory    []string
	inventoryKey string
	created      map[string]bool                    // snapshots with a snapshot-created entry
	copied       map[string]bool                    // snapshots with a snapshot-copied entry
	completed    map[string]bool                    // snapshots recorded as completed
	acquired     map[string]*custody.EvidenceStored // by snapshot ID
	stored       []*custody.EvidenceStored          // every succeeded evidence-stored entry
	verified     map[string]bool                    // by key@version
	// reported: a report was generated after the last entry of any other kind.
	reported bool
	reports  []vault.Receipt
	closed   bool
}

// itemState is what the ledger says of one control-plane item.
type itemState struct {
	// stored: a succeeded evidence-stored entry holds it.
	stored bool
	// unavailable says why it can never be collected (a succeeded
	// collect.<item> entry with an "unavailable" detail).
	unavailable string
	// failed is the error of its latest failed collect.<item> entry.
	failed string
	// receipt is the stored object's, when stored.
	receipt *vault.Receipt
}

// done: nothing more is to be collected for the item.
func (s *itemState) done() bool { return s != nil && (s.stored || s.unavailable != "") }

// collectAction is the ledger action of a control-plane item not stored:
// failed, or unavailable.
func collectAction(item string) string { return collectPrefix + item }

const collectPrefix = "collect."

// missingItems lists the control-plane items not yet done, in collection
// order; the finding's only when finding (a finding is given).
func (st *state) missingItems(finding bool) []string {
	var out []string
	for _, item := range controlplane.Items() {
		if controlplane.FindingItem(item) && !finding {
			continue
		}
		if !st.items[item].done() {
			out = append(out, item)
		}
	}
	return out
}

func (st *state) item(name string) *itemState {
	s := st.items[name]
	if s == nil {
		s = &itemState{}
		st.items[name] = s
	}
	return s
}

func (c *Case) state(ctx context.Context) (*state, error) {
	entries, err := c.entries(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the ledger of case %s: %w", c.o.CaseID, err)
	}
	st := &state{acquired: map[string]*custody.EvidenceStored{}, verified: map[string]bool{},
		created: map[string]bool{}, copied: map[string]bool{}, completed: map[string]bool{}, items: map[string]*itemState{}}
	var copies []custody.SnapshotCopied
	failedSnapshots := map[string]bool{} // ended in the error state
	for _, e := range entries {
		switch e.Kind() {
		case custody.KindReportGenerated:
			st.reported = e.Outcome != custody.Failed
		case custody.KindCaseClosed:
		default:
			st.reported = false
		}
		if a, ok := e.Details.(custody.AWSAction); ok && a.Action == snapshot.ActionState && a.Details["state"] == string(ec2types.SnapshotStateError) {
			failedSnapshots[a.Details["snapshot"]] = true
		}
		if a, ok := e.Details.(custody.AWSAction); ok && strings.HasPrefix(a.Action, collectPrefix) {
			it := st.item(strings.TrimPrefix(a.Action, collectPrefix))
			switch {
			case e.Outcome == custody.Failed:
				it.failed = e.Error
			case a.Details["unavailable"] != "":
				it.unavailable, it.failed = a.Details["unavailable"], ""
			}
		}
		if e.Outcome == custody.Failed {
			continue
		}
		switch d := e.Details.(type) {
		case custody.AWSAction:
			switch d.Action {
			case snapshot.ActionInventory:
				st.inventory, st.inventoryKey = splitVolumes(d.Details["volumes"]), inventoryKey(d.Details)
			case snapshot.ActionState:
				if d.Details["state"] == string(ec2types.SnapshotStateCompleted) {
					st.completed[d.Details["snapshot"]] = true
				}
			}
		case custody.SnapshotCreated:
			st.created[d.SnapshotID] = true
		case custody.EvidenceStored:
			st.stored = append(st.stored, &d)
			if d.Evidence == custody.EvidenceControlPlane {
				it := st.item(d.Receipt.Key[strings.LastIndexByte(d.Receipt.Key, '/')+1:])
				it.stored, it.failed, it.receipt = true, "", &d.Receipt
				if strings.HasSuffix(d.Receipt.Key, "/"+controlplane.ItemInstance) {
					st.collected = true
				}
			}
			if d.Acquisition != nil && d.Acquisition.SnapshotID != "" {
				st.acquired[d.Acquisition.SnapshotID] = &d
			}
		case custody.SnapshotCopied:
			st.copied[d.SnapshotID] = true
			if d.Purpose == snapshot.PurposeForensics && d.Account == c.acc.ForensicsID {
				copies = append(copies, d)
			}
		case custody.EvidenceVerified:
			st.verified[d.Key+"@"+d.VersionID] = true
		case custody.ReportGenerated:
			st.reports = append(st.reports, d.Receipt)
		case custody.CaseClosed:
			st.closed = true
		}
	}
	st.volumes = latestUsable(copies, failedSnapshots, st.acquired)
	return st, nil
}

// latestUsable keeps, per source volume, the latest copy not known to have
// failed (or an earlier one already acquired: a volume is acquired once), in
// the order the volumes first appear.
func latestUsable(copies []custody.SnapshotCopied, failed map[string]bool, acquired map[string]*custody.EvidenceStored) []custody.SnapshotCopied {
	var out []custody.SnapshotCopied
	at := map[string]int{}
	for _, cp := range copies {
		if failed[cp.SnapshotID] {
			continue
		}
		vol := cp.VolumeID
		if vol == "" {
			vol = "snapshot:" + cp.SnapshotID
		}
		if i, ok := at[vol]; ok {
			if acquired[out[i].SnapshotID] == nil {
				out[i] = cp
			}
			continue
		}
		at[vol] = len(out)
		out = append(out, cp)
	}
	return out
}

// unacquired lists the volumes of the instance, as the snapshot stage
// recorded them, that have no acquired image.
func (st *state) unacquired() []string {
	have := map[string]bool{}
	for _, e := range st.stored {
		if e.Acquisition != nil && e.Acquisition.VolumeID != "" {
			have[e.Acquisition.VolumeID] = true
		}
	}
	var out []string
	for _, v := range st.inventory {
		if !have[v] {
			out = append(out, v)
		}
	}
	return out
}

func inventoryKey(d map[string]string) string { return d["volumes"] + "|" + d["devices"] }

func splitVolumes(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ForensicsSnapshots lists the case's snapshots in the forensics account, as
// the ledger records them: what the acquire stage reads.
func (c *Case) ForensicsSnapshots(ctx context.Context) ([]custody.SnapshotCopied, error) {
	st, err := c.state(ctx)
	if err != nil {
		return nil, err
	}
	return st.volumes, nil
}

// Stage is one step of a case.
type Stage struct {
	Name string
	Run  func(ctx context.Context) error
	// OnlyIfClean stages run only when every stage before them succeeded
	// (closing the case).
	OnlyIfClean bool
}

// Stages returns the stages of a whole response, in order.
func (c *Case) Stages() []Stage {
	s := []Stage{{Name: "collect", Run: c.Collect}}
	if c.o.Isolate {
		s = append(s, Stage{Name: "isolate", Run: c.Isolate})
	}
	s = append(s, []Stage{
		{Name: "snapshot", Run: c.Snapshot},
		{Name: "acquire", Run: c.Acquire},
		{Name: "verify", Run: c.Verify},
		{Name: "report", Run: c.Report},
	}...)
	if !c.o.KeepOpen {
		s = append(s, Stage{Name: "close", Run: c.Close, OnlyIfClean: true})
	}
	return s
}

// StageResult is what one stage did.
type StageResult struct {
	Stage   string `json:"stage"`
	OK      bool   `json:"ok"`
	Skipped bool   `json:"skipped,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Summary is what a run did.
type Summary struct {
	Case   string        `json:"case"`
	Stages []StageResult `json:"stages"`
	// Evidence lists every object recorded as evidence so far.
	Evidence []*custody.EvidenceStored `json:"evidence"`
	// Reports lists the reports stored so far.
	Reports []vault.Receipt `json:"reports"`
	// Checkpoint is the latest signed checkpoint of the ledger.
	Checkpoint string `json:"checkpoint"`
}

// Run runs the stages in order. A failed stage does not stop the ones after
// it; the error, wrapping ErrIncomplete, names every stage that failed.
func Run(ctx context.Context, c *Case, stages []Stage) (*Summary, error) {
	log := zerolog.Ctx(ctx)
	sum := &Summary{Case: c.o.CaseID}
	var errs []error
	for _, s := range stages {
		if ctx.Err() != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.Name, ctx.Err()))
			sum.Stages = append(sum.Stages, StageResult{Stage: s.Name, Error: "not run: " + ctx.Err().Error()})
			continue
		}
		if s.OnlyIfClean && len(errs) > 0 {
			sum.Stages = append(sum.Stages, StageResult{Stage: s.Name, Skipped: true, Error: "not run: earlier stages failed; the case stays open, re-run it to resume"})
			continue
		}
		log.Info().Str("case", c.o.CaseID).Str("stage", s.Name).Msg("stage started")
		err := s.Run(ctx)
		r := StageResult{Stage: s.Name, OK: err == nil}
		if err != nil {
			r.Error = err.Error()
			errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
			log.Error().Err(err).Str("stage", s.Name).Msg("stage failed; continuing with the next")
			// The steps inside the stage recorded what they did; the stage's
			// failure is recorded too, so no failure is only on the terminal.
			if _, rerr := c.append(ctx, c.acc.ForensicsCaller, []string{c.instanceARN()}, &custody.AWSAction{
				Action: "stage." + s.Name, Account: c.acc.MemberID, Region: c.o.Region}, err); rerr != nil {
				errs = append(errs, rerr)
			}
		}
		sum.Stages = append(sum.Stages, r)
	}
	if st, err := c.state(ctx); err == nil {
		sum.Evidence, sum.Reports = st.stored, st.reports
	} else {
		errs = append(errs, err)
	}
	if cp, err := c.ledger.Checkpoint(ctx); err == nil {
		sum.Checkpoint = string(cp)
	} else {
		errs = append(errs, fmt.Errorf("checkpoint: %w", err))
	}
	if len(errs) > 0 {
		return sum, fmt.Errorf("%w: %w", ErrIncomplete, errors.Join(errs...))
	}
	return sum, nil
}

// Collect stores the control-plane evidence about the instance: each item
// once per case. A re-run collects again only the items not yet stored
// (failed, or never reached), not those stored or recorded as unavailable;
// the finding's items only when a finding is given. It fails while an item
// fails, so that the case is not closed without it.
func (c *Case) Collect(ctx context.Context) error {
	st, err := c.state(ctx)
	if err != nil {
		return err
	}
	finding, err := c.caseFinding(ctx, st)
	if err != nil {
		return err
	}
	missing := st.missingItems(len(finding) > 0)
	if len(missing) == 0 {
		zerolog.Ctx(ctx).Info().Msg("control-plane evidence already collected")
		return nil
	}
	for _, item := range missing {
		if it := st.items[item]; it != nil && it.failed != "" {
			zerolog.Ctx(ctx).Info().Str("item", item).Str("failed", it.failed).Msg("collecting again a control-plane item that failed")
		}
	}
	// Each collection gets its own prefix (keys are write-once): a
	// collection cut short before it was recorded leaves objects that are
	// simply never referenced.
	stamp := c.o.Now().UTC().Format("20060102T150405.000000000Z")
	o := controlplane.NewOptions()
	o.AccountID, o.Region, o.Now, o.Finding, o.Put = c.acc.MemberID, c.o.Region, c.o.Now, finding, c.o.Put
	o.Items = missing
	if c.o.CloudTrailLookBack > 0 {
		o.LookBack = c.o.CloudTrailLookBack
	}
	if c.o.CloudTrailMaxEvents > 0 {
		o.MaxCloudTrailEvents = c.o.CloudTrailMaxEvents
	}
	var keyErr error
	o.Key = func(item string) string {
		k, err := vault.CaseKey(c.o.CaseID, vault.AreaEvidence, "control-plane/"+stamp+"/"+item)
		if err != nil {
			keyErr = err
		}
		return k
	}
	o.Record = func(ctx context.Context, r controlplane.Result) error {
		if r.Err != nil {
			_, err := c.append(ctx, c.acc.MemberCaller, []string{c.instanceARN()}, &custody.AWSAction{
				Action: collectAction(r.Item), Account: c.acc.MemberID, Region: c.o.Region,
				Details: map[string]string{"key": r.Key}}, r.Err)
			return err
		}
		if r.Unavailable != "" {
			// Done, with nothing stored: recorded so that no later run
			// tries again, and so that the report shows why.
			d := map[string]string{"unavailable": r.Unavailable}
			if len(r.Calls) > 0 {
				d["calls"] = strings.Join(r.Calls, "; ")
			}
			_, err := c.append(ctx, c.acc.MemberCaller, []string{c.instanceARN()}, &custody.AWSAction{
				Action: collectAction(r.Item), Account: c.acc.MemberID, Region: c.o.Region, Details: d}, nil)
			return err
		}
		_, err := c.append(ctx, c.acc.MemberCaller, []string{c.instanceARN(), r.Receipt.URI}, &custody.EvidenceStored{
			Receipt: *r.Receipt, Source: "control-plane:" + r.Item + ":" + c.o.InstanceID, Evidence: custody.EvidenceControlPlane,
			Notes: r.Notes}, nil)
		return err
	}
	_, err = controlplane.Collect(ctx, controlplane.NewClients(c.acc.Member), c.store, c.o.InstanceID, o)
	return errors.Join(err, keyErr)
}

// caseFinding is the finding the collect stage stores: this run's, or,
// when the case already has one whose record failed, its bytes as stored
// (guardduty-finding.given.json), read back. A case whose finding was
// never stored must be given it again.
func (c *Case) caseFinding(ctx context.Context, st *state) ([]byte, error) {
	if len(c.o.Finding) > 0 {
		return c.o.Finding, nil
	}
	rec, given := st.items[controlplane.ItemFinding], st.items[controlplane.ItemFindingGiven]
	if rec == nil && given == nil || rec.done() {
		return nil, nil
	}
	if given == nil || given.receipt == nil {
		why := "its bytes as given are not in the vault"
		if given != nil && given.failed != "" {
			why = given.failed
		}
		return nil, fmt.Errorf("the GuardDuty finding of case %s was not stored (%s): run again with --finding FILE (the EventBridge event or its detail)", c.o.CaseID, why)
	}
	rc, err := c.store.Get(ctx, given.receipt.Key, given.receipt.VersionID)
	if err != nil {
		return nil, fmt.Errorf("read back the case's GuardDuty finding %s: %w", given.receipt.Key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, given.receipt.Size+1))
	if err != nil {
		return nil, fmt.Errorf("read back the case's GuardDuty finding %s: %w", given.receipt.Key, err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != given.receipt.SHA256 {
		return nil, fmt.Errorf("the case's GuardDuty finding %s does not match its receipt: run `impound vault verify`, then run again with --finding FILE", given.receipt.Key)
	}
	return b, nil
}

// Snapshot freezes the instance's volumes and moves the snapshots into the
// forensics account; it is idempotent (snapshots are found by their tags).
func (c *Case) Snapshot(ctx context.Context) error {
	o := snapshot.NewOptions()
	o.CaseID, o.Region = c.o.CaseID, c.o.Region
	o.ForensicsKMSKey, o.MemberKMSKey = c.o.ForensicsKMSKey, c.o.MemberKMSKey
	if c.o.SnapshotPollInterval > 0 {
		o.PollInterval = c.o.SnapshotPollInterval
	}
	if c.o.SnapshotTimeout != nil {
		o.Timeout = c.o.SnapshotTimeout
	}
	o.Record = c.recordSnapshotStep
	m, err := snapshot.New(snapshot.NewAccount(c.acc.MemberID, c.acc.Member), snapshot.NewAccount(c.acc.ForensicsID, c.acc.Forensics), o)
	if err != nil {
		return err
	}
	_, err = m.Run(ctx, c.o.InstanceID)
	return err
}

// recordSnapshotStep records a step of the snapshot stage. A snapshot found
// by its tags whose creation the ledger lacks (the run that made it failed
// to record it) is recorded now: a snapshot.found entry, then the entry its
// creation would have made. A completed state or an inventory already
// recorded is not recorded again, so re-running a finished case adds nothing.
func (c *Case) recordSnapshotStep(ctx context.Context, s snapshot.Step) error {
	d := s.Details
	if s.Err == nil && (s.Action == snapshot.ActionFound || s.Action == snapshot.ActionState || s.Action == snapshot.ActionInventory) {
		st, err := c.state(ctx)
		if err != nil {
			return err
		}
		switch s.Action {
		case snapshot.ActionInventory:
			if st.inventoryKey == inventoryKey(d) {
				return nil
			}
		case snapshot.ActionState:
			if d["state"] == string(ec2types.SnapshotStateCompleted) && st.completed[d["snapshot"]] {
				return nil
			}
		case snapshot.ActionFound:
			made := snapshot.ActionCopy
			if d["role"] == snapshot.RoleOriginal {
				made = snapshot.ActionCreate
			}
			if made == snapshot.ActionCreate && st.created[d["snapshot"]] || made == snapshot.ActionCopy && st.copied[d["snapshot"]] {
				return nil
			}
			zerolog.Ctx(ctx).Warn().Str("snapshot_id", d["snapshot"]).Str("role", d["role"]).
				Msg("recording a snapshot an earlier run made but did not record")
			if _, err := c.append(ctx, c.caller(s.Account), s.Resources, c.snapshotDetails(s), nil); err != nil {
				return err
			}
			s.Action = made
			_, err = c.append(ctx, c.caller(s.Account), s.Resources, c.snapshotDetails(s), nil)
			return err
		}
	}
	_, err := c.append(ctx, c.caller(s.Account), s.Resources, c.snapshotDetails(s), s.Err)
	return err
}

// snapshotDetails is the ledger entry of a snapshot step: a typed entry for
// a snapshot created, copied or shared, an AWSAction for the others.
func (c *Case) snapshotDetails(s snapshot.Step) custody.Details {
	d := s.Details
	switch s.Action {
	case snapshot.ActionCreate:
		if d["snapshot"] != "" {
			size, _ := strconv.ParseInt(d["size_gib"], 10, 64)
			return &custody.SnapshotCreated{SnapshotID: d["snapshot"], VolumeID: d["volume_id"], Account: s.Account, Region: c.o.Region,
				Encrypted: d["encrypted"] == "true", KMSKeyID: d["kms_key"], SizeGiB: size, InstanceID: d["instance_id"], Device: d["device"]}
		}
	case snapshot.ActionCopy:
		if s.Err == nil {
			return &custody.SnapshotCopied{SourceSnapshotID: d["source_snapshot"], SourceAccount: d["source_account"], SourceRegion: c.o.Region,
				SnapshotID: d["snapshot"], Account: s.Account, Region: c.o.Region, KMSKeyID: d["kms_key"],
				OriginalSnapshotID: d["original_snapshot"], VolumeID: d["volume_id"], Purpose: d["purpose"]}
		}
	case snapshot.ActionShare:
		if s.Err == nil {
			return &custody.SnapshotShared{SnapshotID: d["snapshot"], Accounts: []string{d["account"]}, KMSKeyID: d["kms_key"]}
		}
	}
	return &custody.AWSAction{Action: s.Action, Account: s.Account, Region: c.o.Region, Details: d}
}

// Acquire streams every forensics-account snapshot of the case not yet
// acquired into the vault, several at once within the account's rate budget.
func (c *Case) Acquire(ctx context.Context) error {
	st, err := c.state(ctx)
	if err != nil {
		return err
	}
	if len(st.volumes) == 0 {
		return errors.New("no snapshot of this case is in the forensics account yet: run the snapshot stage first")
	}
	var todo []custody.SnapshotCopied
	for _, v := range st.volumes {
		if st.acquired[v.SnapshotID] == nil {
			todo = append(todo, v)
		}
	}
	// One volume's failure does not stop the others: each is recorded on its own.
	errs := make([]error, len(todo))
	var g errgroup.Group
	g.SetLimit(c.o.ParallelVolumes)
	for i := range todo {
		g.Go(func() error {
			errs[i] = c.acquireOne(ctx, todo[i])
			return nil
		})
	}
	_ = g.Wait()
	return errors.Join(errs...)
}

func (c *Case) acquireOne(ctx context.Context, v custody.SnapshotCopied) error {
	eo := c.o.EBS
	eo.Info = acquire.SourceInfo{Kind: "ebs-snapshot", SnapshotID: v.SnapshotID, VolumeID: v.VolumeID, InstanceID: c.o.InstanceID,
		Account: c.acc.ForensicsID, Region: c.o.Region,
		SnapshotARN: fmt.Sprintf("arn:aws:ec2:%s::snapshot/%s", c.o.Region, v.SnapshotID)}
	if cc, ok := c.acc.Forensics.Credentials.(*aws.CredentialsCache); ok {
		eo.OnExpiredCredentials = cc.Invalidate
	}
	resources := []string{eo.Info.SnapshotARN}
	fail := func(err error) error {
		_, rerr := c.append(ctx, c.acc.ForensicsCaller, resources, &custody.AWSAction{Action: "acquire.snapshot",
			Account: c.acc.ForensicsID, Region: c.o.Region,
			Details: map[string]string{"snapshot": v.SnapshotID, "volume_id": v.VolumeID, "original_snapshot": v.OriginalSnapshotID}}, err)
		return errors.Join(fmt.Errorf("acquire snapshot %s (volume %s): %w", v.SnapshotID, v.VolumeID, err), rerr)
	}
	src, err := acquire.NewEBSSource(ctx, acquire.NewEBSClient(c.acc.Forensics), v.SnapshotID, c.gov, eo)
	if err != nil {
		return fail(err)
	}
	ao := acquire.NewOptions()
	ao.Case, ao.Hashes, ao.Compression, ao.Put, ao.Now = c.o.CaseID, c.o.Hashes, c.o.Compression, c.o.Put, c.o.Now
	ao.Tool = acquire.Tool{Name: c.o.Tool.Name, Version: c.o.Tool.Version, BinarySHA256: c.o.Tool.BinarySHA256}
	if c.o.Progress != nil {
		ao.Progress = c.o.Progress(v.SnapshotID + " (" + v.VolumeID + ")")
	}
	if ao.Key, err = acquire.DefaultKey(c.o.CaseID, src.Info(), c.o.Compression); err != nil {
		return fail(err)
	}
	if c.o.StateDir != "" {
		// An acquisition cut short earlier continues where it stopped.
		ao.StateDir = c.o.StateDir
		_, serr := os.Stat(acquire.StatePath(c.o.StateDir, c.o.CaseID, src.Info(), ao.Key))
		ao.Resume = serr == nil
	}
	ev, err := acquire.Run(ctx, src, c.store, ao)
	if err != nil {
		return fail(err)
	}
	resources = append(resources, ev.Image.URI)
	_, err = c.append(ctx, c.acc.ForensicsCaller, resources, EvidenceStored(ev), nil)
	return err
}

// EvidenceStored is the ledger entry of an acquisition.
func EvidenceStored(ev *acquire.Evidence) *custody.EvidenceStored {
	// The receipt carries the stored object's SHA-256. For a raw image that
	// is the image's; for a compressed one the image's own SHA-256 differs
	// and must be kept with the other hashes, or it is recorded nowhere.
	hashes := map[string]string{}
	for k, v := range ev.Hashes {
		if k != acquire.SHA256 || v != ev.Image.SHA256 {
			hashes[k] = v
		}
	}
	if len(hashes) == 0 {
		hashes = nil
	}
	src := ev.Source.ID()
	if ev.Source.Kind != "" {
		src = ev.Source.Kind + ":" + src
	}
	var inc *custody.Incremental
	if i := ev.Incremental; i != nil {
		inc = &custody.Incremental{BaseSnapshotID: i.BaseSnapshotID, BaseImage: i.BaseImage, BaseMerkleRoot: i.BaseMerkleRoot,
			ChangedBlocks: i.ChangedBlocks, EBSBlocks: i.EBSBlocks, ReusedBlocks: i.ReusedBlocks}
	}
	return &custody.EvidenceStored{
		Receipt: *ev.Image, Source: src, Hashes: hashes, MerkleRoot: ev.MerkleRoot, Evidence: custody.EvidenceDiskImage,
		Acquisition: &custody.Acquisition{
			SnapshotID: ev.Source.SnapshotID, VolumeID: ev.Source.VolumeID, InstanceID: ev.Source.InstanceID,
			Device: ev.Source.DevicePath, Account: ev.Source.Account, Region: ev.Source.Region,
			Size: ev.Size, BlockSize: ev.BlockSize, Blocks: ev.Blocks, WrittenBlocks: ev.WrittenBlocks,
			Compression: ev.Compression, BlockMap: ev.BlockMap, MerkleLeaf: ev.MerkleLeaf,
			Started: ev.Started.UTC().Format(time.RFC3339Nano), Finished: ev.Finished.UTC().Format(time.RFC3339Nano),
			Tool:        &custody.Tool{Name: ev.Tool.Name, Version: ev.Tool.Version, BinarySHA256: ev.Tool.BinarySHA256},
			Incremental: inc,
		},
	}
}

// Verify re-reads every stored object not yet verified (each image's block
// map too) and records the comparison with its receipt.
func (c *Case) Verify(ctx context.Context) error {
	st, err := c.state(ctx)
	if err != nil {
		return err
	}
	var receipts []*vault.Receipt
	for _, e := range st.stored {
		r := e.Receipt
		receipts = append(receipts, &r)
		if e.Acquisition != nil && e.Acquisition.BlockMap != nil {
			receipts = append(receipts, e.Acquisition.BlockMap)
		}
	}
	sort.SliceStable(receipts, func(i, j int) bool { return receipts[i].Key < receipts[j].Key })
	var errs []error
	for _, r := range receipts {
		if st.verified[r.Key+"@"+r.VersionID] {
			continue
		}
		verr := vault.Verify(ctx, c.store, r)
		if verr != nil {
			errs = append(errs, fmt.Errorf("%s@%s: %w", r.Key, r.VersionID, verr))
		}
		if _, err := c.append(ctx, c.acc.ForensicsCaller, []string{r.URI}, &custody.EvidenceVerified{
			URI: r.URI, Key: r.Key, VersionID: r.VersionID, Size: r.Size, SHA256: r.SHA256}, verr); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	return errors.Join(errs...)
}

// Report renders the report from the ledger and the vault alone, stores it
// in every format and records each; skipped when nothing happened since the
// last report.
func (c *Case) Report(ctx context.Context) error {
	st, err := c.state(ctx)
	if err != nil {
		return err
	}
	if st.reported {
		return nil
	}
	// Sign what the report will show.
	if _, err := c.ledger.Checkpoint(ctx); err != nil {
		return fmt.Errorf("checkpoint before the report: %w", err)
	}
	src, err := report.FromVault(ctx, c.store, c.o.CaseID, c.signer.VerifierKey())
	if err != nil {
		return fmt.Errorf("read the case for its report: %w", err)
	}
	tool := c.o.Tool
	// The verify stage has re-read every object and recorded it; the report
	// shows those records rather than reading every image again.
	rep, err := report.Build(ctx, src, report.Options{Generator: &tool})
	if err != nil {
		return fmt.Errorf("build the report: %w", err)
	}
	_, err = report.Publish(ctx, c.ledger, c.store, rep, report.Formats, report.PublishOptions{
		Actor: custody.Actor{Operator: c.o.Operator, CallerARN: c.acc.ForensicsCaller}, Put: c.o.Put})
	return err
}

// ErrVolumesMissing is returned by Close while a volume of the instance has
// no acquired image.
var ErrVolumesMissing = errors.New("respond: not every volume of the instance was acquired")

// Close records the end of the case. It refuses while a volume of the
// instance, as the snapshot stage recorded them, has no acquired image.
func (c *Case) Close(ctx context.Context) error {
	st, err := c.state(ctx)
	if err != nil {
		return err
	}
	if st.closed {
		return nil
	}
	if len(st.inventory) == 0 {
		return fmt.Errorf("%w: the snapshot stage has not recorded the volumes of instance %s; re-run the case so it does, then close it",
			ErrVolumesMissing, c.o.InstanceID)
	}
	if missing := st.unacquired(); len(missing) > 0 {
		return fmt.Errorf("%w: volumes %s of instance %s have no acquired image; the case stays open: re-run it to snapshot and acquire them",
			ErrVolumesMissing, strings.Join(missing, ", "), c.o.InstanceID)
	}
	finding := len(c.o.Finding) > 0 || st.items[controlplane.ItemFinding] != nil || st.items[controlplane.ItemFindingGiven] != nil
	if missing := st.missingItems(finding); len(missing) > 0 {
		return fmt.Errorf("%w: control-plane items %s were not collected; the case stays open: re-run it to collect them",
			ErrEvidenceMissing, strings.Join(missing, ", "))
	}
	var unverified []string
	for _, e := range st.stored {
		rs := []*vault.Receipt{&e.Receipt}
		if a := e.Acquisition; a != nil && a.BlockMap != nil {
			rs = append(rs, a.BlockMap)
		}
		for _, r := range rs {
			if !st.verified[r.Key+"@"+r.VersionID] {
				unverified = append(unverified, r.Key)
			}
		}
	}
	if len(unverified) > 0 {
		return fmt.Errorf("%w: %d stored objects were not read back and matched (%s); the case stays open: run its verify stage (impound respond --case %s --stages verify,report,close)",
			ErrNotVerified, len(unverified), strings.Join(unverified[:min(3, len(unverified))], ", "), c.o.CaseID)
	}
	if len(st.reports) == 0 {
		return fmt.Errorf("%w: no report of case %s is stored; the case stays open: run its report stage (impound respond --case %s --stages report,close)",
			ErrNotVerified, c.o.CaseID, c.o.CaseID)
	}
	_, err = c.append(ctx, c.acc.ForensicsCaller, nil, &custody.CaseClosed{Reason: "response complete"}, nil)
	return err
}
