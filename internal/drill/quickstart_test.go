package drill

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeQuickStart follows the README's quick start literally on a clean
// checkout of HEAD: every command of its first sh block (but `make test`,
// which is what is running this), then the verification command the drill
// prints, which must pass.
func TestReadmeQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds impound in a fresh clone: not in -short")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not on PATH")
	}
	if _, err := os.Stat(filepath.Join(root, ".git")); err != nil {
		t.Skip("not a git checkout: nothing to clone")
	}
	dir := filepath.Join(t.TempDir(), "impound")
	run(t, root, "git", "clone", "--quiet", root, dir)

	cmds := quickStart(t, filepath.Join(dir, "README.md"))
	if len(cmds) < 2 || cmds[0] != "make run" {
		t.Fatalf("README quick start is %q; it must begin with make run, then make test", cmds)
	}
	var out string
	for _, c := range cmds {
		if c == "make test" {
			continue
		}
		out = run(t, dir, "sh", "-c", c)
	}
	for _, want := range []string{"collect   done", "isolate   done", "snapshot  done", "acquire   done", "verify    done", "report    done", "close     done"} {
		if !strings.Contains(out, want) {
			t.Errorf("make run output lacks %q:\n%s", want, out)
		}
	}
	verify := regexp.MustCompile(`(?m)^\s*(impound ledger verify .*--evidence)$`).FindStringSubmatch(out)
	if verify == nil {
		t.Fatalf("make run printed no verification command:\n%s", out)
	}
	got := run(t, dir, "sh", "-c", "bin/"+verify[1])
	if !strings.Contains(got, "re-read and matched") {
		t.Errorf("verification did not re-read the evidence:\n%s", got)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "impound-drill", "vault", "cases", "*", "reports", "*.html")); len(m) == 0 {
		t.Error("make run stored no HTML report")
	}

	// The binary make built names the commit it was built from, even where
	// GOFLAGS turns Go's own VCS stamping off: examiners record it.
	head := strings.TrimSpace(run(t, dir, "git", "rev-parse", "HEAD"))
	var v struct {
		Commit   string `json:"commit"`
		Modified bool   `json:"modified"`
	}
	if err := json.Unmarshal([]byte(run(t, dir, "bin/impound", "version", "--output", "json")), &v); err != nil {
		t.Fatal(err)
	}
	if v.Commit != head || v.Modified {
		t.Errorf("impound version says commit %q (modified %v); the clean clone is at %s", v.Commit, v.Modified, head)
	}
}

// quickStart returns the commands of the README's first ```sh block.
func quickStart(t *testing.T, readme string) []string {
	f, err := os.Open(readme)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && line == "```sh":
			in = true
		case in && line == "```":
			return cmds
		case in:
			if c, _, _ := strings.Cut(line, "#"); strings.TrimSpace(c) != "" {
				cmds = append(cmds, strings.TrimSpace(c))
			}
		}
	}
	t.Fatal("README has no sh block")
	return nil
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q in %s: %v\n%s", name, args, dir, err, out)
	}
	return string(out)
}
