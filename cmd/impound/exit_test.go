package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
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

// TestExitCodeRules pins the one place exit codes are decided: a signal
// wins over a partial run, a partial run over a plain failure.
func TestExitCodeRules(t *testing.T) {
	live := context.Background()
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	partial := fmt.Errorf("%w: collect: boom", errPartial)
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want int
	}{
		{"ok", live, nil, exitOK},
		{"usage", live, usagef("bad"), exitUsage},
		{"usage even when stopped", stopped, usagef("bad"), exitUsage},
		{"failure", live, errors.New("boom"), exitFailure},
		{"partial", live, partial, exitPartial},
		{"interrupted", stopped, context.Canceled, exitInterrupted},
		{"interrupted partial run", stopped, partial, exitInterrupted},
	} {
		if got := exitCode(tc.ctx, tc.err); got != tc.want {
			t.Errorf("%s: exit %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestExitFailure runs a command that fails outright: exit 1, and the
// message says what to do.
func TestExitFailure(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	args := []string{"ledger", "verify", "--case", "NOPE-1", "--vault", filepath.Join(dir, "v"), "--key", filepath.Join(dir, "missing.pub")}
	if got := run(args, &out, &errb); got != exitFailure {
		t.Fatalf("impound %v: exit %d, want %d (stderr %q)", args, got, exitFailure, errb.String())
	}
	if !strings.Contains(errb.String(), "missing.pub") {
		t.Errorf("stderr %q does not name the missing key file", errb.String())
	}
}
