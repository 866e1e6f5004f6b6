package respond

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/impound-ir/impound/acquire/snapshot"
	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/vault"
)

// cancelAfter is a vault that calls cancel once a ledger entry containing
// every one of match is stored, as Ctrl-C or a stopped task would at that
// moment.
type cancelAfter struct {
	vault.Store
	match  [][]byte
	cancel context.CancelFunc
	once   sync.Once
	fired  bool
}

func (s *cancelAfter) Create(ctx context.Context, key string, o vault.PutOptions) (vault.Writer, error) {
	w, err := s.Store.Create(ctx, key, o)
	if err != nil || !bytes.Contains([]byte(key), []byte("/ledger/entries/")) {
		return w, err
	}
	return &cancelAfterWriter{Writer: w, s: s}, nil
}

type cancelAfterWriter struct {
	vault.Writer
	s   *cancelAfter
	buf bytes.Buffer
}

func (w *cancelAfterWriter) Write(b []byte) (int, error) {
	w.buf.Write(b)
	return w.Writer.Write(b)
}

func (w *cancelAfterWriter) Commit() (*vault.Receipt, error) {
	r, err := w.Writer.Commit()
	if err != nil {
		return r, err
	}
	for _, m := range w.s.match {
		if !bytes.Contains(w.buf.Bytes(), m) {
			return r, nil
		}
	}
	w.s.once.Do(func() { w.s.fired = true; w.s.cancel() })
	return r, nil
}

// TestRespondInterruptedSnapshotStage: the case is interrupted right after
// the data volume's second snapshot-copied entry (its forensics copy, made
// from the intermediate under a KMS grant) is stored. The interrupted run
// still retires the grant and unshares, and records it; the re-run closes
// the case with no grant live and nothing shared.
func TestRespondInterruptedSnapshotStage(t *testing.T) {
	d := newDrill(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := &cancelAfter{Store: vault.NewMemory(), cancel: cancel,
		match: [][]byte{[]byte(`"purpose":"forensics account copy"`), []byte(d.demo.DataVolumeID)}}
	d.store = store
	c := d.open(t, d.options())
	if _, err := Run(ctx, c, c.Stages()); err == nil || !store.fired {
		t.Fatalf("interrupted run: err %v, interrupted %v; want it interrupted and failed", err, store.fired)
	}
	grants := awsActions(t, c, snapshot.ActionGrant)
	retired := awsActions(t, c, snapshot.ActionRetireGrant)
	if len(grants) != 1 || len(retired) != 1 || retired[0].Outcome == custody.Failed ||
		retired[0].Details.(custody.AWSAction).Details["grant_id"] != grants[0].Details.(custody.AWSAction).Details["grant_id"] {
		t.Fatalf("interrupted run recorded grants %+v, retirements %+v; want its grant retired", grants, retired)
	}
	if unshared := awsActions(t, c, snapshot.ActionUnshare); len(unshared) == 0 {
		t.Errorf("interrupted run recorded no unshare")
	}
	if st, err := c.state(context.Background()); err != nil || st.closed {
		t.Fatalf("interrupted run: state %v, closed; want it open", err)
	}

	bg := context.Background()
	c2 := d.open(t, d.options())
	if sum, err := Run(bg, c2, c2.Stages()); err != nil {
		t.Fatalf("re-run: %v\n%+v", err, sum.Stages)
	}
	st, err := c2.state(bg)
	if err != nil {
		t.Fatal(err)
	}
	if !st.closed || len(st.volumes) != 2 {
		t.Fatalf("after the re-run: closed %v, %d copies; want closed with both volumes", st.closed, len(st.volumes))
	}
	// Every grant recorded is retired, in the ledger and in KMS.
	live := map[string]bool{}
	entries, err := c2.Ledger().Entries(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		a, ok := e.Details.(custody.AWSAction)
		if !ok || e.Outcome == custody.Failed {
			continue
		}
		switch a.Action {
		case snapshot.ActionGrant:
			live[a.Details["grant_id"]] = true
		case snapshot.ActionRetireGrant:
			delete(live, a.Details["grant_id"])
		}
	}
	if len(live) != 0 {
		t.Errorf("grants recorded but never recorded retired: %v", live)
	}
	g, err := kms.NewFromConfig(d.acc.Member).ListGrants(bg, &kms.ListGrantsInput{KeyId: aws.String(d.demo.TransferKeyARN)})
	if err != nil {
		t.Fatal(err)
	}
	for _, gr := range g.Grants {
		t.Errorf("grant %s (%s) still live on %s", aws.ToString(gr.GrantId), aws.ToString(gr.Name), d.demo.TransferKeyARN)
	}
	mec2 := ec2.NewFromConfig(d.acc.Member)
	own, err := mec2.DescribeSnapshots(bg, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range own.Snapshots {
		a, err := mec2.DescribeSnapshotAttribute(bg, &ec2.DescribeSnapshotAttributeInput{SnapshotId: s.SnapshotId,
			Attribute: ec2types.SnapshotAttributeNameCreateVolumePermission})
		if err != nil {
			t.Fatal(err)
		}
		if len(a.CreateVolumePermissions) != 0 {
			t.Errorf("member snapshot %s still shared: %+v", aws.ToString(s.SnapshotId), a.CreateVolumePermissions)
		}
	}
	// The intermediate the interrupted run kept is deleted by the re-run.
	if del := awsActions(t, c2, snapshot.ActionDeleteIntermediate); len(del) != 1 || del[0].Outcome == custody.Failed {
		t.Errorf("intermediate deletions %+v; want one", del)
	}
}
