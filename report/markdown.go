package report

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// mdReplacer escapes text for CommonMark/GFM inline content and table
// cells: every character that could start markup, HTML or a table cell is
// backslash-escaped (CommonMark lets any ASCII punctuation be escaped), and
// line breaks become spaces so that a value cannot end a table row or
// start a block.
var mdReplacer = strings.NewReplacer(
	`\`, `\\`, "`", "\\`", `*`, `\*`, `_`, `\_`, `{`, `\{`, `}`, `\}`, `[`, `\[`, `]`, `\]`,
	`<`, `\<`, `>`, `\>`, `(`, `\(`, `)`, `\)`, `#`, `\#`, `+`, `\+`, `!`, `\!`, `|`, `\|`,
	`~`, `\~`, `&`, `\&`, `"`, `\"`, `=`, `\=`,
	"\r\n", " ", "\n", " ", "\r", " ", "\u2028", " ", "\u2029", " ",
)

// md escapes an untrusted value for Markdown text and table cells.
func md(s string) string { return mdReplacer.Replace(s) }

// mdCode writes s as an inline code span that no backtick in s can close:
// the fence is longer than the longest run of backticks in s. Line breaks
// become spaces; "|" is escaped as GFM tables require even in code spans.
func mdCode(s string) string {
	if s == "" {
		return ""
	}
	s = escapeCellPipes(strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ", "\u2028", " ", "\u2029", " ").Replace(s))
	fence := strings.Repeat("`", longestRun(s, '`')+1)
	pad := ""
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") || strings.HasPrefix(s, " ") || strings.HasSuffix(s, " ") {
		pad = " "
	}
	return fence + pad + s + pad + fence
}

// escapeCellPipes escapes "|" as GFM tables require, even in code spans:
// a pipe becomes "\|", and the backslashes right before it are doubled so
// that none of them escapes the pipe's own backslash.
func escapeCellPipes(s string) string {
	if !strings.Contains(s, "|") {
		return s
	}
	var b strings.Builder
	run := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			run++
		case '|':
			b.WriteString(strings.Repeat(`\`, 2*run))
			b.WriteString(`\|`)
			run = 0
		default:
			b.WriteString(strings.Repeat(`\`, run))
			b.WriteByte(c)
			run = 0
		}
	}
	b.WriteString(strings.Repeat(`\`, run))
	return b.String()
}

// mdFence is a code-block fence longer than any backtick run in s.
func mdFence(s string) string { return strings.Repeat("`", max(3, longestRun(s, '`')+1)) }

func longestRun(s string, c byte) int {
	best, run := 0, 0
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			run++
			best = max(best, run)
		} else {
			run = 0
		}
	}
	return best
}

// Markdown writes the report as GitHub-flavoured Markdown. Every value from
// the ledger is escaped; commands are fenced code blocks.
func (r *Report) Markdown(w io.Writer) error {
	bw := bufio.NewWriter(w)
	p := func(format string, a ...any) { fmt.Fprintf(bw, format, a...) }
	block := func(s string) {
		f := mdFence(s)
		p("%s\n%s\n%s\n\n", f, strings.TrimSuffix(s, "\n"), f)
	}
	c := r.Case
	p("# Case %s — incident response report\n\n", mdCode(c.ID))
	if c.Title != "" {
		p("%s\n\n", md(c.Title))
	}
	failed, skipped, warnings := 0, 0, 0
	for _, pr := range r.Problems {
		switch pr.Severity {
		case SeverityFailed:
			failed++
		case SeveritySkipped:
			skipped++
		default:
			warnings++
		}
	}
	switch {
	case failed > 0:
		p("> **✖ %d failed step(s) or check(s), %d skipped step(s).** See *Failed and skipped steps*.\n\n", failed, skipped)
	case skipped > 0:
		p("> **◼ %d skipped step(s).** See *Failed and skipped steps*.\n\n", skipped)
	case warnings > 0:
		p("> **✔ Every recorded step succeeded.** ▲ %d warning(s): see *Failed and skipped steps*.\n\n", warnings)
	default:
		p("> **✔ Every recorded step succeeded.**\n\n")
	}

	p("## Case summary\n\n| | |\n|---|---|\n")
	row := func(k, v string) {
		if v != "" {
			p("| %s | %s |\n", k, v)
		}
	}
	row("Case ID", mdCode(c.ID))
	row("Trigger", mdCode(c.Trigger))
	inst := mdCode(c.InstanceID)
	if c.InstanceName != "" {
		inst += " — Name tag: " + md(c.InstanceName)
	}
	row("Instance", inst)
	row("Affected account", mdCode(c.Account))
	row("Region", mdCode(c.Region))
	row("Forensics account", mdCode(c.ForensicsAccount))
	row("Evidence vault", mdCode(c.Vault))
	var ops []string
	for _, o := range c.Operators {
		s := md(o.Name)
		if o.CallerARN != "" {
			s += " (" + mdCode(o.CallerARN) + ")"
		}
		ops = append(ops, fmt.Sprintf("%s — %d entries", s, o.Entries))
	}
	row("Operators", strings.Join(ops, "<br>"))
	row("Start (first entry)", mdCode(c.Start))
	end := mdCode(c.End)
	if c.Closed {
		end += " (closed"
		if c.ClosedReason != "" {
			end += ": " + md(c.ClosedReason)
		}
		end += ")"
	} else {
		last := r.Ledger.Size - 1
		end += fmt.Sprintf(" — **open at entry #%d**: no case-closed entry among the %d entries this report covers (#0 to #%d), so the case was open when this report was rendered. "+
			"Entries recorded after #%d, such as the case's closing, are not in this report; regenerate it from the ledger to include them.", last, r.Ledger.Size, last, last)
	}
	row("End (last entry)", end)
	row("Ledger", fmt.Sprintf("%d entries, %d covered by the signed checkpoint; root %s", r.Ledger.Size, r.Ledger.Signed, mdCode(r.Ledger.Root)))
	p("\n## Failed and skipped steps\n\n")
	if len(r.Problems) == 0 {
		p("None: every recorded step succeeded, and nothing was skipped.\n\n")
	} else {
		p("| Severity | Entry | Time | What | Error / reason |\n|---|---|---|---|---|\n")
		for _, pr := range r.Problems {
			seq := ""
			if pr.Seq != nil {
				seq = fmt.Sprintf("#%d", *pr.Seq)
			}
			sym := map[string]string{SeverityFailed: "✖ ", SeveritySkipped: "◼ ", SeverityWarning: "▲ "}[pr.Severity]
			p("| **%s%s** | %s | %s | %s | %s |\n", sym, strings.ToUpper(pr.Severity), seq, mdCode(pr.Time), md(pr.Summary), mdCode(pr.Error))
		}
		p("\n")
	}

	p("## Evidence\n\n")
	if len(r.Evidence) == 0 {
		p("No evidence object was stored.\n\n")
	}
	for _, e := range r.Evidence {
		p("### %s: %s — %s\n\n| | |\n|---|---|\n", md(e.Kind), mdCode(e.Source), strings.ToUpper(e.Verification.Status))
		row("Ledger entry", fmt.Sprintf("#%d at %s", e.Seq, mdCode(e.Time)))
		row("Size", humanBytes(e.Size))
		row("SHA-256 (stored object)", mdCode(e.SHA256))
		for _, alg := range sortedKeys(e.Hashes) {
			row(md(alg)+" (computed while streaming)", mdCode(e.Hashes[alg]))
		}
		for _, n := range e.Notes {
			row("Note", "**"+md(n)+"**")
		}
		row("Merkle root", mdCode(e.MerkleRoot))
		row("Merkle leaves", md(e.MerkleLeaf))
		row("Vault object", mdCode(e.URI)+" version "+mdCode(e.VersionID))
		ret := "none recorded"
		if e.RetentionMode != "" {
			ret = mdCode(e.RetentionMode)
		}
		if e.RetainUntil != "" {
			ret += " until " + mdCode(e.RetainUntil)
		}
		row("Retention", ret)
		row("Legal hold", map[bool]string{true: "on", false: "off"}[e.LegalHold])
		if a := e.Acquisition; a != nil {
			row("Acquisition", fmt.Sprintf("snapshot %s, volume %s, image %s, %d blocks of %d bytes (%d written), %s to %s",
				mdCode(a.SnapshotID), mdCode(a.VolumeID), humanBytes(a.ImageSize), a.Blocks, a.BlockSize, a.WrittenBlocks, mdCode(a.Started), mdCode(a.Finished)))
			if a.Compression != "" {
				row("Stored as", md(a.Compression)+"-compressed; the hashes computed while streaming are of the raw image")
			}
		}
		row("Verification", mdChecks(e.Verification))
		if bm := e.BlockMap; bm != nil {
			ret := "none recorded"
			if bm.RetentionMode != "" {
				ret = mdCode(bm.RetentionMode)
			}
			if bm.RetainUntil != "" {
				ret += " until " + mdCode(bm.RetainUntil)
			}
			row("Block map", fmt.Sprintf("%s version %s, %s, SHA-256 %s; retention %s, legal hold %s",
				mdCode(bm.URI), mdCode(bm.VersionID), humanBytes(bm.Size), mdCode(bm.SHA256), ret, map[bool]string{true: "on", false: "off"}[bm.LegalHold]))
			row("Block map verification", strings.ToUpper(bm.Verification.Status)+"<br>"+mdChecks(bm.Verification))
		}
		if e.Outcome == "failed" {
			row("**Store failed**", mdCode(e.Error))
		}
		p("\nCheck it yourself:\n\n")
		for _, cmd := range e.Commands {
			block("# " + cmd.Purpose + "\n" + cmd.Command)
		}
		if bm := e.BlockMap; bm != nil {
			p("Check its block map yourself:\n\n")
			for _, cmd := range bm.Commands {
				block("# " + cmd.Purpose + "\n" + cmd.Command)
			}
		}
	}

	p("## Isolation steps\n\n")
	if len(r.Isolation) == 0 {
		p("No isolation step was recorded.\n\n")
	} else {
		p("| Entry | Step | Status | Target | Before | → After |\n|---|---|---|---|---|---|\n")
		for _, s := range r.Isolation {
			step := mdCode(s.Step)
			if s.Note != "" {
				step += "<br>" + md(s.Note)
			}
			if s.Error != "" {
				step += "<br>error: " + mdCode(s.Error)
			}
			status := s.Status
			if status == "failed" || status == "skipped" {
				status = "**" + strings.ToUpper(status) + "**"
			}
			p("| #%d | %s | %s | %s | %s | %s |\n", s.Seq, step, status, mdCode(s.Target), mdCode(s.Before), mdCode(s.After))
		}
		p("\n")
	}

	p("## Snapshots and AWS actions\n\n")
	if len(r.Snapshots) == 0 {
		p("No snapshot was recorded.\n\n")
	} else {
		p("| Entry | Action | Snapshot | Account / Region | Detail | Outcome |\n|---|---|---|---|---|---|\n")
		for _, s := range r.Snapshots {
			detail := md(s.Detail)
			if s.Error != "" {
				detail += "<br>error: " + mdCode(s.Error)
			}
			out := s.Outcome
			if out == "failed" {
				out = "**FAILED**"
			}
			p("| #%d | %s | %s | %s | %s | %s |\n", s.Seq, md(s.Action), mdCode(s.SnapshotID), strings.TrimSpace(mdCode(s.Account)+" "+mdCode(s.Region)), detail, out)
		}
		p("\n")
	}

	p("## Ledger entries\n\n| # | Time (UTC) | Kind | What | Operator | Outcome |\n|---|---|---|---|---|---|\n")
	for _, e := range r.Timeline {
		what := md(e.Summary)
		if e.Error != "" {
			what += "<br>error: " + mdCode(e.Error)
		}
		what += "<br>hash " + mdCode(e.Hash)
		if !e.Signed {
			what += " — **not covered by the signed checkpoint**"
		}
		out := e.Outcome
		if out == "failed" {
			out = "**✖ FAILED**"
		}
		p("| %d | %s | %s | %s | %s | %s |\n", e.Seq, mdCode(e.Time), mdCode(e.Kind), what, md(e.Operator), out)
	}

	p("\n## Methods and tools\n\n| | |\n|---|---|\n")
	tool := func(t string, v ...string) { row(t, strings.Join(v, " ")) }
	if t := r.Methods.Tool; t != nil {
		tool("Case opened with", md(t.Name), md(t.Version), mdCode(t.Commit), mdCode(t.BinarySHA256))
	}
	for _, t := range r.Methods.AcquisitionTools {
		tool("Acquired with", md(t.Name), md(t.Version), mdCode(t.Commit), mdCode(t.BinarySHA256))
	}
	if t := r.Generator; t != nil {
		tool("Report rendered by", md(t.Name), md(t.Version), mdCode(t.Commit), mdCode(t.BinarySHA256))
	}
	row("Hash algorithms", md(strings.Join(r.Methods.HashAlgorithms, ", ")))
	for _, l := range r.Methods.MerkleLeaves {
		row("Merkle tree", md(l))
	}
	for _, k := range sortedKeys(r.Methods.Options) {
		row(mdCode(k), mdCode(r.Methods.Options[k]))
	}

	p("\n## Verifying this report\n\n")
	p("This report was rendered only from the case's custody ledger, checked against the signed checkpoint below. ")
	p("Anyone holding the ledger or its export bundle can regenerate it byte for byte and check every claim.\n\n")
	pin := "**not pinned**: taken from the ledger itself; obtain it out of band before relying on it"
	if r.Ledger.KeyPinned {
		pin = "pinned: given out of band"
	}
	p("Verifier key (%s, key hash %s; %s):\n\n", mdCode(r.Ledger.KeyName), mdCode(r.Ledger.KeyHash), pin)
	block(r.Ledger.VerifierKey)
	p("Signed checkpoint (covers entries 0 to %d exclusive; SHA-256 %s):\n\n", r.Ledger.Signed, mdCode(r.Ledger.CheckpointSHA256))
	block(r.Ledger.Checkpoint)
	for _, cmd := range r.Verification.Commands {
		block("# " + cmd.Purpose + "\n" + cmd.Command)
	}
	if cmds := r.Verification.ByHandCommands; len(cmds) > 0 {
		p("### Checking the checkpoint signature with standard tools\n\n")
		p("Without impound: POSIX sh, coreutils and OpenSSL 3, on the key file and `checkpoint.txt` written by the first two commands above. ")
		p("Each command exits non-zero when its check fails. The format is explained in %s in the impound documentation.\n\n", mdCode(r.Verification.ByHand))
		for _, cmd := range cmds {
			block("# " + cmd.Purpose + "\n" + cmd.Command)
		}
	} else {
		p("The checkpoint's signature can be checked with standard tools: see %s in the impound documentation.\n\n", mdCode(r.Verification.ByHand))
	}
	p("---\n\nCase %s · ledger origin %s · %d signed entries · root %s", mdCode(c.ID), mdCode(r.Ledger.Origin), r.Ledger.Signed, mdCode(r.Ledger.Root))
	if r.GeneratedAt != "" {
		p(" · generated %s", mdCode(r.GeneratedAt))
	}
	p(" · report schema %s\n", mdCode(r.Schema))
	return bw.Flush()
}

// mdChecks is an object's checks, one per line of a table cell.
func mdChecks(ec EvidenceCheck) string {
	var checks []string
	for _, ck := range ec.Checks {
		s := ck.Outcome
		if ck.Method == "live" {
			s += ": re-read while rendering this report"
		} else if ck.Seq != nil {
			s += fmt.Sprintf(": re-read recorded in entry #%d at %s", *ck.Seq, mdCode(ck.Time))
		}
		if ck.Error != "" {
			s += " — " + mdCode(ck.Error)
		}
		checks = append(checks, s)
	}
	if len(checks) == 0 {
		return "not verified: no re-read recorded"
	}
	return strings.Join(checks, "<br>")
}
