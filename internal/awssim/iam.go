package awssim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// iamAccount is one account's IAM: roles and instance profiles. IAM is
// global; the simulator serves it in its one Region.
type iamAccount struct {
	roles    map[string]*iamRole    // by name
	profiles map[string]*iamProfile // by name
	policies map[string]*iamPolicy  // customer managed, by ARN
}

type iamRole struct {
	name, id, path, arn, assume, description string
	created                                  time.Time
	inline                                   map[string]string // name → document (plain JSON)
	attached                                 []string          // policy ARNs in attachment order
	tags                                     map[string]string
}

type iamProfile struct {
	name, id, path, arn string
	created             time.Time
	roles               []string
	tags                map[string]string
}

type iamPolicy struct{ name, arn, document string }

func (s *Sim) iamLocked(acct string) *iamAccount {
	ia := s.iam[acct]
	if ia == nil {
		ia = &iamAccount{roles: map[string]*iamRole{}, profiles: map[string]*iamProfile{}, policies: map[string]*iamPolicy{}}
		s.iam[acct] = ia
	}
	return ia
}

func iamService() *service {
	return &service{
		name:       "iam",
		protocol:   protoQuery,
		xmlns:      "https://iam.amazonaws.com/doc/2010-05-08/",
		throttle:   apiError{status: http.StatusBadRequest, code: "Throttling", message: "Rate exceeded"},
		badSig:     apiError{status: http.StatusForbidden, code: "SignatureDoesNotMatch"},
		authFailed: apiError{status: http.StatusForbidden, code: "InvalidClientTokenId"},
		expired:    apiError{status: http.StatusForbidden, code: "ExpiredToken"},
		ops: map[string]operation{
			"CreateRole":                  iamCreateRole,
			"GetRole":                     onRole(iamGetRole),
			"CreateInstanceProfile":       iamCreateInstanceProfile,
			"AddRoleToInstanceProfile":    onProfile(iamAddRoleToInstanceProfile),
			"GetInstanceProfile":          onProfile(iamGetInstanceProfile),
			"PutRolePolicy":               iamPutRolePolicy,
			"GetRolePolicy":               onRole(iamGetRolePolicy),
			"ListRolePolicies":            onRole(iamListRolePolicies),
			"DeleteRolePolicy":            onRole(iamDeleteRolePolicy),
			"AttachRolePolicy":            onRole(iamAttachRolePolicy),
			"ListAttachedRolePolicies":    onRole(iamListAttachedRolePolicies),
			"ListInstanceProfilesForRole": onRole(iamListInstanceProfilesForRole),
		},
	}
}

var iamNameRe = regexp.MustCompile(`^[\w+=,.@-]{1,128}$`)

func iamNoSuch(kind, name string) *apiError {
	return errf(http.StatusNotFound, "NoSuchEntity", "The %s with name %s cannot be found.", kind, name)
}

func iamValidation(field, value string) *apiError {
	return errf(http.StatusBadRequest, "ValidationError",
		"1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+", value, field)
}

type xmlIAMTag struct {
	Key   string `xml:"Key"`
	Value string `xml:"Value"`
}

type xmlRole struct {
	Path                     string      `xml:"Path"`
	RoleName                 string      `xml:"RoleName"`
	RoleID                   string      `xml:"RoleId"`
	Arn                      string      `xml:"Arn"`
	CreateDate               string      `xml:"CreateDate"`
	AssumeRolePolicyDocument string      `xml:"AssumeRolePolicyDocument"`
	Description              string      `xml:"Description,omitempty"`
	MaxSessionDuration       int         `xml:"MaxSessionDuration"`
	Tags                     []xmlIAMTag `xml:"Tags>member,omitempty"`
	RoleLastUsed             struct{}    `xml:"RoleLastUsed"`
}

// iamEncode URL-encodes a policy document as IAM returns it (RFC 3986:
// a space is %20, never +).
func iamEncode(doc string) string { return strings.ReplaceAll(url.QueryEscape(doc), "+", "%20") }

func iamTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

func (r *iamRole) xml() xmlRole {
	x := xmlRole{Path: r.path, RoleName: r.name, RoleID: r.id, Arn: r.arn, CreateDate: iamTime(r.created),
		AssumeRolePolicyDocument: iamEncode(r.assume), Description: r.description, MaxSessionDuration: 3600}
	for _, k := range sortedKeys(r.tags) {
		x.Tags = append(x.Tags, xmlIAMTag{k, r.tags[k]})
	}
	return x
}

type xmlProfile struct {
	Path                string      `xml:"Path"`
	InstanceProfileName string      `xml:"InstanceProfileName"`
	InstanceProfileID   string      `xml:"InstanceProfileId"`
	Arn                 string      `xml:"Arn"`
	CreateDate          string      `xml:"CreateDate"`
	Roles               []xmlRole   `xml:"Roles>member"`
	Tags                []xmlIAMTag `xml:"Tags>member,omitempty"`
}

func (ia *iamAccount) xmlProfile(p *iamProfile) xmlProfile {
	x := xmlProfile{Path: p.path, InstanceProfileName: p.name, InstanceProfileID: p.id, Arn: p.arn, CreateDate: iamTime(p.created), Roles: []xmlRole{}}
	for _, rn := range p.roles {
		if r := ia.roles[rn]; r != nil {
			x.Roles = append(x.Roles, r.xml())
		}
	}
	for _, k := range sortedKeys(p.tags) {
		x.Tags = append(x.Tags, xmlIAMTag{k, p.tags[k]})
	}
	return x
}

// ---- seeding ----

// RoleOptions describes an IAM role to seed.
type RoleOptions struct {
	Name string
	Path string // "/" when empty
	// AssumeRolePolicy is the trust policy; EC2 may assume the role when
	// empty.
	AssumeRolePolicy string
	Description      string
	// InlinePolicies maps policy name to document (JSON).
	InlinePolicies map[string]string
	// AttachedPolicyARNs are managed policies (AWS managed
	// arn:aws:iam::aws:policy/… or the account's own, see CreatePolicy).
	AttachedPolicyARNs []string
	Tags               map[string]string
}

const ec2TrustPolicy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`

// CreateRole seeds an IAM role and returns its ARN.
func (a *Account) CreateRole(o RoleOptions) (string, error) {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	if o.AssumeRolePolicy == "" {
		o.AssumeRolePolicy = ec2TrustPolicy
	}
	r, err := s.createRoleLocked(a.id, o.Name, o.Path, o.AssumeRolePolicy, o.Description, o.Tags)
	if err != nil {
		return "", fmt.Errorf("awssim: create role %s: %w", o.Name, err)
	}
	for _, n := range sortedKeys(o.InlinePolicies) {
		if !json.Valid([]byte(o.InlinePolicies[n])) {
			return "", fmt.Errorf("awssim: role %s: inline policy %s is not JSON", o.Name, n)
		}
		r.inline[n] = o.InlinePolicies[n]
	}
	for _, p := range o.AttachedPolicyARNs {
		if err := s.attachRolePolicyLocked(a.id, r, p); err != nil {
			return "", fmt.Errorf("awssim: role %s: %w", o.Name, err)
		}
	}
	return r.arn, nil
}

// CreatePolicy seeds a customer managed policy and returns its ARN.
func (a *Account) CreatePolicy(name, document string) (string, error) {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	if !iamNameRe.MatchString(name) || !json.Valid([]byte(document)) {
		return "", fmt.Errorf("awssim: policy %q: invalid name or document", name)
	}
	p := &iamPolicy{name: name, arn: "arn:aws:iam::" + a.id + ":policy/" + name, document: document}
	s.iamLocked(a.id).policies[p.arn] = p
	return p.arn, nil
}

// CreateInstanceProfile seeds an instance profile holding the role (none
// when roleName is empty) and returns its ARN.
func (a *Account) CreateInstanceProfile(name, roleName string) (string, error) {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.createProfileLocked(a.id, name, "")
	if err != nil {
		return "", fmt.Errorf("awssim: create instance profile %s: %w", name, err)
	}
	if roleName != "" {
		if err := s.addRoleToProfileLocked(a.id, p, roleName); err != nil {
			return "", fmt.Errorf("awssim: instance profile %s: %w", name, err)
		}
	}
	return p.arn, nil
}

func (s *Sim) createRoleLocked(acct, name, path, assume, desc string, tags map[string]string) (*iamRole, error) {
	if !iamNameRe.MatchString(name) || len(name) > 64 {
		return nil, iamValidation("roleName", name)
	}
	if path == "" {
		path = "/"
	}
	if !strings.HasPrefix(path, "/") || !strings.HasSuffix(path, "/") {
		return nil, errf(http.StatusBadRequest, "ValidationError", "The specified value for path is invalid. It must begin and end with / and contain only alphanumeric characters and/or / characters.")
	}
	if !json.Valid([]byte(assume)) {
		return nil, errf(http.StatusBadRequest, "MalformedPolicyDocument", "This policy contains invalid Json")
	}
	ia := s.iamLocked(acct)
	for n := range ia.roles {
		if strings.EqualFold(n, name) {
			return nil, errf(http.StatusConflict, "EntityAlreadyExists", "Role with name %s already exists.", name)
		}
	}
	r := &iamRole{name: name, id: "AROA" + s.randUpper(17), path: path, arn: "arn:aws:iam::" + acct + ":role" + path + name,
		assume: assume, description: desc, created: s.now().UTC().Truncate(time.Second), inline: map[string]string{}, tags: map[string]string{}}
	for k, v := range tags {
		r.tags[k] = v
	}
	ia.roles[name] = r
	return r, nil
}

func (s *Sim) createProfileLocked(acct, name, path string) (*iamProfile, error) {
	if !iamNameRe.MatchString(name) {
		return nil, iamValidation("instanceProfileName", name)
	}
	if path == "" {
		path = "/"
	}
	ia := s.iamLocked(acct)
	if ia.profiles[name] != nil {
		return nil, errf(http.StatusConflict, "EntityAlreadyExists", "Instance Profile %s already exists.", name)
	}
	p := &iamProfile{name: name, id: "AIPA" + s.randUpper(17), path: path, arn: "arn:aws:iam::" + acct + ":instance-profile" + path + name,
		created: s.now().UTC().Truncate(time.Second)}
	ia.profiles[name] = p
	return p, nil
}

func (s *Sim) addRoleToProfileLocked(acct string, p *iamProfile, roleName string) error {
	ia := s.iamLocked(acct)
	if ia.roles[roleName] == nil {
		return iamNoSuch("role", roleName)
	}
	if len(p.roles) > 0 {
		return errf(http.StatusConflict, "LimitExceeded", "Cannot exceed quota for InstanceSessionsPerInstanceProfile: 1")
	}
	p.roles = append(p.roles, roleName)
	return nil
}

var policyARNRe = regexp.MustCompile(`^arn:aws:iam::(aws|\d{12}):policy/(?:[\w+=,.@-]+/)*([\w+=,.@-]+)$`)

func (s *Sim) attachRolePolicyLocked(acct string, r *iamRole, arn string) error {
	m := policyARNRe.FindStringSubmatch(arn)
	if m == nil {
		return errf(http.StatusBadRequest, "InvalidInput", "ARN %s is not valid.", arn)
	}
	if m[1] != "aws" && s.iamLocked(m[1]).policies[arn] == nil {
		return errf(http.StatusNotFound, "NoSuchEntity", "Policy %s does not exist or is not attachable.", arn)
	}
	if !slices.Contains(r.attached, arn) {
		r.attached = append(r.attached, arn)
	}
	return nil
}

// ---- operations ----

// onRole is an operation on the role RoleName names: op runs with it,
// under the lock.
func onRole(op func(c *call, r *iamRole) (any, error)) operation {
	return lockedOn((*call).roleLocked, op)
}

// onProfile is an operation on the instance profile InstanceProfileName
// names: op runs with it, under the lock.
func onProfile(op func(c *call, p *iamProfile) (any, error)) operation {
	return lockedOn((*call).profileLocked, op)
}

// lockedOn is an operation on the IAM entity lookup finds: op runs with it,
// under the lock.
func lockedOn[T any](lookup func(*call) (*T, error), op func(*call, *T) (any, error)) operation {
	return func(c *call) (any, error) {
		c.sim.mu.Lock()
		defer c.sim.mu.Unlock()
		e, err := lookup(c)
		if err != nil {
			return nil, err
		}
		return op(c, e)
	}
}

func (c *call) roleLocked() (*iamRole, error) {
	name := c.form.Get("RoleName")
	if name == "" {
		return nil, errf(http.StatusBadRequest, "ValidationError", "1 validation error detected: Value null at 'roleName' failed to satisfy constraint: Member must not be null")
	}
	r := c.sim.iamLocked(c.who.accountID()).roles[name]
	if r == nil {
		return nil, iamNoSuch("role", name)
	}
	return r, nil
}

func iamCreateRole(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	tags := map[string]string{}
	for _, t := range formStructs(c.form, "Tags.member") {
		tags[t.Get("Key")] = t.Get("Value")
	}
	doc := c.form.Get("AssumeRolePolicyDocument")
	if doc == "" {
		return nil, errf(http.StatusBadRequest, "ValidationError", "1 validation error detected: Value null at 'assumeRolePolicyDocument' failed to satisfy constraint: Member must not be null")
	}
	r, err := s.createRoleLocked(c.who.accountID(), c.form.Get("RoleName"), c.form.Get("Path"), doc, c.form.Get("Description"), tags)
	if err != nil {
		return nil, err
	}
	return &struct {
		Role xmlRole `xml:"Role"`
	}{r.xml()}, nil
}

func iamGetRole(c *call, r *iamRole) (any, error) {
	return &struct {
		Role xmlRole `xml:"Role"`
	}{r.xml()}, nil
}

func iamCreateInstanceProfile(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.createProfileLocked(c.who.accountID(), c.form.Get("InstanceProfileName"), c.form.Get("Path"))
	if err != nil {
		return nil, err
	}
	for _, t := range formStructs(c.form, "Tags.member") {
		if p.tags == nil {
			p.tags = map[string]string{}
		}
		p.tags[t.Get("Key")] = t.Get("Value")
	}
	return &struct {
		InstanceProfile xmlProfile `xml:"InstanceProfile"`
	}{s.iamLocked(c.who.accountID()).xmlProfile(p)}, nil
}

func (c *call) profileLocked() (*iamProfile, error) {
	name := c.form.Get("InstanceProfileName")
	p := c.sim.iamLocked(c.who.accountID()).profiles[name]
	if p == nil {
		return nil, errf(http.StatusNotFound, "NoSuchEntity", "Instance Profile %s cannot be found.", name)
	}
	return p, nil
}

func iamAddRoleToInstanceProfile(c *call, p *iamProfile) (any, error) {
	if err := c.sim.addRoleToProfileLocked(c.who.accountID(), p, c.form.Get("RoleName")); err != nil {
		return nil, err
	}
	return &struct{}{}, nil
}

func iamGetInstanceProfile(c *call, p *iamProfile) (any, error) {
	return &struct {
		InstanceProfile xmlProfile `xml:"InstanceProfile"`
	}{c.sim.iamLocked(c.who.accountID()).xmlProfile(p)}, nil
}

func iamPutRolePolicy(c *call) (any, error) {
	name, doc := c.form.Get("PolicyName"), c.form.Get("PolicyDocument")
	if !iamNameRe.MatchString(name) {
		return nil, iamValidation("policyName", name)
	}
	if !json.Valid([]byte(doc)) {
		return nil, errf(http.StatusBadRequest, "MalformedPolicyDocument", "This policy contains invalid Json")
	}
	return onRole(func(_ *call, r *iamRole) (any, error) {
		r.inline[name] = doc
		return &struct{}{}, nil
	})(c)
}

func iamGetRolePolicy(c *call, r *iamRole) (any, error) {
	name := c.form.Get("PolicyName")
	doc, ok := r.inline[name]
	if !ok {
		return nil, errf(http.StatusNotFound, "NoSuchEntity", "The role policy with name %s cannot be found.", name)
	}
	// IAM returns policy documents URL-encoded (RFC 3986).
	return &struct {
		RoleName       string `xml:"RoleName"`
		PolicyName     string `xml:"PolicyName"`
		PolicyDocument string `xml:"PolicyDocument"`
	}{r.name, name, iamEncode(doc)}, nil
}

// markerPage pages names with Marker/MaxItems as IAM does.
func markerPage(form url.Values, n int) (from, to int, marker string, truncated bool, err error) {
	if m := form.Get("Marker"); m != "" {
		from, err = strconv.Atoi(m)
		if err != nil || from < 0 || from > n {
			return 0, 0, "", false, errf(http.StatusBadRequest, "ValidationError", "Invalid Marker %q", m)
		}
	}
	max := 100
	if v := form.Get("MaxItems"); v != "" {
		if max, err = strconv.Atoi(v); err != nil || max < 1 || max > 1000 {
			return 0, 0, "", false, errf(http.StatusBadRequest, "ValidationError",
				"1 validation error detected: Value '%s' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 1000", v)
		}
	}
	to = min(n, from+max)
	if to < n {
		return from, to, strconv.Itoa(to), true, nil
	}
	return from, to, "", false, nil
}

func iamListRolePolicies(c *call, r *iamRole) (any, error) {
	names := sortedKeys(r.inline)
	from, to, marker, trunc, err := markerPage(c.form, len(names))
	if err != nil {
		return nil, err
	}
	return &struct {
		PolicyNames []string `xml:"PolicyNames>member"`
		IsTruncated bool     `xml:"IsTruncated"`
		Marker      string   `xml:"Marker,omitempty"`
	}{append([]string{}, names[from:to]...), trunc, marker}, nil
}

func iamDeleteRolePolicy(c *call, r *iamRole) (any, error) {
	name := c.form.Get("PolicyName")
	if _, ok := r.inline[name]; !ok {
		return nil, errf(http.StatusNotFound, "NoSuchEntity", "The role policy with name %s cannot be found.", name)
	}
	delete(r.inline, name)
	return &struct{}{}, nil
}

func iamAttachRolePolicy(c *call, r *iamRole) (any, error) {
	if err := c.sim.attachRolePolicyLocked(c.who.accountID(), r, c.form.Get("PolicyArn")); err != nil {
		return nil, err
	}
	return &struct{}{}, nil
}

func iamListAttachedRolePolicies(c *call, r *iamRole) (any, error) {
	type attached struct {
		PolicyName string `xml:"PolicyName"`
		PolicyArn  string `xml:"PolicyArn"`
	}
	from, to, marker, trunc, err := markerPage(c.form, len(r.attached))
	if err != nil {
		return nil, err
	}
	out := &struct {
		AttachedPolicies []attached `xml:"AttachedPolicies>member"`
		IsTruncated      bool       `xml:"IsTruncated"`
		Marker           string     `xml:"Marker,omitempty"`
	}{AttachedPolicies: []attached{}, IsTruncated: trunc, Marker: marker}
	for _, arn := range r.attached[from:to] {
		out.AttachedPolicies = append(out.AttachedPolicies, attached{arn[strings.LastIndexByte(arn, '/')+1:], arn})
	}
	return out, nil
}

func iamListInstanceProfilesForRole(c *call, r *iamRole) (any, error) {
	ia := c.sim.iamLocked(c.who.accountID())
	var ps []xmlProfile
	for _, n := range sortedKeys(ia.profiles) {
		if p := ia.profiles[n]; slices.Contains(p.roles, r.name) {
			ps = append(ps, ia.xmlProfile(p))
		}
	}
	from, to, marker, trunc, err := markerPage(c.form, len(ps))
	if err != nil {
		return nil, err
	}
	return &struct {
		InstanceProfiles []xmlProfile `xml:"InstanceProfiles>member"`
		IsTruncated      bool         `xml:"IsTruncated"`
		Marker           string       `xml:"Marker,omitempty"`
	}{append([]xmlProfile{}, ps[from:to]...), trunc, marker}, nil
}
