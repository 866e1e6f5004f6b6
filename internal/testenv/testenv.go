// Package testenv is the Go side of scripts/testenv: a test that needs a
// test server or an external tool asks here. Where it is absent the test is
// skipped, with what to run instead; where scripts/testenv said everything
// must run (IMPOUND_TEST_REQUIRE_SERVERS=1, as in CI), a missing server or
// tool is a failure, so CI never passes by skipping.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// Required says whether every server and tool must be there.
func Required() bool { return os.Getenv("IMPOUND_TEST_REQUIRE_SERVERS") == "1" }

// SkipOrFail skips the test with why, or fails it when everything is required.
func SkipOrFail(t testing.TB, why string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s (IMPOUND_TEST_REQUIRE_SERVERS=1: not skipping)", why)
	}
	t.Skip(why)
}

// Server returns the setting scripts/testenv exports in env (an endpoint, a
// credential), skipping or failing the test when it is not set.
func Server(t testing.TB, env string) string {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		SkipOrFail(t, env+" is not set: run the tests through scripts/testenv (make test)")
	}
	return v
}

// Tool returns the path of an external program, skipping or failing the test
// when it is not installed (scripts/testenv installs the Debian ones).
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		SkipOrFail(t, name+" is not installed: run the tests through scripts/testenv (make test), which installs it")
	}
	return p
}
