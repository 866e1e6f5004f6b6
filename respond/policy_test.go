package respond

import (
	"context"
	"encoding/json"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"

	"github.com/impound-ir/impound/vault"
)

// calls records the IAM actions of the AWS calls made with a configuration.
type calls struct {
	mu  sync.Mutex
	ops map[string]bool
}

var iamPrefix = map[string]string{
	"EC2": "ec2", "EBS": "ebs", "KMS": "kms", "IAM": "iam", "CloudTrail": "cloudtrail", "Auto Scaling": "autoscaling",
	"Elastic Load Balancing v2": "elasticloadbalancing", "Elastic Load Balancing": "elasticloadbalancing",
}

func (c *calls) attach(cfg *aws.Config) {
	c.ops = map[string]bool{}
	cfg.APIOptions = append(cfg.APIOptions, func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("recordIAMAction",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				svc := awsmiddleware.GetServiceID(ctx)
				if svc != "STS" { // GetCallerIdentity needs no permission; AssumeRole is the caller's
					p, ok := iamPrefix[svc]
					if !ok {
						p = "unknown-service-" + svc
					}
					c.mu.Lock()
					c.ops[p+":"+awsmiddleware.GetOperationName(ctx)] = true
					c.mu.Unlock()
				}
				return next.HandleInitialize(ctx, in)
			}), middleware.After)
	})
}

func policyActions(t *testing.T, files ...string) map[string]bool {
	t.Helper()
	allowed := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile("../deploy/iam/" + f)
		if err != nil {
			t.Fatal(err)
		}
		var pol struct {
			Statement []struct {
				Effect string
				Action json.RawMessage // a list, or one action
			}
		}
		if err := json.Unmarshal(b, &pol); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, st := range pol.Statement {
			var acts []string
			if json.Unmarshal(st.Action, &acts) != nil {
				var one string
				if err := json.Unmarshal(st.Action, &one); err != nil {
					t.Fatalf("%s: action %s: %v", f, st.Action, err)
				}
				acts = []string{one}
			}
			for _, a := range acts {
				if strings.Contains(a, "*") {
					t.Errorf("%s: action %q is a wildcard; name each action", f, a)
				}
				if st.Effect == "Allow" {
					allowed[strings.ToLower(a)] = true
				}
			}
		}
	}
	return allowed
}

// TestPoliciesCoverAWholeCase runs a case and checks that every call made in
// each account is allowed by that account's policies in deploy/iam.
func TestPoliciesCoverAWholeCase(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	var member, forensics calls
	member.attach(&d.acc.Member)
	forensics.attach(&d.acc.Forensics)
	c := d.open(t, d.options())
	if _, err := Run(ctx, c, c.Stages()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		c     *calls
		files []string
	}{
		{"member", &member, []string{"isolate-policy.json", "member-evidence-policy.json"}},
		{"forensics", &forensics, []string{"forensics-policy.json"}},
	} {
		allowed := policyActions(t, tc.files...)
		if len(tc.c.ops) < 5 {
			t.Fatalf("%s: only %d operations recorded: the recorder is not wired", tc.name, len(tc.c.ops))
		}
		var missing []string
		for op := range tc.c.ops {
			if !allowed[strings.ToLower(op)] {
				missing = append(missing, op)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("%s account: %v lack %v", tc.name, tc.files, missing)
		}
	}
}
