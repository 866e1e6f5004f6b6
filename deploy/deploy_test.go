// Package deploy holds what a team deploys to run impound: the IAM policies
// in iam/ and the CloudFormation templates in cloudformation/. Its tests run
// cfn-lint on every template and check that the templates keep their
// contracts: the member role has exactly the actions of the IAM policies, the
// forensics roles have every forensics action, the vault is write-once, no
// statement allows "*", and the GuardDuty Lambda gets exactly the
// environment cmd/impound-guardduty reads.
package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/impound-ir/impound/internal/testenv"
)

const (
	forensicsTemplate = "cloudformation/impound-forensics.yaml"
	memberTemplate    = "cloudformation/impound-member.yaml"
)

// lambdaEnv is the environment contract with cmd/impound-guardduty.
func lambdaEnv() []string {
	return []string{
		"IMPOUND_VAULT", "IMPOUND_SIGNING_KEY", "IMPOUND_MEMBER_ROLE_NAME", "IMPOUND_FORENSICS_ROLE_ARN",
		"IMPOUND_EXTERNAL_ID", "IMPOUND_MIN_SEVERITY", "IMPOUND_FINDING_TYPES", "IMPOUND_ISOLATE",
		"IMPOUND_ALLOW_SSM", "IMPOUND_ALLOW_DEFAULT_VPC", "IMPOUND_FORENSICS_KMS_KEY", "IMPOUND_MEMBER_KMS_KEY", "IMPOUND_RETENTION_DAYS",
		"IMPOUND_RETENTION_MODE", "IMPOUND_ACQUIRE_CLUSTER", "IMPOUND_ACQUIRE_TASK_DEFINITION",
		"IMPOUND_ACQUIRE_SUBNETS", "IMPOUND_ACQUIRE_SECURITY_GROUPS", "IMPOUND_ACQUIRE_CONTAINER",
	}
}

// The statement IDs `impound vault check` looks for (vault/check.go).
const (
	sidDenyDelete = "ImpoundDenyDeleteObjectVersions"
	sidDenyNoTLS  = "ImpoundDenyInsecureTransport"
)

// ---------------------------------------------------------------- cfn-lint

// templatePaths lists the CloudFormation templates under dir (testdata
// excluded): YAML or JSON files with a top-level Resources section.
func templatePaths(t *testing.T, dir string) []string {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(p) {
		case ".yaml", ".yml", ".json", ".template":
		default:
			return nil
		}
		tpl, err := loadTemplate(p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if _, ok := tpl["Resources"]; ok {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// cfnLint runs cfn-lint on paths and returns its output and whether it
// reported an error or a warning (exit status bits 2 and 4; 8 is
// informational only, printed but not failed; anything else is a failure of
// cfn-lint itself).
func cfnLint(t *testing.T, paths ...string) (string, bool) {
	t.Helper()
	bin := testenv.Tool(t, "cfn-lint")
	cmd := exec.Command(bin, append([]string{"--format", "parseable", "--include-checks", "I", "--"}, paths...)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), false
	case errors.As(err, &ee):
		code := ee.ExitCode()
		if code&^(2|4|8) != 0 || code < 0 {
			t.Fatalf("cfn-lint failed (exit %d): %s", code, out)
		}
		return string(out), code&(2|4) != 0
	default:
		t.Fatalf("cfn-lint: %v", err)
		return "", false
	}
}

func TestCfnLintEveryTemplate(t *testing.T) {
	t.Parallel()
	paths := templatePaths(t, ".")
	for _, want := range []string{forensicsTemplate, memberTemplate} {
		if !slices.Contains(paths, filepath.FromSlash(want)) {
			t.Errorf("template %s not found under deploy/ (found %v)", want, paths)
		}
	}
	out, bad := cfnLint(t, paths...)
	if bad {
		t.Errorf("cfn-lint reports errors or warnings in %v:\n%s", paths, out)
	} else if out != "" {
		t.Logf("cfn-lint (informational):\n%s", out)
	}
}

// The harness itself: a template with a wrong property type and an unknown
// property must be reported.
func TestCfnLintReportsABrokenTemplate(t *testing.T) {
	t.Parallel()
	out, bad := cfnLint(t, filepath.Join("testdata", "broken.yaml"))
	if !bad {
		t.Fatalf("cfn-lint accepted testdata/broken.yaml:\n%s", out)
	}
	for _, rule := range []string{"E3002", "E3012"} {
		if !strings.Contains(out, rule) {
			t.Errorf("cfn-lint output lacks rule %s:\n%s", rule, out)
		}
	}
}

// ---------------------------------------------------------------- parsing

// loadTemplate parses a YAML or JSON template, turning CloudFormation's short
// tags into their long forms (!Ref x → {"Ref": x}, !Sub s → {"Fn::Sub": s},
// !GetAtt a.b → {"Fn::GetAtt": [a, b]}), so the checks see one form.
func loadTemplate(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	v, err := fromNode(&doc)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("not a mapping at the top level")
	}
	return m, nil
}

func fromNode(n *yaml.Node) (any, error) {
	var v any
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return fromNode(n.Content[0])
	case yaml.AliasNode:
		return fromNode(n.Alias)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			val, err := fromNode(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[n.Content[i].Value] = val
		}
		v = m
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			val, err := fromNode(c)
			if err != nil {
				return nil, err
			}
			s = append(s, val)
		}
		v = s
	case yaml.ScalarNode:
		if strings.HasPrefix(n.Tag, "!!") {
			if err := n.Decode(&v); err != nil {
				return nil, fmt.Errorf("line %d: %w", n.Line, err)
			}
		} else {
			v = n.Value
		}
	default:
		return nil, fmt.Errorf("line %d: unexpected YAML node kind %d", n.Line, n.Kind)
	}
	if strings.HasPrefix(n.Tag, "!!") || n.Tag == "" {
		return v, nil
	}
	fn := strings.TrimPrefix(n.Tag, "!")
	switch fn {
	case "Ref", "Condition":
		return map[string]any{fn: v}, nil
	case "GetAtt":
		if s, ok := v.(string); ok {
			res, attr, _ := strings.Cut(s, ".")
			v = []any{res, attr}
		}
	}
	return map[string]any{"Fn::" + fn: v}, nil
}

// ---------------------------------------------------------------- helpers

func get(v any, path ...string) any {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(v any) string { s, _ := v.(string); return s }

func list(v any) []any {
	switch x := v.(type) {
	case nil:
		return nil
	case []any:
		return x
	default:
		return []any{x}
	}
}

func strs(v any) []string {
	var out []string
	for _, x := range list(v) {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// resources returns the logical IDs of the resources of a type, sorted.
func resources(tpl map[string]any, typ string) []string {
	var ids []string
	for id, r := range get(tpl, "Resources").(map[string]any) {
		if get(r, "Type") == typ {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

func resource(tpl map[string]any, id string) map[string]any {
	r, _ := get(tpl, "Resources", id).(map[string]any)
	return r
}

// refTo returns the logical ID a {"Ref": id} or {"Fn::GetAtt": [id, …]} names.
func refTo(v any) string {
	if r := str(get(v, "Ref")); r != "" {
		return r
	}
	if ga := list(get(v, "Fn::GetAtt")); len(ga) > 0 {
		return str(ga[0])
	}
	return ""
}

// branches expands Fn::If into both of its values (AWS::NoValue dropped):
// every statement a condition could bring in.
func branches(v any) []any {
	if args := list(get(v, "Fn::If")); len(args) == 3 {
		return append(branches(args[1]), branches(args[2])...)
	}
	if get(v, "Ref") == "AWS::NoValue" {
		return nil
	}
	return []any{v}
}

type statement struct {
	where string // "Resource/policy#Sid"
	m     map[string]any
}

func statementsOf(where string, doc any) []statement {
	var out []statement
	for _, s := range list(get(doc, "Statement")) {
		for _, b := range branches(s) {
			if m, ok := b.(map[string]any); ok {
				out = append(out, statement{where: where + "#" + str(m["Sid"]), m: m})
			}
		}
	}
	return out
}

func (s statement) actions() []string { return strs(s.m["Action"]) }

// roleStatements collects the identity-policy statements that apply to a
// role: its inline Policies, AWS::IAM::Policy and AWS::IAM::ManagedPolicy
// resources listing it in Roles, and managed policies of the template it
// names in ManagedPolicyArns.
func roleStatements(tpl map[string]any, roleID string) []statement {
	role := resource(tpl, roleID)
	var out []statement
	for _, p := range list(get(role, "Properties", "Policies")) {
		out = append(out, statementsOf(roleID+"/"+str(get(p, "PolicyName")), get(p, "PolicyDocument"))...)
	}
	attached := map[string]bool{}
	for _, a := range list(get(role, "Properties", "ManagedPolicyArns")) {
		attached[refTo(a)] = true
	}
	for _, typ := range []string{"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"} {
		for _, id := range resources(tpl, typ) {
			r := resource(tpl, id)
			use := attached[id]
			for _, ro := range list(get(r, "Properties", "Roles")) {
				use = use || refTo(ro) == roleID
			}
			if use {
				out = append(out, statementsOf(id, get(r, "Properties", "PolicyDocument"))...)
			}
		}
	}
	return out
}

func allowedActions(ss []statement) map[string]bool {
	set := map[string]bool{}
	for _, s := range ss {
		if s.m["Effect"] == "Allow" {
			for _, a := range s.actions() {
				set[a] = true
			}
		}
	}
	return set
}

type policyFile struct {
	Statement []struct {
		Sid       string
		Effect    string
		Action    any
		Resource  any
		Condition any
	}
}

func loadPolicy(t *testing.T, name string) policyFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("iam", name))
	if err != nil {
		t.Fatal(err)
	}
	var p policyFile
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("iam/%s: %v", name, err)
	}
	if len(p.Statement) == 0 {
		t.Fatalf("iam/%s has no statements", name)
	}
	return p
}

func (p policyFile) actions() map[string]bool {
	set := map[string]bool{}
	for _, s := range p.Statement {
		for _, a := range strs(s.Action) {
			set[a] = true
		}
	}
	return set
}

func setDiff(a, b map[string]bool) []string {
	var out []string
	for k := range a {
		if !b[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func load(t *testing.T, path string) map[string]any {
	t.Helper()
	tpl, err := loadTemplate(filepath.FromSlash(path))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return tpl
}

func reportProblems(t *testing.T, what string, problems []string) {
	t.Helper()
	for _, p := range problems {
		t.Errorf("%s: %s", what, p)
	}
}

// ---------------------------------------------------------------- checks

// checkMemberRole: the member role's actions are exactly the union of the
// isolate and member-evidence policies, and each of its policies repeats the
// matching file statement by statement (same effect, actions, resources
// with the account and partition generalised, and conditions).
func checkMemberRole(tpl map[string]any, policies map[string]policyFile) []string {
	roles := resources(tpl, "AWS::IAM::Role")
	if len(roles) != 1 {
		return []string{fmt.Sprintf("want one role, found %v", roles)}
	}
	role := roles[0]
	var problems []string
	got := allowedActions(roleStatements(tpl, role))
	want := map[string]bool{}
	for _, p := range policies {
		for a := range p.actions() {
			want[a] = true
		}
	}
	if m := setDiff(want, got); len(m) > 0 {
		problems = append(problems, fmt.Sprintf("role %s lacks actions %v of deploy/iam", role, m))
	}
	if x := setDiff(got, want); len(x) > 0 {
		problems = append(problems, fmt.Sprintf("role %s allows actions %v that deploy/iam does not", role, x))
	}

	inline := map[string][]statement{}
	for _, p := range list(get(resource(tpl, role), "Properties", "Policies")) {
		name := str(get(p, "PolicyName"))
		inline[name] = statementsOf(role+"/"+name, get(p, "PolicyDocument"))
	}
	names := make([]string, 0, len(policies))
	for n := range policies {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, file := range names {
		pf := policies[file]
		policyName := "impound-" + strings.TrimSuffix(strings.TrimSuffix(file, ".json"), "-policy")
		ss, ok := inline[policyName]
		if !ok {
			problems = append(problems, fmt.Sprintf("role %s has no inline policy %s (for iam/%s)", role, policyName, file))
			continue
		}
		if len(ss) != len(pf.Statement) {
			problems = append(problems, fmt.Sprintf("policy %s has %d statements, iam/%s %d", policyName, len(ss), file, len(pf.Statement)))
		}
		bySid := map[string]statement{}
		for _, s := range ss {
			bySid[str(s.m["Sid"])] = s
		}
		for _, fs := range pf.Statement {
			s, ok := bySid[fs.Sid]
			if !ok {
				problems = append(problems, fmt.Sprintf("policy %s lacks statement %s of iam/%s", policyName, fs.Sid, file))
				continue
			}
			if s.m["Effect"] != fs.Effect {
				problems = append(problems, fmt.Sprintf("%s: effect %v, iam/%s says %s", s.where, s.m["Effect"], file, fs.Effect))
			}
			if a, b := sorted(s.actions()), sorted(strs(fs.Action)); !slices.Equal(a, b) {
				problems = append(problems, fmt.Sprintf("%s: actions %v, iam/%s says %v", s.where, a, file, b))
			}
			if a, b := sorted(generalised(s.m["Resource"])), sorted(strs(fs.Resource)); !slices.Equal(a, b) {
				problems = append(problems, fmt.Sprintf("%s: resources %v, iam/%s says %v", s.where, a, file, b))
			}
			if !reflect.DeepEqual(normalJSON(s.m["Condition"]), normalJSON(fs.Condition)) {
				problems = append(problems, fmt.Sprintf("%s: condition %v, iam/%s says %v", s.where, s.m["Condition"], file, fs.Condition))
			}
		}
	}
	return problems
}

func sorted(s []string) []string { s = slices.Clone(s); sort.Strings(s); return s }

// generalised turns the template's resources back into the files' form:
// ${AWS::Partition} → aws, ${AWS::AccountId} → *.
func generalised(v any) []string {
	var out []string
	for _, r := range list(v) {
		s := str(r)
		if sub, ok := get(r, "Fn::Sub").(string); ok {
			s = strings.NewReplacer("${AWS::Partition}", "aws", "${AWS::AccountId}", "*").Replace(sub)
		}
		out = append(out, s)
	}
	return out
}

func normalJSON(v any) any {
	if v == nil {
		return nil
	}
	b, _ := json.Marshal(v)
	var out any
	json.Unmarshal(b, &out)
	// A single value and a one-element list mean the same in IAM.
	var norm func(any) any
	norm = func(x any) any {
		switch y := x.(type) {
		case map[string]any:
			for k, e := range y {
				y[k] = norm(e)
			}
		case []any:
			if len(y) == 1 {
				return norm(y[0])
			}
		}
		return x
	}
	return norm(out)
}

// lambdaFunction and taskDefinition return the template's only Lambda
// function and ECS task definition, or nil.
func lambdaFunction(tpl map[string]any) (string, map[string]any) {
	fns := resources(tpl, "AWS::Lambda::Function")
	if len(fns) != 1 {
		return "", nil
	}
	return fns[0], resource(tpl, fns[0])
}

func taskDefinition(tpl map[string]any) (string, map[string]any) {
	tds := resources(tpl, "AWS::ECS::TaskDefinition")
	if len(tds) != 1 {
		return "", nil
	}
	return tds[0], resource(tpl, tds[0])
}

// checkForensicsRoles: the Lambda's and the task's roles allow every action
// of forensics-policy.json and assuming the member role; the Lambda's also
// runs and watches the task and passes only the task's roles.
func checkForensicsRoles(tpl map[string]any, forensics policyFile) []string {
	fnID, fn := lambdaFunction(tpl)
	tdID, td := taskDefinition(tpl)
	if fn == nil || td == nil {
		return []string{"want one Lambda function and one task definition"}
	}
	roles := map[string]string{
		"Lambda " + fnID:         refTo(get(fn, "Properties", "Role")),
		"task " + tdID:           refTo(get(td, "Properties", "TaskRoleArn")),
		"task execution " + tdID: refTo(get(td, "Properties", "ExecutionRoleArn")),
	}
	var problems []string
	want := forensics.actions()
	want["sts:AssumeRole"] = true
	for _, who := range []string{"Lambda " + fnID, "task " + tdID} {
		roleID := roles[who]
		if resource(tpl, roleID) == nil {
			problems = append(problems, fmt.Sprintf("the %s's role %q is not a resource of the template", who, roleID))
			continue
		}
		ss := roleStatements(tpl, roleID)
		if m := setDiff(want, allowedActions(ss)); len(m) > 0 {
			problems = append(problems, fmt.Sprintf("the %s's role %s lacks %v", who, roleID, m))
		}
		for _, s := range ss {
			if slices.Contains(s.actions(), "sts:AssumeRole") {
				for _, r := range list(s.m["Resource"]) {
					if sub := str(get(r, "Fn::Sub")); !strings.HasSuffix(sub, ":role/${MemberRoleName}") {
						problems = append(problems, fmt.Sprintf("%s: sts:AssumeRole on %v, want only role/${MemberRoleName}", s.where, r))
					}
				}
			}
		}
	}

	lambdaRole := roles["Lambda "+fnID]
	ss := roleStatements(tpl, lambdaRole)
	got := allowedActions(ss)
	for _, a := range []string{"ecs:RunTask", "ecs:DescribeTasks", "iam:PassRole"} {
		if !got[a] {
			problems = append(problems, fmt.Sprintf("the Lambda's role %s lacks %s", lambdaRole, a))
		}
	}
	for _, s := range ss {
		if !slices.Contains(s.actions(), "iam:PassRole") {
			continue
		}
		var passed []string
		for _, r := range list(s.m["Resource"]) {
			passed = append(passed, refTo(r))
		}
		wantPassed := []string{roles["task "+tdID], roles["task execution "+tdID]}
		if !slices.Equal(sorted(passed), sorted(wantPassed)) {
			problems = append(problems, fmt.Sprintf("%s: iam:PassRole on %v, want only the task's roles %v", s.where, passed, wantPassed))
		}
	}
	return problems
}

// checkNoStar: no statement of any policy allows or denies the action "*",
// and no identity policy allows a wildcard action.
func checkNoStar(tpl map[string]any) []string {
	var problems []string
	ids := make([]string, 0)
	for id := range get(tpl, "Resources").(map[string]any) {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	identity := map[string]bool{"AWS::IAM::Role": true, "AWS::IAM::Policy": true, "AWS::IAM::ManagedPolicy": true}
	for _, id := range ids {
		r := resource(tpl, id)
		var walk func(where string, v any)
		walk = func(where string, v any) {
			switch x := v.(type) {
			case map[string]any:
				for k, e := range x {
					if k == "PolicyDocument" || k == "KeyPolicy" || k == "AssumeRolePolicyDocument" {
						for _, s := range statementsOf(where+"/"+k, e) {
							if _, ok := s.m["NotAction"]; ok {
								problems = append(problems, fmt.Sprintf("%s: NotAction", s.where))
							}
							for _, a := range s.actions() {
								switch {
								case a == "*" || a == "*:*":
									problems = append(problems, fmt.Sprintf("%s: action %q", s.where, a))
								case identity[str(r["Type"])] && k == "PolicyDocument" && s.m["Effect"] == "Allow" && strings.Contains(a, "*"):
									problems = append(problems, fmt.Sprintf("%s: wildcard action %q in an identity policy", s.where, a))
								}
							}
						}
					}
					walk(where, e)
				}
			case []any:
				for _, e := range x {
					walk(where, e)
				}
			}
		}
		walk(id, r)
	}
	return problems
}

// checkVault: an Object Lock bucket with default COMPLIANCE retention,
// versioning, encryption, public access blocked, retained on delete, and a
// policy with impound's deny statements; every KMS key retained; the
// signing key an ECC_NIST_P256 signing key.
func checkVault(tpl map[string]any) []string {
	var problems []string
	var vault string
	for _, id := range resources(tpl, "AWS::S3::Bucket") {
		if get(resource(tpl, id), "Properties", "ObjectLockEnabled") == true {
			vault = id
		}
	}
	if vault == "" {
		return []string{"no bucket with ObjectLockEnabled: true"}
	}
	b := resource(tpl, vault)
	p := get(b, "Properties")
	if v := get(p, "ObjectLockConfiguration", "ObjectLockEnabled"); v != "Enabled" {
		problems = append(problems, fmt.Sprintf("%s: ObjectLockConfiguration.ObjectLockEnabled %v, want Enabled", vault, v))
	}
	if v := get(p, "ObjectLockConfiguration", "Rule", "DefaultRetention", "Mode"); v != "COMPLIANCE" {
		problems = append(problems, fmt.Sprintf("%s: default retention mode %v, want COMPLIANCE", vault, v))
	}
	if get(p, "ObjectLockConfiguration", "Rule", "DefaultRetention", "Days") == nil {
		problems = append(problems, fmt.Sprintf("%s: no default retention days", vault))
	}
	if v := get(p, "VersioningConfiguration", "Status"); v != "Enabled" {
		problems = append(problems, fmt.Sprintf("%s: versioning %v", vault, v))
	}
	if get(p, "BucketEncryption", "ServerSideEncryptionConfiguration") == nil {
		problems = append(problems, fmt.Sprintf("%s: no default encryption", vault))
	}
	for _, k := range []string{"BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"} {
		if get(p, "PublicAccessBlockConfiguration", k) != true {
			problems = append(problems, fmt.Sprintf("%s: PublicAccessBlockConfiguration.%s is not true", vault, k))
		}
	}
	retained := func(id string) {
		r := resource(tpl, id)
		if r["DeletionPolicy"] != "Retain" || r["UpdateReplacePolicy"] != "Retain" {
			problems = append(problems, fmt.Sprintf("%s: DeletionPolicy %v, UpdateReplacePolicy %v, want Retain", id, r["DeletionPolicy"], r["UpdateReplacePolicy"]))
		}
	}
	retained(vault)

	var policy []statement
	for _, id := range resources(tpl, "AWS::S3::BucketPolicy") {
		if refTo(get(resource(tpl, id), "Properties", "Bucket")) == vault {
			policy = append(policy, statementsOf(id, get(resource(tpl, id), "Properties", "PolicyDocument"))...)
		}
	}
	denied := map[string]bool{}
	sids := map[string]bool{}
	for _, s := range policy {
		if s.m["Effect"] != "Deny" || s.m["Principal"] != "*" {
			continue
		}
		sids[str(s.m["Sid"])] = true
		if s.m["Condition"] == nil {
			for _, a := range s.actions() {
				denied[a] = true
			}
		}
		if str(s.m["Sid"]) == sidDenyNoTLS && str(get(s.m["Condition"], "Bool", "aws:SecureTransport")) != "false" {
			problems = append(problems, fmt.Sprintf("%s: does not deny aws:SecureTransport false", s.where))
		}
	}
	for _, a := range []string{"s3:DeleteObjectVersion", "s3:BypassGovernanceRetention", "s3:PutBucketObjectLockConfiguration"} {
		if !denied[a] {
			problems = append(problems, fmt.Sprintf("the vault's policy does not deny %s to everyone", a))
		}
	}
	for _, sid := range []string{sidDenyDelete, sidDenyNoTLS} {
		if !sids[sid] {
			problems = append(problems, fmt.Sprintf("the vault's policy has no Deny statement %s (impound vault check looks for it)", sid))
		}
	}

	signing := 0
	for _, id := range resources(tpl, "AWS::KMS::Key") {
		retained(id)
		kp := get(resource(tpl, id), "Properties")
		if get(kp, "KeySpec") == "ECC_NIST_P256" && get(kp, "KeyUsage") == "SIGN_VERIFY" {
			signing++
		}
	}
	if signing != 1 {
		problems = append(problems, fmt.Sprintf("%d ECC_NIST_P256 SIGN_VERIFY keys, want 1", signing))
	}
	return problems
}

// checkLambda: the function's environment is exactly the contract, with the
// values the contract fixes, and its runtime is the custom arm64 one.
func checkLambda(tpl map[string]any) []string {
	fnID, fn := lambdaFunction(tpl)
	if fn == nil {
		return []string{"want one Lambda function"}
	}
	_, td := taskDefinition(tpl)
	var problems []string
	vars, _ := get(fn, "Properties", "Environment", "Variables").(map[string]any)
	got := map[string]bool{}
	for k := range vars {
		got[k] = true
	}
	want := map[string]bool{}
	for _, k := range lambdaEnv() {
		want[k] = true
	}
	if m := setDiff(want, got); len(m) > 0 {
		problems = append(problems, fmt.Sprintf("%s: environment lacks %v", fnID, m))
	}
	if x := setDiff(got, want); len(x) > 0 {
		problems = append(problems, fmt.Sprintf("%s: environment has %v, not in the contract", fnID, x))
	}
	if v := get(vars, "IMPOUND_VAULT", "Fn::Sub"); v != "s3://${"+vaultID(tpl)+"}" {
		problems = append(problems, fmt.Sprintf("%s: IMPOUND_VAULT %v, want s3://<the vault>", fnID, vars["IMPOUND_VAULT"]))
	}
	if v := str(get(vars, "IMPOUND_SIGNING_KEY", "Fn::Sub")); !strings.HasPrefix(v, "awskms:///${") || !strings.HasSuffix(v, ".Arn}") {
		problems = append(problems, fmt.Sprintf("%s: IMPOUND_SIGNING_KEY %v, want awskms:///<key ARN>", fnID, vars["IMPOUND_SIGNING_KEY"]))
	}
	if v, ok := vars["IMPOUND_FORENSICS_ROLE_ARN"]; ok && v != "" {
		problems = append(problems, fmt.Sprintf("%s: IMPOUND_FORENSICS_ROLE_ARN %v, want empty", fnID, v))
	}
	containers := list(get(td, "Properties", "ContainerDefinitions"))
	if len(containers) != 1 || get(containers[0], "Name") != "impound" || vars["IMPOUND_ACQUIRE_CONTAINER"] != "impound" {
		problems = append(problems, fmt.Sprintf("IMPOUND_ACQUIRE_CONTAINER %v and the task's containers %v: want one, impound", vars["IMPOUND_ACQUIRE_CONTAINER"], containers))
	}
	p := get(fn, "Properties")
	for k, want := range map[string]any{"Runtime": "provided.al2023", "Handler": "bootstrap", "Timeout": 900} {
		if got := get(p, k); got != want {
			problems = append(problems, fmt.Sprintf("%s: %s %v, want %v", fnID, k, got, want))
		}
	}
	if a := strs(get(p, "Architectures")); !slices.Equal(a, []string{"arm64"}) {
		problems = append(problems, fmt.Sprintf("%s: Architectures %v, want [arm64]", fnID, a))
	}
	if get(p, "ReservedConcurrentExecutions") == nil {
		problems = append(problems, fmt.Sprintf("%s: no reserved concurrency", fnID))
	}
	var dlq []string
	for _, id := range resources(tpl, "AWS::Lambda::EventInvokeConfig") {
		ic := get(resource(tpl, id), "Properties")
		if refTo(get(ic, "FunctionName")) != fnID || get(ic, "MaximumRetryAttempts") == nil {
			continue
		}
		if q := refTo(get(ic, "DestinationConfig", "OnFailure", "Destination")); get(resource(tpl, q), "Type") == "AWS::SQS::Queue" {
			dlq = append(dlq, q)
		}
	}
	if len(dlq) != 1 {
		problems = append(problems, fmt.Sprintf("%s: want one EventInvokeConfig with MaximumRetryAttempts and an SQS queue on failure, found %v", fnID, dlq))
	}
	return problems
}

// checkTask: the acquisition task is a Fargate task whose one container,
// impound, gets the signing key in its environment and logs through
// awslogs, in a security group that lets nothing in and only HTTPS out.
func checkTask(tpl map[string]any) []string {
	tdID, td := taskDefinition(tpl)
	if td == nil {
		return []string{"want one task definition"}
	}
	var problems []string
	p := get(td, "Properties")
	if c := strs(get(p, "RequiresCompatibilities")); !slices.Equal(c, []string{"FARGATE"}) || get(p, "NetworkMode") != "awsvpc" {
		problems = append(problems, fmt.Sprintf("%s: RequiresCompatibilities %v, NetworkMode %v, want [FARGATE] awsvpc", tdID, c, get(p, "NetworkMode")))
	}
	for _, c := range list(get(p, "ContainerDefinitions")) {
		env := map[string]any{}
		for _, e := range list(get(c, "Environment")) {
			env[str(get(e, "Name"))] = get(e, "Value")
		}
		if v := str(get(env["IMPOUND_SIGNING_KEY"], "Fn::Sub")); !strings.HasPrefix(v, "awskms:///") {
			problems = append(problems, fmt.Sprintf("%s: container %v: IMPOUND_SIGNING_KEY %v, want awskms:///<key ARN>", tdID, get(c, "Name"), env["IMPOUND_SIGNING_KEY"]))
		}
		if get(c, "LogConfiguration", "LogDriver") != "awslogs" {
			problems = append(problems, fmt.Sprintf("%s: container %v does not log through awslogs", tdID, get(c, "Name")))
		}
	}
	fnID, fn := lambdaFunction(tpl)
	sgID := refTo(get(fn, "Properties", "Environment", "Variables", "IMPOUND_ACQUIRE_SECURITY_GROUPS"))
	sg := get(resource(tpl, sgID), "Properties")
	if sg == nil {
		return append(problems, fmt.Sprintf("%s: IMPOUND_ACQUIRE_SECURITY_GROUPS is not a security group of the template", fnID))
	}
	if in := get(sg, "SecurityGroupIngress"); in != nil {
		problems = append(problems, fmt.Sprintf("%s: ingress %v, want none", sgID, in))
	}
	egress := list(get(sg, "SecurityGroupEgress"))
	if len(egress) == 0 {
		problems = append(problems, fmt.Sprintf("%s: no egress rules (the default allows everything out)", sgID))
	}
	for _, e := range egress {
		if get(e, "IpProtocol") != "tcp" || get(e, "FromPort") != 443 || get(e, "ToPort") != 443 {
			problems = append(problems, fmt.Sprintf("%s: egress %v, want HTTPS only", sgID, e))
		}
	}
	return problems
}

func vaultID(tpl map[string]any) string {
	for _, id := range resources(tpl, "AWS::S3::Bucket") {
		if get(resource(tpl, id), "Properties", "ObjectLockEnabled") == true {
			return id
		}
	}
	return ""
}

// eventPattern returns a rule's pattern, substituting parameters' defaults
// into a Fn::Sub string.
func eventPattern(tpl map[string]any, ruleID string) (map[string]any, error) {
	p := get(resource(tpl, ruleID), "Properties", "EventPattern")
	if sub, ok := get(p, "Fn::Sub").(string); ok {
		for name, param := range get(tpl, "Parameters").(map[string]any) {
			sub = strings.ReplaceAll(sub, "${"+name+"}", fmt.Sprint(get(param, "Default")))
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(sub), &m); err != nil {
			return nil, fmt.Errorf("rule %s: pattern: %w", ruleID, err)
		}
		return m, nil
	}
	if s, ok := p.(string); ok {
		var m map[string]any
		err := json.Unmarshal([]byte(s), &m)
		return m, err
	}
	m, _ := normalJSONMap(p)
	return m, nil
}

func normalJSONMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

// checkRule: one rule sends GuardDuty findings on instances to the Lambda;
// its pattern names the source, detail-type and resource type, and
// matches or drops sample events as it should.
func checkRule(tpl map[string]any) []string {
	rules := resources(tpl, "AWS::Events::Rule")
	if len(rules) != 1 {
		return []string{fmt.Sprintf("want one EventBridge rule, found %v", rules)}
	}
	id := rules[0]
	pat, err := eventPattern(tpl, id)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	for path, want := range map[string][]string{
		"source":                       {"aws.guardduty"},
		"detail-type":                  {"GuardDuty Finding"},
		"detail.resource.resourceType": {"Instance"},
	} {
		if got := strs(get(pat, strings.Split(path, ".")...)); !slices.Equal(got, want) {
			problems = append(problems, fmt.Sprintf("rule %s: %s %v, want %v", id, path, got, want))
		}
	}
	fnID, _ := lambdaFunction(tpl)
	targets := list(get(resource(tpl, id), "Properties", "Targets"))
	if len(targets) != 1 || refTo(get(targets[0], "Arn")) != fnID {
		problems = append(problems, fmt.Sprintf("rule %s: targets %v, want the function %s", id, targets, fnID))
	}

	for _, c := range findingCases(tpl) {
		if got := matchPattern(pat, c.event); got != c.want {
			problems = append(problems, fmt.Sprintf("rule %s: %s: matched %v, want %v", id, c.name, got, c.want))
		}
	}
	return problems
}

type patternCase struct {
	name  string
	event map[string]any
	want  bool
}

// findingCases are GuardDuty events around the template's default
// MinSeverity, and whether the rule must match them.
func findingCases(tpl map[string]any) []patternCase {
	minSev, _ := strconv.ParseFloat(fmt.Sprint(get(tpl, "Parameters", "MinSeverity", "Default")), 64)
	finding := func(severity float64, sample any) map[string]any {
		info := map[string]any{"threatListName": "ProofPoint"}
		if sample != nil {
			info["sample"] = sample
		}
		return map[string]any{
			"version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602", "account": "222222222222",
			"time": "2026-11-21T14:00:00Z", "region": "eu-west-1", "resources": []any{},
			"source": "aws.guardduty", "detail-type": "GuardDuty Finding",
			"detail": map[string]any{
				"type": "Backdoor:EC2/C&CActivity.B", "severity": severity, "accountId": "111111111111",
				"resource": map[string]any{"resourceType": "Instance", "instanceDetails": map[string]any{"instanceId": "i-0abc"}},
				"service":  map[string]any{"additionalInfo": info, "count": 1.0},
			},
		}
	}
	s3Finding := finding(minSev+1, nil)
	s3Finding["detail"].(map[string]any)["resource"] = map[string]any{"resourceType": "S3Bucket"}
	return []patternCase{
		{"a real finding at MinSeverity", finding(minSev, nil), true},
		{"a real finding above MinSeverity with sample false", finding(minSev+0.5, false), true},
		{"a sample finding", finding(minSev+1, true), false},
		{"a finding below MinSeverity", finding(minSev-0.1, nil), false},
		{"a finding on an S3 bucket", s3Finding, false},
	}
}

// matchPattern implements the part of EventBridge's pattern language the
// templates use: exact values, numeric ranges, exists, and $or.
func matchPattern(pattern, event map[string]any) bool {
	for k, p := range pattern {
		if k == "$or" {
			matched := false
			for _, alt := range list(p) {
				if m, ok := alt.(map[string]any); ok && matchPattern(m, event) {
					matched = true
				}
			}
			if !matched {
				return false
			}
			continue
		}
		v, present := event[k]
		switch pp := p.(type) {
		case map[string]any:
			sub, _ := v.(map[string]any)
			if sub == nil {
				sub = map[string]any{}
			}
			if !matchPattern(pp, sub) {
				return false
			}
		case []any:
			if !matchValue(pp, v, present) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func matchValue(alts []any, v any, present bool) bool {
	for _, a := range alts {
		switch m := a.(type) {
		case map[string]any:
			if e, ok := m["exists"]; ok && e == present {
				return true
			}
			if n, ok := m["numeric"].([]any); ok && present {
				f, isNum := v.(float64)
				okAll := isNum
				for i := 0; okAll && i+1 < len(n); i += 2 {
					bound, _ := n[i+1].(float64)
					switch n[i] {
					case ">=":
						okAll = f >= bound
					case ">":
						okAll = f > bound
					case "<=":
						okAll = f <= bound
					case "<":
						okAll = f < bound
					case "=":
						okAll = f == bound
					default:
						okAll = false
					}
				}
				if okAll {
					return true
				}
			}
		default:
			if present && reflect.DeepEqual(a, v) {
				return true
			}
		}
	}
	return false
}

// checkTrust: the member role trusts the forensics template's Lambda and
// task roles (by name and path, Region generalised), and the two
// templates agree on the member role's name and the transfer key's alias.
func checkTrust(forensics, member map[string]any) []string {
	var problems []string
	roles := resources(member, "AWS::IAM::Role")
	if len(roles) != 1 {
		return []string{fmt.Sprintf("member template: want one role, found %v", roles)}
	}
	mr := resource(member, roles[0])
	var trusted []string
	for _, s := range statementsOf(roles[0]+"/trust", get(mr, "Properties", "AssumeRolePolicyDocument")) {
		var conds []any
		for _, c := range branches(s.m["Condition"]) {
			conds = append(conds, c)
		}
		for _, c := range conds {
			for _, p := range list(get(c, "ArnLike", "aws:PrincipalArn")) {
				trusted = append(trusted, str(get(p, "Fn::Sub")))
			}
		}
	}
	fnID, fn := lambdaFunction(forensics)
	tdID, td := taskDefinition(forensics)
	for who, roleID := range map[string]string{
		fnID: refTo(get(fn, "Properties", "Role")),
		tdID: refTo(get(td, "Properties", "TaskRoleArn")),
	} {
		rp := get(resource(forensics, roleID), "Properties")
		name := str(get(rp, "RoleName", "Fn::Sub"))
		if name == "" {
			name = str(get(rp, "RoleName"))
		}
		path := str(get(rp, "Path"))
		if name == "" {
			problems = append(problems, fmt.Sprintf("forensics role %s (of %s) has no fixed RoleName the member role can trust", roleID, who))
			continue
		}
		arn := "arn:${AWS::Partition}:iam::${ForensicsAccountId}:role" + path + strings.ReplaceAll(name, "${AWS::Region}", "*")
		if !slices.Contains(trusted, arn) {
			problems = append(problems, fmt.Sprintf("the member role does not trust %s (role %s of %s); it trusts %v", arn, roleID, who, trusted))
		}
	}
	if a, b := get(forensics, "Parameters", "MemberRoleName", "Default"), get(member, "Parameters", "RoleName", "Default"); a != b {
		problems = append(problems, fmt.Sprintf("MemberRoleName default %v, member RoleName default %v", a, b))
	}
	if p := get(mr, "Properties", "Path"); p != nil && p != "/" {
		problems = append(problems, fmt.Sprintf("member role path %v: the forensics side assumes role/<name>", p))
	}
	var aliases []string
	for _, id := range resources(member, "AWS::KMS::Alias") {
		aliases = append(aliases, str(get(resource(member, id), "Properties", "AliasName")))
	}
	if d := str(get(forensics, "Parameters", "MemberKmsKey", "Default")); !slices.Contains(aliases, d) {
		problems = append(problems, fmt.Sprintf("MemberKmsKey default %q is not an alias of the member template %v", d, aliases))
	}
	return problems
}

// ---------------------------------------------------------------- tests

func memberPolicies(t *testing.T) map[string]policyFile {
	return map[string]policyFile{
		"isolate-policy.json":         loadPolicy(t, "isolate-policy.json"),
		"member-evidence-policy.json": loadPolicy(t, "member-evidence-policy.json"),
	}
}

func TestMemberRoleMatchesTheIAMPolicies(t *testing.T) {
	reportProblems(t, memberTemplate, checkMemberRole(load(t, memberTemplate), memberPolicies(t)))
}

func TestForensicsRolesCoverTheForensicsPolicy(t *testing.T) {
	reportProblems(t, forensicsTemplate, checkForensicsRoles(load(t, forensicsTemplate), loadPolicy(t, "forensics-policy.json")))
}

func TestNoStatementAllowsEverything(t *testing.T) {
	for _, p := range []string{forensicsTemplate, memberTemplate} {
		reportProblems(t, p, checkNoStar(load(t, p)))
	}
}

func TestVaultIsWriteOnce(t *testing.T) {
	reportProblems(t, forensicsTemplate, checkVault(load(t, forensicsTemplate)))
}

func TestLambdaEnvironmentIsTheContract(t *testing.T) {
	reportProblems(t, forensicsTemplate, checkLambda(load(t, forensicsTemplate)))
}

func TestAcquisitionTask(t *testing.T) {
	reportProblems(t, forensicsTemplate, checkTask(load(t, forensicsTemplate)))
}

func TestGuardDutyRule(t *testing.T) {
	reportProblems(t, forensicsTemplate, checkRule(load(t, forensicsTemplate)))
}

// The rule's pattern as moto's EventBridge judges it (an implementation of
// the pattern language independent of matchPattern): a rule with the
// pattern sends to a queue, and each case's event must arrive or not.
func TestGuardDutyRuleOnMoto(t *testing.T) {
	ep := testenv.Server(t, "IMPOUND_TEST_MOTO_ENDPOINT")
	tpl := load(t, forensicsTemplate)
	rules := resources(tpl, "AWS::Events::Rule")
	if len(rules) != 1 {
		t.Fatalf("want one rule, found %v", rules)
	}
	pat, err := eventPattern(tpl, rules[0])
	if err != nil {
		t.Fatal(err)
	}
	patJSON, _ := json.Marshal(pat)
	for i, c := range findingCases(tpl) {
		name := fmt.Sprintf("impound-deploy-test-%d-%d", os.Getpid(), i)
		q := motoCall(t, ep, "sqs", "1.0", "AmazonSQS.CreateQueue", map[string]any{"QueueName": name})
		queueURL := str(q["QueueUrl"])
		a := motoCall(t, ep, "sqs", "1.0", "AmazonSQS.GetQueueAttributes", map[string]any{"QueueUrl": queueURL, "AttributeNames": []string{"QueueArn"}})
		queueARN := str(get(a, "Attributes", "QueueArn"))
		motoCall(t, ep, "events", "1.1", "AWSEvents.PutRule", map[string]any{"Name": name, "EventPattern": string(patJSON)})
		motoCall(t, ep, "events", "1.1", "AWSEvents.PutTargets", map[string]any{"Rule": name, "Targets": []any{map[string]any{"Id": "queue", "Arn": queueARN}}})
		detail, _ := json.Marshal(c.event["detail"])
		out := motoCall(t, ep, "events", "1.1", "AWSEvents.PutEvents", map[string]any{"Entries": []any{map[string]any{
			"Source": c.event["source"], "DetailType": c.event["detail-type"], "Detail": string(detail)}}})
		if n, _ := out["FailedEntryCount"].(float64); n != 0 {
			t.Fatalf("%s: moto PutEvents: %v", c.name, out)
		}
		r := motoCall(t, ep, "sqs", "1.0", "AmazonSQS.ReceiveMessage", map[string]any{"QueueUrl": queueURL, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0})
		if got := len(list(r["Messages"])) > 0; got != c.want {
			t.Errorf("%s: moto's rule delivered it: %v, want %v", c.name, got, c.want)
		}
		motoCall(t, ep, "events", "1.1", "AWSEvents.RemoveTargets", map[string]any{"Rule": name, "Ids": []string{"queue"}})
		motoCall(t, ep, "events", "1.1", "AWSEvents.DeleteRule", map[string]any{"Name": name})
		motoCall(t, ep, "sqs", "1.0", "AmazonSQS.DeleteQueue", map[string]any{"QueueUrl": queueURL})
	}
}

// motoCall makes one AWS JSON-protocol call to moto (which checks no
// signature) and returns the decoded answer.
func motoCall(t *testing.T, endpoint, service, jsonVersion, target string, in map[string]any) map[string]any {
	t.Helper()
	body, _ := json.Marshal(in)
	req, err := http.NewRequest(http.MethodPost, endpoint+"/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-"+jsonVersion)
	req.Header.Set("X-Amz-Target", target)
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20261121/us-east-1/"+service+"/aws4_request, SignedHeaders=host, Signature=0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("moto %s: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("moto %s: %s: %s", target, resp.Status, b)
	}
	out := map[string]any{}
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("moto %s: %v: %s", target, err, b)
		}
	}
	return out
}

func TestMemberRoleTrustsTheForensicsRoles(t *testing.T) {
	reportProblems(t, "templates", checkTrust(load(t, forensicsTemplate), load(t, memberTemplate)))
}

// Each check must catch a template that breaks what it checks: the
// templates are loaded afresh, changed, and the check must name the change.
func TestChecksCatchBrokenTemplates(t *testing.T) {
	forensicsPolicy := loadPolicy(t, "forensics-policy.json")
	policies := memberPolicies(t)
	setActions := func(tpl map[string]any, res, policy, sid string, f func([]string) []string) {
		t.Helper()
		var docs []any
		r := resource(tpl, res)
		if policy == "" {
			docs = append(docs, get(r, "Properties", "PolicyDocument"))
		}
		for _, p := range list(get(r, "Properties", "Policies")) {
			if get(p, "PolicyName") == policy {
				docs = append(docs, get(p, "PolicyDocument"))
			}
		}
		for _, d := range docs {
			for _, s := range list(get(d, "Statement")) {
				if m, ok := s.(map[string]any); ok && m["Sid"] == sid {
					var out []any
					for _, a := range f(strs(m["Action"])) {
						out = append(out, a)
					}
					m["Action"] = out
					return
				}
			}
		}
		t.Fatalf("statement %s of %s/%s not found", sid, res, policy)
	}
	drop := func(a string) func([]string) []string {
		return func(s []string) []string { return slices.DeleteFunc(s, func(x string) bool { return x == a }) }
	}
	add := func(a string) func([]string) []string {
		return func(s []string) []string { return append(s, a) }
	}
	cases := []struct {
		name     string
		template string
		mutate   func(map[string]any)
		check    func(f, m map[string]any) []string
		want     string
	}{
		{"member role loses an action", memberTemplate,
			func(m map[string]any) {
				setActions(m, "ResponderRole", "impound-member-evidence", "DeleteOnlyImpoundsOwnIntermediateCopies", drop("ec2:DeleteSnapshot"))
			},
			func(_, m map[string]any) []string { return checkMemberRole(m, policies) }, "lacks actions [ec2:DeleteSnapshot]"},
		{"member role gains an action", memberTemplate,
			func(m map[string]any) {
				setActions(m, "ResponderRole", "impound-isolate", "ReadInstanceProfiles", add("iam:PassRole"))
			},
			func(_, m map[string]any) []string { return checkMemberRole(m, policies) }, "ReadInstanceProfiles: actions [iam:GetInstanceProfile iam:PassRole]"},
		{"member role statement loses its condition", memberTemplate,
			func(m map[string]any) {
				for _, p := range list(get(resource(m, "ResponderRole"), "Properties", "Policies")) {
					for _, s := range list(get(p, "PolicyDocument", "Statement")) {
						if get(s, "Sid") == "EditOnlyImpoundsOwnGroups" {
							delete(s.(map[string]any), "Condition")
						}
					}
				}
			},
			func(_, m map[string]any) []string { return checkMemberRole(m, policies) }, "EditOnlyImpoundsOwnGroups: condition"},
		{"forensics policy loses kms:Sign", forensicsTemplate,
			func(f map[string]any) { setActions(f, "ForensicsPolicy", "", "SignTheLedgerWithKMS", drop("kms:Sign")) },
			func(f, _ map[string]any) []string { return checkForensicsRoles(f, forensicsPolicy) }, "lacks [kms:Sign]"},
		{"Lambda may pass any role", forensicsTemplate,
			func(f map[string]any) {
				for _, s := range list(get(resource(f, "GuardDutyFunctionPolicy"), "Properties", "PolicyDocument", "Statement")) {
					if get(s, "Sid") == "PassOnlyTheTaskRoles" {
						s.(map[string]any)["Resource"] = append(list(get(s, "Resource")), map[string]any{"Fn::GetAtt": []any{"GuardDutyFunctionRole", "Arn"}})
					}
				}
			},
			func(f, _ map[string]any) []string { return checkForensicsRoles(f, forensicsPolicy) }, "iam:PassRole on"},
		{"a statement allows *", forensicsTemplate,
			func(f map[string]any) { setActions(f, "GuardDutyFunctionPolicy", "", "WriteTheFunctionLogs", add("*")) },
			func(f, _ map[string]any) []string { return checkNoStar(f) }, `action "*"`},
		{"an identity policy allows s3:*", memberTemplate,
			func(m map[string]any) {
				setActions(m, "ResponderRole", "impound-isolate", "ReadInstanceProfiles", add("s3:*"))
			},
			func(_, m map[string]any) []string { return checkNoStar(m) }, `wildcard action "s3:*"`},
		{"the vault without Object Lock", forensicsTemplate,
			func(f map[string]any) {
				delete(get(resource(f, "VaultBucket"), "Properties", "ObjectLockConfiguration", "Rule", "DefaultRetention").(map[string]any), "Days")
			},
			func(f, _ map[string]any) []string { return checkVault(f) }, "no default retention days"},
		{"the vault may be emptied", forensicsTemplate,
			func(f map[string]any) {
				setActions(f, "VaultBucketPolicy", "", sidDenyDelete, drop("s3:BypassGovernanceRetention"))
			},
			func(f, _ map[string]any) []string { return checkVault(f) }, "does not deny s3:BypassGovernanceRetention"},
		{"a key deleted with the stack", forensicsTemplate,
			func(f map[string]any) { delete(resource(f, "SigningKey"), "DeletionPolicy") },
			func(f, _ map[string]any) []string { return checkVault(f) }, "SigningKey: DeletionPolicy"},
		{"the Lambda loses a variable", forensicsTemplate,
			func(f map[string]any) {
				delete(get(resource(f, "GuardDutyFunction"), "Properties", "Environment", "Variables").(map[string]any), "IMPOUND_ACQUIRE_SUBNETS")
			},
			func(f, _ map[string]any) []string { return checkLambda(f) }, "environment lacks [IMPOUND_ACQUIRE_SUBNETS]"},
		{"the Lambda gains a variable", forensicsTemplate,
			func(f map[string]any) {
				get(resource(f, "GuardDutyFunction"), "Properties", "Environment", "Variables").(map[string]any)["IMPOUND_VAULT_URI"] = "x"
			},
			func(f, _ map[string]any) []string { return checkLambda(f) }, "environment has [IMPOUND_VAULT_URI]"},
		{"the task may reach anything", forensicsTemplate,
			func(f map[string]any) {
				e := list(get(resource(f, "AcquireSecurityGroup"), "Properties", "SecurityGroupEgress"))[0].(map[string]any)
				e["IpProtocol"], e["FromPort"], e["ToPort"] = "-1", -1, -1
			},
			func(f, _ map[string]any) []string { return checkTask(f) }, "want HTTPS only"},
		{"the Lambda without a dead-letter queue", forensicsTemplate,
			func(f map[string]any) {
				delete(get(resource(f, "GuardDutyFunctionInvokeConfig"), "Properties").(map[string]any), "DestinationConfig")
			},
			func(f, _ map[string]any) []string { return checkLambda(f) }, "an SQS queue on failure"},
		{"the rule matches sample findings", forensicsTemplate,
			func(f map[string]any) {
				p := get(resource(f, "GuardDutyFindingRule"), "Properties").(map[string]any)
				sub := p["EventPattern"].(map[string]any)["Fn::Sub"].(string)
				p["EventPattern"] = map[string]any{"Fn::Sub": strings.Replace(sub, `"sample": [false]`, `"sample": [false, true]`, 1)}
			},
			func(f, _ map[string]any) []string { return checkRule(f) }, "a sample finding: matched true"},
		{"the rule takes every resource type", forensicsTemplate,
			func(f map[string]any) {
				p := get(resource(f, "GuardDutyFindingRule"), "Properties").(map[string]any)
				sub := p["EventPattern"].(map[string]any)["Fn::Sub"].(string)
				p["EventPattern"] = map[string]any{"Fn::Sub": strings.Replace(sub, `"resource": {"resourceType": ["Instance"]},`, "", 1)}
			},
			func(f, _ map[string]any) []string { return checkRule(f) }, "detail.resource.resourceType [], want [Instance]"},
		{"the Lambda role renamed", forensicsTemplate,
			func(f map[string]any) {
				get(resource(f, "GuardDutyFunctionRole"), "Properties").(map[string]any)["RoleName"] = map[string]any{"Fn::Sub": "impound-lambda-${AWS::Region}"}
			},
			func(f, m map[string]any) []string { return checkTrust(f, m) }, "does not trust arn:${AWS::Partition}:iam::${ForensicsAccountId}:role/impound/impound-lambda-*"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, m := load(t, forensicsTemplate), load(t, memberTemplate)
			if c.template == forensicsTemplate {
				c.mutate(f)
			} else {
				c.mutate(m)
			}
			problems := c.check(f, m)
			found := false
			for _, p := range problems {
				found = found || strings.Contains(p, c.want)
			}
			if !found {
				t.Errorf("want a problem containing %q, got %q", c.want, problems)
			}
		})
	}
}

func TestShortTagsBecomeLongForms(t *testing.T) {
	var doc yaml.Node
	src := "a: !Ref X\nb: !GetAtt R.Arn\nc: !Sub 's3://${B}'\nd: !If [C, 1, !Ref AWS::NoValue]\ne: !Join [',', !Ref L]\nf: 900\ng: true\n"
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	got, err := fromNode(&doc)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"a": map[string]any{"Ref": "X"},
		"b": map[string]any{"Fn::GetAtt": []any{"R", "Arn"}},
		"c": map[string]any{"Fn::Sub": "s3://${B}"},
		"d": map[string]any{"Fn::If": []any{"C", 1, map[string]any{"Ref": "AWS::NoValue"}}},
		"e": map[string]any{"Fn::Join": []any{",", map[string]any{"Ref": "L"}}},
		"f": 900,
		"g": true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v\nwant %#v", got, want)
	}
}
