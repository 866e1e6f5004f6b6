package awssim

import (
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// EC2 networking operations: VPCs, subnets, network interfaces, security
// groups, network ACLs, Elastic IPs, VPC endpoints and prefix lists.

func vpcNotFound(id string) *apiError {
	if e := malformed("Vpc", "vpc", id); e != nil {
		return errf(http.StatusBadRequest, "InvalidVpcID.Malformed", "Invalid id: \"%s\"", id)
	}
	return errf(http.StatusBadRequest, "InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", id)
}

func subnetNotFound(id string) *apiError {
	if malformed("Subnet", "subnet", id) != nil {
		return errf(http.StatusBadRequest, "InvalidSubnetID.Malformed", "Invalid id: \"%s\"", id)
	}
	return errf(http.StatusBadRequest, "InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
}

func eniNotFound(id string) *apiError {
	if malformed("NetworkInterface", "eni", id) != nil {
		return errf(http.StatusBadRequest, "InvalidNetworkInterfaceID.Malformed", "Invalid id: \"%s\"", id)
	}
	return errf(http.StatusBadRequest, "InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
}

func sgNotFound(id string) *apiError {
	if malformed("Group", "sg", id) != nil {
		return errf(http.StatusBadRequest, "InvalidGroupId.Malformed", "Invalid id: \"%s\" (expecting \"sg-...\")", id)
	}
	return errf(http.StatusBadRequest, "InvalidGroup.NotFound", "The security group '%s' does not exist", id)
}

func naclNotFound(id string) *apiError {
	return errf(http.StatusBadRequest, "InvalidNetworkAclID.NotFound", "The network ACL '%s' does not exist", id)
}

func sgRuleNotFound(id string) *apiError {
	return errf(http.StatusBadRequest, "InvalidSecurityGroupRuleId.NotFound", "The security group rule ID '%s' does not exist", id)
}

func addressNotFound(id string) *apiError {
	return errf(http.StatusBadRequest, "InvalidAllocationID.NotFound", "The allocation ID '%s' does not exist", id)
}

func endpointNotFound(id string) *apiError {
	return errf(http.StatusBadRequest, "InvalidVpcEndpointId.NotFound", "The Vpc Endpoint Id '%s' does not exist", id)
}

func ec2Return() any {
	return &struct {
		ec2Meta
		Return bool `xml:"return"`
	}{Return: true}
}

// owned selects the caller's resources by explicit IDs or, without IDs, all
// of them in ID order.
func owned[T any, P ownedResource[T]](m map[string]*T, ids []string, acct string, notFound func(string) *apiError) ([]*T, error) {
	return visible(m, ids, func(r *T) bool { return P(r).ownerID() == acct }, notFound)
}

// ownedResource is a resource that one account owns.
type ownedResource[T any] interface {
	*T
	ownerID() string
}

func (r *volume) ownerID() string      { return r.owner }
func (r *instance) ownerID() string    { return r.owner }
func (r *snapshot) ownerID() string    { return r.owner }
func (r *vpc) ownerID() string         { return r.owner }
func (r *subnet) ownerID() string      { return r.owner }
func (r *eni) ownerID() string         { return r.owner }
func (r *secGroup) ownerID() string    { return r.owner }
func (r *nacl) ownerID() string        { return r.owner }
func (r *address) ownerID() string     { return r.owner }
func (r *vpcEndpoint) ownerID() string { return r.owner }

// visible selects the resources the caller may see by explicit IDs, failing
// with notFound on the first it may not, or, without IDs, all of them in ID
// order.
func visible[T any](m map[string]*T, ids []string, sees func(*T) bool, notFound func(string) *apiError) ([]*T, error) {
	var out []*T
	for _, id := range ids {
		r := m[id]
		if r == nil || !sees(r) {
			return nil, notFound(id)
		}
		out = append(out, r)
	}
	if len(ids) == 0 {
		for _, id := range sortedKeys(m) {
			if sees(m[id]) {
				out = append(out, m[id])
			}
		}
	}
	return out, nil
}

// ---- VPCs and subnets ----

type xmlVPC struct {
	VpcID           string             `xml:"vpcId"`
	OwnerID         string             `xml:"ownerId"`
	State           string             `xml:"state"`
	CidrBlock       string             `xml:"cidrBlock"`
	DhcpOptionsID   string             `xml:"dhcpOptionsId"`
	InstanceTenancy string             `xml:"instanceTenancy"`
	IsDefault       bool               `xml:"isDefault"`
	TagSet          []xmlTag           `xml:"tagSet>item"`
	IPv6            []xmlIPv6CIDRAssoc `xml:"ipv6CidrBlockAssociationSet>item"`
}

// xmlIPv6CIDRAssoc is an associated IPv6 CIDR block of a VPC or a subnet.
type xmlIPv6CIDRAssoc struct {
	AssociationID string `xml:"associationId"`
	CidrBlock     string `xml:"ipv6CidrBlock"`
	State         struct {
		State string `xml:"state"`
	} `xml:"ipv6CidrBlockState"`
}

func ipv6CIDRAssoc(id, cidr string) xmlIPv6CIDRAssoc {
	a := xmlIPv6CIDRAssoc{AssociationID: id, CidrBlock: cidr}
	a.State.State = "associated"
	return a
}

func (s *Sim) xmlVPCLocked(v *vpc) xmlVPC {
	x := xmlVPC{VpcID: v.id, OwnerID: v.owner, State: "available", CidrBlock: v.cidr, DhcpOptionsID: "dopt-" + v.id[4:12],
		InstanceTenancy: "default", IsDefault: v.isDefault, TagSet: xmlTags(s.tags[v.id])}
	if v.ipv6CIDR != "" {
		x.IPv6 = []xmlIPv6CIDRAssoc{ipv6CIDRAssoc("vpc-cidr-assoc-"+v.id[4:], v.ipv6CIDR)}
	}
	return x
}

func ec2CreateVpc(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	ipv6 := ""
	if formBool(c.form, "AmazonProvidedIpv6CidrBlock") {
		ipv6 = "2600:1f18:" + s.randHex(4) + ":" + s.randHex(2) + "00::/56"
	}
	v, err := s.newVPCLocked(c.who.account, c.form.Get("CidrBlock"), ipv6, false, formTagSpecs(c.form, "vpc"))
	if err != nil {
		return nil, err
	}
	return &struct {
		ec2Meta
		Vpc xmlVPC `xml:"vpc"`
	}{Vpc: s.xmlVPCLocked(v)}, nil
}

func ec2DescribeVpcs(c *call) (any, error) {
	s := c.sim
	filters := formFilters(c.form)
	if err := checkFilters(filters, true, "vpc-id", "is-default", "isDefault", "cidr", "cidr-block-association.cidr-block", "state", "owner-id"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defaultVPCLocked(c.who.account)
	vs, err := owned(s.vpcs, formList(c.form, "VpcId"), c.who.accountID(), vpcNotFound)
	if err != nil {
		return nil, err
	}
	out := &struct {
		ec2Meta
		Vpcs []xmlVPC `xml:"vpcSet>item"`
	}{}
	for _, v := range vs {
		if matchTagged(filters, s.tags[v.id], func(name string) []string {
			switch name {
			case "vpc-id":
				return []string{v.id}
			case "is-default", "isDefault":
				return []string{strconv.FormatBool(v.isDefault)}
			case "cidr", "cidr-block-association.cidr-block":
				return []string{v.cidr}
			case "state":
				return []string{"available"}
			case "owner-id":
				return []string{v.owner}
			}
			return nil
		}) {
			out.Vpcs = append(out.Vpcs, s.xmlVPCLocked(v))
		}
	}
	return out, nil
}

type xmlSubnet struct {
	SubnetID                string             `xml:"subnetId"`
	SubnetArn               string             `xml:"subnetArn"`
	State                   string             `xml:"state"`
	VpcID                   string             `xml:"vpcId"`
	OwnerID                 string             `xml:"ownerId"`
	CidrBlock               string             `xml:"cidrBlock"`
	AvailableIPAddressCount int                `xml:"availableIpAddressCount"`
	AvailabilityZone        string             `xml:"availabilityZone"`
	DefaultForAz            bool               `xml:"defaultForAz"`
	MapPublicIPOnLaunch     bool               `xml:"mapPublicIpOnLaunch"`
	TagSet                  []xmlTag           `xml:"tagSet>item"`
	IPv6                    []xmlIPv6CIDRAssoc `xml:"ipv6CidrBlockAssociationSet>item"`
}

func (s *Sim) xmlSubnetLocked(sn *subnet) xmlSubnet {
	bits := 24
	if i := strings.IndexByte(sn.cidr, '/'); i > 0 {
		bits, _ = strconv.Atoi(sn.cidr[i+1:])
	}
	x := xmlSubnet{SubnetID: sn.id, SubnetArn: "arn:aws:ec2:" + s.region + ":" + sn.owner + ":subnet/" + sn.id, State: "available",
		VpcID: sn.vpcID, OwnerID: sn.owner, CidrBlock: sn.cidr, AvailableIPAddressCount: 1<<(32-bits) - 5 - sn.hosts,
		AvailabilityZone: s.az, DefaultForAz: sn.defaultForAZ, MapPublicIPOnLaunch: sn.defaultForAZ, TagSet: xmlTags(s.tags[sn.id])}
	if sn.ipv6CIDR != "" {
		x.IPv6 = []xmlIPv6CIDRAssoc{ipv6CIDRAssoc("subnet-cidr-assoc-"+sn.id[7:], sn.ipv6CIDR)}
	}
	return x
}

func ec2CreateSubnet(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	vpcID := c.form.Get("VpcId")
	if vpcID == "" {
		return nil, ec2Missing("VpcId")
	}
	v := s.vpcs[vpcID]
	if v == nil || v.owner != c.who.accountID() {
		return nil, vpcNotFound(vpcID)
	}
	sn, err := s.newSubnetLocked(c.who.account, v, c.form.Get("CidrBlock"), c.form.Get("Ipv6CidrBlock"), false, formTagSpecs(c.form, "subnet"))
	if err != nil {
		return nil, err
	}
	return &struct {
		ec2Meta
		Subnet xmlSubnet `xml:"subnet"`
	}{Subnet: s.xmlSubnetLocked(sn)}, nil
}

func ec2DescribeSubnets(c *call) (any, error) {
	s := c.sim
	filters := formFilters(c.form)
	if err := checkFilters(filters, true, "subnet-id", "vpc-id", "default-for-az", "defaultForAz", "cidr-block", "cidr", "availability-zone"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defaultVPCLocked(c.who.account)
	sns, err := owned(s.subnets, formList(c.form, "SubnetId"), c.who.accountID(), subnetNotFound)
	if err != nil {
		return nil, err
	}
	out := &struct {
		ec2Meta
		Subnets []xmlSubnet `xml:"subnetSet>item"`
	}{}
	for _, sn := range sns {
		if matchTagged(filters, s.tags[sn.id], func(name string) []string {
			switch name {
			case "subnet-id":
				return []string{sn.id}
			case "vpc-id":
				return []string{sn.vpcID}
			case "default-for-az", "defaultForAz":
				return []string{strconv.FormatBool(sn.defaultForAZ)}
			case "cidr-block", "cidr":
				return []string{sn.cidr}
			case "availability-zone":
				return []string{s.az}
			}
			return nil
		}) {
			out.Subnets = append(out.Subnets, s.xmlSubnetLocked(sn))
		}
	}
	return out, nil
}

// ---- network interfaces ----

type xmlENI struct {
	xmlInstanceENI
	// Attachment shadows the embedded one: DescribeNetworkInterfaces
	// names the instance, the interfaces inside an instance do not.
	Attachment       *xmlENIAttachment `xml:"attachment,omitempty"`
	AvailabilityZone string            `xml:"availabilityZone"`
	RequesterManaged bool              `xml:"requesterManaged"`
	TagSet           []xmlTag          `xml:"tagSet>item"`
}

type xmlENIAttachment struct {
	AttachmentID        string `xml:"attachmentId"`
	InstanceID          string `xml:"instanceId"`
	InstanceOwnerID     string `xml:"instanceOwnerId"`
	DeviceIndex         int    `xml:"deviceIndex"`
	NetworkCardIndex    int    `xml:"networkCardIndex"`
	Status              string `xml:"status"`
	AttachTime          string `xml:"attachTime"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

func (s *Sim) addressOfENILocked(e *eni) *address {
	for _, id := range sortedKeys(s.addresses) {
		if ad := s.addresses[id]; ad.eniID == e.id {
			return ad
		}
	}
	return nil
}

func (s *Sim) xmlInstanceENILocked(e *eni) xmlInstanceENI {
	x := xmlInstanceENI{
		NetworkInterfaceID: e.id, SubnetID: e.subnetID, VpcID: e.vpcID, Description: e.description, OwnerID: e.owner,
		Status: "available", MacAddress: e.mac, PrivateIPAddress: e.privateIP,
		PrivateDNSName:  "ip-" + strings.ReplaceAll(e.privateIP, ".", "-") + "." + s.region + ".compute.internal",
		SourceDestCheck: e.sourceDestCheck, InterfaceType: "interface",
	}
	if s.region == "us-east-1" {
		x.PrivateDNSName = "ip-" + strings.ReplaceAll(e.privateIP, ".", "-") + ".ec2.internal"
	}
	for _, g := range e.groups {
		name := ""
		if sg := s.sgs[g]; sg != nil {
			name = sg.name
		}
		x.Groups = append(x.Groups, xmlGroup{GroupID: g, GroupName: name})
	}
	if a := e.attachment; a != nil {
		x.Status = "in-use"
		x.Attachment.AttachmentID = a.id
		x.Attachment.DeviceIndex = a.deviceIndex
		x.Attachment.Status = "attached"
		x.Attachment.AttachTime = ec2Time(a.at)
		x.Attachment.DeleteOnTermination = a.deleteOnTermination
	}
	pip := xmlPrivateIP{PrivateIPAddress: e.privateIP, PrivateDNSName: x.PrivateDNSName, Primary: true}
	if ad := s.addressOfENILocked(e); ad != nil {
		x.Association = &xmlENIAssociation{PublicIP: ad.publicIP, PublicDNSName: "ec2-" + strings.ReplaceAll(ad.publicIP, ".", "-") + ".compute-1.amazonaws.com",
			IPOwnerID: ad.owner, AllocationID: ad.allocationID, AssociationID: ad.associationID}
		pip.Association = x.Association
	}
	x.PrivateIPAddresses = []xmlPrivateIP{pip}
	for _, a := range e.ipv6 {
		x.IPv6Addresses = append(x.IPv6Addresses, xmlIPv6{IPv6Address: a})
	}
	if e.ct != nil {
		x.ConnTracking = &xmlConnTracking{e.ct.tcpEstablished, e.ct.udpStream, e.ct.udp}
	}
	return x
}

func ec2DescribeNetworkInterfaces(c *call) (any, error) {
	s := c.sim
	filters := formFilters(c.form)
	if err := checkFilters(filters, true, "network-interface-id", "attachment.instance-id", "attachment.attachment-id", "attachment.device-index", "vpc-id", "subnet-id", "group-id", "private-ip-address", "addresses.private-ip-address", "ipv6-addresses.ipv6-address", "status", "owner-id"); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	es, err := owned(s.enis, formList(c.form, "NetworkInterfaceId"), c.who.accountID(), eniNotFound)
	if err != nil {
		return nil, err
	}
	var match []*eni
	for _, e := range es {
		if matchTagged(filters, s.tags[e.id], func(name string) []string {
			switch name {
			case "network-interface-id":
				return []string{e.id}
			case "attachment.instance-id":
				if e.attachment != nil {
					return []string{e.attachment.instanceID}
				}
			case "attachment.attachment-id":
				if e.attachment != nil {
					return []string{e.attachment.id}
				}
			case "attachment.device-index":
				if e.attachment != nil {
					return []string{strconv.Itoa(e.attachment.deviceIndex)}
				}
			case "vpc-id":
				return []string{e.vpcID}
			case "subnet-id":
				return []string{e.subnetID}
			case "group-id":
				return e.groups
			case "private-ip-address", "addresses.private-ip-address":
				return []string{e.privateIP}
			case "ipv6-addresses.ipv6-address":
				return e.ipv6
			case "status":
				if e.attachment != nil {
					return []string{"in-use"}
				}
				return []string{"available"}
			case "owner-id":
				return []string{e.owner}
			}
			return nil
		}) {
			match = append(match, e)
		}
	}
	from, to, next, err := page(c.form, len(match))
	if err != nil {
		return nil, err
	}
	out := &struct {
		ec2Meta
		NetworkInterfaces []xmlENI `xml:"networkInterfaceSet>item"`
		NextToken         string   `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, e := range match[from:to] {
		x := xmlENI{xmlInstanceENI: s.xmlInstanceENILocked(e), AvailabilityZone: s.az, TagSet: xmlTags(s.tags[e.id])}
		if a := e.attachment; a != nil {
			x.Attachment = &xmlENIAttachment{AttachmentID: a.id, InstanceID: a.instanceID, InstanceOwnerID: e.owner, DeviceIndex: a.deviceIndex,
				Status: "attached", AttachTime: ec2Time(a.at), DeleteOnTermination: a.deleteOnTermination}
		}
		out.NetworkInterfaces = append(out.NetworkInterfaces, x)
	}
	return out, nil
}

// checkGroupsLocked validates a new group set for an interface in vpcID.
func (s *Sim) checkGroupsLocked(acct, vpcID string, groups []string) error {
	if len(groups) > 5 {
		return errf(http.StatusBadRequest, "SecurityGroupsPerInterfaceLimitExceeded", "The maximum number of security groups per interface has been reached.")
	}
	for _, g := range groups {
		sg := s.sgs[g]
		if sg == nil || sg.owner != acct {
			return sgNotFound(g)
		}
		if sg.vpcID != vpcID {
			return ec2InvalidParam("Security group %s and interface belong to different networks.", g)
		}
	}
	return nil
}

func ec2ModifyNetworkInterfaceAttribute(c *call) (any, error) {
	s := c.sim
	id := c.form.Get("NetworkInterfaceId")
	if id == "" {
		return nil, ec2Missing("NetworkInterfaceId")
	}
	groups := formList(c.form, "SecurityGroupId")
	var ct *connTracking
	ctKeys := []string{"ConnectionTrackingSpecification.TcpEstablishedTimeout", "ConnectionTrackingSpecification.UdpStreamTimeout", "ConnectionTrackingSpecification.UdpTimeout"}
	for i, k := range ctKeys {
		v := c.form.Get(k)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		limits := [][2]int{{60, 432000}, {60, 180}, {30, 60}}[i]
		if err != nil || n < limits[0] || n > limits[1] {
			return nil, ec2InvalidParam("Value (%s) for parameter %s is invalid. Expecting a value between %d and %d.", v,
				strings.TrimPrefix(k, "ConnectionTrackingSpecification."), limits[0], limits[1])
		}
		if ct == nil {
			ct = &connTracking{}
		}
		*[]*int32{&ct.tcpEstablished, &ct.udpStream, &ct.udp}[i] = int32(n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.enis[id]
	if e == nil || e.owner != c.who.accountID() {
		return nil, eniNotFound(id)
	}
	changed := false
	if len(groups) > 0 {
		if err := s.checkGroupsLocked(e.owner, e.vpcID, groups); err != nil {
			return nil, err
		}
		e.groups = slices.Compact(slices.Clone(groups))
		changed = true
	}
	if ct != nil {
		// Unset members keep their current (or default) value.
		cur := connTracking{DefaultTCPEstablishedTimeout, DefaultUDPStreamTimeout, DefaultUDPTimeout}
		if e.ct != nil {
			cur = *e.ct
		}
		if ct.tcpEstablished != 0 {
			cur.tcpEstablished = ct.tcpEstablished
		}
		if ct.udpStream != 0 {
			cur.udpStream = ct.udpStream
		}
		if ct.udp != 0 {
			cur.udp = ct.udp
		}
		e.ct = &cur
		changed = true
	}
	if v := c.form.Get("SourceDestCheck.Value"); v != "" {
		e.sourceDestCheck = v == "true"
		changed = true
	}
	if v, ok := c.form["Description.Value"]; ok {
		e.description = v[0]
		changed = true
	}
	if aid := c.form.Get("Attachment.AttachmentId"); aid != "" {
		if e.attachment == nil || e.attachment.id != aid {
			return nil, errf(http.StatusBadRequest, "InvalidAttachmentID.NotFound", "The attachment ID '%s' does not exist", aid)
		}
		e.attachment.deleteOnTermination = formBool(c.form, "Attachment.DeleteOnTermination")
		changed = true
	}
	if !changed {
		return nil, errf(http.StatusBadRequest, "MissingParameter", "Either groupSet, connectionTrackingSpecification, sourceDestCheck, description or attachment must be specified.")
	}
	return ec2Return(), nil
}

// ---- security groups ----

type xmlIPPermission struct {
	IPProtocol string `xml:"ipProtocol"`
	FromPort   *int32 `xml:"fromPort,omitempty"`
	ToPort     *int32 `xml:"toPort,omitempty"`
	Groups     []struct {
		UserID      string `xml:"userId"`
		GroupID     string `xml:"groupId"`
		Description string `xml:"description,omitempty"`
	} `xml:"groups>item"`
	IPRanges []struct {
		CidrIP      string `xml:"cidrIp"`
		Description string `xml:"description,omitempty"`
	} `xml:"ipRanges>item"`
	IPv6Ranges []struct {
		CidrIPv6    string `xml:"cidrIpv6"`
		Description string `xml:"description,omitempty"`
	} `xml:"ipv6Ranges>item"`
	PrefixListIDs []struct {
		PrefixListID string `xml:"prefixListId"`
		Description  string `xml:"description,omitempty"`
	} `xml:"prefixListIds>item"`
}

// xmlPermissions groups rules into IpPermissions as EC2 does: one per
// protocol and port range, in order of first appearance.
func xmlPermissions(rules []*sgRule, egress bool) []xmlIPPermission {
	var out []xmlIPPermission
	idx := map[string]int{}
	for _, r := range rules {
		if r.egress != egress {
			continue
		}
		k := r.proto + "/" + strconv.Itoa(int(r.from)) + "/" + strconv.Itoa(int(r.to))
		i, ok := idx[k]
		if !ok {
			p := xmlIPPermission{IPProtocol: r.proto}
			if r.proto != "-1" {
				from, to := r.from, r.to
				p.FromPort, p.ToPort = &from, &to
			}
			i = len(out)
			idx[k] = i
			out = append(out, p)
		}
		p := &out[i]
		switch {
		case r.cidr4 != "":
			p.IPRanges = append(p.IPRanges, struct {
				CidrIP      string `xml:"cidrIp"`
				Description string `xml:"description,omitempty"`
			}{r.cidr4, r.description})
		case r.cidr6 != "":
			p.IPv6Ranges = append(p.IPv6Ranges, struct {
				CidrIPv6    string `xml:"cidrIpv6"`
				Description string `xml:"description,omitempty"`
			}{r.cidr6, r.description})
		case r.prefixList != "":
			p.PrefixListIDs = append(p.PrefixListIDs, struct {
				PrefixListID string `xml:"prefixListId"`
				Description  string `xml:"description,omitempty"`
			}{r.prefixList, r.description})
		case r.refGroup != "":
			p.Groups = append(p.Groups, struct {
				UserID      string `xml:"userId"`
				GroupID     string `xml:"groupId"`
				Description string `xml:"description,omitempty"`
			}{r.refUser, r.refGroup, r.description})
		}
	}
	return out
}

type xmlSecurityGroup struct {
	OwnerID          string            `xml:"ownerId"`
	GroupID          string            `xml:"groupId"`
	GroupName        string            `xml:"groupName"`
	GroupDescription string            `xml:"groupDescription"`
	VpcID            string            `xml:"vpcId"`
	SecurityGroupArn string            `xml:"securityGroupArn"`
	IPPermissions    []xmlIPPermission `xml:"ipPermissions>item"`
	IPPermissionsEg  []xmlIPPermission `xml:"ipPermissionsEgress>item"`
	TagSet           []xmlTag          `xml:"tagSet>item"`
}

func (s *Sim) xmlSGLocked(sg *secGroup) xmlSecurityGroup {
	return xmlSecurityGroup{OwnerID: sg.owner, GroupID: sg.id, GroupName: sg.name, GroupDescription: sg.description, VpcID: sg.vpcID,
		SecurityGroupArn: "arn:aws:ec2:" + s.region + ":" + sg.owner + ":security-group/" + sg.id,
		IPPermissions:    xmlPermissions(sg.rules, false), IPPermissionsEg: xmlPermissions(sg.rules, true), TagSet: xmlTags(s.tags[sg.id])}
}

func ec2CreateSecurityGroup(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	sg, err := s.newSGLocked(c.who.account, c.form.Get("VpcId"), c.form.Get("GroupName"), c.form.Get("GroupDescription"), formTagSpecs(c.form, "security-group"))
	if err != nil {
		return nil, err
	}
	return &struct {
		ec2Meta
		Return           bool     `xml:"return"`
		GroupID          string   `xml:"groupId"`
		SecurityGroupArn string   `xml:"securityGroupArn"`
		TagSet           []xmlTag `xml:"tagSet>item"`
	}{Return: true, GroupID: sg.id, SecurityGroupArn: "arn:aws:ec2:" + s.region + ":" + sg.owner + ":security-group/" + sg.id, TagSet: xmlTags(s.tags[sg.id])}, nil
}

func ec2DescribeSecurityGroups(c *call) (any, error) {
	s := c.sim
	filters := formFilters(c.form)
	if err := checkFilters(filters, true, "group-id", "group-name", "vpc-id", "description", "owner-id"); err != nil {
		return nil, err
	}
	names := formList(c.form, "GroupName")
	s.mu.Lock()
	defer s.mu.Unlock()
	acct := c.who.accountID()
	s.defaultVPCLocked(c.who.account)
	sgs, err := owned(s.sgs, formList(c.form, "GroupId"), acct, sgNotFound)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		found := false
		for _, g := range sgs {
			if g.name == n {
				if v := s.vpcs[g.vpcID]; v != nil && v.isDefault {
					found = true
				}
			}
		}
		if !found {
			return nil, errf(http.StatusBadRequest, "InvalidGroup.NotFound", "The security group '%s' does not exist in default VPC", n)
		}
	}
	var match []*secGroup
	for _, g := range sgs {
		if len(names) > 0 && !slices.Contains(names, g.name) {
			continue
		}
		if matchTagged(filters, s.tags[g.id], func(name string) []string {
			switch name {
			case "group-id":
				return []string{g.id}
			case "group-name":
				return []string{g.name}
			case "vpc-id":
				return []string{g.vpcID}
			case "description":
				return []string{g.description}
			case "owner-id":
				return []string{g.owner}
			}
			return nil
		}) {
			match = append(match, g)
		}
	}
	from, to, next, err := page(c.form, len(match))
	if err != nil {
		return nil, err
	}
	out := &struct {
		ec2Meta
		SecurityGroups []xmlSecurityGroup `xml:"securityGroupInfo>item"`
		NextToken      string             `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, g := range match[from:to] {
		out.SecurityGroups = append(out.SecurityGroups, s.xmlSGLocked(g))
	}
	return out, nil
}

// formRules flattens IpPermissions.N into one rule per peer.
func formRules(form url.Values, egress bool) ([]*sgRule, error) {
	perms := formStructs(form, "IpPermissions")
	if len(perms) == 0 && form.Get("IpProtocol") != "" {
		perms = []url.Values{{"IpProtocol": {form.Get("IpProtocol")}, "FromPort": {form.Get("FromPort")}, "ToPort": {form.Get("ToPort")},
			"IpRanges.1.CidrIp": {form.Get("CidrIp")}}}
	}
	var out []*sgRule
	for _, p := range perms {
		proto := normProto(p.Get("IpProtocol"))
		if p.Get("IpProtocol") == "" {
			return nil, ec2Missing("IpPermissions.IpProtocol")
		}
		from, to := int32(-1), int32(-1)
		if proto != "-1" {
			f, err1 := strconv.Atoi(p.Get("FromPort"))
			t, err2 := strconv.Atoi(p.Get("ToPort"))
			if proto == "tcp" || proto == "udp" {
				if err1 != nil || err2 != nil || f < 0 || t > 65535 || f > t {
					return nil, errf(http.StatusBadRequest, "InvalidParameterValue", "Invalid port range: from %s to %s", p.Get("FromPort"), p.Get("ToPort"))
				}
			}
			from, to = int32(f), int32(t)
		}
		base := sgRule{egress: egress, proto: proto, from: from, to: to}
		n := len(out)
		for _, r := range formStructs(p, "IpRanges") {
			x := base
			x.cidr4, x.description = r.Get("CidrIp"), r.Get("Description")
			if x.cidr4 != "" {
				out = append(out, &x)
			}
		}
		for _, r := range formStructs(p, "Ipv6Ranges") {
			x := base
			x.cidr6, x.description = r.Get("CidrIpv6"), r.Get("Description")
			if x.cidr6 != "" {
				out = append(out, &x)
			}
		}
		for _, r := range formStructs(p, "PrefixListIds") {
			x := base
			x.prefixList, x.description = r.Get("PrefixListId"), r.Get("Description")
			if x.prefixList != "" {
				out = append(out, &x)
			}
		}
		for _, r := range formStructs(p, "Groups") {
			x := base
			x.refGroup, x.refUser, x.description = r.Get("GroupId"), r.Get("UserId"), r.Get("Description")
			if x.refGroup != "" {
				out = append(out, &x)
			}
		}
		if len(out) == n {
			return nil, errf(http.StatusBadRequest, "InvalidParameterValue", "The request must contain at least one of IpRanges, Ipv6Ranges, PrefixListIds or UserIdGroupPairs")
		}
		for _, r := range out[n:] {
			if r.cidr4 != "" {
				if p, err := netip.ParsePrefix(r.cidr4); err != nil || !p.Addr().Is4() {
					return nil, ec2InvalidParam("CIDR block %s is malformed", r.cidr4)
				}
			}
			if r.cidr6 != "" {
				if p, err := netip.ParsePrefix(r.cidr6); err != nil || !p.Addr().Is6() {
					return nil, ec2InvalidParam("CIDR block %s is malformed", r.cidr6)
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, ec2Missing("IpPermissions")
	}
	return out, nil
}

func (c *call) ownSGLocked() (*secGroup, error) {
	s := c.sim
	id := c.form.Get("GroupId")
	if id == "" {
		name := c.form.Get("GroupName")
		if name == "" {
			return nil, ec2Missing("GroupId")
		}
		v, _ := s.defaultVPCLocked(c.who.account)
		for _, g := range s.sgs {
			if g.vpcID == v.id && g.name == name {
				return g, nil
			}
		}
		return nil, errf(http.StatusBadRequest, "InvalidGroup.NotFound", "The security group '%s' does not exist in default VPC", name)
	}
	g := s.sgs[id]
	if g == nil || g.owner != c.who.accountID() {
		return nil, sgNotFound(id)
	}
	return g, nil
}

type xmlSGRule struct {
	SecurityGroupRuleID string `xml:"securityGroupRuleId"`
	GroupID             string `xml:"groupId"`
	GroupOwnerID        string `xml:"groupOwnerId"`
	IsEgress            bool   `xml:"isEgress"`
	IPProtocol          string `xml:"ipProtocol"`
	FromPort            int32  `xml:"fromPort"`
	ToPort              int32  `xml:"toPort"`
	CidrIPv4            string `xml:"cidrIpv4,omitempty"`
	CidrIPv6            string `xml:"cidrIpv6,omitempty"`
	PrefixListID        string `xml:"prefixListId,omitempty"`
	ReferencedGroupInfo *struct {
		GroupID string `xml:"groupId"`
		UserID  string `xml:"userId"`
	} `xml:"referencedGroupInfo,omitempty"`
	Description      string   `xml:"description,omitempty"`
	SecurityGroupArn string   `xml:"securityGroupRuleArn"`
	TagSet           []xmlTag `xml:"tagSet>item"`
}

func (s *Sim) xmlSGRuleLocked(g *secGroup, r *sgRule) xmlSGRule {
	x := xmlSGRule{SecurityGroupRuleID: r.id, GroupID: g.id, GroupOwnerID: g.owner, IsEgress: r.egress, IPProtocol: r.proto,
		FromPort: r.from, ToPort: r.to, CidrIPv4: r.cidr4, CidrIPv6: r.cidr6, PrefixListID: r.prefixList, Description: r.description,
		SecurityGroupArn: "arn:aws:ec2:" + s.region + ":" + g.owner + ":security-group-rule/" + r.id, TagSet: xmlTags(s.tags[r.id])}
	if r.refGroup != "" {
		x.ReferencedGroupInfo = &struct {
			GroupID string `xml:"groupId"`
			UserID  string `xml:"userId"`
		}{r.refGroup, r.refUser}
	}
	return x
}

func ec2AuthorizeIngress(c *call) (any, error) { return authorize(c, false) }
func ec2AuthorizeEgress(c *call) (any, error)  { return authorize(c, true) }

func authorize(c *call, egress bool) (any, error) {
	s := c.sim
	rules, err := formRules(c.form, egress)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := c.ownSGLocked()
	if err != nil {
		return nil, err
	}
	for i, r := range rules {
		if r.refGroup != "" {
			ref := s.sgs[r.refGroup]
			if ref == nil || (ref.owner != c.who.accountID() && r.refUser == "") {
				return nil, sgNotFound(r.refGroup)
			}
			if r.refUser == "" {
				r.refUser = ref.owner
			}
		}
		if r.prefixList != "" && !slices.ContainsFunc(s.prefixListsLocked(), func(p prefixList) bool { return p.id == r.prefixList }) {
			return nil, errf(http.StatusBadRequest, "InvalidPrefixListId.NotFound", "The prefix list ID '%s' does not exist", r.prefixList)
		}
		for _, have := range append(slices.Clone(g.rules), rules[:i]...) {
			if have.same(r) {
				dir := "inbound"
				if egress {
					dir = "outbound"
				}
				peer := r.cidr4 + r.cidr6 + r.prefixList + r.refGroup
				return nil, errf(http.StatusBadRequest, "InvalidPermission.Duplicate",
					"the specified rule \"peer: %s, %s, ALLOW\" already exists (%s)", peer, strings.ToUpper(r.proto), dir)
			}
		}
	}
	out := &struct {
		ec2Meta
		Return bool        `xml:"return"`
		Rules  []xmlSGRule `xml:"securityGroupRuleSet>item"`
	}{Return: true}
	tags := formTagSpecs(c.form, "security-group-rule")
	for _, r := range rules {
		r.id = s.newID("sgr")
		g.rules = append(g.rules, r)
		s.setTagsLocked(r.id, tags)
		out.Rules = append(out.Rules, s.xmlSGRuleLocked(g, r))
	}
	return out, nil
}

func ec2RevokeIngress(c *call) (any, error) { return revoke(c, false) }
func ec2RevokeEgress(c *call) (any, error)  { return revoke(c, true) }

func revoke(c *call, egress bool) (any, error) {
	s := c.sim
	ruleIDs := formList(c.form, "SecurityGroupRuleId")
	var rules []*sgRule
	if len(ruleIDs) == 0 {
		var err error
		if rules, err = formRules(c.form, egress); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := c.ownSGLocked()
	if err != nil {
		return nil, err
	}
	for _, id := range ruleIDs {
		i := slices.IndexFunc(g.rules, func(r *sgRule) bool { return r.id == id && r.egress == egress })
		if i < 0 {
			return nil, sgRuleNotFound(id)
		}
	}
	var gone, unknown []*sgRule
	for _, id := range ruleIDs {
		i := slices.IndexFunc(g.rules, func(r *sgRule) bool { return r.id == id })
		gone = append(gone, g.rules[i])
	}
	for _, r := range rules {
		i := slices.IndexFunc(g.rules, func(h *sgRule) bool { return h.same(r) })
		if i < 0 {
			unknown = append(unknown, r)
			continue
		}
		gone = append(gone, g.rules[i])
	}
	// In a non-default VPC a rule that does not match fails the whole
	// call and revokes nothing; in a default VPC the call succeeds and
	// lists the unknown rules.
	if v := s.vpcs[g.vpcID]; len(unknown) > 0 && (v == nil || !v.isDefault) {
		return nil, errf(http.StatusBadRequest, "InvalidPermission.NotFound", "The specified rule does not exist in this security group.")
	}
	g.rules = slices.DeleteFunc(g.rules, func(r *sgRule) bool { return slices.Contains(gone, r) })
	out := &struct {
		ec2Meta
		Return  bool              `xml:"return"`
		Unknown []xmlIPPermission `xml:"unknownIpPermissionSet>item,omitempty"`
		Revoked []xmlSGRule       `xml:"revokedSecurityGroupRuleSet>item,omitempty"`
	}{Return: true, Unknown: xmlPermissions(unknown, egress)}
	for _, r := range gone {
		out.Revoked = append(out.Revoked, s.xmlSGRuleLocked(g, r))
	}
	return out, nil
}

func ec2DeleteSecurityGroup(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := c.ownSGLocked()
	if err != nil {
		return nil, err
	}
	if g.name == "default" {
		return nil, errf(http.StatusBadRequest, "CannotDelete", "the specified group: \"%s\" name: \"default\" cannot be deleted by a user", g.id)
	}
	for _, id := range sortedKeys(s.enis) {
		if slices.Contains(s.enis[id].groups, g.id) {
			return nil, errf(http.StatusBadRequest, "DependencyViolation", "resource %s has a dependent object", g.id)
		}
	}
	for _, o := range s.sgs {
		for _, r := range o.rules {
			if o != g && r.refGroup == g.id {
				return nil, errf(http.StatusBadRequest, "DependencyViolation", "resource %s has a dependent object", g.id)
			}
		}
	}
	delete(s.sgs, g.id)
	delete(s.tags, g.id)
	return &struct {
		ec2Meta
		Return  bool   `xml:"return"`
		GroupID string `xml:"groupId"`
	}{Return: true, GroupID: g.id}, nil
}

func ec2DescribeSecurityGroupRules(c *call) (any, error) {
	s := c.sim
	filters := formFilters(c.form)
	if err := checkFilters(filters, true, "group-id", "security-group-rule-id"); err != nil {
		return nil, err
	}
	ids := formList(c.form, "SecurityGroupRuleId")
	s.mu.RLock()
	defer s.mu.RUnlock()
	acct := c.who.accountID()
	type pair struct {
		g *secGroup
		r *sgRule
	}
	var match []pair
	for _, gid := range sortedKeys(s.sgs) {
		g := s.sgs[gid]
		if g.owner != acct {
			continue
		}
		for _, r := range g.rules {
			if len(ids) > 0 && !slices.Contains(ids, r.id) {
				continue
			}
			if matchTagged(filters, s.tags[r.id], func(name string) []string {
				switch name {
				case "group-id":
					return []string{g.id}
				case "security-group-rule-id":
					return []string{r.id}
				}
				return nil
			}) {
				match = append(match, pair{g, r})
			}
		}
	}
	from, to, next, err := page(c.form, len(match))
	if err != nil {
		return nil, err
	}
	out := &struct {
		ec2Meta
		Rules     []xmlSGRule `xml:"securityGroupRuleSet>item"`
		NextToken string      `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, p := range match[from:to] {
		out.Rules = append(out.Rules, s.xmlSGRuleLocked(p.g, p.r))
	}
	return out, nil
}

// ---- network ACLs ----

type xmlNACL struct {
	NetworkACLID string `xml:"networkAclId"`
	VpcID        string `xml:"vpcId"`
	Default      bool   `xml:"default"`
	OwnerID      string `xml:"ownerId"`
	Entries      []struct {
		RuleNumber    int32  `xml:"ruleNumber"`
		Protocol      string `xml:"protocol"`
		RuleAction    string `xml:"ruleAction"`
		Egress        bool   `xml:"egress"`
		CidrBlock     string `xml:"cidrBlock,omitempty"`
		IPv6CidrBlock string `xml:"ipv6CidrBlock,omitempty"`
		PortRange     *struct {
			From int32 `xml:"from"`
			To   int32 `xml:"to"`
		} `xml:"portRange,omitempty"`
	} `xml:"entrySet>item"`
	Associations []struct {
		AssociationID string `xml:"networkAclAssociationId"`
		NetworkACLID  string `xml:"networkAclId"`
		SubnetID      string `xml:"subnetId"`
	} `xml:"associationSet>item"`
	TagSet []xmlTag `xml:"tagSet>item"`
}

func (s *Sim) xmlNACLLocked(n *nacl) xmlNACL {
	x := xmlNACL{NetworkACLID: n.id, VpcID: n.vpcID, Default: n.isDefault, OwnerID: n.owner, TagSet: xmlTags(s.tags[n.id])}
	entries := slices.Clone(n.entries)
	slices.SortStableFunc(entries, func(a, b naclEntry) int {
		if a.egress != b.egress {
			if a.egress {
				return 1
			}
			return -1
		}
		return int(a.rule - b.rule)
	})
	for _, e := range entries {
		proto := e.proto
		switch proto {
		case "tcp":
			proto = "6"
		case "udp":
			proto = "17"
		case "icmp":
			proto = "1"
		}
		rule := e.rule
		if rule == 32768 {
			rule = 32768
		}
		item := struct {
			RuleNumber    int32  `xml:"ruleNumber"`
			Protocol      string `xml:"protocol"`
			RuleAction    string `xml:"ruleAction"`
			Egress        bool   `xml:"egress"`
			CidrBlock     string `xml:"cidrBlock,omitempty"`
			IPv6CidrBlock string `xml:"ipv6CidrBlock,omitempty"`
			PortRange     *struct {
				From int32 `xml:"from"`
				To   int32 `xml:"to"`
			} `xml:"portRange,omitempty"`
		}{RuleNumber: rule, Protocol: proto, RuleAction: e.action, Egress: e.egress, CidrBlock: e.cidr4, IPv6CidrBlock: e.cidr6}
		if e.ports {
			item.PortRange = &struct {
				From int32 `xml:"from"`
				To   int32 `xml:"to"`
			}{e.from, e.to}
		}
		x.Entries = append(x.Entries, item)
	}
	for _, id := range sortedKeys(s.subnets) {
		if sn := s.subnets[id]; sn.naclID == n.id {
			x.Associations = append(x.Associations, struct {
				AssociationID string `xml:"networkAclAssociationId"`
				NetworkACLID  string `xml:"networkAclId"`
				SubnetID      string `xml:"subnetId"`
			}{sn.naclAssoc, n.id, sn.id})
		}
	}
	return x
}

func ec2CreateNetworkAcl(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	id := c.form.Get("VpcId")
	if id == "" {
		return nil, ec2Missing("VpcId")
	}
	v := s.vpcs[id]
	if v == nil || v.owner != c.who.accountID() {
		return nil, vpcNotFound(id)
	}
	n := s.newNACLLocked(c.who.account, v, false)
	s.setTagsLocked(n.id, formTagSpecs(c.form, "network-acl"))
	return &struct {
		ec2Meta
		NetworkACL xmlNACL `xml:"networkAcl"`
	}{NetworkACL: s.xmlNACLLocked(n)}, nil
}

func ec2CreateNetworkAclEntry(c *call) (any, error) {
	s := c.sim
	rn, err := strconv.Atoi(c.form.Get("RuleNumber"))
	if err != nil || rn < 1 || rn > 32766 {
		return nil, ec2InvalidParam("Value (%s) for parameter ruleNumber is invalid. Expecting a value between 1 and 32766.", c.form.Get("RuleNumber"))
	}
	action := c.form.Get("RuleAction")
	if action != "allow" && action != "deny" {
		return nil, ec2InvalidParam("Value (%s) for parameter ruleAction is invalid.", action)
	}
	e := naclEntry{rule: int32(rn), egress: formBool(c.form, "Egress"), proto: normProto(c.form.Get("Protocol")), action: action,
		cidr4: c.form.Get("CidrBlock"), cidr6: c.form.Get("Ipv6CidrBlock")}
	if (e.cidr4 == "") == (e.cidr6 == "") {
		return nil, errf(http.StatusBadRequest, "InvalidParameterCombination", "Exactly one of CidrBlock and Ipv6CidrBlock must be specified")
	}
	if p, err := netip.ParsePrefix(e.cidr4 + e.cidr6); err != nil || p.Addr().Is4() != (e.cidr4 != "") {
		return nil, ec2InvalidParam("Value (%s) for parameter cidrBlock is invalid. This is not a valid CIDR block.", e.cidr4+e.cidr6)
	}
	if e.proto == "tcp" || e.proto == "udp" {
		f, err1 := strconv.Atoi(c.form.Get("PortRange.From"))
		t, err2 := strconv.Atoi(c.form.Get("PortRange.To"))
		if err1 != nil || err2 != nil {
			return nil, ec2Missing("PortRange")
		}
		e.from, e.to, e.ports = int32(f), int32(t), true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nacls[c.form.Get("NetworkAclId")]
	if n == nil || n.owner != c.who.accountID() {
		return nil, naclNotFound(c.form.Get("NetworkAclId"))
	}
	for _, have := range n.entries {
		if have.rule == e.rule && have.egress == e.egress {
			return nil, errf(http.StatusBadRequest, "NetworkAclEntryAlreadyExists", "The network acl entry identified by %d already exists.", rn)
		}
	}
	n.entries = append(n.entries, e)
	return ec2Return(), nil
}

func ec2DescribeNetworkAcls(c *call) (any, error) {
	s := c.sim
	filters := formFilters(c.form)
	if err := checkFilters(filters, true, "network-acl-id", "vpc-id", "default", "association.subnet-id", "association.association-id"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defaultVPCLocked(c.who.account)
	ns, err := owned(s.nacls, formList(c.form, "NetworkAclId"), c.who.accountID(), naclNotFound)
	if err != nil {
		return nil, err
	}
	out := &struct {
		ec2Meta
		ACLs []xmlNACL `xml:"networkAclSet>item"`
	}{}
	for _, n := range ns {
		x := s.xmlNACLLocked(n)
		if matchTagged(filters, s.tags[n.id], func(name string) []string {
			var vs []string
			switch name {
			case "network-acl-id":
				return []string{n.id}
			case "vpc-id":
				return []string{n.vpcID}
			case "default":
				return []string{strconv.FormatBool(n.isDefault)}
			case "association.subnet-id":
				for _, a := range x.Associations {
					vs = append(vs, a.SubnetID)
				}
			case "association.association-id":
				for _, a := range x.Associations {
					vs = append(vs, a.AssociationID)
				}
			}
			return vs
		}) {
			out.ACLs = append(out.ACLs, x)
		}
	}
	return out, nil
}

func ec2ReplaceNetworkAclAssociation(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	aid, nid := c.form.Get("AssociationId"), c.form.Get("NetworkAclId")
	n := s.nacls[nid]
	if n == nil || n.owner != c.who.accountID() {
		return nil, naclNotFound(nid)
	}
	for _, id := range sortedKeys(s.subnets) {
		sn := s.subnets[id]
		if sn.owner != c.who.accountID() || sn.naclAssoc != aid {
			continue
		}
		if sn.vpcID != n.vpcID {
			return nil, ec2InvalidParam("Network ACL %s and subnet %s belong to different networks", nid, sn.id)
		}
		sn.naclID = n.id
		sn.naclAssoc = s.newID("aclassoc")
		return &struct {
			ec2Meta
			NewAssociationID string `xml:"newAssociationId"`
		}{NewAssociationID: sn.naclAssoc}, nil
	}
	return nil, errf(http.StatusBadRequest, "InvalidAssociationID.NotFound", "The association ID '%s' does not exist", aid)
}

// ---- Elastic IPs ----

type xmlAddress struct {
	PublicIP                string   `xml:"publicIp"`
	AllocationID            string   `xml:"allocationId"`
	Domain                  string   `xml:"domain"`
	InstanceID              string   `xml:"instanceId,omitempty"`
	AssociationID           string   `xml:"associationId,omitempty"`
	NetworkInterfaceID      string   `xml:"networkInterfaceId,omitempty"`
	NetworkInterfaceOwnerID string   `xml:"networkInterfaceOwnerId,omitempty"`
	PrivateIPAddress        string   `xml:"privateIpAddress,omitempty"`
	PublicIPv4Pool          string   `xml:"publicIpv4Pool"`
	NetworkBorderGroup      string   `xml:"networkBorderGroup"`
	TagSet                  []xmlTag `xml:"tagSet>item"`
}

func (s *Sim) xmlAddressLocked(ad *address) xmlAddress {
	x := xmlAddress{PublicIP: ad.publicIP, AllocationID: ad.allocationID, Domain: "vpc", AssociationID: ad.associationID,
		NetworkInterfaceID: ad.eniID, PrivateIPAddress: ad.privateIP, PublicIPv4Pool: "amazon", NetworkBorderGroup: s.region,
		TagSet: xmlTags(s.tags[ad.allocationID])}
	if e := s.enis[ad.eniID]; e != nil {
		x.NetworkInterfaceOwnerID = e.owner
		if e.attachment != nil {
			x.InstanceID = e.attachment.instanceID
		}
	}
	return x
}

func ec2AllocateAddress(c *call) (any, error) {
	s := c.sim
	if d := c.form.Get("Domain"); d != "" && d != "vpc" {
		return nil, ec2InvalidParam("Value (%s) for parameter domain is invalid.", d)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ad := s.newAddressLocked(c.who.account, formTagSpecs(c.form, "elastic-ip"))
	return &struct {
		ec2Meta
		PublicIP           string `xml:"publicIp"`
		AllocationID       string `xml:"allocationId"`
		Domain             string `xml:"domain"`
		PublicIPv4Pool     string `xml:"publicIpv4Pool"`
		NetworkBorderGroup string `xml:"networkBorderGroup"`
	}{PublicIP: ad.publicIP, AllocationID: ad.allocationID, Domain: "vpc", PublicIPv4Pool: "amazon", NetworkBorderGroup: s.region}, nil
}

func ec2AssociateAddress(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	acct := c.who.accountID()
	var ad *address
	if id := c.form.Get("AllocationId"); id != "" {
		if ad = s.addresses[id]; ad == nil || ad.owner != acct {
			return nil, addressNotFound(id)
		}
	} else if ip := c.form.Get("PublicIp"); ip != "" {
		for _, a := range s.addresses {
			if a.publicIP == ip && a.owner == acct {
				ad = a
			}
		}
		if ad == nil {
			return nil, errf(http.StatusBadRequest, "InvalidAddress.NotFound", "Address '%s' not found.", ip)
		}
	} else {
		return nil, ec2Missing("AllocationId")
	}
	var e *eni
	if id := c.form.Get("NetworkInterfaceId"); id != "" {
		if e = s.enis[id]; e == nil || e.owner != acct {
			return nil, eniNotFound(id)
		}
	} else if id := c.form.Get("InstanceId"); id != "" {
		inst := s.instances[id]
		if inst == nil || inst.owner != acct {
			return nil, instanceNotFound(id)
		}
		enis := s.instanceENIsLocked(id)
		if len(enis) > 1 {
			return nil, errf(http.StatusBadRequest, "InvalidInstanceID", "There are multiple interfaces attached to instance '%s'. Please specify an interface ID for the operation instead.", id)
		}
		if len(enis) == 0 || (inst.state != "running" && inst.state != "stopped") {
			return nil, errf(http.StatusBadRequest, "IncorrectInstanceState", "The pending-instance-running instance to which '%s' is attached is not in a valid state for this operation", id)
		}
		e = enis[0]
	} else {
		return nil, ec2Missing("InstanceId")
	}
	if ad.eniID != "" && ad.eniID != e.id && c.form.Get("AllowReassociation") != "true" {
		return nil, errf(http.StatusBadRequest, "Resource.AlreadyAssociated", "resource %s is already associated with associate-id %s", ad.allocationID, ad.associationID)
	}
	if other := s.addressOfENILocked(e); other != nil && other != ad {
		other.eniID, other.privateIP, other.associationID = "", "", ""
	}
	ad.eniID, ad.privateIP = e.id, e.privateIP
	if p := c.form.Get("PrivateIpAddress"); p != "" {
		if p != e.privateIP {
			return nil, ec2InvalidParam("The private IP address %s is not assigned to interface %s", p, e.id)
		}
	}
	ad.associationID = s.newID("eipassoc")
	return &struct {
		ec2Meta
		Return        bool   `xml:"return"`
		AssociationID string `xml:"associationId"`
	}{Return: true, AssociationID: ad.associationID}, nil
}

func ec2DisassociateAddress(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	acct := c.who.accountID()
	aid, ip := c.form.Get("AssociationId"), c.form.Get("PublicIp")
	if aid == "" && ip == "" {
		return nil, ec2Missing("AssociationId")
	}
	for _, ad := range s.addresses {
		if ad.owner == acct && ad.associationID != "" && (ad.associationID == aid || (aid == "" && ad.publicIP == ip)) {
			ad.eniID, ad.privateIP, ad.associationID = "", "", ""
			return ec2Return(), nil
		}
	}
	return nil, errf(http.StatusBadRequest, "InvalidAssociationID.NotFound", "The association ID '%s' does not exist", aid+ip)
}

func ec2DescribeAddresses(c *call) (any, error) {
	s := c.sim
	filters := formFilters(c.form)
	if err := checkFilters(filters, true, "allocation-id", "association-id", "instance-id", "network-interface-id", "network-interface-owner-id", "private-ip-address", "public-ip", "domain"); err != nil {
		return nil, err
	}
	ips := formList(c.form, "PublicIp")
	s.mu.RLock()
	defer s.mu.RUnlock()
	ads, err := owned(s.addresses, formList(c.form, "AllocationId"), c.who.accountID(), addressNotFound)
	if err != nil {
		return nil, err
	}
	out := &struct {
		ec2Meta
		Addresses []xmlAddress `xml:"addressesSet>item"`
	}{}
	for _, ad := range ads {
		if len(ips) > 0 && !slices.Contains(ips, ad.publicIP) {
			continue
		}
		x := s.xmlAddressLocked(ad)
		if matchTagged(filters, s.tags[ad.allocationID], func(name string) []string {
			switch name {
			case "allocation-id":
				return []string{x.AllocationID}
			case "association-id":
				return []string{x.AssociationID}
			case "instance-id":
				return []string{x.InstanceID}
			case "network-interface-id":
				return []string{x.NetworkInterfaceID}
			case "network-interface-owner-id":
				return []string{x.NetworkInterfaceOwnerID}
			case "private-ip-address":
				return []string{x.PrivateIPAddress}
			case "public-ip":
				return []string{x.PublicIP}
			case "domain":
				return []string{"vpc"}
			}
			return nil
		}) {
			out.Addresses = append(out.Addresses, x)
		}
	}
	return out, nil
}

// ---- VPC endpoints and prefix lists ----

type xmlVPCEndpoint struct {
	VpcEndpointID     string     `xml:"vpcEndpointId"`
	VpcEndpointType   string     `xml:"vpcEndpointType"`
	VpcID             string     `xml:"vpcId"`
	ServiceName       string     `xml:"serviceName"`
	State             string     `xml:"state"`
	PolicyDocument    string     `xml:"policyDocument"`
	RouteTableIDs     []string   `xml:"routeTableIdSet>item"`
	SubnetIDs         []string   `xml:"subnetIdSet>item"`
	Groups            []xmlGroup `xml:"groupSet>item"`
	PrivateDNSEnabled bool       `xml:"privateDnsEnabled"`
	CreationTimestamp string     `xml:"creationTimestamp"`
	OwnerID           string     `xml:"ownerId"`
	TagSet            []xmlTag   `xml:"tagSet>item"`
}

const fullAccessPolicy = `{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}`

func (s *Sim) xmlEndpointLocked(ep *vpcEndpoint) xmlVPCEndpoint {
	x := xmlVPCEndpoint{VpcEndpointID: ep.id, VpcEndpointType: ep.typ, VpcID: ep.vpcID, ServiceName: ep.service, State: "available",
		PolicyDocument: fullAccessPolicy, RouteTableIDs: ep.routeTables, SubnetIDs: ep.subnets, PrivateDNSEnabled: ep.privateDNS,
		CreationTimestamp: ec2Time(ep.created), OwnerID: ep.owner, TagSet: xmlTags(s.tags[ep.id])}
	for _, g := range ep.groups {
		name := ""
		if sg := s.sgs[g]; sg != nil {
			name = sg.name
		}
		x.Groups = append(x.Groups, xmlGroup{GroupID: g, GroupName: name})
	}
	return x
}

func ec2CreateVpcEndpoint(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vpcs[c.form.Get("VpcId")]
	if v == nil || v.owner != c.who.accountID() {
		return nil, vpcNotFound(c.form.Get("VpcId"))
	}
	svc := c.form.Get("ServiceName")
	if !strings.HasPrefix(svc, "com.amazonaws."+s.region+".") {
		return nil, errf(http.StatusBadRequest, "InvalidServiceName", "The Vpc Endpoint Service '%s' does not exist", svc)
	}
	typ := c.form.Get("VpcEndpointType")
	if typ == "" {
		typ = "Gateway"
	}
	ep := &vpcEndpoint{id: s.newID("vpce"), owner: v.owner, vpcID: v.id, service: svc, typ: typ, subnets: formList(c.form, "SubnetId"),
		groups: formList(c.form, "SecurityGroupId"), routeTables: formList(c.form, "RouteTableId"), created: s.now().UTC(),
		privateDNS: typ == "Interface" && c.form.Get("PrivateDnsEnabled") != "false"}
	if typ == "Interface" && len(ep.groups) == 0 {
		ep.groups = []string{v.defaultSG}
	}
	s.endpoints[ep.id] = ep
	s.setTagsLocked(ep.id, formTagSpecs(c.form, "vpc-endpoint"))
	return &struct {
		ec2Meta
		VpcEndpoint xmlVPCEndpoint `xml:"vpcEndpoint"`
	}{VpcEndpoint: s.xmlEndpointLocked(ep)}, nil
}

func ec2DescribeVpcEndpoints(c *call) (any, error) {
	s := c.sim
	filters := formFilters(c.form)
	if err := checkFilters(filters, true, "vpc-id", "service-name", "vpc-endpoint-id", "vpc-endpoint-state", "vpc-endpoint-type"); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	eps, err := owned(s.endpoints, formList(c.form, "VpcEndpointId"), c.who.accountID(), endpointNotFound)
	if err != nil {
		return nil, err
	}
	var match []*vpcEndpoint
	for _, ep := range eps {
		if matchTagged(filters, s.tags[ep.id], func(name string) []string {
			switch name {
			case "vpc-id":
				return []string{ep.vpcID}
			case "service-name":
				return []string{ep.service}
			case "vpc-endpoint-id":
				return []string{ep.id}
			case "vpc-endpoint-state":
				return []string{"available"}
			case "vpc-endpoint-type":
				return []string{ep.typ}
			}
			return nil
		}) {
			match = append(match, ep)
		}
	}
	from, to, next, err := page(c.form, len(match))
	if err != nil {
		return nil, err
	}
	out := &struct {
		ec2Meta
		Endpoints []xmlVPCEndpoint `xml:"vpcEndpointSet>item"`
		NextToken string           `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, ep := range match[from:to] {
		out.Endpoints = append(out.Endpoints, s.xmlEndpointLocked(ep))
	}
	return out, nil
}

func ec2DescribePrefixLists(c *call) (any, error) {
	s := c.sim
	filters := formFilters(c.form)
	if err := checkFilters(filters, false, "prefix-list-id", "prefix-list-name"); err != nil {
		return nil, err
	}
	ids := formList(c.form, "PrefixListId")
	type item struct {
		PrefixListID   string   `xml:"prefixListId"`
		PrefixListName string   `xml:"prefixListName"`
		Cidrs          []string `xml:"cidrSet>item"`
	}
	out := &struct {
		ec2Meta
		PrefixLists []item `xml:"prefixListSet>item"`
	}{}
	for _, p := range s.prefixListsLocked() {
		if len(ids) > 0 && !slices.Contains(ids, p.id) {
			continue
		}
		if matchFilters(filters, func(name string) []string {
			switch name {
			case "prefix-list-id":
				return []string{p.id}
			case "prefix-list-name":
				return []string{p.name}
			}
			return nil
		}) {
			out.PrefixLists = append(out.PrefixLists, item{p.id, p.name, p.cidrs})
		}
	}
	return out, nil
}
