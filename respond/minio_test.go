package respond

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/impound-ir/impound/internal/testenv"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/report"
	"github.com/impound-ir/impound/vault"
)

// minioVault makes an Object Lock bucket on the test MinIO, as `impound vault
// init` would (MinIO has no KMS or public access block), and opens it.
func minioVault(t *testing.T) vault.Store {
	t.Helper()
	cfg := aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(testenv.Server(t, "IMPOUND_TEST_MINIO_ENDPOINT")),
		Credentials: credentials.NewStaticCredentialsProvider(testenv.Server(t, "IMPOUND_TEST_MINIO_ACCESS_KEY"),
			testenv.Server(t, "IMPOUND_TEST_MINIO_SECRET_KEY"), "")}
	uri := fmt.Sprintf("s3://impound-respond-%d", time.Now().UnixNano()%1e12)
	in := vault.NewInitOptions()
	in.RetentionDays, in.Encryption, in.SkipPublicAccessBlock = 1, vault.EncryptionNone, true
	in.Check.RequireEncryption, in.Check.RequirePublicAccessBlock = false, false
	opts := vault.Options{AWS: cfg, PathStyle: true}
	if rep, err := vault.Init(context.Background(), uri, opts, in); err != nil || rep.Err() != nil {
		t.Fatalf("vault init %s: %v %v", uri, err, rep)
	}
	st, err := vault.Open(context.Background(), uri, opts)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func readAll(t *testing.T, s vault.Store, key, version string) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), key, version)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRespondIntoMinIO: a whole case into an S3 Object Lock vault; the ledger
// verifies with every object re-read, and the stored JSON report validates
// against its schema and shows for every evidence object the hash the ledger
// recorded and the vault holds.
func TestRespondIntoMinIO(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, minioVault(t))
	c := d.open(t, d.options())
	sum, err := Run(ctx, c, c.Stages())
	if err != nil {
		t.Fatalf("respond: %v", err)
	}
	if _, err := custody.Verify(ctx, d.store, c.ID(), custody.VerifyOptions{Key: d.signer.VerifierKey(),
		CheckEvidence: func(ctx context.Context, r *vault.Receipt) error { return vault.Verify(ctx, d.store, r) }}); err != nil {
		t.Fatalf("ledger verify with evidence: %v", err)
	}

	recorded := map[string]string{} // key -> SHA-256 the ledger recorded
	for _, e := range sum.Evidence {
		recorded[e.Receipt.Key] = e.Receipt.SHA256
		if e.Receipt.RetentionMode != vault.ModeCompliance || e.Receipt.VersionID == "" {
			t.Errorf("%s: retention %q, version %q: evidence must be locked and versioned", e.Receipt.Key, e.Receipt.RetentionMode, e.Receipt.VersionID)
		}
	}
	var jsonReport *vault.Receipt
	for i, r := range sum.Reports {
		if strings.HasSuffix(r.Key, ".json") {
			jsonReport = &sum.Reports[i]
		}
	}
	if jsonReport == nil {
		t.Fatalf("no JSON report among %v", sum.Reports)
	}
	b := readAll(t, d.store, jsonReport.Key, jsonReport.VersionID)
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	comp := jsonschema.NewCompiler()
	comp.DefaultDraft(jsonschema.Draft2020)
	schemaDoc, err := jsonschema.UnmarshalJSON(bytes.NewReader(report.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if err := comp.AddResource(report.SchemaURI, schemaDoc); err != nil {
		t.Fatal(err)
	}
	schema, err := comp.Compile(report.SchemaURI)
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.Validate(doc); err != nil {
		t.Fatalf("the stored report does not validate against its schema: %v", err)
	}
	var rep report.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Evidence) != len(sum.Evidence) {
		t.Fatalf("report lists %d evidence objects, the ledger %d", len(rep.Evidence), len(sum.Evidence))
	}
	images := 0
	for _, ev := range rep.Evidence {
		if ev.SHA256 != recorded[ev.Key] {
			t.Errorf("%s: report says %s, ledger %s", ev.Key, ev.SHA256, recorded[ev.Key])
		}
		sumBytes := sha256.Sum256(readAll(t, d.store, ev.Key, ev.VersionID))
		if got := hex.EncodeToString(sumBytes[:]); got != ev.SHA256 {
			t.Errorf("%s@%s: vault holds %s, report says %s", ev.Key, ev.VersionID, got, ev.SHA256)
		}
		if ev.Kind == custody.EvidenceDiskImage {
			images++
		}
	}
	if images != 2 {
		t.Errorf("report lists %d disk images, want 2", images)
	}
}
