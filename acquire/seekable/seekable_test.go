package seekable

import (
	"bytes"
	"testing"
)

func FuzzSeekTable(f *testing.F) {
	f.Add(AppendTable(nil, []Entry{{Compressed: 10, Decompressed: 20}, {Compressed: 30, Decompressed: 40}}))
	f.Add(AppendTable(nil, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := ParseTable(b)
		if err != nil {
			return
		}
		if b[len(b)-5] != 0 { // checksummed tables are read, not written
			return
		}
		if out := AppendTable(nil, entries); !bytes.Equal(out, b) {
			t.Fatalf("parse then append changed the table:\n%x\n%x", b, out)
		}
	})
}

func TestParseFooterRejects(t *testing.T) {
	good := AppendTable(nil, []Entry{{Compressed: 1, Decompressed: 2}})
	if _, err := ParseTable(good); err != nil {
		t.Fatal(err)
	}
	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0x10
		if e, err := ParseTable(bad); err == nil && i < 8 || err == nil && i >= len(good)-9 {
			t.Errorf("flipping byte %d still parses: %v", i, e)
		}
	}
}
