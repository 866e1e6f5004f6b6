package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
		msg  string
	}{
		{[]string{"version"}, exitOK, ""},
		{[]string{"version", "--output", "yaml"}, exitUsage, "--output must be text or json"},
		{[]string{"version", "--no-such-flag"}, exitUsage, "unknown flag"},
		{[]string{"version", "extra"}, exitUsage, "takes 0 argument(s)"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
	} {
		var out, errb bytes.Buffer
		got := run(tc.args, &out, &errb)
		if got != tc.want {
			t.Errorf("impound %v: exit %d, want %d (stderr %q)", tc.args, got, tc.want, errb.String())
		}
		if tc.msg != "" && !strings.Contains(errb.String(), tc.msg) {
			t.Errorf("impound %v: stderr %q does not say %q", tc.args, errb.String(), tc.msg)
		}
	}
}
