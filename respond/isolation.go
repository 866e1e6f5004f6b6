package respond

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/isolate"
	"github.com/impound-ir/impound/vault"
)

// IsolationPrefix is where the states of one instance's isolation live:
// write-once objects state-000001.json, state-000002.json, ..., the highest
// being the latest. release reads it back to restore the starting state.
func IsolationPrefix(caseID, instance string) string {
	return vault.CasePrefix(caseID) + "isolation/" + instance + "/"
}

// Isolation keeps one instance's isolation state in the vault and records
// its steps in the ledger: the Recorder and SaveState of isolate.Options.
type Isolation struct {
	store  vault.Store
	ledger *custody.Ledger // nil: record nothing (a dry run)
	actor  custody.Actor
	// Prior is the latest saved state, nil when the instance was never isolated in this case.
	Prior *isolate.State
	seq   int // number of the last state object
}

// LoadIsolation reads the latest isolation state of instance in the case.
func LoadIsolation(ctx context.Context, s vault.Store, l *custody.Ledger, actor custody.Actor, caseID, instance string) (*Isolation, error) {
	iso := &Isolation{store: s, ledger: l, actor: actor}
	keys, err := s.List(ctx, IsolationPrefix(caseID, instance))
	if err != nil {
		return nil, fmt.Errorf("list isolation states of %s: %w", instance, err)
	}
	bestKey := ""
	for _, k := range keys {
		var n int
		name := k[strings.LastIndex(k, "/")+1:]
		if _, err := fmt.Sscanf(name, "state-%06d.json", &n); err == nil && name == fmt.Sprintf("state-%06d.json", n) && n > iso.seq {
			iso.seq, bestKey = n, k
		}
	}
	if bestKey == "" {
		return iso, nil
	}
	rc, err := s.Get(ctx, bestKey, "")
	if err != nil {
		return nil, fmt.Errorf("read isolation state %s: %w", bestKey, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read isolation state %s: %w", bestKey, err)
	}
	st, err := isolate.UnmarshalState(b)
	if err != nil {
		return nil, fmt.Errorf("isolation state %s: %w", bestKey, err)
	}
	if st.InstanceID != instance || st.CaseID != caseID {
		return nil, fmt.Errorf("isolation state %s is for %s in case %s", bestKey, st.InstanceID, st.CaseID)
	}
	iso.Prior = st
	return iso, nil
}

// SaveState writes the next numbered state object.
func (iso *Isolation) SaveState(ctx context.Context, st *isolate.State) error {
	b, err := isolate.MarshalState(st)
	if err != nil {
		return err
	}
	key := fmt.Sprintf("%sstate-%06d.json", IsolationPrefix(st.CaseID, st.InstanceID), iso.seq+1)
	if _, err := vault.Put(ctx, iso.store, key, bytes.NewReader(b), vault.PutOptions{ContentType: "application/json"}); err != nil {
		return fmt.Errorf("store isolation state %s: %w", key, err)
	}
	iso.seq++
	return nil
}

// Record appends one step to the ledger as an isolation-step entry.
func (iso *Isolation) Record(ctx context.Context, s isolate.Step) error {
	if iso.ledger == nil {
		return nil
	}
	before, err := rawJSON(s.Before)
	if err != nil {
		return err
	}
	after, err := rawJSON(s.After)
	if err != nil {
		return err
	}
	d := custody.IsolationStep{Step: s.Name, Before: before, After: after, Note: s.Note}
	if s.Status != isolate.StatusDone && s.Status != isolate.StatusFailed {
		d.Status = string(s.Status)
	}
	if len(s.Resources) > 0 {
		d.Target = s.Resources[0]
	}
	entry := custody.Entry{Actor: iso.actor, Resources: s.Resources, Details: d}
	if s.Err != nil {
		entry.Outcome, entry.Error = custody.Failed, s.Err.Error()
	}
	if _, err := iso.ledger.Append(ctx, entry); err != nil {
		return fmt.Errorf("record isolation step %s: %w", s.Name, err)
	}
	return nil
}

func rawJSON(v any) (json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	return json.Marshal(v)
}

// Isolate contains the instance (see package isolate), continuing an
// earlier isolation of this case from its first step not done.
func (c *Case) Isolate(ctx context.Context) error {
	iso, err := LoadIsolation(ctx, c.store, c.ledger, custody.Actor{Operator: c.o.Operator, CallerARN: c.acc.MemberCaller}, c.o.CaseID, c.o.InstanceID)
	if err != nil {
		return err
	}
	prior := iso.Prior
	if prior != nil && prior.Released {
		// Released within this case: the response does not isolate it again on its own.
		return nil
	}
	if prior != nil && prior.Isolated() {
		// Complete: `impound isolate` re-checks every step against AWS when asked.
		return nil
	}
	o := c.o.Isolation
	o.CaseID, o.Record, o.SaveState = c.o.CaseID, iso.Record, iso.SaveState
	_, err = isolate.Run(ctx, isolate.NewClients(c.acc.Member), c.o.InstanceID, prior, o)
	return err
}
