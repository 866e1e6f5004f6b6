package isolate

import (
	"context"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/internal/awssim/simtest"
)

// world is an AWS account the scenario tests run in. Every scenario test runs
// in each: moto_server (a third party's model of AWS) and impound's
// simulator (which models what moto does not: one group set per interface,
// connection-tracking timeouts).
type world struct {
	name string
	// build seeds the scenario and returns it with clients for it; ops,
	// when not nil, is attached to those clients.
	build func(t *testing.T, ctx context.Context, ops *opSet) *scenario
}

var worlds = []world{
	{"moto", buildMoto},
	{"sim", buildSim},
}

func forEachWorld(t *testing.T, f func(t *testing.T, w world)) {
	for _, w := range worlds {
		t.Run(w.name, func(t *testing.T) { f(t, w) })
	}
}

func buildMoto(t *testing.T, ctx context.Context, ops *opSet) *scenario {
	cfg, ep := motoConfig(t)
	if ops != nil {
		ops.attach(&cfg)
	}
	s := newMotoScenario(t, ctx, motoClients(cfg))
	s.cli = target{endpoint: ep, accessKey: "testing", secretKey: "testing"}
	return s
}

const simAccount = "111122223333"

// buildSim seeds the scenario in a fresh simulator through its seeding API.
func buildSim(t *testing.T, ctx context.Context, ops *opSet) *scenario {
	t.Helper()
	env := simtest.Start(t, awssim.Options{})
	a := env.Sim.AddAccount(simAccount)
	fail := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("seed simulator: %s: %v", what, err)
		}
	}
	s := &scenario{}
	vpc, err := a.CreateVPC(awssim.VPCOptions{CIDR: "10.20.0.0/16", IPv6CIDR: "2600:1f18:4a3:6a00::/56"})
	fail("vpc", err)
	s.vpc = vpc.ID
	s.subnet, err = a.CreateSubnet(awssim.SubnetOptions{VPCID: s.vpc, CIDR: "10.20.1.0/24", IPv6CIDR: "2600:1f18:4a3:6a00::/64"})
	fail("subnet", err)
	s.appGroup, err = a.CreateSecurityGroup(awssim.SecurityGroupOptions{VPCID: s.vpc, Name: "app", Description: "app", Ingress: []awssim.Rule{
		{Protocol: "tcp", FromPort: 443, ToPort: 443, CIDR: "0.0.0.0/0"}, {Protocol: "tcp", FromPort: 443, ToPort: 443, IPv6CIDR: "::/0"}}})
	fail("app group", err)
	s.adminGroup, err = a.CreateSecurityGroup(awssim.SecurityGroupOptions{VPCID: s.vpc, Name: "admin", Description: "admin"})
	fail("admin group", err)

	s.role = "shared-app"
	s.roleARN, err = a.CreateRole(awssim.RoleOptions{Name: s.role})
	fail("role", err)
	s.profileARN, err = a.CreateInstanceProfile("app-profile", s.role)
	fail("profile", err)

	var devs []awssim.Device
	for _, d := range []struct {
		name string
		size int32
	}{{"/dev/sda1", 8}, {"/dev/sdf", 4}} {
		v, err := a.CreateVolume(awssim.VolumeOptions{SizeGiB: d.size})
		fail("volume", err)
		devs = append(devs, awssim.Device{Name: d.name, Volume: v, DeleteOnTermination: true})
		s.volumes = append(s.volumes, v.ID())
	}
	inst, err := a.RunInstance(awssim.InstanceOptions{
		SubnetID: s.subnet, SecurityGroupIDs: []string{s.appGroup, s.adminGroup}, Devices: devs, InstanceProfile: "app-profile",
		NetworkInterfaces: []awssim.NetworkInterfaceOptions{{SecurityGroupIDs: []string{s.adminGroup}, IPv6AddressCount: 1}},
	})
	fail("instance", err)
	s.instance = inst.ID()
	other, err := a.RunInstance(awssim.InstanceOptions{SubnetID: s.subnet, InstanceProfile: "app-profile"})
	fail("other instance", err)
	s.other = other.ID()
	enis := inst.NetworkInterfaceIDs()
	if len(enis) != 2 {
		t.Fatalf("seed simulator: instance has %d interfaces, want 2", len(enis))
	}
	s.eni0, s.eni1 = enis[0], enis[1]
	addr, err := a.AllocateAddress(awssim.AddressOptions{NetworkInterfaceID: s.eni1})
	fail("address", err)
	s.eip, s.publicIP = addr.AllocationID, addr.PublicIP

	s.tg, err = a.CreateTargetGroup(awssim.TargetGroupOptions{Name: "web", VPCID: s.vpc, Port: 8080, InstanceIDs: []string{s.instance}})
	fail("target group", err)
	s.clb = "legacy"
	fail("classic load balancer", a.CreateClassicLoadBalancer(s.clb, s.vpc, s.instance))
	s.asg = "web"
	_, err = a.CreateAutoScalingGroup(awssim.AutoScalingGroupOptions{Name: s.asg, InstanceIDs: []string{s.instance}, MinSize: 0, MaxSize: 4, Desired: 1})
	fail("auto scaling group", err)

	cfg := env.ClientConfig(a.Credentials())
	if ops != nil {
		ops.attach(&cfg)
	}
	s.c = NewClients(cfg)
	creds := a.Credentials()
	s.cli = target{endpoint: env.URL(), accessKey: creds.AccessKeyID, secretKey: creds.SecretAccessKey}
	s.terminate = func(ctx context.Context, id string) error {
		return terminateThroughSDK(ctx, cfg, id)
	}
	s.defaultVPCInstance = func(context.Context) (string, error) {
		i, err := a.RunInstance(awssim.InstanceOptions{})
		if err != nil {
			return "", err
		}
		return i.ID(), nil
	}
	s.addSSMEndpoints = func(context.Context) error {
		epGroup, err := a.CreateSecurityGroup(awssim.SecurityGroupOptions{VPCID: s.vpc, Name: "endpoints", Description: "VPC endpoints"})
		if err != nil {
			return err
		}
		for _, svc := range []string{"ssm", "ec2messages", "ssmmessages"} {
			if _, err := a.CreateVPCEndpoint(awssim.VPCEndpointOptions{VPCID: s.vpc, Service: svc, SubnetIDs: []string{s.subnet}, SecurityGroupIDs: []string{epGroup}}); err != nil {
				return fmt.Errorf("endpoint %s: %w", svc, err)
			}
		}
		_, err = a.CreateVPCEndpoint(awssim.VPCEndpointOptions{VPCID: s.vpc, Service: "s3", Gateway: true})
		return err
	}
	return s
}

func terminateThroughSDK(ctx context.Context, cfg aws.Config, id string) error {
	_, err := ec2.NewFromConfig(cfg).TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	return err
}
