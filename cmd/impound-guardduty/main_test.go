package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/internal/awssim/simtest"
	"github.com/impound-ir/impound/respond"
)

func TestNewHandler(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_PROFILE", "")
	key := filepath.Join(t.TempDir(), "ir.key")
	vkey, err := custody.WriteKeyFiles(key, "impound-test")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AWS_REGION": "eu-west-1", "IMPOUND_VAULT": "s3://acme-forensics/impound", "IMPOUND_SIGNING_KEY": "file:" + key}
	getenv := func(k string) string { return env[k] }
	ctx := context.Background()
	h, err := newHandler(ctx, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if h.store.URI() != "s3://acme-forensics/impound" || h.signer.VerifierKey() != vkey || h.dispatch != nil || h.tool.Name != "impound-guardduty" {
		t.Fatalf("handler: vault %s, key %s, dispatcher %v, tool %+v", h.store.URI(), h.signer.VerifierKey(), h.dispatch, h.tool)
	}
	env["IMPOUND_ACQUIRE_CLUSTER"], env["IMPOUND_ACQUIRE_TASK_DEFINITION"], env["IMPOUND_ACQUIRE_SUBNETS"] = "impound", "impound-acquire", "subnet-1"
	if h, err = newHandler(ctx, getenv); err != nil {
		t.Fatal(err)
	}
	if d, ok := h.dispatch.(*ecsDispatcher); !ok || d.cluster != "impound" || d.taskDefinition != "impound-acquire" || d.container != "impound" {
		t.Fatalf("dispatcher %+v", h.dispatch)
	}
	env["IMPOUND_SIGNING_KEY"] = "file:" + key + ".missing"
	if _, err := newHandler(ctx, getenv); err == nil || !strings.Contains(err.Error(), "IMPOUND_SIGNING_KEY") {
		t.Fatalf("missing key file: %v", err)
	}
}

func TestAWSAccounts(t *testing.T) {
	env := simtest.Start(t, awssim.Options{})
	self := env.Sim.AddAccount("222222222222")
	member := env.Sim.AddAccount("111111111111")
	base := env.ClientConfig(self.Credentials())
	ctx := context.Background()
	finding := func(account string) *respond.Finding {
		return &respond.Finding{ID: "f", AccountID: account, Partition: "aws", InstanceID: "i-0123456789abcdef0"}
	}

	// Another account, through the role.
	a := &awsAccounts{base: base, cfg: &config{MemberRoleName: "impound-responder", ForensicsRoleARN: self.RoleARN("impound-forensics")}}
	r, err := a.Resolve(ctx, finding(member.ID()), "gd-i-0123456789abcdef0")
	if err != nil {
		t.Fatal(err)
	}
	if r.MemberRoleARN != member.RoleARN("impound-responder") || r.Accounts.MemberID != member.ID() ||
		r.Accounts.MemberCaller != "arn:aws:sts::111111111111:assumed-role/impound-responder/impound-guardduty-gd-i-0123456789abcdef0" ||
		r.Accounts.ForensicsID != self.ID() || !strings.Contains(r.Accounts.ForensicsCaller, ":assumed-role/impound-forensics/") ||
		r.SelfAccount != self.ID() || r.SelfARN != self.UserARN() {
		t.Fatalf("resolved %+v", r)
	}

	// The function's own account: its own credentials, no role.
	r, err = a.Resolve(ctx, finding(self.ID()), "gd-i-0123456789abcdef0")
	if err != nil {
		t.Fatal(err)
	}
	if r.MemberRoleARN != "" || r.Accounts.MemberID != self.ID() || r.Accounts.MemberCaller != self.UserARN() {
		t.Fatalf("own account: %+v", r)
	}

	// Another account without a role name: refused, not worked on in the wrong account.
	a.cfg.MemberRoleName = ""
	if _, err := a.Resolve(ctx, finding(member.ID()), "gd-i-0123456789abcdef0"); err == nil || !strings.Contains(err.Error(), "set IMPOUND_MEMBER_ROLE_NAME") {
		t.Fatalf("no role for another account: %v", err)
	}
}
