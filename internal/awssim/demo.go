package awssim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"os"
	"time"
)

// DemoOptions configures SeedDemo.
type DemoOptions struct {
	MemberAccountID    string // 111111111111 when empty
	ForensicsAccountID string // 222222222222 when empty
	// DataSeed makes the volumes' generated content reproducible.
	DataSeed uint64
	// RootGiB and DataGiB size the volumes (8 and 4 when 0).
	RootGiB, DataGiB int32
	// RootImage is a raw filesystem image (e.g. made with mkfs.ext4)
	// written at offset 0 of the root volume instead of generated data.
	RootImage string
}

// Demo describes what SeedDemo created.
type Demo struct {
	Member, Forensics *Account
	// InstanceID is the compromised instance in the member account.
	InstanceID string
	// RootVolumeID (unencrypted, /dev/xvda) and DataVolumeID (encrypted
	// with the member's aws/ebs key, /dev/sdf) are its volumes.
	RootVolumeID, DataVolumeID string
	// TransferKeyARN is a member CMK the forensics account may use
	// (alias/impound-transfer); EvidenceKeyARN the forensics account's own
	// CMK (alias/impound-evidence); LedgerKeyARN its ECC_NIST_P256 signing
	// key (alias/impound-ledger).
	TransferKeyARN, EvidenceKeyARN, LedgerKeyARN string

	// VPCID and SubnetID hold the instances (10.0.0.0/16 with IPv6, not
	// the default VPC).
	VPCID, SubnetID string
	// WebGroupID (HTTPS from anywhere, SSH from an admin range) and
	// AppGroupID (8080 from the web group) are the instance's groups.
	WebGroupID, AppGroupID string
	// NetworkInterfaceIDs are the instance's interfaces by device index:
	// the primary one (web and app groups, one IPv6 address) and a second
	// one (app group, IPv4 only).
	NetworkInterfaceIDs []string
	// AllocationID and PublicIP are the Elastic IP on the primary
	// interface.
	AllocationID, PublicIP string
	// InstanceProfileARN names profile web-app holding role RoleName, which
	// SecondInstanceID (web-2) shares; the role has the inline policy
	// s3-read and the attached AmazonSSMManagedInstanceCore.
	InstanceProfileARN, RoleName, SecondInstanceID string
	// AutoScalingGroupName holds both instances InService, registered with
	// TargetGroupARN and classic load balancer LoadBalancerName.
	AutoScalingGroupName, TargetGroupARN, LoadBalancerName string
	// VPCEndpointIDs are the ssm, ec2messages, ssmmessages (Interface)
	// and s3 (Gateway) endpoints, by short service name.
	VPCEndpointIDs map[string]string
	// ConsoleOutput is the instance's console text (with a hostile line).
	ConsoleOutput string
	// Finding is a GuardDuty finding about the instance, in the shape of
	// the EventBridge event's detail.
	Finding json.RawMessage
}

// DemoConsoleOutput is the compromised instance's console text. Its last
// lines are hostile: they must be shown as text, never interpreted.
const DemoConsoleOutput = `[    0.000000] Linux version 6.1.0-27-cloud-amd64 (debian-kernel@lists.debian.org)
[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz-6.1.0-27-cloud-amd64 root=PARTUUID=3f6f1a2b-01 ro console=tty0 console=ttyS0,115200
[    1.204311] EXT4-fs (nvme0n1p1): mounted filesystem with ordered data mode.
[  OK  ] Started ssh.service - OpenBSD Secure Shell server.
[  OK  ] Reached target multi-user.target - Multi-User System.
Debian GNU/Linux 12 web-1 ttyS0
web-1 login: <script>alert(1)</script>
[ 8812.551003] kworker/u4:2: Unexpected outbound connection 198.51.100.77:4444 ` + "\x1b[31m" + `(curl | sh)` + "\x1b[0m" + `
`

// SeedDemo seeds a member account with a compromised instance the way
// `impound drill` and `impound sim serve` need it: two volumes (one
// encrypted with aws/ebs, the root optionally holding a real filesystem
// image), in a VPC with security groups, two network interfaces, an Elastic
// IP, an instance profile shared with a second instance, an Auto Scaling
// group behind a target group and a classic load balancer, VPC endpoints
// for SSM and S3, console output and a screenshot, CloudTrail history, and
// a GuardDuty finding; and a forensics account with its keys.
func SeedDemo(s *Sim, o DemoOptions) (*Demo, error) {
	if o.MemberAccountID == "" {
		o.MemberAccountID = "111111111111"
	}
	if o.ForensicsAccountID == "" {
		o.ForensicsAccountID = "222222222222"
	}
	if o.RootGiB == 0 {
		o.RootGiB = 8
	}
	if o.DataGiB == 0 {
		o.DataGiB = 4
	}
	if o.MemberAccountID == o.ForensicsAccountID || !accountIDValid(o.MemberAccountID) || !accountIDValid(o.ForensicsAccountID) {
		return nil, fmt.Errorf("awssim: demo accounts %q and %q must be two different 12-digit IDs", o.MemberAccountID, o.ForensicsAccountID)
	}
	d := &Demo{Member: s.AddAccount(o.MemberAccountID), Forensics: s.AddAccount(o.ForensicsAccountID), VPCEndpointIDs: map[string]string{}}
	m := d.Member
	transfer, err := m.CreateKey(KeyOptions{Description: "impound transfer key", Alias: "alias/impound-transfer", AllowAccounts: []string{o.ForensicsAccountID}})
	if err != nil {
		return nil, err
	}
	evidence, err := d.Forensics.CreateKey(KeyOptions{Description: "impound evidence key", Alias: "alias/impound-evidence"})
	if err != nil {
		return nil, err
	}
	ledger, err := d.Forensics.CreateKey(KeyOptions{Spec: "ECC_NIST_P256", Description: "impound custody ledger signing key", Alias: "alias/impound-ledger"})
	if err != nil {
		return nil, err
	}
	d.TransferKeyARN, d.EvidenceKeyARN, d.LedgerKeyARN = transfer.ARN(), evidence.ARN(), ledger.ARN()

	root, err := m.CreateVolume(VolumeOptions{SizeGiB: o.RootGiB, Tags: map[string]string{"Name": "web-1-root"}})
	if err != nil {
		return nil, err
	}
	data, err := m.CreateVolume(VolumeOptions{SizeGiB: o.DataGiB, Encryption: EncryptionDefault, Tags: map[string]string{"Name": "web-1-data"}})
	if err != nil {
		return nil, err
	}
	if o.RootImage != "" {
		st, err := os.Stat(o.RootImage)
		if err != nil {
			return nil, fmt.Errorf("awssim: demo root image: %w", err)
		}
		if st.Size() > int64(o.RootGiB)<<30 {
			return nil, fmt.Errorf("awssim: demo root image %s (%d bytes) does not fit the %d GiB root volume", o.RootImage, st.Size(), o.RootGiB)
		}
		if _, err := root.WriteFile(0, o.RootImage); err != nil {
			return nil, err
		}
	} else if err := root.WriteRandom(0, min(8<<20, int64(o.RootGiB)<<30), o.DataSeed*4+1); err != nil {
		return nil, err
	}
	dataSize := int64(o.DataGiB) << 30
	if err := data.WriteRandom(0, min(16<<20, dataSize), o.DataSeed*4+2); err != nil {
		return nil, err
	}
	if off := min(int64(2)<<30, dataSize/2); off >= 16<<20 {
		if err := data.WriteRandom(off, min(1<<20, dataSize-off), o.DataSeed*4+3); err != nil {
			return nil, err
		}
	}

	// Network.
	vpc, err := m.CreateVPC(VPCOptions{CIDR: "10.0.0.0/16", IPv6CIDR: "2600:1f18:4a3:6a00::/56", Tags: map[string]string{"Name": "prod"}})
	if err != nil {
		return nil, err
	}
	d.VPCID = vpc.ID
	if d.SubnetID, err = m.CreateSubnet(SubnetOptions{VPCID: vpc.ID, CIDR: "10.0.1.0/24", IPv6CIDR: "2600:1f18:4a3:6a01::/64",
		Tags: map[string]string{"Name": "prod-web-a"}}); err != nil {
		return nil, err
	}
	if d.WebGroupID, err = m.CreateSecurityGroup(SecurityGroupOptions{VPCID: vpc.ID, Name: "web", Description: "public web servers",
		Ingress: []Rule{
			{Protocol: "tcp", FromPort: 443, ToPort: 443, CIDR: "0.0.0.0/0", Description: "HTTPS"},
			{Protocol: "tcp", FromPort: 443, ToPort: 443, IPv6CIDR: "::/0", Description: "HTTPS over IPv6"},
			{Protocol: "tcp", FromPort: 22, ToPort: 22, CIDR: "203.0.113.0/24", Description: "admin SSH"},
		},
		Egress: []Rule{{Protocol: "-1", IPv6CIDR: "::/0"}},
		Tags:   map[string]string{"Name": "web"}}); err != nil {
		return nil, err
	}
	if d.AppGroupID, err = m.CreateSecurityGroup(SecurityGroupOptions{VPCID: vpc.ID, Name: "app", Description: "application tier",
		Ingress: []Rule{{Protocol: "tcp", FromPort: 8080, ToPort: 8080, GroupID: d.WebGroupID}},
		Egress:  []Rule{{Protocol: "tcp", FromPort: 5432, ToPort: 5432, CIDR: "10.0.2.0/24", Description: "database"}},
	}); err != nil {
		return nil, err
	}

	// IAM: one role behind one profile, shared by web-1 and web-2.
	d.RoleName = "web-app"
	if _, err = m.CreateRole(RoleOptions{Name: d.RoleName, Description: "web tier",
		InlinePolicies:     map[string]string{"s3-read": `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::prod-assets","arn:aws:s3:::prod-assets/*"]}]}`},
		AttachedPolicyARNs: []string{"arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"},
	}); err != nil {
		return nil, err
	}
	if d.InstanceProfileARN, err = m.CreateInstanceProfile("web-app", d.RoleName); err != nil {
		return nil, err
	}

	inst, err := m.RunInstance(InstanceOptions{
		InstanceType:     "t3.medium",
		Devices:          []Device{{Name: "/dev/xvda", Volume: root, DeleteOnTermination: true}, {Name: "/dev/sdf", Volume: data}},
		Tags:             map[string]string{"Name": "web-1", "Environment": "production"},
		SubnetID:         d.SubnetID,
		SecurityGroupIDs: []string{d.WebGroupID, d.AppGroupID},
		IPv6AddressCount: 1,
		NetworkInterfaces: []NetworkInterfaceOptions{{SecurityGroupIDs: []string{d.AppGroupID}, Description: "web-1 replication",
			Tags: map[string]string{"Name": "web-1-replication"}}},
		InstanceProfile: "web-app",
		ConsoleOutput:   DemoConsoleOutput,
		Screenshot:      demoScreenshot(),
	})
	if err != nil {
		return nil, err
	}
	d.InstanceID, d.RootVolumeID, d.DataVolumeID = inst.ID(), root.ID(), data.ID()
	d.NetworkInterfaceIDs = inst.NetworkInterfaceIDs()
	d.ConsoleOutput = DemoConsoleOutput
	second, err := m.RunInstance(InstanceOptions{InstanceType: "t3.medium", Tags: map[string]string{"Name": "web-2", "Environment": "production"},
		SubnetID: d.SubnetID, SecurityGroupIDs: []string{d.WebGroupID, d.AppGroupID}, InstanceProfile: "web-app"})
	if err != nil {
		return nil, err
	}
	d.SecondInstanceID = second.ID()
	eip, err := m.AllocateAddress(AddressOptions{NetworkInterfaceID: d.NetworkInterfaceIDs[0], Tags: map[string]string{"Name": "web-1"}})
	if err != nil {
		return nil, err
	}
	d.AllocationID, d.PublicIP = eip.AllocationID, eip.PublicIP

	// Load balancing and Auto Scaling.
	if d.TargetGroupARN, err = m.CreateTargetGroup(TargetGroupOptions{Name: "web", VPCID: vpc.ID, Protocol: "HTTPS", Port: 443}); err != nil {
		return nil, err
	}
	d.LoadBalancerName = "web-classic"
	if err := m.CreateClassicLoadBalancer(d.LoadBalancerName, vpc.ID); err != nil {
		return nil, err
	}
	d.AutoScalingGroupName = "web"
	if _, err := m.CreateAutoScalingGroup(AutoScalingGroupOptions{Name: d.AutoScalingGroupName, InstanceIDs: []string{d.InstanceID, d.SecondInstanceID},
		MinSize: 1, MaxSize: 4, Desired: 2, TargetGroupARNs: []string{d.TargetGroupARN}, LoadBalancerNames: []string{d.LoadBalancerName}}); err != nil {
		return nil, err
	}

	// VPC endpoints SSM needs in a private subnet, and S3's.
	for _, svc := range []string{"ssm", "ec2messages", "ssmmessages", "s3"} {
		id, err := m.CreateVPCEndpoint(VPCEndpointOptions{VPCID: vpc.ID, Service: svc, Gateway: svc == "s3",
			SubnetIDs: map[bool][]string{true: nil, false: {d.SubnetID}}[svc == "s3"], SecurityGroupIDs: map[bool][]string{true: nil, false: {d.AppGroupID}}[svc == "s3"]})
		if err != nil {
			return nil, err
		}
		d.VPCEndpointIDs[svc] = id
	}

	// CloudTrail history: the instance's launch and an intruder's calls.
	now := s.now().UTC()
	launched := now.Add(-72 * time.Hour)
	instRes := EventResource{"AWS::EC2::Instance", d.InstanceID}
	m.RecordEvent(EventOptions{Name: "RunInstances", Source: "ec2.amazonaws.com", Time: launched, Username: "deploy-pipeline",
		Resources: []EventResource{instRes}, RequestParameters: map[string]any{"instanceType": "t3.medium"}})
	m.RecordEvent(EventOptions{Name: "AuthorizeSecurityGroupIngress", Source: "ec2.amazonaws.com", Time: now.Add(-3 * time.Hour),
		Username: d.InstanceID, PrincipalARN: "arn:aws:sts::" + m.id + ":assumed-role/web-app/" + d.InstanceID,
		Resources:         []EventResource{{"AWS::EC2::SecurityGroup", d.WebGroupID}},
		RequestParameters: map[string]any{"groupId": d.WebGroupID, "ipPermissions": "tcp/4444 from 0.0.0.0/0"}, SourceIPAddress: "198.51.100.77"})
	m.RecordEvent(EventOptions{Name: "ModifyInstanceAttribute", Source: "ec2.amazonaws.com", Time: now.Add(-2 * time.Hour),
		Username: d.InstanceID, PrincipalARN: "arn:aws:sts::" + m.id + ":assumed-role/web-app/" + d.InstanceID,
		Resources: []EventResource{instRes}, RequestParameters: map[string]any{"instanceId": d.InstanceID, "userData": "<sensitiveDataRemoved>"},
		SourceIPAddress: "198.51.100.77"})
	m.RecordEvent(EventOptions{Name: "GetRolePolicy", Source: "iam.amazonaws.com", Time: now.Add(-90 * time.Minute), ReadOnly: true,
		Username: d.InstanceID, PrincipalARN: "arn:aws:sts::" + m.id + ":assumed-role/web-app/" + d.InstanceID,
		Resources: []EventResource{{"AWS::IAM::Role", d.RoleName}}, RequestParameters: map[string]any{"roleName": d.RoleName, "policyName": "s3-read"},
		SourceIPAddress: "198.51.100.77"})

	finding := map[string]any{
		"schemaVersion": "2.0", "accountId": m.id, "region": s.region, "partition": "aws",
		"id": "f2c7a3e4b5d6478e9a0b1c2d3e4f5a6b", "arn": "arn:aws:guardduty:" + s.region + ":" + m.id + ":detector/4ab2c3d4e5f6/finding/f2c7a3e4b5d6478e9a0b1c2d3e4f5a6b",
		"type": "Backdoor:EC2/C&CActivity.B", "severity": 8, "title": "EC2 instance " + d.InstanceID + " is querying an IP address associated with a known command and control server.",
		"createdAt": now.Add(-time.Hour).Format(time.RFC3339), "updatedAt": now.Add(-10 * time.Minute).Format(time.RFC3339),
		"resource": map[string]any{"resourceType": "Instance", "instanceDetails": map[string]any{
			"instanceId": d.InstanceID, "instanceType": "t3.medium", "availabilityZone": s.az,
			"iamInstanceProfile": map[string]any{"arn": d.InstanceProfileARN},
			"networkInterfaces":  []map[string]any{{"networkInterfaceId": d.NetworkInterfaceIDs[0], "publicIp": d.PublicIP, "vpcId": d.VPCID, "subnetId": d.SubnetID}},
			"tags":               []map[string]string{{"key": "Name", "value": "web-1"}},
		}},
		"service": map[string]any{"serviceName": "guardduty", "count": 3, "archived": false,
			"eventFirstSeen": now.Add(-time.Hour).Format(time.RFC3339), "eventLastSeen": now.Add(-10 * time.Minute).Format(time.RFC3339),
			"action": map[string]any{"actionType": "NETWORK_CONNECTION", "networkConnectionAction": map[string]any{
				"connectionDirection": "OUTBOUND", "remoteIpDetails": map[string]any{"ipAddressV4": "198.51.100.77"}, "remotePortDetails": map[string]any{"port": 4444}}}},
	}
	if d.Finding, err = json.Marshal(finding); err != nil {
		return nil, err
	}
	return d, nil
}

// demoScreenshot draws a small console-like JPEG.
func demoScreenshot() []byte {
	img := image.NewRGBA(image.Rect(0, 0, 160, 100))
	for y := range 100 {
		for x := range 160 {
			c := color.RGBA{0, 0, 0, 255}
			if y%12 < 8 && x > 4 && x < 4+(y*37)%150 && y < 90 {
				c = color.RGBA{200, 200, 200, 255}
			}
			if y > 84 && y < 92 && x > 4 && x < 60 {
				c = color.RGBA{220, 30, 30, 255}
			}
			img.Set(x, y, c)
		}
	}
	var b bytes.Buffer
	_ = jpeg.Encode(&b, img, &jpeg.Options{Quality: 80})
	return b.Bytes()
}
