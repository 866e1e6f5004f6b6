// Command impound isolates a compromised EC2 instance, acquires its volumes
// into an Object Lock vault while hashing them, and keeps a signed custody
// ledger of every step.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
)

// Exit codes, decided here and nowhere else.
const (
	exitOK          = 0
	exitFailure     = 1   // the command failed; nothing it promised was done
	exitUsage       = 2   // bad flags or arguments
	exitPartial     = 3   // some steps failed and were recorded as failed; others succeeded
	exitInterrupted = 130 // stopped by SIGINT/SIGTERM
)

// errPartial marks a run in which some steps failed (and were recorded as
// such) while the safe ones after them still ran.
var errPartial = errors.New("some steps failed")

// usageError is a mistake in how impound was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	g := &globalOptions{Stdout: stdout, Stderr: stderr}
	root := newRootCommand(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	code := exitCode(ctx, err)
	if err != nil {
		// Logged once, here, with what to do next when the error says it.
		logger := g.logger
		if logger == nil {
			l := zerolog.New(zerolog.ConsoleWriter{Out: stderr, NoColor: true}).With().Timestamp().Logger()
			logger = &l
		}
		if code == exitUsage {
			fmt.Fprintf(stderr, "impound: %v\nRun 'impound --help' for usage.\n", err)
		} else {
			logger.Error().Err(err).Msg("impound failed")
		}
	}
	return code
}

func exitCode(ctx context.Context, err error) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case ctx.Err() != nil:
		// Stopped by a signal, partial or not: the ledger says what was done.
		return exitInterrupted
	case errors.Is(err, errPartial):
		return exitPartial
	default:
		return exitFailure
	}
}
