package awsconf

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/internal/awssim/simtest"
)

func TestIdentify(t *testing.T) {
	env := simtest.Start(t, awssim.Options{})
	responder := env.Sim.AddAccount("333333333333")
	member := env.Sim.AddAccount("111111111111")
	base := env.ClientConfig(responder.Credentials())
	ctx := context.Background()

	id, err := Identify(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	if id.Account != "333333333333" || id.ARN != responder.UserARN() {
		t.Fatalf("own identity %+v, want 333333333333 %s", id, responder.UserARN())
	}
	id, err = Identify(ctx, AssumeRole(base, Role{ARN: member.RoleARN("impound-responder"), Operator: "guardduty", CaseID: "gd-i-0123456789abcdef0"}))
	if err != nil {
		t.Fatal(err)
	}
	const want = "arn:aws:sts::111111111111:assumed-role/impound-responder/impound-guardduty-gd-i-0123456789abcdef0"
	if id.Account != "111111111111" || id.ARN != want {
		t.Fatalf("assumed identity %+v, want 111111111111 %s", id, want)
	}

	bad := base.Copy()
	bad.Credentials = credentials.NewStaticCredentialsProvider("AKIANOSUCHKEY0000000", "x", "")
	if _, err := Identify(ctx, bad); err == nil || !strings.Contains(err.Error(), "InvalidClientTokenId") {
		t.Fatalf("unknown key: %v, want STS's InvalidClientTokenId", err)
	}
}
