package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
)

//go:embed report.html.tmpl
var htmlSource string

// htmlTemplate is parsed once; html/template escapes every value by its
// context, and the template marks nothing as safe HTML.
var htmlTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"bytes":    humanBytes,
	"lower":    strings.ToLower,
	"statusOf": statusClass,
	"add":      func(a, b int) int { return a + b },
	"deref":    func(p *int64) int64 { return *p },
}).Parse(htmlSource))

// htmlView is what the template renders: the report plus layout.
type htmlView struct {
	*Report
	Timeline svgTimeline
	Failed   int
	Skipped  int
	Warnings int
	Verified int
	// LastSeq is the last entry the report covers.
	LastSeq int64
}

// HTML writes the report as one self-contained HTML document: inline CSS
// for screen and print, an inline SVG timeline, no script, no external
// resource.
func (r *Report) HTML(w io.Writer) error {
	v := htmlView{Report: r, Timeline: layoutTimeline(r), LastSeq: r.Ledger.Size - 1}
	for _, p := range r.Problems {
		switch p.Severity {
		case SeverityFailed:
			v.Failed++
		case SeveritySkipped:
			v.Skipped++
		default:
			v.Warnings++
		}
	}
	for _, e := range r.Evidence {
		if e.Verification.Status == StatusVerified {
			v.Verified++
		}
	}
	return htmlTemplate.Execute(w, v)
}

// humanBytes is n with its binary-prefixed size: "1073741824 bytes (1.0 GiB)".
func humanBytes(n int64) string {
	s := strconv.FormatInt(n, 10) + " bytes"
	if n < 1024 {
		return s
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	f := float64(n)
	u := -1
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	return fmt.Sprintf("%s (%.1f %s)", s, f, units[u])
}

// statusClass maps an outcome or status to a CSS class.
func statusClass(s string) string {
	switch s {
	case "failed":
		return "bad"
	case "skipped", "not-verified", "planned":
		return "warn"
	case "succeeded", "done", "verified", "already-done":
		return "ok"
	}
	return "neutral"
}

// svgTimeline is the laid-out SVG timeline: one mark per entry, in lanes.
type svgTimeline struct {
	Width, Height int
	Lanes         []svgLane
	Marks         []svgMark
	Ticks         []svgTick
	Start, End    string
	AxisY         int
}

type svgLane struct {
	Name string
	Y    int
}

type svgMark struct {
	X, Y   string
	Shape  string // "ok", "failed" or "skipped"
	Colour string
	Title  string
	Href   string
}

type svgTick struct {
	X     string
	Label string
}

// Lanes of the timeline, by entry kind.
var laneOf = map[string]int{
	"case-opened": 0, "case-closed": 0, "note": 0, "evidence-observed": 0,
	"isolation-step":   1,
	"snapshot-created": 2, "snapshot-copied": 2, "snapshot-shared": 2, "aws-action": 2,
	"evidence-stored": 3, "evidence-verified": 3, "legal-hold-changed": 3,
	"report-generated": 4,
}

var laneNames = []string{"Case", "Isolation", "Snapshots", "Evidence", "Reports"}
var laneColours = []string{"#4b5563", "#1d4ed8", "#7c3aed", "#047857", "#92400e"}

func layoutTimeline(r *Report) svgTimeline {
	const (
		width, left, right, top, laneH = 1000, 110, 20, 16, 34
	)
	t := svgTimeline{Width: width}
	for i, n := range laneNames {
		t.Lanes = append(t.Lanes, svgLane{Name: n, Y: top + i*laneH + laneH/2})
	}
	t.AxisY = top + len(laneNames)*laneH
	t.Height = t.AxisY + 34
	n := len(r.Timeline)
	span := float64(width - left - right)
	x := func(i int) float64 {
		if n == 1 {
			return float64(left) + span/2
		}
		return float64(left) + span*float64(i)/float64(n-1)
	}
	for i, e := range r.Timeline {
		lane, ok := laneOf[e.Kind]
		if !ok {
			lane = 0
		}
		m := svgMark{
			X: strconv.FormatFloat(x(i), 'f', 1, 64), Y: strconv.Itoa(t.Lanes[lane].Y),
			Shape: "ok", Colour: laneColours[lane],
			Title: fmt.Sprintf("#%d %s %s: %s (%s)", e.Seq, e.Time, e.Kind, e.Summary, e.Outcome),
			Href:  "#entry-" + strconv.FormatInt(e.Seq, 10),
		}
		if e.Outcome == "failed" {
			m.Shape = "failed"
		} else if e.Kind == "isolation-step" && strings.Contains(e.Summary, "(skipped)") {
			m.Shape = "skipped"
		}
		t.Marks = append(t.Marks, m)
	}
	// Sequence ticks: about ten, always the first and last.
	step := max(1, (n+9)/10)
	for i := 0; i < n; i += step {
		t.Ticks = append(t.Ticks, svgTick{X: strconv.FormatFloat(x(i), 'f', 1, 64), Label: "#" + strconv.FormatInt(r.Timeline[i].Seq, 10)})
	}
	if (n-1)%step != 0 {
		t.Ticks = append(t.Ticks, svgTick{X: strconv.FormatFloat(x(n-1), 'f', 1, 64), Label: "#" + strconv.FormatInt(r.Timeline[n-1].Seq, 10)})
	}
	t.Start, t.End = r.Timeline[0].Time, r.Timeline[n-1].Time
	return t
}
