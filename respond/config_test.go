package respond

import (
	"context"
	"testing"
	"time"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/vault"
)

// TestCaseConfigurationRecorded: the case's first entry records its whole
// configuration, whoever opens it, so the report and a court can tell how
// evidence was kept and how the instance was to be contained.
func TestCaseConfigurationRecorded(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	o := d.options()
	o.Put.LegalHold, o.Put.KMSKeyID, o.RetentionDays = true, "alias/evidence-objects", 30
	o.Isolation.AllowSSM, o.Isolation.ASGDetach = true, true
	o.CloudTrailLookBack = 48 * time.Hour
	o.Compression = "zstd"
	o.Attributes = map[string]string{"ticket": "INC-42"}
	c := d.open(t, o)
	es, err := c.Ledger().Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	op, ok := es[0].Details.(custody.CaseOpened)
	if !ok {
		t.Fatalf("entry 0 is %s", es[0].Kind())
	}
	want := map[string]string{
		"vault": d.store.URI(), "hashes": "sha256,md5", "retention_mode": "COMPLIANCE", "retention_days": "30",
		"legal_hold": "true", "kms_key": "alias/evidence-objects", "compression": "zstd",
		"forensics_kms_key": d.demo.EvidenceKeyARN, "member_kms_key": d.demo.TransferKeyARN,
		"verifier_key": d.signer.VerifierKey(), "cloudtrail_lookback": "48h0m0s",
		"isolation": "true", "isolation.allow_ssm": "true", "isolation.nacl": "false",
		"isolation.asg": "detach", "isolation.allow_default_vpc": "false", "ticket": "INC-42",
	}
	for k, v := range want {
		if op.Attributes[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, op.Attributes[k], v)
		}
	}
	for k := range op.Attributes {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected attribute %s = %q", k, op.Attributes[k])
		}
	}
	if op.Trigger != "test" || op.InstanceID != d.demo.InstanceID || op.Account != d.acc.MemberID || op.ForensicsAccount != d.acc.ForensicsID {
		t.Errorf("case-opened: %+v", op)
	}
}
