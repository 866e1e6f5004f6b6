package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail"
	cttypes "github.com/aws/aws-sdk-go-v2/service/cloudtrail/types"
	"github.com/aws/smithy-go"

	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/internal/awssim/simtest"
	"github.com/impound-ir/impound/vault"
)

// now is the fixed time of the worlds below, for the simulator and the
// collection alike.
var now = time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)

// world is the demo account plus an instance whose instance profile and
// role have different names, and CloudTrail history about both.
type world struct {
	env                  *simtest.Env
	demo                 *awssim.Demo
	instance             string
	profile, role        string
	roleARN, customerARN string
	inline               map[string]string
	// want are the IDs of the seeded events the collection must find;
	// others must not be found.
	want []string
	// sessionEvents is how many events the instance's session made.
	sessionEvents int
}

const (
	inlineS3  = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::logs+archive/*"}]}`
	inlineSSM = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:GetParameter","Resource":"*","Condition":{"StringEquals":{"aws:ResourceTag/team":"web ops"}}}]}`
)

func newWorld(t *testing.T, instanceType string, sessionEvents int) *world {
	t.Helper()
	env := simtest.Start(t, awssim.Options{Now: func() time.Time { return now }})
	d, err := awssim.SeedDemo(env.Sim, awssim.DemoOptions{RootGiB: 1, DataGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{env: env, demo: d, profile: "ir-web-profile", role: "ir-web-role", sessionEvents: sessionEvents,
		inline: map[string]string{"s3-logs": inlineS3, "ssm-read": inlineSSM}}
	m := d.Member
	if w.customerARN, err = m.CreatePolicy("ir-extra", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}]}`); err != nil {
		t.Fatal(err)
	}
	if w.roleARN, err = m.CreateRole(awssim.RoleOptions{Name: w.role, InlinePolicies: w.inline,
		AttachedPolicyARNs: []string{"arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore", w.customerARN}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateInstanceProfile(w.profile, w.role); err != nil {
		t.Fatal(err)
	}
	inst, err := m.RunInstance(awssim.InstanceOptions{InstanceType: instanceType, InstanceProfile: w.profile,
		Tags: map[string]string{"Name": "web-9"}, ConsoleOutput: "login: root\nXen console line\n"})
	if err != nil {
		t.Fatal(err)
	}
	w.instance = inst.ID()

	session := "arn:aws:sts::" + m.ID() + ":assumed-role/" + w.role + "/" + w.instance
	rec := func(o awssim.EventOptions, found bool) {
		id := m.RecordEvent(o)
		if found {
			w.want = append(w.want, id)
		}
	}
	instRes := awssim.EventResource{Type: "AWS::EC2::Instance", Name: w.instance}
	// About the instance, and about it by its own session (found by two look-ups, kept once).
	rec(awssim.EventOptions{Name: "RunInstances", Source: "ec2.amazonaws.com", Time: now.Add(-6 * 24 * time.Hour), Username: "deploy",
		Resources: []awssim.EventResource{instRes}}, true)
	rec(awssim.EventOptions{Name: "ModifyInstanceAttribute", Source: "ec2.amazonaws.com", Time: now.Add(-2 * time.Hour),
		Username: w.instance, PrincipalARN: session, Resources: []awssim.EventResource{instRes}}, true)
	// About the role by name, the role by ARN, the profile by name.
	rec(awssim.EventOptions{Name: "PutRolePolicy", Source: "iam.amazonaws.com", Time: now.Add(-5 * 24 * time.Hour), Username: "mallory",
		Resources: []awssim.EventResource{{Type: "AWS::IAM::Role", Name: w.role}}}, true)
	rec(awssim.EventOptions{Name: "AssumeRole", Source: "sts.amazonaws.com", Time: now.Add(-4 * 24 * time.Hour), Username: "mallory",
		Resources: []awssim.EventResource{{Type: "AWS::IAM::Role", Name: w.roleARN}}}, true)
	rec(awssim.EventOptions{Name: "AddRoleToInstanceProfile", Source: "iam.amazonaws.com", Time: now.Add(-3 * 24 * time.Hour), Username: "mallory",
		Resources: []awssim.EventResource{{Type: "AWS::IAM::InstanceProfile", Name: w.profile}, {Type: "AWS::IAM::Role", Name: w.role}}}, true)
	// By the instance's session only, naming no resource of it: many, so
	// that look-up takes several pages.
	for i := range sessionEvents {
		rec(awssim.EventOptions{Name: "ListBuckets", Source: "s3.amazonaws.com", Time: now.Add(-time.Duration(i+1) * time.Minute),
			Username: w.instance, PrincipalARN: session, ReadOnly: true, SourceIPAddress: "198.51.100.77"}, true)
	}
	// Not to be found: before the window, another instance, another session.
	rec(awssim.EventOptions{Name: "StopInstances", Source: "ec2.amazonaws.com", Time: now.Add(-8 * 24 * time.Hour), Username: "deploy",
		Resources: []awssim.EventResource{instRes}}, false)
	rec(awssim.EventOptions{Name: "StopInstances", Source: "ec2.amazonaws.com", Time: now.Add(-time.Hour), Username: "deploy",
		Resources: []awssim.EventResource{{Type: "AWS::EC2::Instance", Name: d.SecondInstanceID}}}, false)
	rec(awssim.EventOptions{Name: "ListBuckets", Source: "s3.amazonaws.com", Time: now.Add(-time.Hour), Username: d.SecondInstanceID,
		PrincipalARN: "arn:aws:sts::" + m.ID() + ":assumed-role/web-app/" + d.SecondInstanceID}, false)
	return w
}

func (w *world) collect(t *testing.T, edit func(*Options)) (vault.Store, map[string]Result, error) {
	t.Helper()
	store := vault.NewMemory()
	o := NewOptions()
	o.AccountID, o.Region = w.demo.Member.ID(), w.env.Sim.Region()
	o.Now = func() time.Time { return now }
	o.Key = func(item string) string { return "cases/T/evidence/control-plane/" + item }
	if edit != nil {
		edit(&o)
	}
	res, err := Collect(context.Background(), NewClients(w.env.ClientConfig(w.demo.Member.Credentials())), store, w.instance, o)
	byItem := map[string]Result{}
	for _, r := range res {
		byItem[r.Item] = r
	}
	return store, byItem, err
}

type trailItem struct {
	Calls []string
	Notes []string
	Data  struct {
		TrailRecord
		Events []struct {
			EventId, EventName, Username string
			EventTime                    time.Time
		} `json:"events"`
	}
}

func readTrail(t *testing.T, store vault.Store, r Result) trailItem {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("cloudtrail item failed: %v", r.Err)
	}
	var ti trailItem
	if err := json.Unmarshal(read(t, store, r), &ti); err != nil {
		t.Fatal(err)
	}
	return ti
}

func TestCloudTrailFindsTheRoleAndTheInstanceSession(t *testing.T) {
	w := newWorld(t, "t3.micro", 120)
	store, res, err := w.collect(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	ti := readTrail(t, store, res[ItemCloudTrail])
	tr := ti.Data

	if !tr.Start.Equal(now.Add(-7*24*time.Hour)) || !tr.End.Equal(now) {
		t.Errorf("window %s to %s, want %s to %s", tr.Start, tr.End, now.Add(-7*24*time.Hour), now)
	}
	type lk struct{ key, val string }
	var lookups []lk
	for _, l := range tr.Lookups {
		lookups = append(lookups, lk{l.AttributeKey, l.AttributeValue})
		if l.Truncated || l.OldestEvent != nil {
			t.Errorf("look-up %+v truncated", l)
		}
	}
	wantLookups := []lk{{"ResourceName", w.instance}, {"Username", w.instance}, {"ResourceName", w.profile},
		{"ResourceName", w.role}, {"ResourceName", w.roleARN}}
	if !slices.Equal(lookups, wantLookups) {
		t.Errorf("look-ups %v, want %v", lookups, wantLookups)
	}
	var calls []string
	for _, l := range wantLookups {
		calls = append(calls, "cloudtrail:LookupEvents "+l.key+"="+l.val)
	}
	if !slices.Equal(ti.Calls, calls) || !slices.Equal(res[ItemCloudTrail].Calls, calls) {
		t.Errorf("calls %v (result %v), want %v", ti.Calls, res[ItemCloudTrail].Calls, calls)
	}
	// The session's look-up took several pages: 121 events, 50 a page.
	if u := tr.Lookups[1]; u.Pages != 3 || u.Events != w.sessionEvents+1 {
		t.Errorf("Username look-up: %d pages, %d events; want 3 pages, %d events", u.Pages, u.Events, w.sessionEvents+1)
	}

	var got []string
	seen := map[string]bool{}
	for i, e := range ti.Data.Events {
		if seen[e.EventId] {
			t.Errorf("event %s (%s) stored twice", e.EventId, e.EventName)
		}
		seen[e.EventId] = true
		got = append(got, e.EventId)
		if i > 0 && e.EventTime.Before(ti.Data.Events[i-1].EventTime) {
			t.Errorf("event %d (%s) is older than the one before it", i, e.EventTime)
		}
	}
	slices.Sort(got)
	want := slices.Clone(w.want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%d events stored, want the %d seeded about the instance, its session, profile and role", len(got), len(want))
	}
	if tr.EventCount != len(want) || tr.Truncated || len(ti.Notes) != 0 {
		t.Errorf("event_count %d truncated %v notes %q; want %d, false, none", tr.EventCount, tr.Truncated, ti.Notes, len(want))
	}
	names := map[string]int{}
	for _, e := range ti.Data.Events {
		names[e.EventName]++
	}
	for name, n := range map[string]int{"PutRolePolicy": 1, "AssumeRole": 1, "AddRoleToInstanceProfile": 1, "RunInstances": 1,
		"ModifyInstanceAttribute": 1, "ListBuckets": w.sessionEvents, "StopInstances": 0} {
		if names[name] != n {
			t.Errorf("%d %s events, want %d", names[name], name, n)
		}
	}
}

func TestCloudTrailLookBackIsAnOption(t *testing.T) {
	w := newWorld(t, "t3.micro", 2)
	store, res, err := w.collect(t, func(o *Options) { o.LookBack = 10 * 24 * time.Hour })
	if err != nil {
		t.Fatal(err)
	}
	ti := readTrail(t, store, res[ItemCloudTrail])
	if !ti.Data.Start.Equal(now.Add(-10 * 24 * time.Hour)) {
		t.Errorf("window starts %s, want 10 days before %s", ti.Data.Start, now)
	}
	// The 8-day-old StopInstances is now in the window.
	if !slices.ContainsFunc(ti.Data.Events, func(e struct {
		EventId, EventName, Username string
		EventTime                    time.Time
	}) bool {
		return e.EventName == "StopInstances" && e.EventTime.Equal(now.Add(-8*24*time.Hour))
	}) {
		t.Error("the 8-day-old event is missing from a 10-day window")
	}
}

func TestCloudTrailTruncatedAtTheLimit(t *testing.T) {
	w := newWorld(t, "t3.micro", 120)
	for _, tc := range []struct {
		max       int
		truncated bool
	}{{30, true}, {50, true}, {121, false}} {
		t.Run(fmt.Sprint(tc.max), func(t *testing.T) {
			store, res, err := w.collect(t, func(o *Options) { o.MaxCloudTrailEvents = tc.max })
			if err != nil {
				t.Fatal(err)
			}
			ti := readTrail(t, store, res[ItemCloudTrail])
			u := ti.Data.Lookups[1] // Username = instance ID: 121 events
			if u.AttributeKey != "Username" || u.Truncated != tc.truncated || ti.Data.Truncated != tc.truncated {
				t.Fatalf("look-up %+v, item truncated %v; want truncated %v", u, ti.Data.Truncated, tc.truncated)
			}
			if !tc.truncated {
				if len(ti.Notes) != 0 || len(res[ItemCloudTrail].Notes) != 0 || u.OldestEvent != nil {
					t.Errorf("notes %q, oldest %v: want none", ti.Notes, u.OldestEvent)
				}
				return
			}
			// LookupEvents answers newest first: the kept events are the
			// newest max, the ListBuckets of minutes 1..max.
			oldest := now.Add(-time.Duration(tc.max) * time.Minute)
			if u.Events != tc.max || u.OldestEvent == nil || !u.OldestEvent.Equal(oldest) {
				t.Errorf("look-up kept %d events back to %v; want %d back to %s", u.Events, u.OldestEvent, tc.max, oldest)
			}
			for _, l := range ti.Data.Lookups {
				if l.AttributeKey != "Username" && l.Truncated {
					t.Errorf("look-up %+v truncated too", l)
				}
			}
			if len(ti.Notes) != 1 || !strings.Contains(ti.Notes[0], "Username="+w.instance) || !strings.Contains(ti.Notes[0], oldest.Format(time.RFC3339)) ||
				!slices.Equal(res[ItemCloudTrail].Notes, ti.Notes) {
				t.Errorf("notes %q (result %q): want one naming the look-up and the time before which events may be missing", ti.Notes, res[ItemCloudTrail].Notes)
			}
			lb := 0
			for _, e := range ti.Data.Events {
				if e.EventName == "ListBuckets" {
					lb++
				}
			}
			if lb != tc.max || ti.Data.EventCount != len(ti.Data.Events) {
				t.Errorf("%d ListBuckets events, event_count %d of %d; want %d", lb, ti.Data.EventCount, len(ti.Data.Events), tc.max)
			}
		})
	}
}

func TestIAMRecordsPoliciesOfRoleBehindDifferentlyNamedProfile(t *testing.T) {
	w := newWorld(t, "t3.micro", 0)
	store, res, err := w.collect(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Calls []string
		Data  struct {
			InstanceProfile struct{ InstanceProfileName string } `json:"instance_profile"`
			Roles           []struct {
				Role             struct{ RoleName, Arn string }           `json:"role"`
				InlinePolicies   map[string]string                        `json:"inline_policies"`
				AttachedPolicies []struct{ PolicyName, PolicyArn string } `json:"attached_policies"`
			} `json:"roles"`
		} `json:"data"`
	}
	if err := json.Unmarshal(read(t, store, res[ItemIAM]), &env); err != nil {
		t.Fatal(err)
	}
	if env.Data.InstanceProfile.InstanceProfileName != w.profile || len(env.Data.Roles) != 1 {
		t.Fatalf("profile %q with %d roles, want %s with 1", env.Data.InstanceProfile.InstanceProfileName, len(env.Data.Roles), w.profile)
	}
	r := env.Data.Roles[0]
	if r.Role.RoleName != w.role || r.Role.Arn != w.roleARN {
		t.Errorf("role %+v, want %s %s", r.Role, w.role, w.roleARN)
	}
	// Decoded exactly: the + in the bucket name and the space in the tag value survive.
	if len(r.InlinePolicies) != 2 || r.InlinePolicies["s3-logs"] != inlineS3 || r.InlinePolicies["ssm-read"] != inlineSSM {
		t.Errorf("inline policies %q, want %q", r.InlinePolicies, w.inline)
	}
	var arns []string
	for _, a := range r.AttachedPolicies {
		arns = append(arns, a.PolicyArn)
	}
	if want := []string{"arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore", w.customerARN}; !slices.Equal(arns, want) {
		t.Errorf("attached %v, want %v", arns, want)
	}
}

func TestConsoleOutputOnXenFallsBackFromLatest(t *testing.T) {
	w := newWorld(t, "t2.micro", 0)
	store, res, err := w.collect(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	txt := res[ItemConsoleOutput]
	if txt.Err != nil {
		t.Fatalf("console output: %v", txt.Err)
	}
	if got := string(read(t, store, txt)); got != "login: root\nXen console line\n" {
		t.Errorf("console output %q", got)
	}
	wantCalls := []string{"ec2:GetConsoleOutput Latest=true", "ec2:GetConsoleOutput Latest=false"}
	if !slices.Equal(txt.Calls, wantCalls) || len(txt.Notes) != 1 || !strings.Contains(txt.Notes[0], "UnsupportedOperation") {
		t.Errorf("result calls %q notes %q: want %q and a note naming UnsupportedOperation", txt.Calls, txt.Notes, wantCalls)
	}
	var con struct {
		Calls []string
		Notes []string
		Data  ConsoleOutputRecord
	}
	if err := json.Unmarshal(read(t, store, res[ItemConsoleOutputRecord]), &con); err != nil {
		t.Fatal(err)
	}
	if con.Data.Latest || con.Data.SHA256 != txt.Receipt.SHA256 || !slices.Equal(con.Calls, wantCalls) || !slices.Equal(con.Notes, txt.Notes) ||
		con.Data.Timestamp == nil || !con.Data.Timestamp.Equal(now) {
		t.Errorf("console output record %+v: want Latest=false, the calls, the note, AWS's timestamp %s and the output's hash %s", con, now, txt.Receipt.SHA256)
	}
}

func TestFindingAsEventOrDetail(t *testing.T) {
	w := newWorld(t, "t3.micro", 0)
	detail := w.demo.Finding // about the demo's instance
	event := []byte(`{"version":"0","id":"7bf73129-1428-4cd3-a780-95db273d1602","detail-type":"GuardDuty Finding","source":"aws.guardduty",` +
		`"account":"111111111111","time":"2026-11-21T02:50:00Z","region":"us-east-1","resources":[],"detail":` + string(detail) + "}\n")
	// The same with & < > as such (Go's encoder would write \u0026), laid
	// out unusually: CRLF, tabs, spaces around the values.
	amp := bytes.Replace(event, []byte(`"resources":[]`), []byte(`"resources":["C&C <b>&amp; x"]`), 1)
	var odd bytes.Buffer
	if err := json.Indent(&odd, amp, "\r", "\t "); err != nil {
		t.Fatal(err)
	}
	oddEvent := append(append([]byte(" \t\r\n"), odd.Bytes()...), "\r\n\n"...)
	if !bytes.Contains(oddEvent, []byte("C&C <b>&amp;")) {
		t.Fatal("no & in the odd event")
	}
	for _, tc := range []struct {
		name, shape string
		given       []byte
	}{{"detail", FindingShapeDetail, detail}, {"event", FindingShapeEvent, event}, {"odd layout", FindingShapeEvent, oddEvent}} {
		t.Run(tc.name, func(t *testing.T) {
			var recorded []Result
			w.instance = w.demo.InstanceID
			store, res, err := w.collect(t, func(o *Options) {
				o.Finding = tc.given
				o.Record = func(_ context.Context, r Result) error { recorded = append(recorded, r); return nil }
			})
			if err != nil {
				t.Fatal(err)
			}
			r := res[ItemFinding]
			if r.Err != nil || r.Receipt == nil || recorded[len(recorded)-1].Item != ItemFinding || recorded[len(recorded)-1].Receipt != r.Receipt {
				t.Fatalf("finding result %+v: want stored and recorded last", r)
			}
			// The bytes as given, stored unchanged: their receipt's SHA-256
			// is the record's given_sha256.
			g := res[ItemFindingGiven]
			if g.Err != nil || g.Receipt == nil || recorded[len(recorded)-2].Item != ItemFindingGiven {
				t.Fatalf("given finding result %+v: want stored and recorded before the record", g)
			}
			if gb := read(t, store, g); !bytes.Equal(gb, tc.given) {
				t.Errorf("%s holds %q, want the bytes given %q", ItemFindingGiven, gb, tc.given)
			}
			b := read(t, store, r) // checks the receipt's hash and size
			var env struct {
				Notes []string
				Data  FindingRecord
			}
			if err := json.Unmarshal(b, &env); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(tc.given)
			f := env.Data
			if f.Shape != tc.shape || f.GivenSHA256 != hex.EncodeToString(sum[:]) || f.GivenSize != len(tc.given) ||
				f.ID != "f2c7a3e4b5d6478e9a0b1c2d3e4f5a6b" || f.Type != "Backdoor:EC2/C&CActivity.B" || f.InstanceID != w.demo.InstanceID || len(env.Notes) != 0 {
				t.Errorf("finding record %+v notes %q", f, env.Notes)
			}
			if f.GivenSHA256 != g.Receipt.SHA256 || int64(f.GivenSize) != g.Receipt.Size {
				t.Errorf("record given_sha256 %s size %d; the stored bytes' receipt %s size %d", f.GivenSHA256, f.GivenSize, g.Receipt.SHA256, g.Receipt.Size)
			}
			// The values are those given, whatever the layout.
			var given, stored any
			if err := json.Unmarshal(tc.given, &given); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(f.Given, &stored); err != nil {
				t.Fatal(err)
			}
			if gb, _ := json.Marshal(given); string(gb) != func() string { sb, _ := json.Marshal(stored); return string(sb) }() {
				t.Errorf("stored finding differs from the one given")
			}
		})
	}

	// A finding about another instance, or not a finding at all, is stored all the same, with a note.
	w.instance = w.demo.SecondInstanceID
	for _, given := range [][]byte{detail, []byte(`{"source":"aws.securityhub","detail-type":"Security Hub Findings - Imported","detail":{}}`)} {
		store, res, err := w.collect(t, func(o *Options) { o.Finding = given })
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			Notes []string
			Data  FindingRecord
		}
		if err := json.Unmarshal(read(t, store, res[ItemFinding]), &env); err != nil {
			t.Fatal(err)
		}
		if len(env.Notes) != 1 || !slices.Equal(res[ItemFinding].Notes, env.Notes) {
			t.Errorf("notes %q (result %q), want one", env.Notes, res[ItemFinding].Notes)
		}
	}
	// A finding that is not JSON: its bytes are stored as given; there is
	// no record of it, for good (not a failure to try again).
	notJSON := []byte(`{"id":`)
	store, res, err := w.collect(t, func(o *Options) { o.Finding = notJSON })
	if r := res[ItemFinding]; err != nil || r.Err != nil || r.Receipt != nil || !strings.Contains(r.Unavailable, "not JSON") {
		t.Errorf("a finding that is not JSON: err %v, result %+v; want the record unavailable", err, r)
	}
	if r := res[ItemFindingGiven]; r.Err != nil || r.Receipt == nil || !bytes.Equal(read(t, store, r), notJSON) {
		t.Errorf("a finding that is not JSON: given item %+v, want its bytes stored", r)
	}
}

// memTrail is an in-memory CloudTrail event history: one Region's.
type memTrail struct {
	events []cttypes.Event // newest first, as LookupEvents answers
	calls  int
	err    error // every call's answer when set
}

var _ cloudtrailAPI = (*memTrail)(nil)

func (m *memTrail) LookupEvents(_ context.Context, in *cloudtrail.LookupEventsInput, _ ...func(*cloudtrail.Options)) (*cloudtrail.LookupEventsOutput, error) {
	m.calls++
	if m.err != nil {
		return nil, m.err
	}
	if len(in.LookupAttributes) != 1 || in.StartTime == nil || in.EndTime == nil || aws.ToInt32(in.MaxResults) < 1 || aws.ToInt32(in.MaxResults) > 50 {
		return nil, fmt.Errorf("memTrail: bad input %+v", in)
	}
	a := in.LookupAttributes[0]
	var match []cttypes.Event
	for _, e := range m.events {
		t := aws.ToTime(e.EventTime)
		if t.Before(*in.StartTime) || t.After(*in.EndTime) {
			continue
		}
		ok := false
		switch a.AttributeKey {
		case cttypes.LookupAttributeKeyUsername:
			ok = aws.ToString(e.Username) == aws.ToString(a.AttributeValue)
		case cttypes.LookupAttributeKeyResourceName:
			ok = slices.ContainsFunc(e.Resources, func(r cttypes.Resource) bool { return aws.ToString(r.ResourceName) == aws.ToString(a.AttributeValue) })
		default:
			return nil, fmt.Errorf("memTrail: attribute %s", a.AttributeKey)
		}
		if ok {
			match = append(match, e)
		}
	}
	from := 0
	if in.NextToken != nil {
		from, _ = strconv.Atoi(*in.NextToken)
	}
	to := min(len(match), from+int(aws.ToInt32(in.MaxResults)))
	out := &cloudtrail.LookupEventsOutput{Events: match[from:to]}
	if to < len(match) {
		out.NextToken = aws.String(strconv.Itoa(to))
	}
	return out, nil
}

func TestCloudTrailGlobalRegion(t *testing.T) {
	for region, want := range map[string]string{"eu-west-1": "us-east-1", "us-east-1": "us-east-1", "cn-northwest-1": "cn-north-1", "us-gov-east-1": "us-gov-west-1"} {
		if got := GlobalRegion(region); got != want {
			t.Errorf("GlobalRegion(%s) = %s, want %s", region, got, want)
		}
		c := NewClients(aws.Config{Region: region})
		if (c.GlobalCloudTrail != nil) != (region != want) || (c.GlobalCloudTrail != nil && c.GlobalRegion != want) {
			t.Errorf("NewClients in %s: global trail %v in %q", region, c.GlobalCloudTrail != nil, c.GlobalRegion)
		}
	}

	// The instance is in eu-west-1; IAM events about its role, and the IAM
	// calls its credentials made, are in us-east-1's history.
	w := newWorld(t, "t3.micro", 2)
	ev := func(id, name, user string, at time.Time, res ...string) cttypes.Event {
		e := cttypes.Event{EventId: aws.String(id), EventName: aws.String(name), Username: aws.String(user), EventTime: aws.Time(at),
			EventSource: aws.String("iam.amazonaws.com")}
		for _, r := range res {
			e.Resources = append(e.Resources, cttypes.Resource{ResourceName: aws.String(r)})
		}
		return e
	}
	global := &memTrail{events: []cttypes.Event{
		ev("g-3", "ListAttachedRolePolicies", w.instance, now.Add(-time.Hour), w.role),
		ev("g-2", "AttachRolePolicy", "mallory", now.Add(-2*24*time.Hour), w.role, "arn:aws:iam::aws:policy/AdministratorAccess"),
		ev("g-1", "CreateUser", "mallory", now.Add(-3*24*time.Hour), "backdoor"),
		ev("g-0", "DeleteRolePolicy", "mallory", now.Add(-9*24*time.Hour), w.role),
	}}
	store := vault.NewMemory()
	o := NewOptions()
	o.AccountID, o.Region, o.Now = w.demo.Member.ID(), "eu-west-1", func() time.Time { return now }
	o.Key = func(item string) string { return "cases/T/evidence/control-plane/" + item }
	c := NewClients(w.env.ClientConfig(w.demo.Member.Credentials()))
	c.GlobalCloudTrail, c.GlobalRegion = global, "us-east-1"
	res, err := Collect(context.Background(), c, store, w.instance, o)
	if err != nil {
		t.Fatal(err)
	}
	r := res[slices.IndexFunc(res, func(r Result) bool { return r.Item == ItemCloudTrail })]
	ti := readTrail(t, store, r)
	var regions []string
	for _, l := range ti.Data.Lookups {
		regions = append(regions, l.Region)
	}
	if want := []string{"eu-west-1", "eu-west-1", "eu-west-1", "eu-west-1", "eu-west-1", "us-east-1", "us-east-1", "us-east-1", "us-east-1", "us-east-1"}; !slices.Equal(regions, want) {
		t.Errorf("look-ups in %v, want %v", regions, want)
	}
	if global.calls != 5 || !slices.Contains(r.Calls, "cloudtrail:LookupEvents ResourceName="+w.role+" region=us-east-1") ||
		!slices.Contains(r.Calls, "cloudtrail:LookupEvents ResourceName="+w.role) {
		t.Errorf("%d global calls, calls %q", global.calls, r.Calls)
	}
	ids := map[string]int{}
	for _, e := range ti.Data.Events {
		ids[e.EventId]++
	}
	// g-3 is found by Username and by role name, kept once; g-1 is about
	// neither; g-0 is before the window.
	if ids["g-3"] != 1 || ids["g-2"] != 1 || ids["g-1"] != 0 || ids["g-0"] != 0 || ti.Data.EventCount != len(w.want)+2 {
		t.Errorf("global events %v, %d events in all; want g-2 and g-3 once, with the %d regional ones", ids, ti.Data.EventCount, len(w.want))
	}

	// When the global Region cannot be searched (a regional VPC endpoint,
	// a policy), the regional events are kept and the item says what is missing.
	c.GlobalCloudTrail = &memTrail{err: &smithy.GenericAPIError{Code: "AccessDeniedException", Message: "not in us-east-1"}}
	store = vault.NewMemory()
	res, err = Collect(context.Background(), c, store, w.instance, o)
	if err != nil {
		t.Fatal(err)
	}
	r = res[slices.IndexFunc(res, func(r Result) bool { return r.Item == ItemCloudTrail })]
	ti = readTrail(t, store, r)
	last := ti.Data.Lookups[len(ti.Data.Lookups)-1]
	if len(ti.Data.Lookups) != 6 || last.Region != "us-east-1" || !strings.Contains(last.Error, "AccessDeniedException") ||
		ti.Data.EventCount != len(w.want) || len(ti.Notes) != 1 || !strings.Contains(ti.Notes[0], "us-east-1") || !slices.Equal(r.Notes, ti.Notes) {
		t.Errorf("look-ups %+v, %d events, notes %q: want the 5 regional ones, one failed global one, %d events and a note",
			ti.Data.Lookups, ti.Data.EventCount, ti.Notes, len(w.want))
	}

	// A failure a retry may cure (a 5xx, throttling) fails the item, so the
	// case's next run collects it again rather than keep it incomplete.
	c.GlobalCloudTrail = &memTrail{err: &smithy.GenericAPIError{Code: "InternalFailure", Message: "try again"}}
	store = vault.NewMemory()
	res, _ = Collect(context.Background(), c, store, w.instance, o)
	r = res[slices.IndexFunc(res, func(r Result) bool { return r.Item == ItemCloudTrail })]
	if r.Err == nil || !strings.Contains(r.Err.Error(), "where IAM's events are") || r.Receipt != nil {
		t.Errorf("a transient failure in us-east-1: err %v, receipt %v; want the item failed and nothing stored", r.Err, r.Receipt)
	}
}

// LookupEvents serves 2 calls a second per account: the collection's
// look-ups are throttled, retried, and complete.
func TestCloudTrailThrottled(t *testing.T) {
	w := newWorld(t, "t3.micro", 120)
	w.env.Sim.SetFault("cloudtrail", "LookupEvents", awssim.Fault{AccountRate: 2, AccountBurst: 1})
	cfg := w.env.ClientConfig(w.demo.Member.Credentials())
	cfg.Retryer = func() aws.Retryer {
		// A fixed pause: 9 of them outlast the 500 ms the next token takes, 2 do not.
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 150 * time.Millisecond, nil })
		})
	}
	store := vault.NewMemory()
	o := NewOptions()
	o.AccountID, o.Region, o.Now = w.demo.Member.ID(), w.env.Sim.Region(), func() time.Time { return now }
	o.Key = func(item string) string { return "cases/T/evidence/control-plane/" + item }
	res, err := Collect(context.Background(), NewClients(cfg), store, w.instance, o)
	if err != nil {
		t.Fatal(err)
	}
	ti := readTrail(t, store, res[slices.IndexFunc(res, func(r Result) bool { return r.Item == ItemCloudTrail })])
	if ti.Data.EventCount != len(w.want) || ti.Data.Truncated {
		t.Errorf("%d events (truncated %v), want %d", ti.Data.EventCount, ti.Data.Truncated, len(w.want))
	}
}

// Without the instance profile's roles, CloudTrail is still looked up by
// the instance and the profile, and the item says what was not looked up.
func TestCloudTrailWhenIAMFails(t *testing.T) {
	w := newWorld(t, "t3.micro", 2)
	w.env.Sim.SetFault("iam", "GetInstanceProfile", awssim.Fault{ServerErrorRate: 1})
	cfg := w.env.ClientConfig(w.demo.Member.Credentials())
	cfg.RetryMaxAttempts = 1
	store := vault.NewMemory()
	o := NewOptions()
	o.AccountID, o.Region, o.Now = w.demo.Member.ID(), w.env.Sim.Region(), func() time.Time { return now }
	o.Key = func(item string) string { return "cases/T/evidence/control-plane/" + item }
	res, err := Collect(context.Background(), NewClients(cfg), store, w.instance, o)
	if err == nil || !strings.Contains(err.Error(), ItemIAM) {
		t.Fatalf("err %v: want the IAM item's failure", err)
	}
	r := res[slices.IndexFunc(res, func(r Result) bool { return r.Item == ItemCloudTrail })]
	ti := readTrail(t, store, r)
	var vals []string
	for _, l := range ti.Data.Lookups {
		vals = append(vals, l.AttributeKey+"="+l.AttributeValue)
	}
	if want := []string{"ResourceName=" + w.instance, "Username=" + w.instance, "ResourceName=" + w.profile}; !slices.Equal(vals, want) {
		t.Errorf("look-ups %v, want %v", vals, want)
	}
	if len(ti.Notes) != 1 || !strings.Contains(ti.Notes[0], "no look-up was made by role") || !slices.Equal(r.Notes, ti.Notes) {
		t.Errorf("notes %q (result %q): want one saying the roles were not looked up", ti.Notes, r.Notes)
	}
	// Found all the same: the instance's events, its session's, the profile's.
	names := map[string]bool{}
	for _, e := range ti.Data.Events {
		names[e.EventName] = true
	}
	if !names["RunInstances"] || !names["ListBuckets"] || !names["AddRoleToInstanceProfile"] || names["PutRolePolicy"] || names["AssumeRole"] {
		t.Errorf("event names %v", names)
	}
}
