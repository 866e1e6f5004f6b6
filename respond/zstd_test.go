package respond

import (
	"context"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/impound-ir/impound/acquire"
	"github.com/impound-ir/impound/vault"
)

// TestCompressedImageKeepsItsSHA256: with --compress zstd the stored object
// is the compressed stream, whose SHA-256 the receipt carries; the raw
// image's SHA-256, the one that matches the volume, must be in the ledger
// too, equal to the decompressed object's and to the original snapshot's.
func TestCompressedImageKeepsItsSHA256(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	o := d.options()
	o.Compression = acquire.CompressZstd
	o.Isolate = false
	c := d.open(t, o)
	if _, err := Run(ctx, c, c.Stages()); err != nil {
		t.Fatal(err)
	}
	st, err := c.state(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.volumes) != 2 {
		t.Fatalf("%d volumes", len(st.volumes))
	}
	for _, v := range st.volumes {
		ev := st.acquired[v.SnapshotID]
		raw := ev.Hashes[acquire.SHA256]
		if raw == "" || raw == ev.Receipt.SHA256 {
			t.Fatalf("volume %s: ledger's raw SHA-256 %q (stored object %s)", v.VolumeID, raw, ev.Receipt.SHA256)
		}
		img, err := d.env.Sim.SnapshotImage(v.OriginalSnapshotID)
		if err != nil {
			t.Fatal(err)
		}
		if want := sha256Hex(t, img); raw != want {
			t.Errorf("volume %s: ledger's raw SHA-256 %s, original snapshot %s", v.VolumeID, raw, want)
		}
		rc, err := d.store.Get(ctx, ev.Receipt.Key, ev.Receipt.VersionID)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := zstd.NewReader(rc)
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256Hex(t, zr); got != raw {
			t.Errorf("volume %s: decompressed object hashes to %s, ledger says %s", v.VolumeID, got, raw)
		}
		zr.Close()
		rc.Close()
	}
}
