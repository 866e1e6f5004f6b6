package awssim

import (
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CloudTrail: the simulator records a management event for every mutating
// call it serves (and for AssumeRole, in the role's account), failed ones
// with their error code, and answers LookupEvents over them.

type trailEvent struct {
	id, account, name, source string
	username, accessKeyID     string
	at                        time.Time
	readOnly                  bool
	resources                 []EventResource
	document                  string // the CloudTrailEvent JSON
}

// EventResource is a resource a CloudTrail event names.
type EventResource struct {
	Type, Name string // e.g. AWS::EC2::Instance, i-…
}

func cloudtrailService() *service {
	return &service{
		name:       "cloudtrail",
		protocol:   protoJSON11,
		target:     "CloudTrail_20131101",
		throttle:   apiError{status: http.StatusBadRequest, code: "ThrottlingException", message: "Rate exceeded"},
		badSig:     apiError{status: http.StatusForbidden, code: "InvalidSignatureException"},
		authFailed: apiError{status: http.StatusBadRequest, code: "UnrecognizedClientException"},
		expired:    apiError{status: http.StatusBadRequest, code: "ExpiredTokenException"},
		ops:        map[string]operation{"LookupEvents": ctLookupEvents},
	}
}

// readOnlyOp reports whether an operation only reads, as CloudTrail
// classifies it.
func readOnlyOp(op string) bool {
	for _, p := range []string{"Describe", "Get", "List", "Lookup", "Verify", "Sign", "Decrypt", "Encrypt", "GenerateDataKey"} {
		if strings.HasPrefix(op, p) {
			return true
		}
	}
	return false
}

var eventSources = map[string]string{
	"ec2": "ec2.amazonaws.com", "ebs": "ebs.amazonaws.com", "kms": "kms.amazonaws.com", "sts": "sts.amazonaws.com",
	"iam": "iam.amazonaws.com", "autoscaling": "autoscaling.amazonaws.com", "elasticloadbalancing": "elasticloadbalancing.amazonaws.com",
	"cloudtrail": "cloudtrail.amazonaws.com",
}

// resourceParams maps request parameters (their last dotted component with
// list indexes removed) to the CloudTrail resource type they name.
var resourceParams = map[string]string{
	"InstanceId": "AWS::EC2::Instance", "SnapshotId": "AWS::EC2::Snapshot", "SourceSnapshotId": "AWS::EC2::Snapshot",
	"VolumeId": "AWS::EC2::Volume", "GroupId": "AWS::EC2::SecurityGroup", "SecurityGroupId": "AWS::EC2::SecurityGroup",
	"NetworkInterfaceId": "AWS::EC2::NetworkInterface", "NetworkAclId": "AWS::EC2::NetworkAcl", "AllocationId": "AWS::EC2::EIP",
	"VpcId": "AWS::EC2::VPC", "SubnetId": "AWS::EC2::Subnet", "RoleName": "AWS::IAM::Role", "InstanceProfileName": "AWS::IAM::InstanceProfile",
	"PolicyArn": "AWS::IAM::Policy", "AutoScalingGroupName": "AWS::AutoScaling::AutoScalingGroup",
	"TargetGroupArn": "AWS::ElasticLoadBalancingV2::TargetGroup", "LoadBalancerName": "AWS::ElasticLoadBalancing::LoadBalancer",
	"KeyId": "AWS::KMS::Key", "RoleArn": "AWS::IAM::Role",
}

var prefixTypes = map[string]string{
	"i": "AWS::EC2::Instance", "vol": "AWS::EC2::Volume", "snap": "AWS::EC2::Snapshot", "sg": "AWS::EC2::SecurityGroup",
	"eni": "AWS::EC2::NetworkInterface", "acl": "AWS::EC2::NetworkAcl", "vpc": "AWS::EC2::VPC", "subnet": "AWS::EC2::Subnet",
	"eipalloc": "AWS::EC2::EIP",
}

var listIndexRe = regexp.MustCompile(`\.\d+`)

// recordCall records the CloudTrail event of a served mutating call; out is
// its answer when it succeeded.
func (s *Sim) recordCall(c *call, callErr *apiError, out any) {
	if c.svc.name == "cloudtrail" || c.who == nil || (readOnlyOp(c.op) && c.op != "AssumeRole") || c.svc.name == "ebs" {
		return
	}
	account := c.who.accountID()
	params := map[string]any{}
	var res []EventResource
	seen := map[string]bool{}
	addRes := func(typ, name string) {
		if name != "" && !seen[typ+name] {
			seen[typ+name] = true
			res = append(res, EventResource{typ, name})
		}
	}
	switch c.svc.protocol {
	case protoEC2Query, protoQuery:
		for _, k := range sortedKeys(c.form) {
			if k == "Action" || k == "Version" {
				continue
			}
			v := c.form.Get(k)
			if len(v) > 1024 {
				v = v[:1024] + "…"
			}
			params[k] = v
			key := listIndexRe.ReplaceAllString(k, "")
			key = strings.TrimSuffix(key, ".member")
			key = key[strings.LastIndexByte(key, '.')+1:]
			if key == "Id" || key == "ResourceId" || key == "InstanceIds" {
				p, _, _ := strings.Cut(v, "-")
				if t := prefixTypes[p]; t != "" {
					addRes(t, v)
				}
				continue
			}
			if t := resourceParams[key]; t != "" {
				addRes(t, v)
			}
		}
		if c.op == "AssumeRole" {
			if m := roleARNRe.FindStringSubmatch(c.form.Get("RoleArn")); m != nil {
				account = m[1]
			}
		}
	case protoJSON11, protoRESTJSON:
		var body map[string]any
		if json.Unmarshal(c.body, &body) == nil {
			for k, v := range body {
				if k == "Message" || k == "Plaintext" {
					continue
				}
				params[k] = v
				if str, ok := v.(string); ok && resourceParams[k] != "" {
					addRes(resourceParams[k], str)
				}
			}
		}
	}
	// What only the answer names: the instances RunInstances launched,
	// which CloudTrail lists as the event's resources.
	if r, ok := out.(*ec2ReservationResponse); ok {
		for _, inst := range r.Instances {
			addRes("AWS::EC2::Instance", inst.InstanceID)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.accounts[account] == nil {
		return
	}
	ev := &trailEvent{id: s.newUUID(), account: account, name: c.op, source: eventSources[c.svc.name], accessKeyID: c.who.accessKeyID,
		at: s.now().UTC().Truncate(time.Second), readOnly: readOnlyOp(c.op), resources: res}
	ev.username = c.who.arn[strings.LastIndexByte(c.who.arn, '/')+1:]
	ident := map[string]any{"principalId": c.who.userID, "arn": c.who.arn, "accountId": c.who.accountID(), "accessKeyId": c.who.accessKeyID}
	if c.who.sessionToken != "" {
		ident["type"] = "AssumedRole"
		parts := strings.Split(c.who.arn, "/")
		role := parts[len(parts)-2]
		ident["sessionContext"] = map[string]any{
			"sessionIssuer": map[string]any{"type": "Role", "principalId": strings.Split(c.who.userID, ":")[0],
				"arn": "arn:aws:iam::" + c.who.accountID() + ":role/" + role, "accountId": c.who.accountID(), "userName": role},
			"attributes": map[string]any{"creationDate": c.who.issued.Format(time.RFC3339), "mfaAuthenticated": "false"},
		}
	} else {
		ident["type"] = "IAMUser"
		ident["userName"] = ev.username
	}
	doc := map[string]any{
		"eventVersion": "1.08", "userIdentity": ident, "eventTime": ev.at.Format(time.RFC3339), "eventSource": ev.source,
		"eventName": ev.name, "awsRegion": s.region, "sourceIPAddress": remoteHost(c.r.RemoteAddr),
		"userAgent": c.r.UserAgent(), "requestParameters": params, "responseElements": nil, "requestID": c.requestID,
		"eventID": ev.id, "readOnly": ev.readOnly, "eventType": "AwsApiCall", "managementEvent": true,
		"recipientAccountId": account, "eventCategory": "Management",
	}
	if callErr != nil {
		doc["errorCode"], doc["errorMessage"] = callErr.code, callErr.message
	}
	if len(res) > 0 {
		var rs []map[string]string
		for _, r := range res {
			rs = append(rs, map[string]string{"type": r.Type, "ARN": r.Name})
		}
		doc["resources"] = rs
	}
	b, _ := json.Marshal(doc)
	ev.document = string(b)
	s.trail = append(s.trail, ev)
}

// EventOptions describes a CloudTrail event to seed, such as an attacker's
// calls before the incident.
type EventOptions struct {
	Name     string    // e.g. RunInstances
	Source   string    // e.g. ec2.amazonaws.com
	Time     time.Time // now when zero
	Username string    // user name or role session name
	// PrincipalARN is the caller's ARN; an IAM user of the account named
	// Username when empty.
	PrincipalARN string
	AccessKeyID  string
	ReadOnly     bool
	Resources    []EventResource
	// RequestParameters are recorded as the event's requestParameters.
	RequestParameters map[string]any
	SourceIPAddress   string
}

// RecordEvent seeds a CloudTrail event in the account and returns its ID.
func (a *Account) RecordEvent(o EventOptions) string {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	if o.Time.IsZero() {
		o.Time = s.now()
	}
	if o.PrincipalARN == "" {
		o.PrincipalARN = "arn:aws:iam::" + a.id + ":user/" + o.Username
	}
	if o.SourceIPAddress == "" {
		o.SourceIPAddress = "198.51.100.23"
	}
	ev := &trailEvent{id: s.newUUID(), account: a.id, name: o.Name, source: o.Source, username: o.Username, accessKeyID: o.AccessKeyID,
		at: o.Time.UTC().Truncate(time.Second), readOnly: o.ReadOnly, resources: slices.Clone(o.Resources)}
	typ := "IAMUser"
	if strings.Contains(o.PrincipalARN, ":assumed-role/") {
		typ = "AssumedRole"
	}
	doc := map[string]any{
		"eventVersion": "1.08", "userIdentity": map[string]any{"type": typ, "arn": o.PrincipalARN, "accountId": a.id, "accessKeyId": o.AccessKeyID},
		"eventTime": ev.at.Format(time.RFC3339), "eventSource": o.Source, "eventName": o.Name, "awsRegion": s.region,
		"sourceIPAddress": o.SourceIPAddress, "requestParameters": o.RequestParameters, "eventID": ev.id, "readOnly": o.ReadOnly,
		"eventType": "AwsApiCall", "managementEvent": true, "recipientAccountId": a.id, "eventCategory": "Management",
	}
	b, _ := json.Marshal(doc)
	ev.document = string(b)
	i := slices.IndexFunc(s.trail, func(e *trailEvent) bool { return e.at.After(ev.at) })
	if i < 0 {
		s.trail = append(s.trail, ev)
	} else {
		s.trail = slices.Insert(s.trail, i, ev)
	}
	return ev.id
}

// Events returns the CloudTrail events recorded in the account, oldest
// first, as (event name, CloudTrailEvent JSON) pairs.
func (a *Account) Events() [][2]string {
	s := a.sim
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out [][2]string
	for _, e := range s.trail {
		if e.account == a.id {
			out = append(out, [2]string{e.name, e.document})
		}
	}
	return out
}

type ctLookupInput struct {
	LookupAttributes []struct {
		AttributeKey   string `json:"AttributeKey"`
		AttributeValue string `json:"AttributeValue"`
	} `json:"LookupAttributes"`
	StartTime     *float64 `json:"StartTime"`
	EndTime       *float64 `json:"EndTime"`
	MaxResults    *int     `json:"MaxResults"`
	NextToken     string   `json:"NextToken"`
	EventCategory string   `json:"EventCategory"`
}

type ctEvent struct {
	EventID     string `json:"EventId"`
	EventName   string `json:"EventName"`
	ReadOnly    string `json:"ReadOnly"`
	AccessKeyID string `json:"AccessKeyId,omitempty"`
	EventTime   epoch  `json:"EventTime"`
	EventSource string `json:"EventSource"`
	Username    string `json:"Username,omitempty"`
	Resources   []struct {
		ResourceType string `json:"ResourceType"`
		ResourceName string `json:"ResourceName"`
	} `json:"Resources"`
	CloudTrailEvent string `json:"CloudTrailEvent"`
}

func ctLookupEvents(c *call) (any, error) {
	s := c.sim
	var in ctLookupInput
	if err := c.decodeJSON(&in); err != nil {
		return nil, err
	}
	if len(in.LookupAttributes) > 1 {
		return nil, errf(http.StatusBadRequest, "InvalidLookupAttributesException", "You can specify only one lookup attribute.")
	}
	max := 50
	if in.MaxResults != nil {
		if *in.MaxResults < 1 || *in.MaxResults > 50 {
			return nil, errf(http.StatusBadRequest, "InvalidMaxResultsException", "MaxResults must be between 1 and 50.")
		}
		max = *in.MaxResults
	}
	now := s.now()
	end, start := now, now.Add(-90*24*time.Hour)
	if in.EndTime != nil {
		end = time.UnixMilli(int64(*in.EndTime * 1000))
	}
	if in.StartTime != nil {
		start = time.UnixMilli(int64(*in.StartTime * 1000))
	}
	if start.After(end) {
		return nil, errf(http.StatusBadRequest, "InvalidTimeRangeException", "Start time must be before end time.")
	}
	var key, val string
	if len(in.LookupAttributes) == 1 {
		key, val = in.LookupAttributes[0].AttributeKey, in.LookupAttributes[0].AttributeValue
		switch key {
		case "EventId", "EventName", "ReadOnly", "Username", "ResourceType", "ResourceName", "EventSource", "AccessKeyId":
		default:
			return nil, errf(http.StatusBadRequest, "InvalidLookupAttributesException", "Invalid lookup attribute key %q.", key)
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var match []*trailEvent
	for i := len(s.trail) - 1; i >= 0; i-- { // newest first
		e := s.trail[i]
		if e.account != c.who.accountID() || e.at.Before(start) || e.at.After(end) {
			continue
		}
		ok := true
		switch key {
		case "EventId":
			ok = e.id == val
		case "EventName":
			ok = e.name == val
		case "ReadOnly":
			ok = strconv.FormatBool(e.readOnly) == val
		case "Username":
			ok = e.username == val
		case "EventSource":
			ok = e.source == val
		case "AccessKeyId":
			ok = e.accessKeyID == val
		case "ResourceType", "ResourceName":
			ok = slices.ContainsFunc(e.resources, func(r EventResource) bool {
				return (key == "ResourceType" && r.Type == val) || (key == "ResourceName" && r.Name == val)
			})
		}
		if ok {
			match = append(match, e)
		}
	}
	from := 0
	if in.NextToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(in.NextToken)
		n, aerr := strconv.Atoi(strings.TrimPrefix(string(b), "ct:"))
		if err != nil || aerr != nil || n < 0 || n > len(match) {
			return nil, errf(http.StatusBadRequest, "InvalidNextTokenException", "Invalid NextToken %q", in.NextToken)
		}
		from = n
	}
	to := min(len(match), from+max)
	out := struct {
		Events    []ctEvent `json:"Events"`
		NextToken string    `json:"NextToken,omitempty"`
	}{Events: []ctEvent{}}
	if to < len(match) {
		out.NextToken = base64.RawURLEncoding.EncodeToString([]byte("ct:" + strconv.Itoa(to)))
	}
	for _, e := range match[from:to] {
		x := ctEvent{EventID: e.id, EventName: e.name, ReadOnly: strconv.FormatBool(e.readOnly), AccessKeyID: e.accessKeyID,
			EventTime: epoch(e.at), EventSource: e.source, Username: e.username, CloudTrailEvent: e.document}
		for _, r := range e.resources {
			x.Resources = append(x.Resources, struct {
				ResourceType string `json:"ResourceType"`
				ResourceName string `json:"ResourceName"`
			}{r.Type, r.Name})
		}
		out.Events = append(out.Events, x)
	}
	return out, nil
}

func remoteHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
