package isolate

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func ExampleDenyPolicyName() {
	fmt.Println(DenyPolicyName("IR-2026/0042"))
	fmt.Println(denyPolicy(time.Date(2026, 11, 21, 10, 30, 1, 0, time.UTC)))
	// Output:
	// impound-revoke-older-sessions-IR-2026-0042
	// {"Statement":[{"Action":["*"],"Condition":{"DateLessThan":{"aws:TokenIssueTime":"2026-11-21T10:30:01Z"}},"Effect":"Deny","Resource":["*"],"Sid":"ImpoundRevokeOlderSessions"}],"Version":"2012-10-17"}
}

func TestPolicyCutoff(t *testing.T) {
	cut := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	doc := denyPolicy(cut)
	if got := policyCutoff(doc); got != "2026-01-02T03:04:05Z" {
		t.Errorf("cutoff of %s = %q", doc, got)
	}
	// IAM returns documents URL-encoded.
	enc := "%7B%22Statement%22%3A%5B%7B%22Condition%22%3A%7B%22DateLessThan%22%3A%7B%22aws%3ATokenIssueTime%22%3A%222026-01-02T03%3A04%3A05Z%22%7D%7D%7D%5D%7D"
	if got := policyCutoff(enc); got != "2026-01-02T03:04:05Z" {
		t.Errorf("cutoff of encoded document = %q", got)
	}
	if got := policyCutoff(`{"Statement":[]}`); got != "present" {
		t.Errorf("cutoff of a foreign policy = %q, want present", got)
	}
}

func TestStateRoundTrip(t *testing.T) {
	st := &State{
		Version: StateVersion, CaseID: "c1", InstanceID: "i-1", Region: "us-east-1", AccountID: "123456789012",
		StartedAt: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC),
		Original: Original{VpcID: "vpc-1", Interfaces: []InterfaceState{{ID: "eni-1", Groups: []string{"sg-1", "sg-2"}, TCPEstablishedTimeout: 3600}},
			AutoScaling: &ASGState{GroupName: "web", LifecycleState: "InService", MinSize: 1, DesiredCapacity: 2, Decremented: true}},
		Steps: []StepLog{{Name: StepProtect, Status: StatusFailed, Before: []byte(`{"a":1}`), Error: "denied"}, {Name: StepTags, Status: StatusDone}},
	}
	b, err := MarshalState(st)
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalState(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := MarshalState(back)
	if !bytes.Equal(b, b2) {
		t.Errorf("round trip changed the state:\n%s\n%s", b, b2)
	}
	if !back.Applied(StepTags) || back.Applied(StepProtect) || !back.attempted(StepProtect) {
		t.Error("Applied/attempted wrong after round trip")
	}
	if _, err := UnmarshalState([]byte(`{"version":2,"instance_id":"i-1"}`)); !errors.Is(err, ErrStateMismatch) {
		t.Errorf("version 2: %v, want ErrStateMismatch", err)
	}
	if _, err := UnmarshalState([]byte(`{"version":1}`)); !errors.Is(err, ErrStateMismatch) {
		t.Errorf("no instance: %v, want ErrStateMismatch", err)
	}
}

// FuzzUnmarshalState: parsing never panics, and a parsed state formats to
// bytes that parse back to the same state.
func FuzzUnmarshalState(f *testing.F) {
	f.Add([]byte(`{"version":1,"instance_id":"i-1","case_id":"c","steps":[{"name":"tags","status":"done","at":"2026-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"instance_id":"i-1","original":{"interfaces":[{"id":"eni-1","groups":["sg-1"]}]}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := UnmarshalState(b)
		if err != nil {
			return
		}
		out, err := MarshalState(st)
		if err != nil {
			t.Fatalf("format a parsed state: %v", err)
		}
		st2, err := UnmarshalState(out)
		if err != nil {
			t.Fatalf("formatted state does not parse: %v\n%s", err, out)
		}
		out2, _ := MarshalState(st2)
		if !bytes.Equal(out, out2) {
			t.Fatalf("format is not stable:\n%s\n%s", out, out2)
		}
	})
}

func TestPartition(t *testing.T) {
	for region, want := range map[string]string{"us-east-1": "aws", "cn-north-1": "aws-cn", "us-gov-west-1": "aws-us-gov"} {
		if got := partition(region); got != want {
			t.Errorf("partition(%s) = %s, want %s", region, got, want)
		}
	}
}

func TestRuleRoundTrip(t *testing.T) {
	for _, r := range append(allOpenRules(),
		rule{Egress: true, Protocol: "tcp", From: 443, To: 443, Target: "pl:pl-123"},
		rule{Egress: true, Protocol: "tcp", From: 443, To: 443, Target: "v4:10.0.0.5/32"},
		rule{Protocol: "udp", From: 53, To: 53, Target: "sg:sg-1"}) {
		got := flatten(r.Egress, []ec2types.IpPermission{r.permission()})
		if len(got) != 1 || got[0] != r {
			t.Errorf("flatten(permission(%v)) = %v", r, got)
		}
	}
}
