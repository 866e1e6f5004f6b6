package report

import (
	"html"
	"strings"
	"testing"
)

// TestOpenCaseWording: a report of a case without a case-closed entry says
// exactly how far it goes (respond stores its report before closing the
// case), and a closed case's report says it was closed.
func TestOpenCaseWording(t *testing.T) {
	c := newImageCase(t)
	c.verify(t, c.image)
	r := c.build(t, nil, Options{})
	if r.Case.Closed || r.Ledger.Size != 3 {
		t.Fatalf("case closed %v, ledger size %d", r.Case.Closed, r.Ledger.Size)
	}
	h := html.UnescapeString(section(t, string(render(t, r, FormatHTML)), "<th>End (last entry)</th>", "</tr>"))
	for _, want := range []string{
		`<span class="badge warn">open at entry #2</span>`,
		"No case-closed entry among the 3 entries this report covers (#0 to #2): the case was open when this report was rendered.",
		"Entries recorded after #2, such as the case's closing, are not in this report",
	} {
		if !strings.Contains(h, want) {
			t.Errorf("HTML end row lacks %q:\n%s", want, h)
		}
	}
	m := section(t, string(render(t, r, FormatMarkdown)), "| End (last entry) |", "\n")
	for _, want := range []string{
		"**open at entry #2**: no case-closed entry among the 3 entries this report covers (#0 to #2), so the case was open when this report was rendered.",
		"Entries recorded after #2, such as the case's closing, are not in this report",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("Markdown end row lacks %q:\n%s", want, m)
		}
	}

	closed := newFixture(t).build(t, Options{})
	h = section(t, string(render(t, closed, FormatHTML)), "<th>End (last entry)</th>", "</tr>")
	m = section(t, string(render(t, closed, FormatMarkdown)), "| End (last entry) |", "\n")
	if !strings.Contains(h, `<span class="badge ok">closed</span> evidence secured`) || strings.Contains(h, "open") ||
		!strings.Contains(m, "(closed: evidence secured)") || strings.Contains(m, "open") {
		t.Errorf("closed case:\nHTML %s\nMarkdown %s", h, m)
	}
}
