package awsconf

import (
	"regexp"
	"strings"
	"testing"
)

var allowed = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)

func TestSessionName(t *testing.T) {
	for _, tc := range []struct{ operator, caseID, want string }{
		{"alice", "IR-2026-0042", "impound-alice-IR-2026-0042"},
		{"Alice Smith", "case/7", "impound-Alice-Smith-case-7"},
		{"", "c1", "impound-unknown-c1"},
		{"bob@example.com", "x", "impound-bob@example.com-x"},
		{strings.Repeat("o", 80), "IR-2026-0042", "impound-" + strings.Repeat("o", 64-len("impound--IR-2026-0042")) + "-IR-2026-0042"},
	} {
		got := SessionName(tc.operator, tc.caseID)
		if got != tc.want {
			t.Errorf("SessionName(%q, %q) = %q, want %q", tc.operator, tc.caseID, got, tc.want)
		}
		if !allowed.MatchString(got) {
			t.Errorf("SessionName(%q, %q) = %q: not a valid RoleSessionName", tc.operator, tc.caseID, got)
		}
	}
	// A case ID too long to fit is cut, still valid.
	got := SessionName("op", strings.Repeat("c", 100))
	if len(got) != 64 || !allowed.MatchString(got) {
		t.Errorf("long case: %q (len %d)", got, len(got))
	}
}
