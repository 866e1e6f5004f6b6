package awssim

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// This file holds the EC2 networking model (VPCs, subnets, network
// interfaces, security groups, network ACLs, Elastic IPs, VPC endpoints) and
// its seeding API; ec2_network.go serves it.

// Connection-tracking defaults AWS applies to an interface whose timeouts
// were never set (seconds).
const (
	DefaultTCPEstablishedTimeout = 432000
	DefaultUDPStreamTimeout      = 180
	DefaultUDPTimeout            = 30
)

type vpc struct {
	id, owner, cidr, ipv6CIDR string
	isDefault                 bool
	defaultSG, defaultNACL    string
}

type subnet struct {
	id, owner, vpcID, cidr, ipv6CIDR string
	defaultForAZ                     bool
	hosts                            int // addresses handed out
	naclAssoc, naclID                string
}

type eni struct {
	id, owner, subnetID, vpcID string
	description, mac           string
	privateIP                  string
	ipv6                       []string
	groups                     []string
	sourceDestCheck            bool
	attachment                 *eniAttachment
	ct                         *connTracking // nil: never set
}

type eniAttachment struct {
	id, instanceID      string
	deviceIndex         int
	deleteOnTermination bool
	at                  time.Time
}

type connTracking struct{ tcpEstablished, udpStream, udp int32 }

type secGroup struct {
	id, owner, name, description, vpcID string
	rules                               []*sgRule
}

type sgRule struct {
	id                                          string
	egress                                      bool
	proto                                       string // "-1", "tcp", "udp", "icmp", "icmpv6" or a number
	from, to                                    int32
	cidr4, cidr6, prefixList, refGroup, refUser string
	description                                 string
}

// same reports whether two rules grant the same thing (descriptions aside).
func (r *sgRule) same(o *sgRule) bool {
	return r.egress == o.egress && r.proto == o.proto && r.from == o.from && r.to == o.to && r.cidr4 == o.cidr4 &&
		r.cidr6 == o.cidr6 && r.prefixList == o.prefixList && r.refGroup == o.refGroup
}

type nacl struct {
	id, owner, vpcID string
	isDefault        bool
	entries          []naclEntry
}

type naclEntry struct {
	rule         int32
	egress       bool
	proto        string
	action       string
	cidr4, cidr6 string
	from, to     int32
	ports        bool
}

type address struct {
	allocationID, publicIP, owner string
	associationID, eniID          string
	privateIP                     string
}

type vpcEndpoint struct {
	id, owner, vpcID, service, typ string
	subnets, groups, routeTables   []string
	privateDNS                     bool
	created                        time.Time
}

type ipAssociation struct {
	id, instanceID, profileARN, profileID, state string
	at                                           time.Time
}

// prefixList is an AWS managed prefix list.
type prefixList struct {
	id, name string
	cidrs    []string
}

func (s *Sim) prefixListsLocked() []prefixList {
	return []prefixList{
		{"pl-63a5400a", "com.amazonaws." + s.region + ".s3", []string{"52.216.0.0/15", "3.5.0.0/19", "54.231.0.0/16"}},
		{"pl-02cd2c6b", "com.amazonaws." + s.region + ".dynamodb", []string{"52.94.0.0/22", "52.119.224.0/20"}},
	}
}

// nthAddr returns the n-th address of a prefix.
func nthAddr(cidr string, n int) string {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return ""
	}
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a.String()
}

func (s *Sim) newVPCLocked(a *Account, cidr, ipv6 string, isDefault bool, tags map[string]string) (*vpc, error) {
	if p, err := netip.ParsePrefix(cidr); err != nil || !p.Addr().Is4() || p.Bits() < 16 || p.Bits() > 28 {
		return nil, ec2InvalidParam("Value (%s) for parameter cidrBlock is invalid. This is not a valid CIDR block.", cidr)
	}
	v := &vpc{id: s.newID("vpc"), owner: a.id, cidr: cidr, ipv6CIDR: ipv6, isDefault: isDefault}
	s.vpcs[v.id] = v
	s.setTagsLocked(v.id, tags)
	sg := &secGroup{id: s.newID("sg"), owner: a.id, name: "default", description: "default VPC security group", vpcID: v.id}
	sg.rules = []*sgRule{
		{id: s.newID("sgr"), proto: "-1", from: -1, to: -1, refGroup: sg.id, refUser: a.id},
		{id: s.newID("sgr"), egress: true, proto: "-1", from: -1, to: -1, cidr4: "0.0.0.0/0"},
	}
	if ipv6 != "" {
		sg.rules = append(sg.rules, &sgRule{id: s.newID("sgr"), egress: true, proto: "-1", from: -1, to: -1, cidr6: "::/0"})
	}
	s.sgs[sg.id] = sg
	v.defaultSG = sg.id
	n := s.newNACLLocked(a, v, true)
	v.defaultNACL = n.id
	return v, nil
}

func (s *Sim) newNACLLocked(a *Account, v *vpc, isDefault bool) *nacl {
	n := &nacl{id: s.newID("acl"), owner: a.id, vpcID: v.id, isDefault: isDefault}
	for _, egress := range []bool{false, true} {
		if isDefault {
			n.entries = append(n.entries, naclEntry{rule: 100, egress: egress, proto: "-1", action: "allow", cidr4: "0.0.0.0/0"})
			if v.ipv6CIDR != "" {
				n.entries = append(n.entries, naclEntry{rule: 101, egress: egress, proto: "-1", action: "allow", cidr6: "::/0"})
			}
		}
		n.entries = append(n.entries, naclEntry{rule: 32767, egress: egress, proto: "-1", action: "deny", cidr4: "0.0.0.0/0"})
		if v.ipv6CIDR != "" {
			n.entries = append(n.entries, naclEntry{rule: 32768, egress: egress, proto: "-1", action: "deny", cidr6: "::/0"})
		}
	}
	s.nacls[n.id] = n
	return n
}

func (s *Sim) newSubnetLocked(a *Account, v *vpc, cidr, ipv6 string, defaultForAZ bool, tags map[string]string) (*subnet, error) {
	p, err := netip.ParsePrefix(cidr)
	vp, _ := netip.ParsePrefix(v.cidr)
	if err != nil || !p.Addr().Is4() || p.Bits() < 16 || p.Bits() > 28 || !vp.Contains(p.Addr()) || p.Bits() < vp.Bits() {
		return nil, errf(400, "InvalidSubnet.Range", "The CIDR '%s' is invalid.", cidr)
	}
	sn := &subnet{id: s.newID("subnet"), owner: a.id, vpcID: v.id, cidr: cidr, ipv6CIDR: ipv6, defaultForAZ: defaultForAZ}
	sn.naclID = v.defaultNACL
	sn.naclAssoc = s.newID("aclassoc")
	s.subnets[sn.id] = sn
	s.setTagsLocked(sn.id, tags)
	return sn, nil
}

// defaultVPCLocked returns the account's default VPC and its default
// subnet, creating them (172.31.0.0/16, 172.31.0.0/20) on first use.
func (s *Sim) defaultVPCLocked(a *Account) (*vpc, *subnet) {
	for _, id := range sortedKeys(s.vpcs) {
		if v := s.vpcs[id]; v.owner == a.id && v.isDefault {
			for _, sid := range sortedKeys(s.subnets) {
				if sn := s.subnets[sid]; sn.vpcID == v.id && sn.defaultForAZ {
					return v, sn
				}
			}
		}
	}
	v, err := s.newVPCLocked(a, "172.31.0.0/16", "", true, nil)
	if err != nil {
		panic(err)
	}
	sn, err := s.newSubnetLocked(a, v, "172.31.0.0/20", "", true, nil)
	if err != nil {
		panic(err)
	}
	return v, sn
}

// nextIPLocked hands out the subnet's next private IPv4 address (AWS
// reserves the first four).
func (sn *subnet) nextIPLocked() string {
	ip := nthAddr(sn.cidr, 4+sn.hosts)
	sn.hosts++
	return ip
}

func (sn *subnet) nextIPv6Locked() string {
	ip := nthAddr(sn.ipv6CIDR, 0x100+sn.hosts)
	sn.hosts++
	return ip
}

func (s *Sim) newENILocked(a *Account, sn *subnet, groups []string, ipv6Count int, description string) (*eni, error) {
	if len(groups) == 0 {
		groups = []string{s.vpcs[sn.vpcID].defaultSG}
	}
	for _, g := range groups {
		sg := s.sgs[g]
		if sg == nil || sg.owner != a.id {
			return nil, sgNotFound(g)
		}
		if sg.vpcID != sn.vpcID {
			return nil, ec2InvalidParam("Security group %s and subnet %s belong to different networks.", g, sn.id)
		}
	}
	if ipv6Count > 0 && sn.ipv6CIDR == "" {
		return nil, ec2InvalidParam("Subnet %s has no IPv6 CIDR block; cannot assign IPv6 addresses", sn.id)
	}
	e := &eni{
		id: s.newID("eni"), owner: a.id, subnetID: sn.id, vpcID: sn.vpcID, description: description,
		mac:       "0e:" + s.randHex(2) + ":" + s.randHex(2) + ":" + s.randHex(2) + ":" + s.randHex(2) + ":" + s.randHex(2),
		privateIP: sn.nextIPLocked(), groups: slices.Clone(groups), sourceDestCheck: true,
	}
	for range ipv6Count {
		e.ipv6 = append(e.ipv6, sn.nextIPv6Locked())
	}
	s.enis[e.id] = e
	return e, nil
}

// instanceENIsLocked returns the interfaces attached to an instance by
// device index.
func (s *Sim) instanceENIsLocked(instID string) []*eni {
	return slices.Clone(s.instENIs[instID])
}

// attachENILocked attaches e to inst at the device index.
func (s *Sim) attachENILocked(e *eni, inst *instance, index int, deleteOnTermination bool) {
	e.attachment = &eniAttachment{id: "eni-attach-" + s.randHex(17), instanceID: inst.id, deviceIndex: index,
		deleteOnTermination: deleteOnTermination, at: inst.launched}
	l := append(s.instENIs[inst.id], e)
	slices.SortFunc(l, func(x, y *eni) int { return x.attachment.deviceIndex - y.attachment.deviceIndex })
	s.instENIs[inst.id] = l
}

// detachENIsLocked forgets which interfaces an instance has.
func (s *Sim) detachENIsLocked(instID string) { delete(s.instENIs, instID) }

// ---- seeding API ----

// VPCOptions describes a VPC to seed.
type VPCOptions struct {
	CIDR     string // 10.0.0.0/16 when empty
	IPv6CIDR string // an IPv6 /56 (e.g. 2600:1f18:4a3:6a00::/56); none when empty
	Tags     map[string]string
}

// VPC describes a seeded VPC.
type VPC struct {
	ID, DefaultSecurityGroupID, DefaultNetworkACLID string
}

// CreateVPC seeds a VPC with its default security group and network ACL,
// as AWS creates them.
func (a *Account) CreateVPC(o VPCOptions) (VPC, error) {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	if o.CIDR == "" {
		o.CIDR = "10.0.0.0/16"
	}
	v, err := s.newVPCLocked(a, o.CIDR, o.IPv6CIDR, false, o.Tags)
	if err != nil {
		return VPC{}, fmt.Errorf("awssim: create VPC: %w", err)
	}
	return VPC{ID: v.id, DefaultSecurityGroupID: v.defaultSG, DefaultNetworkACLID: v.defaultNACL}, nil
}

// DefaultVPC returns the account's default VPC (created on first use, as
// every account has one) and the ID of its default subnet.
func (a *Account) DefaultVPC() (VPC, string) {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	v, sn := s.defaultVPCLocked(a)
	return VPC{ID: v.id, DefaultSecurityGroupID: v.defaultSG, DefaultNetworkACLID: v.defaultNACL}, sn.id
}

// SubnetOptions describes a subnet to seed.
type SubnetOptions struct {
	VPCID    string // required
	CIDR     string // required, inside the VPC's
	IPv6CIDR string // an IPv6 /64 inside the VPC's; none when empty
	Tags     map[string]string
}

// CreateSubnet seeds a subnet associated with the VPC's default network ACL.
func (a *Account) CreateSubnet(o SubnetOptions) (string, error) {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vpcs[o.VPCID]
	if v == nil || v.owner != a.id {
		return "", fmt.Errorf("awssim: subnet: VPC %s: %w", o.VPCID, ErrNotFound)
	}
	sn, err := s.newSubnetLocked(a, v, o.CIDR, o.IPv6CIDR, false, o.Tags)
	if err != nil {
		return "", fmt.Errorf("awssim: create subnet: %w", err)
	}
	return sn.id, nil
}

// Rule is one security group rule: a protocol, a port range and one peer.
type Rule struct {
	Protocol         string // tcp, udp, icmp or -1 (all)
	FromPort, ToPort int32  // ignored for -1
	CIDR             string // one of CIDR, IPv6CIDR, PrefixListID, GroupID
	IPv6CIDR         string
	PrefixListID     string
	GroupID          string
	Description      string
}

// SecurityGroupOptions describes a security group to seed.
type SecurityGroupOptions struct {
	VPCID, Name, Description string
	Ingress, Egress          []Rule
	// NoDefaultEgress drops the allow-all egress rule AWS adds to every new
	// group.
	NoDefaultEgress bool
	Tags            map[string]string
}

// CreateSecurityGroup seeds a security group and returns its ID.
func (a *Account) CreateSecurityGroup(o SecurityGroupOptions) (string, error) {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	sg, err := s.newSGLocked(a, o.VPCID, o.Name, o.Description, o.Tags)
	if err != nil {
		return "", fmt.Errorf("awssim: create security group: %w", err)
	}
	if o.NoDefaultEgress {
		sg.rules = nil
	}
	for _, set := range []struct {
		rules  []Rule
		egress bool
	}{{o.Ingress, false}, {o.Egress, true}} {
		for _, r := range set.rules {
			x := &sgRule{id: s.newID("sgr"), egress: set.egress, proto: normProto(r.Protocol), from: r.FromPort, to: r.ToPort,
				cidr4: r.CIDR, cidr6: r.IPv6CIDR, prefixList: r.PrefixListID, refGroup: r.GroupID, description: r.Description}
			if x.refGroup != "" {
				x.refUser = a.id
			}
			if x.proto == "-1" {
				x.from, x.to = -1, -1
			}
			sg.rules = append(sg.rules, x)
		}
	}
	return sg.id, nil
}

func (s *Sim) newSGLocked(a *Account, vpcID, name, desc string, tags map[string]string) (*secGroup, error) {
	if vpcID == "" {
		v, _ := s.defaultVPCLocked(a)
		vpcID = v.id
	}
	v := s.vpcs[vpcID]
	if v == nil || v.owner != a.id {
		return nil, vpcNotFound(vpcID)
	}
	if name == "" {
		return nil, ec2Missing("GroupName")
	}
	if desc == "" {
		return nil, ec2Missing("GroupDescription")
	}
	if strings.HasPrefix(name, "sg-") {
		return nil, ec2InvalidParam("Group names may not be in the format sg-*")
	}
	for _, g := range s.sgs {
		if g.vpcID == vpcID && g.name == name {
			return nil, errf(400, "InvalidGroup.Duplicate", "The security group '%s' already exists for VPC '%s'", name, vpcID)
		}
	}
	sg := &secGroup{id: s.newID("sg"), owner: a.id, name: name, description: desc, vpcID: vpcID}
	sg.rules = []*sgRule{{id: s.newID("sgr"), egress: true, proto: "-1", from: -1, to: -1, cidr4: "0.0.0.0/0"}}
	s.sgs[sg.id] = sg
	s.setTagsLocked(sg.id, tags)
	return sg, nil
}

// NetworkInterfaceOptions describes an instance's network interface.
type NetworkInterfaceOptions struct {
	// SubnetID defaults to the instance's subnet.
	SubnetID string
	// SecurityGroupIDs default to the VPC's default group.
	SecurityGroupIDs []string
	IPv6AddressCount int
	Description      string
	// ConnectionTracking sets the interface's timeouts; nil leaves them
	// unset (DescribeNetworkInterfaces then shows none, and AWS applies
	// its defaults).
	ConnectionTracking *ConnectionTracking
	Tags               map[string]string
}

// ConnectionTracking are an interface's idle timeouts in seconds.
type ConnectionTracking struct {
	TCPEstablished, UDPStream, UDP int32
}

// NetworkInterfaceIDs returns the IDs of the instance's interfaces by
// device index.
func (i *Instance) NetworkInterfaceIDs() []string {
	s := i.sim
	s.mu.RLock()
	defer s.mu.RUnlock()
	var ids []string
	for _, e := range s.instanceENIsLocked(i.id) {
		ids = append(ids, e.id)
	}
	return ids
}

// AddressOptions describes an Elastic IP to seed.
type AddressOptions struct {
	// NetworkInterfaceID, or else InstanceID (its primary interface), to
	// associate with; the address stays unassociated when both are empty.
	NetworkInterfaceID, InstanceID string
	Tags                           map[string]string
}

// Address describes a seeded Elastic IP.
type Address struct{ AllocationID, PublicIP, AssociationID string }

// AllocateAddress seeds an Elastic IP, associated as o says.
func (a *Account) AllocateAddress(o AddressOptions) (Address, error) {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	ad := s.newAddressLocked(a, o.Tags)
	eniID := o.NetworkInterfaceID
	if eniID == "" && o.InstanceID != "" {
		enis := s.instanceENIsLocked(o.InstanceID)
		if len(enis) == 0 {
			return Address{}, fmt.Errorf("awssim: address: instance %s: %w", o.InstanceID, ErrNotFound)
		}
		eniID = enis[0].id
	}
	if eniID != "" {
		e := s.enis[eniID]
		if e == nil || e.owner != a.id {
			return Address{}, fmt.Errorf("awssim: address: interface %s: %w", eniID, ErrNotFound)
		}
		ad.eniID, ad.privateIP, ad.associationID = e.id, e.privateIP, s.newID("eipassoc")
	}
	return Address{AllocationID: ad.allocationID, PublicIP: ad.publicIP, AssociationID: ad.associationID}, nil
}

func (s *Sim) newAddressLocked(a *Account, tags map[string]string) *address {
	n := len(s.addresses)
	ad := &address{allocationID: s.newID("eipalloc"), owner: a.id, publicIP: fmt.Sprintf("203.0.113.%d", 10+n%240)}
	s.addresses[ad.allocationID] = ad
	s.setTagsLocked(ad.allocationID, tags)
	return ad
}

// VPCEndpointOptions describes a VPC endpoint to seed.
type VPCEndpointOptions struct {
	VPCID string
	// Service is a short name (ssm, ec2messages, ssmmessages, s3) or a full
	// service name (com.amazonaws.REGION.ssm).
	Service string
	// Gateway makes a Gateway endpoint (s3, dynamodb); Interface otherwise.
	Gateway          bool
	SubnetIDs        []string
	SecurityGroupIDs []string
	Tags             map[string]string
}

// CreateVPCEndpoint seeds an available VPC endpoint and returns its ID.
func (a *Account) CreateVPCEndpoint(o VPCEndpointOptions) (string, error) {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vpcs[o.VPCID]
	if v == nil || v.owner != a.id {
		return "", fmt.Errorf("awssim: VPC endpoint: VPC %s: %w", o.VPCID, ErrNotFound)
	}
	typ := "Interface"
	if o.Gateway {
		typ = "Gateway"
	}
	svc := o.Service
	if !strings.HasPrefix(svc, "com.amazonaws.") {
		svc = "com.amazonaws." + s.region + "." + svc
	}
	ep := &vpcEndpoint{id: s.newID("vpce"), owner: a.id, vpcID: v.id, service: svc, typ: typ,
		subnets: slices.Clone(o.SubnetIDs), groups: slices.Clone(o.SecurityGroupIDs), privateDNS: typ == "Interface", created: s.now().UTC()}
	s.endpoints[ep.id] = ep
	s.setTagsLocked(ep.id, o.Tags)
	return ep.id, nil
}

// normProto names a protocol as EC2 reports it.
func normProto(p string) string {
	switch strings.ToLower(p) {
	case "", "-1", "all":
		return "-1"
	case "6", "tcp":
		return "tcp"
	case "17", "udp":
		return "udp"
	case "1", "icmp":
		return "icmp"
	case "58", "icmpv6":
		return "icmpv6"
	}
	return strings.ToLower(p)
}
