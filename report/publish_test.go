package report

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/impound-ir/impound/custody"
)

func TestPublish(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	rep := f.build(t, Options{})
	actor := custody.Actor{Operator: "carol"}
	pub, err := Publish(ctx, f.ledger, f.store, rep, Formats, PublishOptions{Actor: actor})
	if err != nil {
		t.Fatal(err)
	}
	if len(pub) != 3 {
		t.Fatalf("published %d reports", len(pub))
	}
	es, err := f.ledger.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pub {
		want := render(t, rep, p.Format)
		if p.Receipt.Key != "cases/"+fixtureCase+"/reports/report-16."+p.Format {
			t.Errorf("%s stored at %s", p.Format, p.Receipt.Key)
		}
		rd, err := f.store.Get(ctx, p.Receipt.Key, p.Receipt.VersionID)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rd)
		rd.Close()
		if !bytes.Equal(got, want) || p.Receipt.SHA256 != sha256Hex(want) {
			t.Errorf("%s: stored bytes differ from the rendering", p.Format)
		}
		e := es[16+i]
		d, ok := e.Details.(custody.ReportGenerated)
		if !ok || e.Seq != p.Recorded.Seq || e.Actor != actor || d.Format != p.Format || d.Receipt.SHA256 != sha256Hex(want) || d.Checkpoint != rep.Ledger.Checkpoint {
			t.Errorf("entry %d: %+v", 16+i, e)
		}
	}
	// The same report again is an idempotent store (same keys, same
	// versions), recorded again; another rendering goes beside it.
	again, err := Publish(ctx, f.ledger, f.store, rep, []string{FormatJSON}, PublishOptions{Actor: actor})
	if err != nil {
		t.Fatal(err)
	}
	if again[0].Receipt.VersionID != pub[0].Receipt.VersionID || again[0].Recorded.Seq != 19 {
		t.Errorf("republish: %+v", again[0])
	}
	stamped := f.build(t, Options{GeneratedAt: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)})
	stamped.Ledger = rep.Ledger // rendered against the same checkpoint
	other, err := Publish(ctx, f.ledger, f.store, stamped, []string{FormatJSON}, PublishOptions{Actor: actor})
	if err != nil {
		t.Fatal(err)
	}
	if k := other[0].Receipt.Key; !strings.HasPrefix(k, "cases/"+fixtureCase+"/reports/report-16-") || !strings.HasSuffix(k, ".json") {
		t.Errorf("second rendering stored at %s", k)
	}
	// A report of another case is refused.
	rep.Case.ID = "OTHER"
	if _, err := Publish(ctx, f.ledger, f.store, rep, Formats, PublishOptions{}); err == nil {
		t.Errorf("published a report of another case")
	}
}

func BenchmarkBuild(b *testing.B) {
	f := newFixture(b)
	src := f.source(b)
	for b.Loop() {
		if _, err := Build(context.Background(), src, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRender(b *testing.B) {
	f := newFixture(b)
	rep := f.build(b, Options{})
	for _, format := range Formats {
		b.Run(format, func(b *testing.B) {
			var buf bytes.Buffer
			for b.Loop() {
				buf.Reset()
				if err := rep.Render(&buf, format); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(buf.Len()))
		})
	}
}
