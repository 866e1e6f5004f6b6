package awssim

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkLookupEvents measures one LookupEvents page (by ResourceName,
// 50 results) over a trail of 10,000 events, the control-plane collector's
// query.
func BenchmarkLookupEvents(b *testing.B) {
	s := New(Options{Seed: 1})
	d, err := SeedDemo(s, DemoOptions{RootGiB: 1, DataGiB: 1})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now().Add(-48 * time.Hour)
	for i := range 10000 {
		res := fmt.Sprintf("i-%017x", i%500)
		if i%100 == 0 {
			res = d.InstanceID
		}
		d.Member.RecordEvent(EventOptions{Name: "CreateTags", Source: "ec2.amazonaws.com", Time: start.Add(time.Duration(i) * time.Second),
			Username: "bench", Resources: []EventResource{{"AWS::EC2::Instance", res}}})
	}
	body := []byte(`{"LookupAttributes":[{"AttributeKey":"ResourceName","AttributeValue":"` + d.InstanceID + `"}],"MaxResults":50}`)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		c := &call{ctx: context.Background(), sim: s, svc: cloudtrailService(), op: "LookupEvents", who: d.Member.user, body: body}
		out, err := ctLookupEvents(c)
		if err != nil || out == nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDescribeNetworkInterfaces measures DescribeNetworkInterfaces by
// attachment.instance-id in an account with 1,000 instances.
func BenchmarkDescribeNetworkInterfaces(b *testing.B) {
	s := New(Options{Seed: 1})
	a := s.AddAccount("111111111111")
	var last string
	for range 1000 {
		i, err := a.RunInstance(InstanceOptions{})
		if err != nil {
			b.Fatal(err)
		}
		last = i.ID()
	}
	c := &call{ctx: context.Background(), sim: s, op: "DescribeNetworkInterfaces", who: a.user}
	c.form = map[string][]string{"Filter.1.Name": {"attachment.instance-id"}, "Filter.1.Value.1": {last}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := ec2DescribeNetworkInterfaces(c); err != nil {
			b.Fatal(err)
		}
	}
}
