// Package simtest starts the AWS simulator for tests.
package simtest

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/impound-ir/impound/internal/awssim"
)

// Env is a running simulator.
type Env struct {
	Sim    *awssim.Sim
	Server *awssim.Server
}

// Start serves a new simulator on a loopback port until the test ends.
func Start(t testing.TB, o awssim.Options) *Env {
	t.Helper()
	sim := awssim.New(o)
	srv, err := awssim.Listen(context.Background(), "127.0.0.1:0", sim)
	if err != nil {
		t.Fatalf("start AWS simulator: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &Env{Sim: sim, Server: srv}
}

// ClientConfig returns an SDK configuration pointing at the simulator with
// the credentials; see [awssim.Server.ClientConfig].
func (e *Env) ClientConfig(creds awssim.Credentials) aws.Config {
	return e.Server.ClientConfig(creds)
}

// URL returns the simulator's endpoint.
func (e *Env) URL() string { return e.Server.URL() }
