package isolate

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
)

// opSet records the IAM actions of the AWS calls made while on.
type opSet struct {
	mu  sync.Mutex
	on  bool
	ops map[string]bool
}

var iamPrefix = map[string]string{
	"EC2": "ec2", "Auto Scaling": "autoscaling", "Elastic Load Balancing v2": "elasticloadbalancing",
	"Elastic Load Balancing": "elasticloadbalancing", "IAM": "iam",
}

func newOpSet() *opSet { return &opSet{ops: map[string]bool{}} }

// attach makes every client built from cfg report its calls to the set.
func (s *opSet) attach(cfg *aws.Config) {
	cfg.APIOptions = append(cfg.APIOptions, func(st *middleware.Stack) error {
		return st.Initialize.Add(middleware.InitializeMiddlewareFunc("impoundRecordOp",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				s.mu.Lock()
				if s.on {
					svc := awsmiddleware.GetServiceID(ctx)
					p, ok := iamPrefix[svc]
					if !ok {
						p = "unknown-service-" + svc
					}
					s.ops[p+":"+awsmiddleware.GetOperationName(ctx)] = true
				}
				s.mu.Unlock()
				return next.HandleInitialize(ctx, in)
			}), middleware.After)
	})
}

func (s *opSet) start() { s.mu.Lock(); s.on = true; s.mu.Unlock() }

// checkPolicyCovers fails for every recorded call that
// deploy/iam/isolate-policy.json does not allow.
func checkPolicyCovers(t *testing.T, s *opSet) {
	t.Helper()
	b, err := os.ReadFile("../deploy/iam/isolate-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	var pol struct {
		Statement []struct {
			Effect string
			Action json.RawMessage
		}
	}
	if err := json.Unmarshal(b, &pol); err != nil {
		t.Fatalf("parse isolate-policy.json: %v", err)
	}
	allowed := map[string]bool{}
	for _, st := range pol.Statement {
		if st.Effect != "Allow" {
			continue
		}
		var acts []string
		if json.Unmarshal(st.Action, &acts) != nil {
			var one string
			if err := json.Unmarshal(st.Action, &one); err != nil {
				t.Fatalf("statement action %s: %v", st.Action, err)
			}
			acts = []string{one}
		}
		for _, a := range acts {
			if strings.Contains(a, "*") {
				t.Errorf("policy action %q is a wildcard; least privilege names each action", a)
			}
			allowed[strings.ToLower(a)] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ops) < 10 {
		t.Fatalf("only %d operations recorded: the recorder is not wired", len(s.ops))
	}
	var missing []string
	for op := range s.ops {
		if !allowed[strings.ToLower(op)] {
			missing = append(missing, op)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("deploy/iam/isolate-policy.json lacks %v", missing)
	}
}
