package respond

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// SelectStages returns the stages of all that names lists, in all's order,
// so that a case can be worked on one stage at a time, in separate processes
// (a Lambda runs the short ones, a longer task the acquisition). A name that
// is not one of all's is an error that lists the valid ones.
func SelectStages(all []Stage, names []string) ([]Stage, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []Stage
	var valid []string
	for _, s := range all {
		valid = append(valid, s.Name)
		if want[s.Name] {
			out = append(out, s)
			delete(want, s.Name)
		}
	}
	if len(want) > 0 {
		var unknown []string
		for _, n := range names {
			if want[n] {
				unknown = append(unknown, n)
			}
		}
		return nil, fmt.Errorf("no stage %s in this case: the stages are %s", strings.Join(unknown, ", "), strings.Join(valid, ", "))
	}
	return out, nil
}

// AcquireSnapshot acquires one of the case's forensics-account snapshots,
// as the ledger records it (its volume and original snapshot come from the
// snapshot-copied entry), unless the case already holds its image: what a
// task given one volume of a case runs.
func (c *Case) AcquireSnapshot(ctx context.Context, snapshotID string) error {
	st, err := c.state(ctx)
	if err != nil {
		return err
	}
	if st.acquired[snapshotID] != nil {
		return nil
	}
	var ids []string
	for _, v := range st.volumes {
		if v.SnapshotID == snapshotID {
			return c.acquireOne(ctx, v)
		}
		ids = append(ids, v.SnapshotID)
	}
	if len(ids) == 0 {
		return errors.New("no snapshot of this case is in the forensics account yet: run the snapshot stage first")
	}
	return fmt.Errorf("%s is not one of case %s's forensics-account snapshots (%s): `impound snapshot` prints them", snapshotID, c.o.CaseID, strings.Join(ids, ", "))
}

// StageNames are the names of a whole case's stages, in order.
func StageNames() []string {
	return []string{"collect", "isolate", "snapshot", "acquire", "verify", "report", "close"}
}
