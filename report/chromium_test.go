package report

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/impound-ir/impound/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// findChromium returns Debian's chromium, or skips (fails under
// IMPOUND_TEST_REQUIRE_SERVERS=1). scripts/install-chromium installs it.
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("IMPOUND_TEST_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testenv.SkipOrFail(t, "chromium not found: run scripts/install-chromium (or set IMPOUND_TEST_CHROMIUM)")
	return ""
}

// runChromium runs a headless chromium with no network features and
// returns its stdout and stderr.
func runChromium(t *testing.T, bin, dir string, args ...string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
		"--disable-default-apps", "--no-default-browser-check", "--mute-audio", "--hide-scrollbars",
		"--user-data-dir=" + filepath.Join(dir, "profile"), "--enable-logging=stderr", "--v=0",
	}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), errb.String()
}

var consoleRe = regexp.MustCompile(`(?i)(CONSOLE[:(]|Uncaught|Refused to|net::ERR_|Failed to load resource)`)

// TestHTMLInChromium opens the HTML report in headless Chromium: no console
// errors, no network request, a screenshot, a PDF; hostile values are text,
// not elements.
func TestHTMLInChromium(t *testing.T) {
	bin := findChromium(t)
	f := newFixture(t)
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	if err := os.WriteFile(page, render(t, f.build(t, Options{VerifyLive: true}), FormatHTML), 0o644); err != nil {
		t.Fatal(err)
	}
	url := "file://" + page
	shot := filepath.Join(dir, "report.png")
	netlog := filepath.Join(dir, "netlog.json")
	_, stderr := runChromium(t, bin, dir, "--screenshot="+shot, "--window-size=1280,2000", "--log-net-log="+netlog, "--net-log-capture-mode=Everything", url)
	if m := consoleRe.FindString(stderr); m != "" {
		t.Errorf("chromium logged %q while rendering:\n%s", m, stderr)
	}
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v\n%s", err, stderr)
	}
	if len(png) < 20_000 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("screenshot is %d bytes, not a real PNG of the report", len(png))
	}
	if dst := os.Getenv("IMPOUND_TEST_REPORT_SCREENSHOT"); dst != "" {
		_ = os.WriteFile(dst, png, 0o644)
	}
	if reqs := pageRequests(t, netlog); len(reqs) > 0 {
		t.Errorf("the report made network requests: %v", reqs)
	}

	pdf := filepath.Join(dir, "report.pdf")
	_, stderr = runChromium(t, bin, dir, "--print-to-pdf="+pdf, "--no-pdf-header-footer", url)
	if m := consoleRe.FindString(stderr); m != "" {
		t.Errorf("chromium logged %q while printing:\n%s", m, stderr)
	}
	b, err := os.ReadFile(pdf)
	if err != nil {
		t.Fatalf("no PDF: %v\n%s", err, stderr)
	}
	if len(b) < 20_000 || !bytes.HasPrefix(b, []byte("%PDF-")) || !bytes.Contains(b, []byte("%%EOF")) {
		t.Errorf("PDF is %d bytes, not a real PDF of the report", len(b))
	}
	if n := bytes.Count(b, []byte("/Type /Page\n")) + bytes.Count(b, []byte("/Type /Page ")) + bytes.Count(b, []byte("/Type/Page/")); n == 0 {
		t.Logf("could not count PDF pages (compressed object streams); size %d", len(b))
	}

	dom, _ := runChromium(t, bin, dir, "--dump-dom", url)
	if !strings.Contains(dom, "Case <span class=\"case\">"+fixtureCase) {
		t.Fatalf("dumped DOM is not the report:\n%.2000s", dom)
	}
	if strings.Contains(strings.ToLower(dom), "<script") {
		t.Errorf("the DOM holds a <script> element")
	}
	if regexp.MustCompile(`<img\b`).MatchString(dom) {
		t.Errorf("the DOM holds an <img> element")
	}
	for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror=alert(2)&gt;"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the DOM lacks the hostile value as text: %s", want)
		}
	}
}

// pageRequests returns the URL requests a page made, from a Chromium net
// log: URL_REQUEST_START_JOB events whose initiator is an origin. Requests
// Chromium makes for itself (component updates, network time, sign-in
// checks) have the initiator "not an origin"; a document's requests carry
// its origin ("null" for a file:// page).
func pageRequests(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no net log: %v", err)
	}
	var log struct {
		Constants struct {
			LogEventTypes map[string]int `json:"logEventTypes"`
		} `json:"constants"`
		Events []struct {
			Type   int `json:"type"`
			Params struct {
				URL       string `json:"url"`
				Initiator string `json:"initiator"`
			} `json:"params"`
		} `json:"events"`
	}
	s := strings.TrimSpace(string(b))
	if err := json.Unmarshal([]byte(s), &log); err != nil {
		// Chromium may exit before closing the events array.
		s = strings.TrimSuffix(strings.TrimSuffix(s, "]}"), ",") + "]}"
		if err := json.Unmarshal([]byte(s), &log); err != nil {
			t.Fatalf("net log: %v", err)
		}
	}
	start, ok := log.Constants.LogEventTypes["URL_REQUEST_START_JOB"]
	if !ok {
		t.Fatalf("net log has no URL_REQUEST_START_JOB event type: cannot tell page requests")
	}
	var out []string
	for _, e := range log.Events {
		if e.Type == start && e.Params.URL != "" && e.Params.Initiator != "not an origin" {
			out = append(out, e.Params.URL+" (initiator "+e.Params.Initiator+")")
		}
	}
	return out
}

// TestNetLogDetectsPageRequests is the control: a page that loads an
// image over HTTP is caught by pageRequests, so its silence on the report
// means something.
func TestNetLogDetectsPageRequests(t *testing.T) {
	bin := findChromium(t)
	dir := t.TempDir()
	page := filepath.Join(dir, "leaky.html")
	if err := os.WriteFile(page, []byte(`<!DOCTYPE html><title>x</title><img src="http://127.0.0.1:9/pixel.png">`), 0o644); err != nil {
		t.Fatal(err)
	}
	netlog := filepath.Join(dir, "netlog.json")
	runChromium(t, bin, dir, "--screenshot="+filepath.Join(dir, "s.png"), "--log-net-log="+netlog, "--net-log-capture-mode=Everything", "file://"+page)
	got := pageRequests(t, netlog)
	if len(got) != 1 || !strings.Contains(got[0], "127.0.0.1:9/pixel.png") {
		t.Fatalf("the net log check missed the page's request: %v", got)
	}
}

// TestConsoleCheckDetectsPageErrors is the control for consoleRe: a page
// that logs to the console is caught, so its silence on the report means
// something.
func TestConsoleCheckDetectsPageErrors(t *testing.T) {
	bin := findChromium(t)
	dir := t.TempDir()
	page := filepath.Join(dir, "noisy.html")
	if err := os.WriteFile(page, []byte(`<!DOCTYPE html><title>x</title><script>console.error("boom")</script>`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr := runChromium(t, bin, dir, "--screenshot="+filepath.Join(dir, "s.png"), "file://"+page)
	if m := consoleRe.FindString(stderr); m == "" {
		t.Fatalf("the console check missed the page's console.error:\n%s", stderr)
	}
}
