package motocheck

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail"
	cttypes "github.com/aws/aws-sdk-go-v2/service/cloudtrail/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// runType launches one running instance of the type, with no extra volume.
func runType(t *testing.T, tg target, typ ec2types.InstanceType) string {
	t.Helper()
	c := ec2.NewFromConfig(tg.member)
	out, err := c.RunInstances(context.Background(), &ec2.RunInstancesInput{
		ImageId: aws.String(tg.imageID), InstanceType: typ, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatalf("%s: run %s instance: %v", tg.name, typ, err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	w := ec2.NewInstanceRunningWaiter(c, func(o *ec2.InstanceRunningWaiterOptions) {
		o.MinDelay, o.MaxDelay = 10*time.Millisecond, 100*time.Millisecond
	})
	if err := w.Wait(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}}, 10*time.Second); err != nil {
		t.Fatalf("%s: wait for %s: %v", tg.name, id, err)
	}
	return id
}

// TestControlPlaneCollection is what acquire/controlplane asks of EC2 and
// CloudTrail beyond what the isolation scenarios compare (network
// interfaces, security groups and IAM are in isolation_test.go): console
// output with and without Latest on Nitro and Xen instance types, the
// console screenshot, and CloudTrail LookupEvents.
func TestControlPlaneCollection(t *testing.T) {
	compare(t, func(t *testing.T, tg target, n *normaliser) record {
		ctx := context.Background()
		// moto answers what it does not implement with HTTP 500, which the
		// SDK retries: back off briefly.
		cfg := tg.member.Copy()
		cfg.Retryer = func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) { o.Backoff = retry.NewExponentialJitterBackoff(50 * time.Millisecond) })
		}
		c := ec2.NewFromConfig(cfg)
		ct := cloudtrail.NewFromConfig(cfg)
		r := record{}
		nitro := runType(t, tg, ec2types.InstanceTypeT3Micro)
		xen := runType(t, tg, ec2types.InstanceTypeT2Micro)
		for name, in := range map[string]*ec2.GetConsoleOutputInput{
			"console nitro latest": {InstanceId: &nitro, Latest: aws.Bool(true)},
			"console nitro":        {InstanceId: &nitro},
			"console xen latest":   {InstanceId: &xen, Latest: aws.Bool(true)},
			"console xen":          {InstanceId: &xen},
		} {
			out, err := c.GetConsoleOutput(ctx, in)
			r[name] = apiCode(err)
			if err == nil {
				r[name+".InstanceId"] = n.id(aws.ToString(out.InstanceId)) == n.id(aws.ToString(in.InstanceId))
				r[name+".TimestampSet"] = out.Timestamp != nil && !out.Timestamp.IsZero()
			}
		}
		shot, err := c.GetConsoleScreenshot(ctx, &ec2.GetConsoleScreenshotInput{InstanceId: &nitro, WakeUp: aws.Bool(false)})
		r["screenshot"] = apiCode(err)
		if err == nil {
			r["screenshot.InstanceId"] = n.id(aws.ToString(shot.InstanceId)) == n.id(nitro)
			r["screenshot.HasImage"] = aws.ToString(shot.ImageData) != ""
		}
		_, err = c.GetConsoleScreenshot(ctx, &ec2.GetConsoleScreenshotInput{InstanceId: aws.String("i-0123456789abcdef0")})
		r["screenshot unknown"] = apiCode(err)

		end := time.Now()
		lookup := func(attrs ...cttypes.LookupAttribute) (*cloudtrail.LookupEventsOutput, error) {
			return ct.LookupEvents(ctx, &cloudtrail.LookupEventsInput{LookupAttributes: attrs,
				StartTime: aws.Time(end.Add(-7 * 24 * time.Hour)), EndTime: aws.Time(end), MaxResults: aws.Int32(50)})
		}
		out, err := lookup(cttypes.LookupAttribute{AttributeKey: cttypes.LookupAttributeKeyResourceName, AttributeValue: &nitro})
		r["lookup by instance"] = apiCode(err)
		if err == nil {
			var names []string
			for _, e := range out.Events {
				names = append(names, aws.ToString(e.EventName))
			}
			r["lookup by instance.events"] = names
		}
		_, err = lookup(cttypes.LookupAttribute{AttributeKey: cttypes.LookupAttributeKeyUsername, AttributeValue: &nitro})
		r["lookup by session"] = apiCode(err)
		_, err = lookup(cttypes.LookupAttribute{AttributeKey: cttypes.LookupAttributeKeyResourceName, AttributeValue: &nitro},
			cttypes.LookupAttribute{AttributeKey: cttypes.LookupAttributeKeyUsername, AttributeValue: &nitro})
		r["lookup by two attributes"] = apiCode(err)
		_, err = ct.LookupEvents(ctx, &cloudtrail.LookupEventsInput{MaxResults: aws.Int32(51)})
		r["lookup 51 results"] = apiCode(err)
		return r
	}, map[string]divergence{
		// AWS refuses Latest on Xen instance types (t2, m4, c4, ...); moto
		// ignores Latest and answers with its fixed sample output.
		"console xen latest":              {reason: "moto ignores GetConsoleOutput's Latest", want: "UnsupportedOperation"},
		"console xen latest.InstanceId":   {reason: "moto ignores GetConsoleOutput's Latest", want: nil},
		"console xen latest.TimestampSet": {reason: "moto ignores GetConsoleOutput's Latest", want: nil},
		// moto 5.2 implements neither GetConsoleScreenshot nor CloudTrail
		// LookupEvents; the simulator answers as AWS documents them.
		"screenshot":                {reason: "moto does not implement GetConsoleScreenshot", want: ""},
		"screenshot.InstanceId":     {reason: "moto does not implement GetConsoleScreenshot", want: true},
		"screenshot.HasImage":       {reason: "moto does not implement GetConsoleScreenshot", want: true},
		"screenshot unknown":        {reason: "moto does not implement GetConsoleScreenshot", want: "InvalidInstanceID.NotFound"},
		"lookup by instance":        {reason: "moto does not implement LookupEvents", want: ""},
		"lookup by instance.events": {reason: "moto does not implement LookupEvents", want: []string{"RunInstances"}},
		"lookup by session":         {reason: "moto does not implement LookupEvents", want: ""},
		"lookup by two attributes":  {reason: "moto does not implement LookupEvents", want: "InvalidLookupAttributesException"},
		"lookup 51 results":         {reason: "moto does not implement LookupEvents", want: "InvalidMaxResultsException"},
	})
}
