package respond

import (
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/impound-ir/impound/vault"
)

func TestNewCaseID(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 3, 4, 5, 0, time.FixedZone("X", 3600))
	id := NewCaseID(t0)
	if !regexp.MustCompile(`^IR-20261121-020405-[0-9a-f]{6}$`).MatchString(id) {
		t.Fatalf("NewCaseID = %q", id)
	}
	if err := vault.CheckCaseID(id); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var ids []string
	for i := range 1000 {
		id := NewCaseID(t0.Add(time.Duration(i/100) * time.Second))
		if seen[id] {
			t.Fatalf("duplicate case ID %s", id)
		}
		seen[id] = true
		ids = append(ids, id)
	}
	if !sort.SliceIsSorted(ids, func(i, j int) bool { return ids[i][:18] < ids[j][:18] }) {
		t.Error("case IDs do not sort by time")
	}
}
