package report

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/errgroup"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/vault"
)

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// builder accumulates the report entry by entry.
type builder struct {
	r        *Report
	opened   custody.CaseOpened
	caseID   string
	vaultURI string
	opts     Options

	operators map[Operator]int
	// evidence by "key@version", to attach verifications and legal holds.
	byObject map[string]int
	// evidence by its block map's "key@version".
	byBlockMap map[string]int
	// receipts of evidence, parallel to r.Evidence, for live checks.
	receipts []vault.Receipt
	// receipts of block maps, parallel to r.Evidence (nil: none).
	blockMaps []*vault.Receipt
}

func objectID(key, version string) string { return key + "@" + version }

func int64p(n int64) *int64 { return &n }

func (b *builder) entry(e *custody.Entry, leaf tlog.Hash, details json.RawMessage, signed bool) {
	if b.operators == nil {
		b.operators = map[Operator]int{}
		b.byObject = map[string]int{}
		b.byBlockMap = map[string]int{}
	}
	b.operators[Operator{Name: e.Actor.Operator, CallerARN: e.Actor.CallerARN}]++
	t := timeFmt(e.Time)
	outcome := string(e.Outcome)
	if outcome == "" {
		outcome = string(custody.Succeeded)
	}
	te := TimelineEntry{
		Seq: e.Seq, Time: t, Kind: string(e.Kind()), Summary: summarize(e),
		Operator: e.Actor.Operator, CallerARN: e.Actor.CallerARN, Resources: e.Resources,
		Outcome: outcome, Error: e.Error, Signed: signed,
		Hash: base64.StdEncoding.EncodeToString(leaf[:]), Details: details,
	}
	b.r.Timeline = append(b.r.Timeline, te)
	if e.Outcome == custody.Failed {
		b.r.Problems = append(b.r.Problems, Problem{Severity: SeverityFailed, Seq: int64p(e.Seq), Time: t,
			Kind: te.Kind, Summary: te.Summary, Error: e.Error})
	}

	switch d := e.Details.(type) {
	case custody.IsolationStep:
		name, status, note := stepStatus(d)
		if e.Outcome == custody.Failed {
			status = "failed"
		}
		b.r.Isolation = append(b.r.Isolation, IsolationStep{Seq: e.Seq, Time: t, Step: name, Status: status, Note: note,
			Target: d.Target, Before: compactJSON(d.Before), After: compactJSON(d.After), Outcome: outcome, Error: e.Error})
		if status == "skipped" {
			b.r.Problems = append(b.r.Problems, Problem{Severity: SeveritySkipped, Seq: int64p(e.Seq), Time: t,
				Kind: te.Kind, Summary: "isolation step " + name + " was skipped", Error: note})
		}
		if b.r.Case.InstanceName == "" && strings.HasPrefix(name, "record-state") {
			b.r.Case.InstanceName = instanceName(d.After, d.Before)
		}
	case custody.SnapshotCreated:
		detail := "volume " + d.VolumeID
		if d.SizeGiB > 0 {
			detail += fmt.Sprintf(", %d GiB", d.SizeGiB)
		}
		detail += encryption(d.Encrypted, d.KMSKeyID)
		b.r.Snapshots = append(b.r.Snapshots, Snapshot{Seq: e.Seq, Time: t, Action: "created", SnapshotID: d.SnapshotID,
			From: d.VolumeID, Account: d.Account, Region: d.Region, Detail: detail, Outcome: outcome, Error: e.Error})
	case custody.SnapshotCopied:
		detail := "copy of " + d.SourceSnapshotID
		if d.SourceAccount != "" {
			detail += " (account " + d.SourceAccount + ")"
		}
		if d.KMSKeyID != "" {
			detail += ", encrypted with " + d.KMSKeyID
		}
		b.r.Snapshots = append(b.r.Snapshots, Snapshot{Seq: e.Seq, Time: t, Action: "copied", SnapshotID: d.SnapshotID,
			From: d.SourceSnapshotID, Account: d.Account, Region: d.Region, Detail: detail, Outcome: outcome, Error: e.Error})
	case custody.SnapshotShared:
		b.r.Snapshots = append(b.r.Snapshots, Snapshot{Seq: e.Seq, Time: t, Action: "shared", SnapshotID: d.SnapshotID,
			Detail: "createVolumePermission for " + strings.Join(d.Accounts, ", "), Outcome: outcome, Error: e.Error})
	case custody.AWSAction:
		b.r.Snapshots = append(b.r.Snapshots, Snapshot{Seq: e.Seq, Time: t, Action: d.Action, Account: d.Account,
			Region: d.Region, Detail: kv(d.Details), SnapshotID: d.Details["snapshot_id"], Outcome: outcome, Error: e.Error})
		// Evidence AWS could not give (a screenshot of a bare-metal or a
		// stopped instance) is missing from the case: say so prominently.
		if why := d.Details["unavailable"]; why != "" && e.Outcome != custody.Failed && strings.HasPrefix(d.Action, "collect.") {
			b.r.Problems = append(b.r.Problems, Problem{Severity: SeveritySkipped, Seq: int64p(e.Seq), Time: t,
				Kind: te.Kind, Summary: strings.TrimPrefix(d.Action, "collect.") + " was not collected: AWS cannot give it", Error: why})
		}
	case custody.EvidenceStored:
		b.evidence(e, t, outcome, d)
	case custody.EvidenceVerified:
		b.verified(e, t, outcome, d)
	case custody.LegalHoldChanged:
		if e.Outcome == custody.Failed {
			break
		}
		id := objectID(d.Key, d.VersionID)
		if i, ok := b.byObject[id]; ok {
			b.r.Evidence[i].LegalHold = d.On
		} else if i, ok := b.byBlockMap[id]; ok {
			b.r.Evidence[i].BlockMap.LegalHold = d.On
		}
	case custody.CaseClosed:
		b.r.Case.Closed = true
		b.r.Case.ClosedReason = d.Reason
	}
}

func encryption(enc bool, kmsKey string) string {
	switch {
	case enc && kmsKey != "":
		return ", encrypted with " + kmsKey
	case enc:
		return ", encrypted"
	}
	return ", not encrypted"
}

// kv formats a map as "k=v, k=v" in key order.
func kv(m map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}

// stepStatus is an isolation step's name, status ("done" when it simply
// ran) and note.
func stepStatus(d custody.IsolationStep) (name, status, note string) {
	status = d.Status
	if status == "" {
		status = "done"
	}
	return d.Step, status, d.Note
}

// instanceName finds the instance's Name tag in a recorded state.
func instanceName(states ...json.RawMessage) string {
	for _, raw := range states {
		var st struct {
			Tags map[string]string `json:"tags"`
		}
		if json.Unmarshal(raw, &st) == nil && st.Tags["Name"] != "" {
			return st.Tags["Name"]
		}
	}
	return ""
}

func (b *builder) evidence(e *custody.Entry, t, outcome string, d custody.EvidenceStored) {
	rc := d.Receipt
	ev := Evidence{
		Seq: e.Seq, Time: t, Kind: d.Evidence, Source: d.Source, Size: rc.Size, SHA256: rc.SHA256,
		Hashes: d.Hashes, MerkleRoot: d.MerkleRoot, URI: rc.URI, Key: rc.Key, VersionID: rc.VersionID,
		Segments: len(rc.Segments), RetentionMode: rc.RetentionMode, RetainUntil: timeFmt(rc.RetainUntil),
		LegalHold: rc.LegalHold, StoredAt: timeFmt(rc.StoredAt), Outcome: outcome, Error: e.Error,
		Notes:        d.Notes,
		Verification: EvidenceCheck{Status: StatusNotVerified, Checks: []Check{}},
	}
	if ev.Kind == "" {
		ev.Kind = custody.EvidenceFile
	}
	if a := d.Acquisition; a != nil {
		ev.MerkleLeaf = a.MerkleLeaf
		ea := &Acquisition{SnapshotID: a.SnapshotID, VolumeID: a.VolumeID, InstanceID: a.InstanceID, Device: a.Device,
			ImageSize: a.Size, BlockSize: a.BlockSize, Blocks: a.Blocks, WrittenBlocks: a.WrittenBlocks,
			Compression: a.Compression, Started: a.Started, Finished: a.Finished}
		if bm := a.BlockMap; bm != nil {
			ea.BlockMapKey, ea.BlockMapSHA256 = bm.Key, bm.SHA256
			ev.BlockMap = &BlockMap{URI: bm.URI, Key: bm.Key, VersionID: bm.VersionID, Size: bm.Size, SHA256: bm.SHA256,
				RetentionMode: bm.RetentionMode, RetainUntil: timeFmt(bm.RetainUntil), LegalHold: bm.LegalHold,
				Verification: EvidenceCheck{Status: StatusNotVerified, Checks: []Check{}},
				Commands:     b.objectCommands(*bm)}
		}
		if a.Tool != nil {
			ea.Tool = toolString(*a.Tool)
		}
		ev.Acquisition = ea
	}
	ev.Commands = b.evidenceCommands(&ev, rc)
	b.byObject[objectID(rc.Key, rc.VersionID)] = len(b.r.Evidence)
	var bm *vault.Receipt
	if d.Acquisition != nil && d.Acquisition.BlockMap != nil {
		bm = d.Acquisition.BlockMap
		b.byBlockMap[objectID(bm.Key, bm.VersionID)] = len(b.r.Evidence)
	}
	b.r.Evidence = append(b.r.Evidence, ev)
	b.receipts = append(b.receipts, rc)
	b.blockMaps = append(b.blockMaps, bm)
}

func toolString(t custody.Tool) string {
	s := t.Name + " " + t.Version
	if t.Commit != "" {
		s += " (" + t.Commit + ")"
	}
	return s
}

// verified attaches an evidence-verified entry to the object it re-read:
// an evidence object, or the block map of a disk image (recorded in the
// image's evidence-stored entry). Any other object is a problem.
func (b *builder) verified(e *custody.Entry, t, outcome string, d custody.EvidenceVerified) {
	id := objectID(d.Key, d.VersionID)
	var (
		checks  *EvidenceCheck
		size    int64
		sum, of string
	)
	if i, ok := b.byObject[id]; ok {
		ev := &b.r.Evidence[i]
		checks, size, sum, of = &ev.Verification, ev.Size, ev.SHA256, "receipt"
	} else if i, ok := b.byBlockMap[id]; ok {
		bm := b.r.Evidence[i].BlockMap
		checks, size, sum, of = &bm.Verification, bm.Size, bm.SHA256, "block map's receipt"
	} else {
		b.r.Problems = append(b.r.Problems, Problem{Severity: SeverityWarning, Seq: int64p(e.Seq), Time: t,
			Kind: string(e.Kind()), Summary: "verification of " + d.Key + " version " + d.VersionID + ", which no evidence-stored entry before it records"})
		return
	}
	c := Check{Method: "ledger", Seq: int64p(e.Seq), Time: t, SHA256: d.SHA256, Outcome: outcome, Error: e.Error}
	if outcome == string(custody.Succeeded) && (d.SHA256 != sum || d.Size != size) {
		c.Outcome = string(custody.Failed)
		c.Error = fmt.Sprintf("recorded re-read has %d bytes, SHA-256 %s; the %s says %d bytes, SHA-256 %s", d.Size, d.SHA256, of, size, sum)
	}
	checks.Checks = append(checks.Checks, c)
}

// liveTarget is one object verifyLive re-reads and where its check goes.
type liveTarget struct {
	rc     *vault.Receipt
	checks *EvidenceCheck
	err    error
}

// verifyLive re-reads every evidence object, and each image's block map,
// in the vault.
func (b *builder) verifyLive(ctx context.Context, s vault.Store) error {
	var targets []*liveTarget
	for i := range b.receipts {
		ev := &b.r.Evidence[i]
		if ev.Outcome == string(custody.Failed) {
			continue
		}
		targets = append(targets, &liveTarget{rc: &b.receipts[i], checks: &ev.Verification})
		if b.blockMaps[i] != nil {
			targets = append(targets, &liveTarget{rc: b.blockMaps[i], checks: &ev.BlockMap.Verification})
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, tg := range targets {
		g.Go(func() error {
			tg.err = vault.Verify(gctx, s, tg.rc)
			if err := ctx.Err(); err != nil {
				return err
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("report: verify evidence: %w", err)
	}
	for _, tg := range targets {
		c := Check{Method: "live", Outcome: string(custody.Succeeded), SHA256: tg.rc.SHA256}
		if err := tg.err; err != nil {
			c.Outcome, c.Error, c.SHA256 = string(custody.Failed), err.Error(), ""
			var mm *vault.MismatchError
			if errors.As(err, &mm) {
				c.SHA256 = mm.GotSHA256
			}
			zerolog.Ctx(ctx).Warn().Str("key", tg.rc.Key).Str("version_id", tg.rc.VersionID).Err(err).Msg("evidence does not match its receipt")
		}
		tg.checks.Checks = append(tg.checks.Checks, c)
	}
	return nil
}

// finish fills what needs every entry: the case summary, methods, commands.
func (b *builder) finish(es []*custody.Entry) {
	o := b.opened
	c := &b.r.Case
	c.ID, c.Title, c.Trigger, c.Account, c.Region = b.caseID, o.Title, o.Trigger, o.Account, o.Region
	c.InstanceID, c.ForensicsAccount, c.Vault, c.Attributes = o.InstanceID, o.ForensicsAccount, b.vaultURI, o.Attributes
	if n := o.Attributes["instance_name"]; n != "" {
		c.InstanceName = n
	}
	c.Start = timeFmt(es[0].Time)
	c.End = timeFmt(es[len(es)-1].Time)
	c.Operators = make([]Operator, 0, len(b.operators))
	for op, n := range b.operators {
		op.Entries = n
		c.Operators = append(c.Operators, op)
	}
	slices.SortFunc(c.Operators, func(a, b Operator) int {
		return strings.Compare(a.Name+"\x00"+a.CallerARN, b.Name+"\x00"+b.CallerARN)
	})
	if n := b.r.Ledger.Size - b.r.Ledger.Signed; n > 0 {
		b.r.Problems = append(b.r.Problems, Problem{Severity: SeverityWarning,
			Summary: fmt.Sprintf("%d entries after the latest signed checkpoint (entries %d to %d) are not covered by a signature", n, b.r.Ledger.Signed, b.r.Ledger.Size-1)})
	}
	if !b.r.Ledger.KeyPinned {
		b.r.Problems = append(b.r.Problems, Problem{Severity: SeverityWarning,
			Summary: "the verifier key was taken from the ledger itself, not given out of band: the report proves the ledger is intact, not who signed it"})
	}

	m := &b.r.Methods
	m.Tool, m.Options = o.Tool, o.Attributes
	m.AcquisitionTools = []custody.Tool{}
	algs := map[string]bool{"sha256": true}
	leaves := map[string]bool{}
	for _, e := range es {
		d, ok := e.Details.(custody.EvidenceStored)
		if !ok {
			continue
		}
		for k := range d.Hashes {
			algs[k] = true
		}
		if a := d.Acquisition; a != nil {
			if a.MerkleLeaf != "" {
				leaves[a.MerkleLeaf] = true
			}
			if a.Tool != nil && !slices.Contains(m.AcquisitionTools, *a.Tool) {
				m.AcquisitionTools = append(m.AcquisitionTools, *a.Tool)
			}
		}
	}
	m.HashAlgorithms, m.MerkleLeaves = sortedKeys(algs), sortedKeys(leaves)
	b.r.Verification = b.verificationCommands()
}

// settle decides each evidence object's (and block map's) status and lists
// problems with it.
func (b *builder) settle() {
	for i := range b.r.Evidence {
		ev := &b.r.Evidence[i]
		if ev.Outcome == string(custody.Failed) {
			ev.Verification.Status = StatusNotVerified
			if ev.BlockMap != nil {
				ev.BlockMap.Verification.Status = StatusNotVerified
			}
			continue
		}
		b.settleChecks(&ev.Verification, fmt.Sprintf("evidence %s version %s does not match its receipt", ev.Key, ev.VersionID))
		if bm := ev.BlockMap; bm != nil {
			b.settleChecks(&bm.Verification, fmt.Sprintf("block map %s version %s of evidence %s does not match its receipt", bm.Key, bm.VersionID, ev.Key))
		}
	}
	// Failures first, then skips, then warnings; each in ledger order.
	rank := map[string]int{SeverityFailed: 0, SeveritySkipped: 1, SeverityWarning: 2}
	slices.SortStableFunc(b.r.Problems, func(x, y Problem) int {
		if d := rank[x.Severity] - rank[y.Severity]; d != 0 {
			return d
		}
		return int(seqOr(x.Seq) - seqOr(y.Seq))
	})
}

// settleChecks sets ec's status: failed at the first failed check (listed
// as a problem), verified when every check matched, not-verified without any.
func (b *builder) settleChecks(ec *EvidenceCheck, what string) {
	st := StatusNotVerified
	for _, c := range ec.Checks {
		if c.Outcome == string(custody.Failed) {
			st = StatusFailed
			b.r.Problems = append(b.r.Problems, Problem{Severity: SeverityFailed, Seq: c.Seq, Time: c.Time, Kind: "evidence-verified",
				Summary: fmt.Sprintf("%s (%s check)", what, c.Method), Error: c.Error})
			break
		}
		st = StatusVerified
	}
	ec.Status = st
}

func seqOr(p *int64) int64 {
	if p == nil {
		return 1 << 62
	}
	return *p
}

// summarize is an entry in one line of plain text (escaped by the renderers).
func summarize(e *custody.Entry) string {
	switch d := e.Details.(type) {
	case custody.CaseOpened:
		s := "case opened"
		if d.InstanceID != "" {
			s += " for instance " + d.InstanceID
		}
		if d.Trigger != "" {
			s += ", trigger " + d.Trigger
		}
		return s
	case custody.EvidenceObserved:
		s := "observed " + d.Source
		if d.Summary != "" {
			s += ": " + d.Summary
		}
		return s
	case custody.IsolationStep:
		name, status, note := stepStatus(d)
		if e.Outcome == custody.Failed {
			status = "failed"
		}
		s := "isolation " + name + " (" + status + ")"
		if note != "" {
			s += ": " + note
		}
		return s
	case custody.SnapshotCreated:
		return "snapshot " + d.SnapshotID + " of " + d.VolumeID + " created"
	case custody.SnapshotCopied:
		return "snapshot " + d.SourceSnapshotID + " copied to " + d.SnapshotID
	case custody.SnapshotShared:
		return "snapshot " + d.SnapshotID + " shared with " + strings.Join(d.Accounts, ", ")
	case custody.EvidenceStored:
		k := d.Evidence
		if k == "" {
			k = "object"
		}
		if e.Outcome == custody.Failed {
			return fmt.Sprintf("%s not stored: %s", k, d.Receipt.Key)
		}
		return fmt.Sprintf("%s stored: %s (%s bytes)", k, d.Receipt.Key, strconv.FormatInt(d.Receipt.Size, 10))
	case custody.EvidenceVerified:
		return "evidence re-read: " + d.Key + " version " + d.VersionID
	case custody.LegalHoldChanged:
		on := "lifted from"
		if d.On {
			on = "placed on"
		}
		s := "legal hold " + on + " " + d.Key + " version " + d.VersionID
		if d.Reason != "" {
			s += ": " + d.Reason
		}
		return s
	case custody.ReportGenerated:
		return d.Format + " report stored: " + d.Receipt.Key
	case custody.CaseClosed:
		if d.Reason != "" {
			return "case closed: " + d.Reason
		}
		return "case closed"
	case custody.Note:
		return "note: " + d.Text
	case custody.AWSAction:
		return d.Action + " " + kv(d.Details)
	}
	return string(e.Kind()) + " (not known to this impound; see details)"
}
