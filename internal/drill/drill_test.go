package drill

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/internal/testenv"
	"github.com/impound-ir/impound/vault"
)

// TestDrill runs the drill and checks the world it seeds and what the
// response made of it: every stage done; isolation took the instance out of
// its Auto Scaling group and load balancers; the aws/ebs volume went
// through a re-encrypted copy; two disk images and the GuardDuty finding are
// evidence; the planted file is found in the root image with sleuthkit; the
// stored report lists no problem and shows the hostile console output as
// text; and a drill into a vault given as an option writes there.
func TestDrill(t *testing.T) {
	if testing.Short() {
		t.Skip("a whole drill: not in -short")
	}
	mkfs := testenv.Tool(t, "mkfs.ext4")
	fls, icat := testenv.Tool(t, "fls"), testenv.Tool(t, "icat")
	ctx := context.Background()
	dir := t.TempDir()
	o := NewOptions()
	o.Dir = dir
	o.Respond.StateDir = filepath.Join(dir, "state")
	res, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Summary.Stages {
		if !s.OK {
			t.Errorf("stage %s: ok=%v skipped=%v %s", s.Stage, s.OK, s.Skipped, s.Error)
		}
	}
	if res.FilesystemFile != KnownFile {
		t.Fatalf("drill made no filesystem (FilesystemFile %q) although mkfs.ext4 is at %s", res.FilesystemFile, mkfs)
	}

	// The ledger, read with the drill's key.
	store, err := vault.Open(ctx, filepath.Join(dir, "vault"), vault.NewOptions())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := custody.LoadKeyFile(res.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	l, err := custody.Open(ctx, store, res.CaseID, signer, custody.NewOptions())
	if err != nil {
		t.Fatal(err)
	}
	entries, err := l.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	steps := map[string]string{}
	var reencrypted, closed bool
	var images []custody.EvidenceStored
	var finding bool
	for _, e := range entries {
		switch d := e.Details.(type) {
		case custody.IsolationStep:
			if e.Outcome != custody.Failed {
				steps[d.Step] = d.Status
			}
		case custody.SnapshotCopied:
			reencrypted = reencrypted || strings.Contains(d.Purpose, "aws/ebs")
		case custody.EvidenceStored:
			if d.Evidence == custody.EvidenceDiskImage {
				images = append(images, d)
			}
			finding = finding || strings.HasSuffix(d.Receipt.Key, "/guardduty-finding.json")
		case custody.CaseClosed:
			closed = true
		}
	}
	for _, s := range []string{"auto-scaling", "load-balancers", "protect", "elastic-ips", "instance-profile", "revoke-sessions", "tags"} {
		// Standby takes the instance out of its group's load balancers,
		// as in AWS, so that step may find its work already done.
		if st, ok := steps[s]; !ok || (st != "" && st != "done" && st != "already-done") {
			t.Errorf("isolation step %s: recorded %v, status %q; want done", s, ok, st)
		}
	}
	if !reencrypted {
		t.Error("no snapshot-copied entry re-encrypts the aws/ebs volume's snapshot")
	}
	if len(images) != 2 || !finding || !closed {
		t.Errorf("%d disk images (want 2), finding stored %v, case closed %v", len(images), finding, closed)
	}

	// The planted file, found in one of the images with standard tools.
	var found bool
	for _, im := range images {
		img := filepath.Join(dir, "vault", filepath.FromSlash(im.Receipt.Key))
		out, err := exec.Command(fls, "-r", "-p", img).Output()
		if err != nil {
			continue // the data volume holds no filesystem
		}
		m := regexp.MustCompile(`(?m)^r/r (\d+):\s+` + regexp.QuoteMeta(strings.TrimPrefix(KnownFile, "/")) + `$`).FindStringSubmatch(string(out))
		if m == nil {
			t.Fatalf("fls lists no %s in %s:\n%s", KnownFile, img, out)
		}
		content, err := exec.Command(icat, img, m[1]).Output()
		if err != nil {
			t.Fatal(err)
		}
		if string(content) != KnownFileContent {
			t.Errorf("icat %s %s = %q, want %q", img, m[1], content, KnownFileContent)
		}
		found = true
	}
	if !found {
		t.Error("no acquired image holds the drill's ext4 filesystem")
	}

	// The stored report: no problem on a clean run; hostile text escaped.
	reports, _ := filepath.Glob(filepath.Join(dir, "vault", "cases", res.CaseID, "reports", "*.json"))
	var latest string
	for _, r := range reports {
		if !strings.HasSuffix(r, ".impound-receipt.json") {
			latest = r
		}
	}
	b, err := os.ReadFile(latest)
	if err != nil {
		t.Fatalf("no JSON report stored: %v", err)
	}
	var rep struct {
		Problems []json.RawMessage `json:"problems"`
		Case     struct {
			InstanceName string `json:"instance_name"`
		} `json:"case"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || rep.Case.InstanceName != "web-1" {
		t.Errorf("report: %d problems (want none on a clean drill): %s; instance name %q", len(rep.Problems), rep.Problems, rep.Case.InstanceName)
	}
	html, err := os.ReadFile(strings.TrimSuffix(latest, ".json") + ".html")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(html), "<script>alert(1)") {
		t.Error("the HTML report carries the console output's <script> unescaped")
	}

	// --vault: a drill into another vault writes there, and only there.
	other := filepath.Join(t.TempDir(), "other-vault")
	st2, err := vault.Open(ctx, other, vault.NewOptions())
	if err != nil {
		t.Fatal(err)
	}
	o2 := NewOptions()
	o2.Dir, o2.Store, o2.Filesystem = t.TempDir(), st2, false
	o2.Respond.StateDir = filepath.Join(o2.Dir, "state")
	res2, err := Run(ctx, o2)
	if err != nil {
		t.Fatal(err)
	}
	if res2.VaultURI != st2.URI() {
		t.Errorf("drill with a vault wrote to %s, want %s", res2.VaultURI, st2.URI())
	}
	if _, err := os.Stat(filepath.Join(other, "cases", res2.CaseID)); err != nil {
		t.Errorf("the given vault holds no case %s: %v", res2.CaseID, err)
	}
	if _, err := os.Stat(filepath.Join(o2.Dir, "vault")); !os.IsNotExist(err) {
		t.Errorf("a drill given a vault also made %s/vault (%v)", o2.Dir, err)
	}
}
