package awssim

import (
	"context"
	"errors"
	"net/http/httptest"
	"net/url"
	"sort"
	"testing"
)

// FuzzSecurityGroupRules feeds arbitrary IpPermissions to the rule parser:
// it must not panic, and every rule it accepts names exactly one peer with
// a sane port range.
func FuzzSecurityGroupRules(f *testing.F) {
	f.Add("IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=443&IpPermissions.1.ToPort=443&IpPermissions.1.IpRanges.1.CidrIp=0.0.0.0/0")
	f.Add("IpPermissions.1.IpProtocol=-1&IpPermissions.1.Ipv6Ranges.1.CidrIpv6=::/0&IpPermissions.1.Groups.1.GroupId=sg-1")
	f.Add("IpPermissions.1.IpProtocol=udp&IpPermissions.1.FromPort=9&IpPermissions.1.ToPort=1&IpPermissions.1.PrefixListIds.1.PrefixListId=pl-1")
	f.Fuzz(func(t *testing.T, q string) {
		form, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		rules, err := formRules(form, false)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != 400 {
				t.Fatalf("parser error is not a 400 API error: %v", err)
			}
			return
		}
		for _, r := range rules {
			peers := 0
			for _, p := range []string{r.cidr4, r.cidr6, r.prefixList, r.refGroup} {
				if p != "" {
					peers++
				}
			}
			if peers != 1 {
				t.Fatalf("rule with %d peers: %+v", peers, r)
			}
			if (r.proto == "tcp" || r.proto == "udp") && (r.from < 0 || r.to > 65535 || r.from > r.to) {
				t.Fatalf("accepted port range %d-%d", r.from, r.to)
			}
		}
	})
}

// FuzzOperations sends arbitrary forms to every query-protocol operation of
// a seeded demo account: no operation may panic or fail with anything but
// a client (4xx) error.
func FuzzOperations(f *testing.F) {
	s := New(Options{Seed: 1})
	d, err := SeedDemo(s, DemoOptions{RootGiB: 1, DataGiB: 1})
	if err != nil {
		f.Fatal(err)
	}
	type opRef struct {
		svc *service
		op  string
	}
	var ops []opRef
	for _, mk := range []func() *service{ec2Service, iamService, autoscalingService, elbService} {
		svc := mk()
		for _, v := range append([]*service{svc}, func() []*service {
			var alts []*service
			for _, k := range sortedKeys(svc.versions) {
				alts = append(alts, svc.versions[k])
			}
			return alts
		}()...) {
			names := make([]string, 0, len(v.ops))
			for n := range v.ops {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				ops = append(ops, opRef{v, n})
			}
		}
	}
	f.Add(uint16(0), "InstanceId="+d.InstanceID)
	f.Add(uint16(7), "NetworkInterfaceId="+d.NetworkInterfaceIDs[0]+"&SecurityGroupId.1="+d.AppGroupID)
	f.Add(uint16(20), "GroupId="+d.WebGroupID+"&IpPermissions.1.IpProtocol=tcp&IpPermissions.1.FromPort=1&IpPermissions.1.ToPort=2&IpPermissions.1.IpRanges.1.CidrIp=1.2.3.4/32")
	f.Add(uint16(40), "AutoScalingGroupName=web&InstanceIds.member.1="+d.InstanceID+"&ShouldDecrementDesiredCapacity=false")
	f.Add(uint16(50), "TargetGroupArn="+d.TargetGroupARN+"&Targets.member.1.Id="+d.InstanceID)
	f.Fuzz(func(t *testing.T, which uint16, q string) {
		form, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		ref := ops[int(which)%len(ops)]
		c := &call{ctx: context.Background(), sim: s, svc: ref.svc, op: ref.op, who: d.Member.user, form: form,
			r: httptest.NewRequest("POST", "/", nil), requestID: "fuzz"}
		out, err := ref.svc.ops[ref.op](c)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status < 400 || ae.status >= 500 {
				t.Fatalf("%s %s(%q): %v", ref.svc.name, ref.op, q, err)
			}
			return
		}
		if out == nil {
			t.Fatalf("%s %s: nil result without error", ref.svc.name, ref.op)
		}
	})
}

// FuzzLookupEvents feeds arbitrary JSON to LookupEvents.
func FuzzLookupEvents(f *testing.F) {
	s := New(Options{Seed: 1})
	d, err := SeedDemo(s, DemoOptions{RootGiB: 1, DataGiB: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(`{"LookupAttributes":[{"AttributeKey":"ResourceName","AttributeValue":"` + d.InstanceID + `"}],"MaxResults":1}`)
	f.Add(`{"NextToken":"Y3Q6MQ","StartTime":1.5,"EndTime":1e12}`)
	f.Fuzz(func(t *testing.T, body string) {
		c := &call{ctx: context.Background(), sim: s, svc: cloudtrailService(), op: "LookupEvents", who: d.Member.user, body: []byte(body)}
		if _, err := ctLookupEvents(c); err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != 400 {
				t.Fatalf("LookupEvents(%q): %v", body, err)
			}
		}
	})
}
