package awssim

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

func stsService() *service {
	return &service{
		name:       "sts",
		protocol:   protoQuery,
		xmlns:      "https://sts.amazonaws.com/doc/2011-06-15/",
		throttle:   apiError{status: http.StatusBadRequest, code: "Throttling", message: "Rate exceeded"},
		badSig:     apiError{status: http.StatusForbidden, code: "SignatureDoesNotMatch"},
		authFailed: apiError{status: http.StatusForbidden, code: "InvalidClientTokenId"},
		expired:    apiError{status: http.StatusBadRequest, code: "ExpiredToken"},
		ops: map[string]operation{
			"GetCallerIdentity": stsGetCallerIdentity,
			"AssumeRole":        stsAssumeRole,
		},
	}
}

type stsCallerIdentity struct {
	UserID  string `xml:"UserId"`
	Account string `xml:"Account"`
	Arn     string `xml:"Arn"`
}

func stsGetCallerIdentity(c *call) (any, error) {
	return &stsCallerIdentity{UserID: c.who.userID, Account: c.who.accountID(), Arn: c.who.arn}, nil
}

type stsAssumeRoleResult struct {
	Credentials struct {
		AccessKeyID     string `xml:"AccessKeyId"`
		SecretAccessKey string `xml:"SecretAccessKey"`
		SessionToken    string `xml:"SessionToken"`
		Expiration      string `xml:"Expiration"`
	} `xml:"Credentials"`
	AssumedRoleUser struct {
		AssumedRoleID string `xml:"AssumedRoleId"`
		Arn           string `xml:"Arn"`
	} `xml:"AssumedRoleUser"`
	PackedPolicySize int `xml:"PackedPolicySize,omitempty"`
}

var (
	roleARNRe     = regexp.MustCompile(`^arn:aws:iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})$`)
	sessionNameRe = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
)

func stsAssumeRole(c *call) (any, error) {
	s := c.sim
	roleARN := c.form.Get("RoleArn")
	session := c.form.Get("RoleSessionName")
	m := roleARNRe.FindStringSubmatch(roleARN)
	if m == nil {
		return nil, errf(http.StatusBadRequest, "ValidationError", "%s is invalid", roleARN)
	}
	if !sessionNameRe.MatchString(session) {
		return nil, errf(http.StatusBadRequest, "ValidationError",
			"1 validation error detected: Value '%s' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*", session)
	}
	dur := DefaultSessionDuration
	if v := c.form.Get("DurationSeconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 900 || n > 43200 {
			return nil, errf(http.StatusBadRequest, "ValidationError",
				"1 validation error detected: Value '%s' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to 900", v)
		}
		dur = time.Duration(n) * time.Second
	}
	s.faults.mu.Lock()
	if s.faults.session > 0 {
		dur = s.faults.session
	}
	s.faults.mu.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	target := s.accounts[m[1]]
	if target == nil {
		return nil, errf(http.StatusForbidden, "AccessDenied",
			"User: %s is not authorized to perform: sts:AssumeRole on resource: %s", c.who.arn, roleARN)
	}
	roleName := m[2]
	roleID := "AROA" + strings.ToUpper(s.randUpper(17))
	p := &principal{
		account:      target,
		arn:          "arn:aws:sts::" + target.id + ":assumed-role/" + roleName + "/" + session,
		userID:       roleID + ":" + session,
		accessKeyID:  "ASIA" + s.randUpper(16),
		secret:       s.randSecret(),
		sessionToken: "IQoJb3JpZ2luX2VjE" + s.randSecret() + s.randSecret() + s.randSecret(),
		expires:      s.now().Add(dur).UTC().Truncate(time.Second),
		issued:       s.now().UTC().Truncate(time.Second),
	}
	s.principals[p.accessKeyID] = p
	out := &stsAssumeRoleResult{}
	out.Credentials.AccessKeyID = p.accessKeyID
	out.Credentials.SecretAccessKey = p.secret
	out.Credentials.SessionToken = p.sessionToken
	out.Credentials.Expiration = p.expires.Format(time.RFC3339)
	out.AssumedRoleUser.AssumedRoleID = p.userID
	out.AssumedRoleUser.Arn = p.arn
	return out, nil
}
