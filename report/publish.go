package report

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/vault"
)

// appender is what Publish needs of a custody.Ledger.
type appender interface {
	Case() string
	Append(ctx context.Context, e custody.Entry) (custody.Recorded, error)
}

// creator is what Publish needs of a vault.Store.
type creator interface {
	Create(ctx context.Context, key string, opts vault.PutOptions) (vault.Writer, error)
}

var (
	_ appender = (*custody.Ledger)(nil)
	_ creator  = vault.Store(nil)
)

// PublishOptions say how Publish stores and records reports.
type PublishOptions struct {
	// Actor is who is recorded as having written the reports.
	Actor custody.Actor
	// Put says how the report objects are kept (retention, legal hold).
	Put vault.PutOptions
}

// Published is one report stored and recorded.
type Published struct {
	Format   string
	Receipt  *vault.Receipt
	Recorded custody.Recorded
}

// contentTypes of the formats.
var contentTypes = map[string]string{
	FormatHTML:     "text/html; charset=utf-8",
	FormatMarkdown: "text/markdown; charset=utf-8",
	FormatJSON:     "application/json",
}

// ReportKey is the vault key of a report rendered against a checkpoint of
// size signed: cases/<case>/reports/report-<signed>.<format>.
func ReportKey(caseID string, signed int64, format string) (string, error) {
	return vault.CaseKey(caseID, vault.AreaReports, fmt.Sprintf("report-%d.%s", signed, format))
}

// Publish renders rep in each format, stores each rendering write-once in
// the vault under the case's reports area, and records a report-generated
// entry (its receipt and the checkpoint the report was rendered against)
// in the ledger. Rendering is deterministic, so publishing the same report
// twice stores nothing new; a different rendering against the same
// checkpoint (another GeneratedAt) goes to a key suffixed with the first
// 12 hex digits of its SHA-256. A report is rendered in memory before it is
// stored: its size is bounded by the ledger's.
func Publish(ctx context.Context, l appender, s creator, rep *Report, formats []string, opts PublishOptions) ([]Published, error) {
	if rep.Case.ID != l.Case() {
		return nil, fmt.Errorf("report: publish: report of case %s into the ledger of case %s", rep.Case.ID, l.Case())
	}
	var out []Published
	for _, f := range formats {
		var buf bytes.Buffer
		if err := rep.Render(&buf, f); err != nil {
			return out, fmt.Errorf("report: publish %s: %w", f, err)
		}
		key, err := ReportKey(rep.Case.ID, rep.Ledger.Signed, f)
		if err != nil {
			return out, err
		}
		put := opts.Put
		put.ContentType = contentTypes[f]
		rc, err := vault.PutBytes(ctx, s, key, buf.Bytes(), put)
		if errors.Is(err, vault.ErrExists) {
			key, err = vault.CaseKey(rep.Case.ID, vault.AreaReports, fmt.Sprintf("report-%d-%s.%s", rep.Ledger.Signed, sha256Hex(buf.Bytes())[:12], f))
			if err == nil {
				rc, err = vault.PutBytes(ctx, s, key, buf.Bytes(), put)
			}
		}
		if err != nil {
			return out, fmt.Errorf("report: publish %s: store %s: %w", f, key, err)
		}
		rec, err := l.Append(ctx, custody.Entry{Actor: opts.Actor, Resources: []string{rc.URI},
			Details: custody.ReportGenerated{Receipt: *rc, Format: f, Checkpoint: rep.Ledger.Checkpoint}})
		if err != nil {
			return out, fmt.Errorf("report: publish %s: stored as %s version %s but not recorded: %w", f, rc.Key, rc.VersionID, err)
		}
		zerolog.Ctx(ctx).Info().Str("case", rep.Case.ID).Str("format", f).Str("key", rc.Key).
			Str("version_id", rc.VersionID).Str("sha256", rc.SHA256).Int64("seq", rec.Seq).Msg("report stored and recorded")
		out = append(out, Published{Format: f, Receipt: rc, Recorded: rec})
	}
	return out, nil
}
