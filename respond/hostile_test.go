package respond

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/impound-ir/impound/vault"
)

// TestHostileTagInReport: a tag the attacker controls (the instance's
// Name) goes through a whole response into the stored HTML report as text,
// never as markup.
func TestHostileTagInReport(t *testing.T) {
	ctx := context.Background()
	d := newDrill(t, vault.NewMemory())
	const hostile = `<script>alert("tag")</script><img src=x onerror=alert(2)>`
	if _, err := ec2.NewFromConfig(d.acc.Member).CreateTags(ctx, &ec2.CreateTagsInput{
		Resources: []string{d.demo.InstanceID},
		Tags:      []ec2types.Tag{{Key: aws.String("Name"), Value: aws.String(hostile)}},
	}); err != nil {
		t.Fatal(err)
	}
	c := d.open(t, d.options())
	sum, err := Run(ctx, c, c.Stages())
	if err != nil {
		t.Fatalf("respond: %v", err)
	}
	var html string
	for _, r := range sum.Reports {
		if strings.HasSuffix(r.Key, ".html") {
			rc, err := d.store.Get(ctx, r.Key, r.VersionID)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			html = string(b)
		}
	}
	if html == "" {
		t.Fatal("no HTML report stored")
	}
	if strings.Contains(html, "<script>alert") || strings.Contains(html, "<img src=x") {
		t.Error("the report carries the hostile tag as markup")
	}
	if !strings.Contains(html, "&lt;script&gt;alert(&#34;tag&#34;)&lt;/script&gt;") && !strings.Contains(html, "&lt;script&gt;alert(&quot;tag&quot;)&lt;/script&gt;") {
		i := strings.Index(html, "alert(")
		t.Errorf("the report does not show the hostile tag as text: %q", html[max(0, i-80):min(len(html), i+120)])
	}
}
