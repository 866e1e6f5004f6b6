package isolate

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/impound-ir/impound/internal/testenv"
	"github.com/rs/zerolog"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopMoto()
	os.Exit(code)
}

// motoConfig resets moto and returns a configuration that talks to it.
func motoConfig(t *testing.T) (aws.Config, string) {
	t.Helper()
	ep := testenv.Moto(t)
	resp, err := http.Post(ep+"/moto-api/reset", "application/json", nil)
	if err != nil {
		t.Fatalf("reset moto: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reset moto: %s", resp.Status)
	}
	cfg := aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		BaseEndpoint: aws.String(ep),
	}
	return cfg, ep
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	l := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	return l.WithContext(ctx)
}

// target is where the AWS CLI sends its requests, with whose credentials.
type target struct{ endpoint, accessKey, secretKey string }

// awsCLI runs the AWS CLI against the target and decodes its JSON output.
func awsCLI(t *testing.T, tg target, out any, args ...string) {
	t.Helper()
	bin := testenv.Tool(t, "aws")
	cmd := exec.Command(bin, append([]string{"--endpoint-url", tg.endpoint, "--region", "us-east-1", "--output", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+tg.accessKey, "AWS_SECRET_ACCESS_KEY="+tg.secretKey, "AWS_SESSION_TOKEN=",
		"AWS_PAGER=", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_ENDPOINT_URL=")
	b, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("aws %v: %v\n%s", args, err, ee.Stderr)
		}
		t.Fatalf("aws %v: %v", args, err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("aws %v: decode %s: %v", args, b, err)
	}
}

// recorder collects steps as a Recorder.
type recorder struct{ steps []Step }

func (r *recorder) record(_ context.Context, s Step) error {
	r.steps = append(r.steps, s)
	return nil
}

func (r *recorder) byName(name string) *Step {
	for i := len(r.steps) - 1; i >= 0; i-- {
		if r.steps[i].Name == name {
			return &r.steps[i]
		}
	}
	return nil
}

func accessDenied(op string) error {
	return &smithy.GenericAPIError{Code: "AccessDenied", Message: "User is not authorized to perform: " + op, Fault: smithy.FaultClient}
}

// motoCompat papers over two places where moto 5.2 departs from AWS, so the
// moto tests check impound's logic rather than moto's model:
//
//   - AWS has one group set per interface, and an instance's groups are its
//     primary interface's. moto keeps instance-level groups apart and reports
//     their union with each attached interface's own. Changes to a primary
//     interface's groups are mirrored onto the instance, so moto reports what
//     AWS would.
//   - moto ignores ConnectionTrackingSpecification; the wrapper remembers what
//     was set and reports it, as AWS does. (The simulator tests check the
//     real behaviour end to end.)
type motoCompat struct {
	EC2API
	conntrack map[string]*ec2types.ConnectionTrackingConfiguration
}

func newMotoCompat(e EC2API) *motoCompat {
	return &motoCompat{EC2API: e, conntrack: map[string]*ec2types.ConnectionTrackingConfiguration{}}
}

func (m *motoCompat) ModifyNetworkInterfaceAttribute(ctx context.Context, in *ec2.ModifyNetworkInterfaceAttributeInput, o ...func(*ec2.Options)) (*ec2.ModifyNetworkInterfaceAttributeOutput, error) {
	out, err := m.EC2API.ModifyNetworkInterfaceAttribute(ctx, in, o...)
	if err != nil {
		return out, err
	}
	if ct := in.ConnectionTrackingSpecification; ct != nil {
		m.conntrack[aws.ToString(in.NetworkInterfaceId)] = &ec2types.ConnectionTrackingConfiguration{
			TcpEstablishedTimeout: ct.TcpEstablishedTimeout, UdpStreamTimeout: ct.UdpStreamTimeout, UdpTimeout: ct.UdpTimeout,
		}
	}
	if len(in.Groups) > 0 {
		d, err := m.EC2API.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{aws.ToString(in.NetworkInterfaceId)}})
		if err != nil {
			return out, err
		}
		if a := d.NetworkInterfaces[0].Attachment; a != nil && aws.ToInt32(a.DeviceIndex) == 0 && a.InstanceId != nil {
			if _, err := m.EC2API.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: a.InstanceId, Groups: in.Groups}); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

func (m *motoCompat) DescribeNetworkInterfaces(ctx context.Context, in *ec2.DescribeNetworkInterfacesInput, o ...func(*ec2.Options)) (*ec2.DescribeNetworkInterfacesOutput, error) {
	out, err := m.EC2API.DescribeNetworkInterfaces(ctx, in, o...)
	if err != nil {
		return out, err
	}
	for i := range out.NetworkInterfaces {
		if ct, ok := m.conntrack[aws.ToString(out.NetworkInterfaces[i].NetworkInterfaceId)]; ok {
			out.NetworkInterfaces[i].ConnectionTrackingConfiguration = ct
		}
	}
	return out, nil
}

// motoClients returns Clients for moto, with motoCompat around EC2.
func motoClients(cfg aws.Config) Clients {
	c := NewClients(cfg)
	c.EC2 = newMotoCompat(c.EC2)
	return c
}
