package isolate

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancing/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbv2types "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// motoAMI is an image moto knows.
const motoAMI = "ami-03cf127a"

// scenario is the instance the tests isolate: in an Auto Scaling group,
// behind an ELBv2 target group and a classic ELB, with two interfaces, an
// Elastic IP, IPv6, and an instance role shared with another instance.
type scenario struct {
	c   Clients
	cli target // for the AWS CLI
	// World-specific actions.
	terminate          func(ctx context.Context, id string) error
	defaultVPCInstance func(ctx context.Context) (string, error)
	addSSMEndpoints    func(ctx context.Context) error
	vpc                string
	subnet             string
	appGroup           string
	adminGroup         string
	instance           string
	other              string // shares the role
	eni0, eni1         string
	eip                string // allocation ID
	publicIP           string
	profileARN         string
	role               string
	roleARN            string
	asg                string
	tg                 string
	clb                string
	volumes            []string
}

// must panics on err; newScenario turns the panic into t.Fatal.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func newMotoScenario(t *testing.T, ctx context.Context, c Clients) *scenario {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("set up scenario in moto: %v", r)
		}
	}()
	s := &scenario{c: c}
	e := unwrapEC2(c.EC2)
	vpc := must(e.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.20.0.0/16"), AmazonProvidedIpv6CidrBlock: aws.Bool(true)}))
	s.vpc = *vpc.Vpc.VpcId
	v6 := "2600:1f18:aaaa:bb00::/56"
	if d := must(e.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{s.vpc}})); len(d.Vpcs[0].Ipv6CidrBlockAssociationSet) > 0 {
		v6 = *d.Vpcs[0].Ipv6CidrBlockAssociationSet[0].Ipv6CidrBlock
	}
	sn := must(e.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: &s.vpc, CidrBlock: aws.String("10.20.1.0/24"),
		Ipv6CidrBlock: aws.String(strings.Replace(v6, "/56", "/64", 1)), AvailabilityZone: aws.String("us-east-1a")}))
	s.subnet = *sn.Subnet.SubnetId
	app := must(e.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("app"), Description: aws.String("app"), VpcId: &s.vpc}))
	s.appGroup = *app.GroupId
	must(e.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &s.appGroup, IpPermissions: []ec2types.IpPermission{{
		IpProtocol: aws.String("tcp"), FromPort: aws.Int32(443), ToPort: aws.Int32(443),
		IpRanges: []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}, Ipv6Ranges: []ec2types.Ipv6Range{{CidrIpv6: aws.String("::/0")}},
	}}}))
	adm := must(e.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("admin"), Description: aws.String("admin"), VpcId: &s.vpc}))
	s.adminGroup = *adm.GroupId

	// The shared role and its profile.
	im := c.IAM.(*iam.Client)
	s.role = "shared-app"
	role := must(im.CreateRole(ctx, &iam.CreateRoleInput{RoleName: &s.role, AssumeRolePolicyDocument: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`)}))
	s.roleARN = *role.Role.Arn
	prof := must(im.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String("app-profile")}))
	s.profileARN = *prof.InstanceProfile.Arn
	if _, err := im.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{InstanceProfileName: aws.String("app-profile"), RoleName: &s.role}); err != nil {
		// AddRoleToInstanceProfile is not idempotent: when the SDK retries
		// after a lost response, the retry finds the role already there.
		// Only that case is tolerated.
		p := must(im.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String("app-profile")}))
		if len(p.InstanceProfile.Roles) != 1 || aws.ToString(p.InstanceProfile.Roles[0].RoleName) != s.role {
			panic(err)
		}
	}

	run := must(e.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(motoAMI), InstanceType: ec2types.InstanceTypeT3Micro, MinCount: aws.Int32(2), MaxCount: aws.Int32(2),
		SubnetId: &s.subnet, SecurityGroupIds: []string{s.appGroup, s.adminGroup},
		IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Arn: &s.profileARN},
		BlockDeviceMappings: []ec2types.BlockDeviceMapping{
			{DeviceName: aws.String("/dev/sda1"), Ebs: &ec2types.EbsBlockDevice{VolumeSize: aws.Int32(8), DeleteOnTermination: aws.Bool(true)}},
			{DeviceName: aws.String("/dev/sdf"), Ebs: &ec2types.EbsBlockDevice{VolumeSize: aws.Int32(4), DeleteOnTermination: aws.Bool(true)}},
		},
	}))
	s.instance, s.other = *run.Instances[0].InstanceId, *run.Instances[1].InstanceId
	s.eni0 = *run.Instances[0].NetworkInterfaces[0].NetworkInterfaceId
	// moto associates the profile with the first instance only.
	for _, id := range []string{s.instance, s.other} {
		if p, err := readProfile(ctx, c, id); err != nil || p == nil {
			must(e.AssociateIamInstanceProfile(ctx, &ec2.AssociateIamInstanceProfileInput{InstanceId: aws.String(id), IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Arn: &s.profileARN}}))
		}
	}

	eni := must(e.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: &s.subnet, Groups: []string{s.adminGroup}, Ipv6AddressCount: aws.Int32(1)}))
	s.eni1 = *eni.NetworkInterface.NetworkInterfaceId
	must(e.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: &s.eni1, InstanceId: &s.instance, DeviceIndex: aws.Int32(1)}))

	addr := must(e.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc}))
	s.eip, s.publicIP = *addr.AllocationId, *addr.PublicIp
	must(e.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: &s.eip, NetworkInterfaceId: &s.eni1}))

	d := must(e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{s.instance}}))
	for _, m := range d.Reservations[0].Instances[0].BlockDeviceMappings {
		s.volumes = append(s.volumes, *m.Ebs.VolumeId)
	}

	// Auto Scaling group holding the instance.
	as := c.AutoScaling.(*autoscaling.Client)
	s.asg = "web"
	must(e.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("web"), LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String(motoAMI), InstanceType: ec2types.InstanceTypeT3Micro}}))
	must(as.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: &s.asg, MinSize: aws.Int32(0), MaxSize: aws.Int32(4), DesiredCapacity: aws.Int32(0),
		LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("web"), Version: aws.String("$Latest")}, VPCZoneIdentifier: &s.subnet,
	}))
	must(as.AttachInstances(ctx, &autoscaling.AttachInstancesInput{AutoScalingGroupName: &s.asg, InstanceIds: []string{s.instance}}))

	// ELBv2 target group and classic ELB.
	v2 := c.ELBv2.(*elbv2.Client)
	tg := must(v2.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("web"), Protocol: elbv2types.ProtocolEnumHttp, Port: aws.Int32(80), VpcId: &s.vpc, TargetType: elbv2types.TargetTypeEnumInstance}))
	s.tg = *tg.TargetGroups[0].TargetGroupArn
	must(v2.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: &s.tg, Targets: []elbv2types.TargetDescription{{Id: &s.instance, Port: aws.Int32(8080)}}}))
	cl := c.ELB.(*elb.Client)
	s.clb = "legacy"
	must(cl.CreateLoadBalancer(ctx, &elb.CreateLoadBalancerInput{LoadBalancerName: &s.clb, Subnets: []string{s.subnet},
		Listeners: []elbtypes.Listener{{Protocol: aws.String("HTTP"), LoadBalancerPort: 80, InstancePort: aws.Int32(80)}}}))
	must(cl.RegisterInstancesWithLoadBalancer(ctx, &elb.RegisterInstancesWithLoadBalancerInput{LoadBalancerName: &s.clb, Instances: []elbtypes.Instance{{InstanceId: &s.instance}}}))

	s.terminate = func(ctx context.Context, id string) error {
		_, err := e.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		return err
	}
	s.defaultVPCInstance = func(ctx context.Context) (string, error) {
		run, err := e.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(motoAMI), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
		if err != nil {
			return "", err
		}
		return aws.ToString(run.Instances[0].InstanceId), nil
	}
	s.addSSMEndpoints = func(ctx context.Context) error {
		for _, svc := range []string{"ssm", "ec2messages", "ssmmessages"} {
			if _, err := e.CreateVpcEndpoint(ctx, &ec2.CreateVpcEndpointInput{VpcId: &s.vpc, ServiceName: aws.String("com.amazonaws.us-east-1." + svc),
				VpcEndpointType: ec2types.VpcEndpointTypeInterface, SubnetIds: []string{s.subnet}}); err != nil {
				return err
			}
		}
		_, err := e.CreateVpcEndpoint(ctx, &ec2.CreateVpcEndpointInput{VpcId: &s.vpc, ServiceName: aws.String("com.amazonaws.us-east-1.s3"),
			VpcEndpointType: ec2types.VpcEndpointTypeGateway})
		return err
	}
	return s
}

func unwrapEC2(e EC2API) *ec2.Client {
	for {
		switch v := e.(type) {
		case *ec2.Client:
			return v
		case *motoCompat:
			e = v.EC2API
		case *denyEC2:
			e = v.EC2API
		default:
			panic(fmt.Sprintf("unwrapEC2: %T", e))
		}
	}
}
