package vault

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// FuzzParseCheckpoint: Resume's parser never panics, and what it accepts
// re-encodes to a state it accepts again with the same meaning.
func FuzzParseCheckpoint(f *testing.F) {
	c := checkpoint{Store: "mem:", Key: "cases/c/evidence/x", Offset: 5 << 20, Hash: []byte{1, 2, 3}, Upload: "u",
		Opts:     PutOptions{RetentionMode: ModeCompliance, RetainUntil: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)},
		PartSize: MinPartSize, Segs: []s3SegState{{Key: "cases/c/evidence/x", Upload: "id", Parts: []s3Part{{Number: 1, Size: MinPartSize, SHA256: "AAAA", ETag: `"e"`}}}}}
	b, _ := c.marshal()
	f.Add(b)
	f.Add([]byte(`{"v":"impound-vault/1","store":"mem:","key":"a","offset":-1}`))
	f.Add([]byte(`{"v":"impound-vault/1","store":"mem:","key":"../a"}`))
	f.Add([]byte(`{"v":"impound-vault/1","store":"mem:","key":"a","extra":1}`))
	f.Add([]byte(`{"v":"impound-vault/1","store":"mem:","key":"a"} {}`))
	f.Fuzz(func(t *testing.T, state []byte) {
		c, err := parseCheckpoint(state, "mem:")
		if err != nil {
			return
		}
		if c.V != stateVersion || c.Store != "mem:" || c.Offset < 0 || CheckKey(c.Key) != nil {
			t.Fatalf("accepted an invalid state: %+v", c)
		}
		again, err := c.marshal()
		if err != nil {
			t.Fatal(err)
		}
		c2, err := parseCheckpoint(again, "mem:")
		if err != nil {
			t.Fatalf("re-encoded state refused: %v", err)
		}
		a, _ := json.Marshal(c)
		b, _ := json.Marshal(c2)
		if !bytes.Equal(a, b) {
			t.Fatalf("round trip changed the state:\n%s\n%s", a, b)
		}
	})
}

// FuzzCheckKey: accepted keys are safe as file paths under a root.
func FuzzCheckKey(f *testing.F) {
	for _, k := range []string{"cases/c/evidence/x", "../x", "a//b", "a/./b", ".impound/tmp/x", "x.impound-receipt.json", "a\\b"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if CheckKey(key) != nil {
			return
		}
		for _, seg := range bytes.Split([]byte(key), []byte("/")) {
			if len(seg) == 0 || string(seg) == "." || string(seg) == ".." || bytes.Contains(seg, []byte(reservedPrefix)) {
				t.Fatalf("accepted %q", key)
			}
		}
	})
}
