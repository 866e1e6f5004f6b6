package report

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"strings"
	"testing"

	"github.com/impound-ir/impound/custody"
)

// section returns the text of s from the first from to the next to.
func section(t *testing.T, s, from, to string) string {
	t.Helper()
	i := strings.Index(s, from)
	if i < 0 {
		t.Fatalf("no %q", from)
	}
	s = s[i:]
	j := strings.Index(s, to)
	if j < 0 {
		t.Fatalf("no %q after %q", to, from)
	}
	return s[:j]
}

// TestMethods: the Methods section of every format carries the impound that
// opened the case (version, commit, binary SHA-256), the one that acquired
// the image and the one that rendered the report, and every case option
// recorded in the case-opened entry, with its value.
func TestMethods(t *testing.T) {
	f := newFixture(t)
	es, err := f.ledger.Entries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	opened := es[0].Details.(custody.CaseOpened)
	tool := opened.Tool
	if tool == nil || tool.Version == "" || tool.BinarySHA256 == "" || len(opened.Attributes) < 3 {
		t.Fatalf("the fixture's case-opened entry records too little: %+v", opened)
	}
	gen := &custody.Tool{Name: "impound", Version: "v1.2.3", Commit: "def5678", BinarySHA256: strings.Repeat("cd", 32)}
	r := f.build(t, Options{Generator: gen})

	// JSON.
	var j struct {
		Generator *custody.Tool `json:"generator"`
		Methods   struct {
			Tool             *custody.Tool     `json:"tool"`
			AcquisitionTools []custody.Tool    `json:"acquisition_tools"`
			Options          map[string]string `json:"options"`
		} `json:"methods"`
	}
	if err := json.Unmarshal(render(t, r, FormatJSON), &j); err != nil {
		t.Fatal(err)
	}
	if j.Methods.Tool == nil || *j.Methods.Tool != *tool {
		t.Errorf("JSON methods.tool %+v, case-opened records %+v", j.Methods.Tool, tool)
	}
	if len(j.Methods.AcquisitionTools) != 1 || j.Methods.AcquisitionTools[0] != *tool {
		t.Errorf("JSON methods.acquisition_tools %+v", j.Methods.AcquisitionTools)
	}
	if j.Generator == nil || *j.Generator != *gen {
		t.Errorf("JSON generator %+v", j.Generator)
	}
	if len(j.Methods.Options) != len(opened.Attributes) {
		t.Errorf("JSON methods.options %v, case-opened records %v", j.Methods.Options, opened.Attributes)
	}
	for k, v := range opened.Attributes {
		if j.Methods.Options[k] != v {
			t.Errorf("JSON methods.options[%q] = %q, case-opened records %q", k, j.Methods.Options[k], v)
		}
	}

	// HTML: inside the Methods section.
	h := html.UnescapeString(section(t, string(render(t, r, FormatHTML)), `<h2 id="methods">`, `<h2 id="verify">`))
	for _, want := range []string{
		fmt.Sprintf("<tr><th>Case opened with</th><td>%s %s (%s)<br>binary SHA-256 <code class=\"hash\">%s</code></td></tr>", tool.Name, tool.Version, tool.Commit, tool.BinarySHA256),
		fmt.Sprintf("<tr><th>Acquired with</th><td>%s %s (%s)<br>binary SHA-256 <code class=\"hash\">%s</code></td></tr>", tool.Name, tool.Version, tool.Commit, tool.BinarySHA256),
		fmt.Sprintf("<tr><th>Report rendered by</th><td>%s %s (%s)<br>binary SHA-256 <code class=\"hash\">%s</code></td></tr>", gen.Name, gen.Version, gen.Commit, gen.BinarySHA256),
	} {
		if !strings.Contains(h, want) {
			t.Errorf("HTML methods lack %q:\n%s", want, h)
		}
	}
	for k, v := range opened.Attributes {
		if want := fmt.Sprintf(`<tr><th class="mono">%s</th><td class="mono hash">%s</td></tr>`, k, v); !strings.Contains(h, want) {
			t.Errorf("HTML methods lack option %q", want)
		}
	}

	// Markdown: inside the Methods section.
	m := section(t, string(render(t, r, FormatMarkdown)), "## Methods and tools", "## Verifying this report")
	for _, want := range []string{
		fmt.Sprintf("| Case opened with | %s %s `%s` `%s` |", md(tool.Name), md(tool.Version), tool.Commit, tool.BinarySHA256),
		fmt.Sprintf("| Acquired with | %s %s `%s` `%s` |", md(tool.Name), md(tool.Version), tool.Commit, tool.BinarySHA256),
		fmt.Sprintf("| Report rendered by | %s %s `%s` `%s` |", md(gen.Name), md(gen.Version), gen.Commit, gen.BinarySHA256),
	} {
		if !strings.Contains(m, want) {
			t.Errorf("Markdown methods lack %q:\n%s", want, m)
		}
	}
	for k, v := range opened.Attributes {
		if want := fmt.Sprintf("| %s | %s |", mdCode(k), mdCode(v)); !strings.Contains(m, want) {
			t.Errorf("Markdown methods lack option %q", want)
		}
	}
}

// TestEvidenceNotes: the notes recorded with an evidence object (a
// fallback taken, a limit reached) are in every format, escaped.
func TestEvidenceNotes(t *testing.T) {
	f := newFixture(t)
	r := f.build(t, Options{})
	var found bool
	for _, e := range r.Evidence {
		if len(e.Notes) == 1 && e.Notes[0] == fixtureNote {
			found = true
		}
	}
	if !found {
		t.Fatalf("no evidence item carries the note %q", fixtureNote)
	}
	html := string(render(t, r, FormatHTML))
	if !strings.Contains(html, "console output is not the latest: &lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the HTML report lacks the note, escaped")
	}
	if !strings.Contains(string(render(t, r, FormatMarkdown)), "console output is not the latest") {
		t.Error("the Markdown report lacks the note")
	}
	if !strings.Contains(string(render(t, r, FormatJSON)), `"notes": [`) {
		t.Error("the JSON report lacks the notes")
	}
}
