package awssim

import (
	"regexp"
	"strings"
	"testing"
)

func TestWildcardMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true},
		{"*", "a/b", true}, // path.Match would refuse: EC2 does not
		{"impound-*", "impound-IR-1/evidence", true},
		{"a?c", "abc", true},
		{"a?c", "a/c", true},
		{"a?c", "ac", false},
		{"*x*", "abxcd", true},
		{"*x*", "abcd", false},
		{"a*b*c", "a-b-b-c", true},
		{"a*b*c", "a-c-b", false},
		{`a\*`, "a*", true},
		{`a\*`, "ab", false},
		{`\?`, "?", true},
		{"exact", "exact", true},
		{"exact", "exactly", false},
		{"", "", true},
		{"", "x", false},
		{`a\`, `a\`, true},
		{`a\`, "a", false},
	} {
		if got := wildcardMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("wildcardMatch(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

// FuzzWildcardMatch compares with a regular expression built from the pattern.
func FuzzWildcardMatch(f *testing.F) {
	f.Add("a*b?c", "axxbyc")
	f.Add(`x\*y`, "x*y")
	f.Add("**/*", "a/b/c")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		var re strings.Builder
		re.WriteString(`^(?s:`)
		rs := []rune(pattern)
		for i := 0; i < len(rs); i++ {
			switch {
			case rs[i] == '*':
				re.WriteString(".*")
			case rs[i] == '?':
				re.WriteString(".")
			case rs[i] == '\\' && i+1 < len(rs):
				i++
				re.WriteString(regexp.QuoteMeta(string(rs[i])))
			default:
				re.WriteString(regexp.QuoteMeta(string(rs[i])))
			}
		}
		re.WriteString(`)$`)
		want := regexp.MustCompile(re.String()).MatchString(s)
		if got := wildcardMatch(pattern, s); got != want {
			t.Fatalf("wildcardMatch(%q, %q) = %v, regexp %s says %v", pattern, s, got, re.String(), want)
		}
	})
}
