package awssim_test

import (
	"testing"

	"github.com/impound-ir/impound/internal/awssim"
)

// TestAWSCLIControlPlane drives the control-plane operations through the
// AWS CLI: an operator inspecting `impound sim serve` sees what impound sees.
func TestAWSCLIControlPlane(t *testing.T) {
	e := newEnv(t)
	d, err := awssim.SeedDemo(e.Sim, awssim.DemoOptions{MemberAccountID: memberID, ForensicsAccountID: forensicsID, RootGiB: 1, DataGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	m := newCLI(t, e, e.member)

	nis := m.run("ec2", "describe-network-interfaces", "--filters", "Name=attachment.instance-id,Values="+d.InstanceID)
	l, _ := get(nis, "NetworkInterfaces").([]any)
	if len(l) != 2 {
		t.Fatalf("describe-network-interfaces: %d interfaces, want 2: %v", len(l), nis)
	}
	for _, ni := range l {
		if str(ni, "NetworkInterfaceId") == d.NetworkInterfaceIDs[0] {
			if str(ni, "Association", "PublicIp") != d.PublicIP || str(ni, "Ipv6Addresses", 0, "Ipv6Address") == "" ||
				str(ni, "Groups", 0, "GroupId") != d.WebGroupID || str(ni, "Attachment", "InstanceId") != d.InstanceID || str(ni, "Attachment", "Status") != "attached" {
				t.Errorf("primary interface %v", ni)
			}
		}
	}
	m.fail("InvalidNetworkInterfaceID.NotFound", "ec2", "describe-network-interfaces", "--network-interface-ids", "eni-0123456789abcdef0")

	asi := m.run("autoscaling", "describe-auto-scaling-instances", "--instance-ids", d.InstanceID)
	if str(asi, "AutoScalingInstances", 0, "AutoScalingGroupName") != d.AutoScalingGroupName ||
		str(asi, "AutoScalingInstances", 0, "LifecycleState") != "InService" || str(asi, "AutoScalingInstances", 0, "HealthStatus") != "HEALTHY" {
		t.Errorf("describe-auto-scaling-instances %v", asi)
	}
	m.run("autoscaling", "enter-standby", "--auto-scaling-group-name", d.AutoScalingGroupName, "--instance-ids", d.InstanceID, "--should-decrement-desired-capacity")
	asi = m.run("autoscaling", "describe-auto-scaling-instances", "--instance-ids", d.InstanceID)
	if str(asi, "AutoScalingInstances", 0, "LifecycleState") != "Standby" {
		t.Errorf("after enter-standby %v", asi)
	}

	pol := m.run("iam", "get-role-policy", "--role-name", d.RoleName, "--policy-name", "s3-read")
	if str(pol, "PolicyName") != "s3-read" || str(pol, "PolicyDocument", "Statement", 0, "Effect") != "Allow" {
		t.Errorf("get-role-policy %v (the CLI decodes the URL-encoded document)", pol)
	}
	m.fail("NoSuchEntity", "iam", "get-role-policy", "--role-name", d.RoleName, "--policy-name", "nope")

	ev := m.run("cloudtrail", "lookup-events", "--lookup-attributes", "AttributeKey=ResourceName,AttributeValue="+d.InstanceID, "--max-results", "5")
	// Newest first: our enter-standby, then the seeded history.
	if str(ev, "Events", 0, "EventName") != "EnterStandby" || str(ev, "Events", 0, "Username") != "impound-sim" ||
		str(ev, "Events", 1, "EventName") != "ModifyInstanceAttribute" {
		t.Errorf("lookup-events %v", ev)
	}
	out := m.run("ec2", "get-console-output", "--instance-id", d.InstanceID, "--latest")
	if str(out, "Output") != awssim.DemoConsoleOutput {
		t.Errorf("get-console-output (decoded by the CLI) %q", str(out, "Output"))
	}
}
