package awsconf

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/internal/awssim/simtest"
)

func TestAssumeRoleRefreshes(t *testing.T) {
	clock := &stoppedClock{}
	clock.set(time.Now())
	env := simtest.Start(t, awssim.Options{Now: clock.now})
	responder := env.Sim.AddAccount("333333333333")
	member := env.Sim.AddAccount("111111111111")
	// Two-second sessions, shorter than the cache's five-minute refresh
	// window: the configuration assumes the role again on every call. (One-hour
	// sessions, reused and then refreshed ahead of expiry, are in
	// refresh_test.go.)
	env.Sim.SetSessionDuration(2 * time.Second)
	base := env.ClientConfig(responder.Credentials())
	ctx := context.Background()

	cfg := AssumeRole(base, Role{ARN: member.RoleARN("impound-responder"), Operator: "Alice Smith", CaseID: "IR-2026-0042"})
	arn, err := CallerARN(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const want = "arn:aws:sts::111111111111:assumed-role/impound-responder/impound-Alice-Smith-IR-2026-0042"
	if arn != want {
		t.Fatalf("caller %s, want %s", arn, want)
	}

	// The same credentials, not refreshed, stop working once they expire...
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stale := base.Copy()
	stale.Credentials = credentials.NewStaticCredentialsProvider(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken)
	clock.set(clock.now().Add(3 * time.Second))
	_, err = sts.NewFromConfig(stale).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	var ae smithy.APIError
	if !errors.As(err, &ae) || !strings.Contains(ae.ErrorCode(), "Expired") {
		t.Fatalf("expired session: got %v, want an ExpiredToken error", err)
	}
	// ...while the assumed-role configuration renews them and carries on.
	arn, err = CallerARN(ctx, cfg)
	if err != nil || arn != want {
		t.Fatalf("after expiry: caller %q, %v; want %s", arn, err, want)
	}
}

func TestAssumeRoleFailsClearly(t *testing.T) {
	env := simtest.Start(t, awssim.Options{})
	responder := env.Sim.AddAccount("333333333333")
	base := env.ClientConfig(responder.Credentials())
	base.Credentials = credentials.NewStaticCredentialsProvider("AKIANOSUCHKEY0000000", "x", "")
	cfg := AssumeRole(base, Role{ARN: "arn:aws:iam::111111111111:role/r", Operator: "a", CaseID: "c"})
	_, err := CallerARN(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "InvalidClientTokenId") {
		t.Fatalf("got %v, want STS's InvalidClientTokenId", err)
	}

}
