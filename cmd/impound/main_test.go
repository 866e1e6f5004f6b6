package main

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"impound": func() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// scriptRuns numbers the scripts' runs in this process.
var scriptRuns atomic.Int64

// TestScripts runs the CLI end to end: every testdata/script/*.txt, with
// impound as a command. Scripts that need test servers use the conditions
// [minio] and [moto], true when scripts/testenv started them.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(e *testscript.Env) error {
			for _, k := range []string{
				"IMPOUND_TEST_MINIO_ENDPOINT", "IMPOUND_TEST_MINIO_ACCESS_KEY", "IMPOUND_TEST_MINIO_SECRET_KEY",
				"IMPOUND_TEST_MOTO_ENDPOINT", "IMPOUND_TEST_REQUIRE_SERVERS",
			} {
				e.Setenv(k, os.Getenv(k))
			}
			e.Setenv("USER", "tester")
			// RUN makes names on the shared test servers (buckets) unique
			// to this run of this script, so a rerun (-count=2) against
			// the same MinIO does not find the last run's objects.
			e.Setenv("RUN", fmt.Sprintf("%x-%d", time.Now().UnixNano()&0xffffffffff, scriptRuns.Add(1)))
			return nil
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "minio":
				return os.Getenv("IMPOUND_TEST_MINIO_ENDPOINT") != "", nil
			case "moto":
				return os.Getenv("IMPOUND_TEST_MOTO_ENDPOINT") != "", nil
			}
			return false, nil
		},
	})
}
