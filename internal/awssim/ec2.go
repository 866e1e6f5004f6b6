package awssim

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// volume is a simulated EBS volume: a sparse map of written blocks.
type volume struct {
	id, owner  string
	sizeGiB    int32
	volumeType string
	kmsKey     *kmsKey // nil: unencrypted
	created    time.Time
	snapshotID string
	blocks     blockMap
	attachment *attachment
}

func (v *volume) sizeBytes() int64 { return int64(v.sizeGiB) << 30 }

type attachment struct {
	instanceID, device  string
	deleteOnTermination bool
	at                  time.Time
}

type instance struct {
	id, owner, imageID, instanceType string
	launched                         time.Time
	state                            string
	rootDevice                       string
	devices                          []instanceDevice
	reservation                      string
	disableAPITermination            bool
	shutdownBehavior                 string // stop or terminate
	sourceDestCheck                  bool
	console                          []byte
	screenshot                       []byte
	profileAssoc                     string // IAM instance profile association ID
	terminated                       time.Time
}

type instanceDevice struct{ name, volumeID string }

// snapshot is a simulated EBS snapshot. Its blocks never change.
type snapshot struct {
	id, owner   string
	volumeID    string // as reported; vol-ffffffff for copies
	lineage     string // the volume the data descends from, for ListChangedBlocks
	description string
	sizeGiB     int32
	kmsKey      *kmsKey
	blocks      blockMap
	started     time.Time
	state       string
	pendingLeft int
	sharedWith  map[string]bool
	public      bool
}

// completedLocked moves a snapshot whose pending fault is exhausted to
// completed and reports whether it is completed.
func (sn *snapshot) completedLocked() bool {
	if sn.state == "pending" && sn.pendingLeft <= 0 {
		sn.state = "completed"
	}
	return sn.state == "completed"
}

func (sn *snapshot) visibleTo(account string) bool {
	return sn.owner == account || sn.public || sn.sharedWith[account]
}

func ec2Service() *service {
	return &service{
		name:       "ec2",
		protocol:   protoEC2Query,
		xmlns:      "http://ec2.amazonaws.com/doc/2016-11-15/",
		throttle:   apiError{status: http.StatusServiceUnavailable, code: "RequestLimitExceeded", message: "Request limit exceeded."},
		badSig:     apiError{status: http.StatusUnauthorized, code: "AuthFailure"},
		authFailed: apiError{status: http.StatusUnauthorized, code: "AuthFailure"},
		expired:    apiError{status: http.StatusBadRequest, code: "RequestExpired"},
		ops: map[string]operation{
			"RunInstances":              ec2RunInstances,
			"DescribeInstances":         ec2DescribeInstances,
			"DescribeVolumes":           ec2DescribeVolumes,
			"CreateSnapshot":            ec2CreateSnapshot,
			"CreateSnapshots":           ec2CreateSnapshots,
			"DescribeSnapshots":         ec2DescribeSnapshots,
			"CopySnapshot":              ec2CopySnapshot,
			"ModifySnapshotAttribute":   ec2ModifySnapshotAttribute,
			"DescribeSnapshotAttribute": ec2DescribeSnapshotAttribute,
			"CreateTags":                ec2CreateTags,
			"DescribeTags":              ec2DescribeTags,
			"DeleteTags":                ec2DeleteTags,
			"DeleteSnapshot":            ec2DeleteSnapshot,

			"TerminateInstances":                     ec2TerminateInstances,
			"DescribeInstanceAttribute":              ec2DescribeInstanceAttribute,
			"ModifyInstanceAttribute":                ec2ModifyInstanceAttribute,
			"GetConsoleOutput":                       ec2GetConsoleOutput,
			"GetConsoleScreenshot":                   ec2GetConsoleScreenshot,
			"AssociateIamInstanceProfile":            ec2AssociateIamInstanceProfile,
			"DescribeIamInstanceProfileAssociations": ec2DescribeIamInstanceProfileAssociations,
			"ReplaceIamInstanceProfileAssociation":   ec2ReplaceIamInstanceProfileAssociation,
			"DisassociateIamInstanceProfile":         ec2DisassociateIamInstanceProfile,

			"CreateVpc":                       ec2CreateVpc,
			"DescribeVpcs":                    ec2DescribeVpcs,
			"CreateSubnet":                    ec2CreateSubnet,
			"DescribeSubnets":                 ec2DescribeSubnets,
			"DescribeNetworkInterfaces":       ec2DescribeNetworkInterfaces,
			"ModifyNetworkInterfaceAttribute": ec2ModifyNetworkInterfaceAttribute,
			"CreateSecurityGroup":             ec2CreateSecurityGroup,
			"DescribeSecurityGroups":          ec2DescribeSecurityGroups,
			"AuthorizeSecurityGroupIngress":   ec2AuthorizeIngress,
			"AuthorizeSecurityGroupEgress":    ec2AuthorizeEgress,
			"RevokeSecurityGroupIngress":      ec2RevokeIngress,
			"RevokeSecurityGroupEgress":       ec2RevokeEgress,
			"DeleteSecurityGroup":             ec2DeleteSecurityGroup,
			"DescribeSecurityGroupRules":      ec2DescribeSecurityGroupRules,
			"CreateNetworkAcl":                ec2CreateNetworkAcl,
			"CreateNetworkAclEntry":           ec2CreateNetworkAclEntry,
			"DescribeNetworkAcls":             ec2DescribeNetworkAcls,
			"ReplaceNetworkAclAssociation":    ec2ReplaceNetworkAclAssociation,
			"AllocateAddress":                 ec2AllocateAddress,
			"AssociateAddress":                ec2AssociateAddress,
			"DisassociateAddress":             ec2DisassociateAddress,
			"DescribeAddresses":               ec2DescribeAddresses,
			"CreateVpcEndpoint":               ec2CreateVpcEndpoint,
			"DescribeVpcEndpoints":            ec2DescribeVpcEndpoints,
			"DescribePrefixLists":             ec2DescribePrefixLists,
		},
	}
}

func ec2InvalidParam(format string, args ...any) *apiError {
	return errf(http.StatusBadRequest, "InvalidParameterValue", format, args...)
}

func ec2Missing(name string) *apiError {
	return errf(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter %s", name)
}

var ec2IDRe = regexp.MustCompile(`^[a-z]+-(?:[0-9a-f]{8}|[0-9a-f]{17})$`)

// malformed returns the EC2 error for an ID that is not an ID of kind
// ("Snapshot", "Volume", "Instance"), or nil.
func malformed(kind, prefix, id string) *apiError {
	if strings.HasPrefix(id, prefix+"-") && ec2IDRe.MatchString(id) {
		return nil
	}
	return errf(http.StatusBadRequest, "Invalid"+kind+"ID.Malformed", "Invalid id: \"%s\"", id)
}

func snapshotNotFound(id string) *apiError {
	if e := malformed("Snapshot", "snap", id); e != nil {
		return e
	}
	return errf(http.StatusBadRequest, "InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
}

func volumeNotFound(id string) *apiError {
	if e := malformed("Volume", "vol", id); e != nil {
		return e
	}
	return errf(http.StatusBadRequest, "InvalidVolume.NotFound", "The volume '%s' does not exist.", id)
}

func instanceNotFound(id string) *apiError {
	if e := malformed("Instance", "i", id); e != nil {
		return e
	}
	return errf(http.StatusBadRequest, "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
}

// page applies MaxResults/NextToken (an opaque offset) to n sorted items and
// returns the slice bounds and the next token.
func page(form url.Values, n int) (from, to int, next string, err error) {
	if tok := form.Get("NextToken"); tok != "" {
		b, derr := base64.RawURLEncoding.DecodeString(tok)
		off, aerr := strconv.Atoi(strings.TrimPrefix(string(b), "offset:"))
		if derr != nil || aerr != nil || off < 0 || off > n {
			return 0, 0, "", ec2InvalidParam("Invalid value '%s' for nextToken", tok)
		}
		from = off
	}
	to = n
	if m := form.Get("MaxResults"); m != "" {
		max, aerr := strconv.Atoi(m)
		if aerr != nil || max < 5 || max > 1000 {
			return 0, 0, "", ec2InvalidParam("Value ( %s ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.", m)
		}
		if from+max < n {
			to = from + max
			next = base64.RawURLEncoding.EncodeToString([]byte("offset:" + strconv.Itoa(to)))
		}
	}
	return from, to, next, nil
}

// ---- instances and volumes ----

type xmlInstance struct {
	InstanceID    string `xml:"instanceId"`
	ImageID       string `xml:"imageId"`
	InstanceState struct {
		Code int    `xml:"code"`
		Name string `xml:"name"`
	} `xml:"instanceState"`
	PrivateDNSName string `xml:"privateDnsName"`
	DNSName        string `xml:"dnsName"`
	AmiLaunchIndex int    `xml:"amiLaunchIndex"`
	InstanceType   string `xml:"instanceType"`
	LaunchTime     string `xml:"launchTime"`
	Placement      struct {
		AvailabilityZone string `xml:"availabilityZone"`
		Tenancy          string `xml:"tenancy"`
	} `xml:"placement"`
	Monitoring struct {
		State string `xml:"state"`
	} `xml:"monitoring"`
	SubnetID           string             `xml:"subnetId"`
	VpcID              string             `xml:"vpcId"`
	PrivateIPAddress   string             `xml:"privateIpAddress"`
	Architecture       string             `xml:"architecture"`
	RootDeviceType     string             `xml:"rootDeviceType"`
	RootDeviceName     string             `xml:"rootDeviceName"`
	BlockDeviceMapping []xmlInstanceBDM   `xml:"blockDeviceMapping>item"`
	VirtualizationType string             `xml:"virtualizationType"`
	Hypervisor         string             `xml:"hypervisor"`
	TagSet             []xmlTag           `xml:"tagSet>item"`
	GroupSet           []xmlGroup         `xml:"groupSet>item"`
	EbsOptimized       bool               `xml:"ebsOptimized"`
	EnaSupport         bool               `xml:"enaSupport"`
	SourceDestCheck    bool               `xml:"sourceDestCheck"`
	NetworkInterfaces  []xmlInstanceENI   `xml:"networkInterfaceSet>item"`
	MetadataOptions    *xmlMetadataOption `xml:"metadataOptions"`
	IamInstanceProfile *xmlProfileRef     `xml:"iamInstanceProfile,omitempty"`
	PublicIPAddress    string             `xml:"ipAddress,omitempty"`
	StateReason        *struct {
		Code    string `xml:"code"`
		Message string `xml:"message"`
	} `xml:"stateReason,omitempty"`
}

type xmlProfileRef struct {
	Arn string `xml:"arn"`
	ID  string `xml:"id"`
}

type xmlGroup struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

type xmlInstanceENI struct {
	NetworkInterfaceID string     `xml:"networkInterfaceId"`
	SubnetID           string     `xml:"subnetId"`
	VpcID              string     `xml:"vpcId"`
	Description        string     `xml:"description"`
	OwnerID            string     `xml:"ownerId"`
	Status             string     `xml:"status"`
	MacAddress         string     `xml:"macAddress"`
	PrivateIPAddress   string     `xml:"privateIpAddress"`
	PrivateDNSName     string     `xml:"privateDnsName"`
	SourceDestCheck    bool       `xml:"sourceDestCheck"`
	Groups             []xmlGroup `xml:"groupSet>item"`
	Attachment         struct {
		AttachmentID        string `xml:"attachmentId"`
		DeviceIndex         int    `xml:"deviceIndex"`
		Status              string `xml:"status"`
		AttachTime          string `xml:"attachTime"`
		DeleteOnTermination bool   `xml:"deleteOnTermination"`
		NetworkCardIndex    int    `xml:"networkCardIndex"`
	} `xml:"attachment"`
	Association        *xmlENIAssociation `xml:"association,omitempty"`
	PrivateIPAddresses []xmlPrivateIP     `xml:"privateIpAddressesSet>item"`
	IPv6Addresses      []xmlIPv6          `xml:"ipv6AddressesSet>item"`
	InterfaceType      string             `xml:"interfaceType"`
	ConnTracking       *xmlConnTracking   `xml:"connectionTrackingConfiguration,omitempty"`
}

type xmlENIAssociation struct {
	PublicIP      string `xml:"publicIp"`
	PublicDNSName string `xml:"publicDnsName"`
	IPOwnerID     string `xml:"ipOwnerId"`
	AllocationID  string `xml:"allocationId,omitempty"`
	AssociationID string `xml:"associationId,omitempty"`
}

type xmlPrivateIP struct {
	PrivateIPAddress string             `xml:"privateIpAddress"`
	PrivateDNSName   string             `xml:"privateDnsName"`
	Primary          bool               `xml:"primary"`
	Association      *xmlENIAssociation `xml:"association,omitempty"`
}

type xmlIPv6 struct {
	IPv6Address   string `xml:"ipv6Address"`
	IsPrimaryIPv6 bool   `xml:"isPrimaryIpv6"`
}

type xmlConnTracking struct {
	TCPEstablishedTimeout int32 `xml:"tcpEstablishedTimeout"`
	UDPStreamTimeout      int32 `xml:"udpStreamTimeout"`
	UDPTimeout            int32 `xml:"udpTimeout"`
}

type xmlMetadataOption struct {
	State        string `xml:"state"`
	HTTPTokens   string `xml:"httpTokens"`
	HTTPEndpoint string `xml:"httpEndpoint"`
}

type xmlInstanceBDM struct {
	DeviceName string `xml:"deviceName"`
	Ebs        struct {
		VolumeID            string `xml:"volumeId"`
		Status              string `xml:"status"`
		AttachTime          string `xml:"attachTime"`
		DeleteOnTermination bool   `xml:"deleteOnTermination"`
	} `xml:"ebs"`
}

type xmlReservation struct {
	ReservationID string        `xml:"reservationId"`
	OwnerID       string        `xml:"ownerId"`
	GroupSet      []xmlGroup    `xml:"groupSet>item"`
	Instances     []xmlInstance `xml:"instancesSet>item"`
}

var instanceStateCodes = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}

func (s *Sim) xmlInstanceLocked(inst *instance) xmlInstance {
	x := xmlInstance{
		InstanceID: inst.id, ImageID: inst.imageID, InstanceType: inst.instanceType,
		LaunchTime: ec2Time(inst.launched), Architecture: "x86_64", RootDeviceType: "ebs",
		RootDeviceName: inst.rootDevice, VirtualizationType: "hvm", Hypervisor: "xen",
		TagSet:          xmlTags(s.tags[inst.id]),
		EbsOptimized:    true,
		EnaSupport:      true,
		SourceDestCheck: inst.sourceDestCheck,
		MetadataOptions: &xmlMetadataOption{State: "applied", HTTPTokens: "required", HTTPEndpoint: "enabled"},
	}
	x.InstanceState.Code = instanceStateCodes[inst.state]
	x.InstanceState.Name = inst.state
	x.Placement.AvailabilityZone = s.az
	x.Placement.Tenancy = "default"
	x.Monitoring.State = "disabled"
	if as := s.ipAssocs[inst.profileAssoc]; as != nil {
		x.IamInstanceProfile = &xmlProfileRef{Arn: as.profileARN, ID: as.profileID}
	}
	for i, e := range s.instanceENIsLocked(inst.id) {
		xe := s.xmlInstanceENILocked(e)
		x.NetworkInterfaces = append(x.NetworkInterfaces, xe)
		if i == 0 {
			x.SubnetID, x.VpcID, x.PrivateIPAddress, x.PrivateDNSName, x.GroupSet = e.subnetID, e.vpcID, e.privateIP, xe.PrivateDNSName, xe.Groups
			if xe.Association != nil {
				x.PublicIPAddress = xe.Association.PublicIP
			}
		}
	}
	if inst.state == "terminated" {
		x.StateReason = &struct {
			Code    string `xml:"code"`
			Message string `xml:"message"`
		}{"Client.UserInitiatedShutdown", "Client.UserInitiatedShutdown: User initiated shutdown"}
	}
	for _, d := range inst.devices {
		var b xmlInstanceBDM
		b.DeviceName = d.name
		b.Ebs.VolumeID = d.volumeID
		b.Ebs.Status = "attached"
		if v := s.volumes[d.volumeID]; v != nil && v.attachment != nil {
			b.Ebs.AttachTime = ec2Time(v.attachment.at)
			b.Ebs.DeleteOnTermination = v.attachment.deleteOnTermination
		}
		x.BlockDeviceMapping = append(x.BlockDeviceMapping, b)
	}
	return x
}

type ec2ReservationResponse struct {
	ec2Meta
	xmlReservation
}

func ec2RunInstances(c *call) (any, error) {
	s := c.sim
	minC, _ := strconv.Atoi(c.form.Get("MinCount"))
	maxC, _ := strconv.Atoi(c.form.Get("MaxCount"))
	if c.form.Get("ImageId") == "" {
		return nil, ec2Missing("ImageId")
	}
	if minC < 1 || maxC < minC || maxC > 20 {
		return nil, ec2InvalidParam("MinCount %d and MaxCount %d are invalid", minC, maxC)
	}
	bdms := formStructs(c.form, "BlockDeviceMapping")
	s.mu.Lock()
	defer s.mu.Unlock()
	a := c.who.account
	out := &ec2ReservationResponse{}
	out.OwnerID = a.id
	instTags := formTagSpecs(c.form, "instance")
	volTags := formTagSpecs(c.form, "volume")
	net := instanceNet{subnetID: c.form.Get("SubnetId"), groups: formList(c.form, "SecurityGroupId")}
	if n, _ := strconv.Atoi(c.form.Get("Ipv6AddressCount")); n > 0 {
		net.ipv6 = n
	}
	for range maxC {
		inst, err := s.runInstanceLocked(a, c.form.Get("InstanceType"), c.form.Get("ImageId"), instTags, net)
		if err != nil {
			return nil, err
		}
		if p := c.form.Get("IamInstanceProfile.Name") + c.form.Get("IamInstanceProfile.Arn"); p != "" {
			if _, err := s.associateProfileLocked(a, inst, c.form.Get("IamInstanceProfile.Name"), c.form.Get("IamInstanceProfile.Arn")); err != nil {
				return nil, err
			}
		}
		inst.disableAPITermination = formBool(c.form, "DisableApiTermination")
		if b := c.form.Get("InstanceInitiatedShutdownBehavior"); b != "" {
			inst.shutdownBehavior = b
		}
		out.ReservationID = inst.reservation
		specs := bdms
		if len(specs) == 0 {
			specs = []url.Values{{"DeviceName": {"/dev/xvda"}, "Ebs.VolumeSize": {"8"}, "Ebs.DeleteOnTermination": {"true"}}}
		}
		for i, b := range specs {
			size, _ := strconv.Atoi(b.Get("Ebs.VolumeSize"))
			if size == 0 {
				size = 8
			}
			o := VolumeOptions{SizeGiB: int32(size), VolumeType: b.Get("Ebs.VolumeType"), Tags: volTags}
			if formBool(b, "Ebs.Encrypted") {
				o.Encryption = EncryptionDefault
				if k := b.Get("Ebs.KmsKeyId"); k != "" {
					o.Encryption, o.KMSKeyID = EncryptionCMK, k
				}
			}
			vol, err := s.createVolumeLocked(a, o)
			if err != nil {
				return nil, ec2InvalidParam("%v", err)
			}
			dot := b.Get("Ebs.DeleteOnTermination") != "false"
			vol.attachment = &attachment{instanceID: inst.id, device: b.Get("DeviceName"), deleteOnTermination: dot, at: inst.launched}
			inst.devices = append(inst.devices, instanceDevice{name: b.Get("DeviceName"), volumeID: vol.id})
			if i == 0 {
				inst.rootDevice = b.Get("DeviceName")
			}
		}
		out.Instances = append(out.Instances, s.xmlInstanceLocked(inst))
	}
	out.GroupSet = out.Instances[0].GroupSet
	return out, nil
}

func ec2DescribeInstances(c *call) (any, error) {
	s := c.sim
	ids := formList(c.form, "InstanceId")
	filters := formFilters(c.form)
	if err := checkFilters(filters, true, "instance-id", "instance-state-name", "instance-type", "vpc-id", "subnet-id", "private-ip-address", "network-interface.network-interface-id", "instance.group-id", "iam-instance-profile.arn", "image-id"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	acct := c.who.accountID()
	insts, err := owned(s.instances, ids, acct, instanceNotFound)
	if err != nil {
		return nil, err
	}
	type resp struct {
		ec2Meta
		Reservations []xmlReservation `xml:"reservationSet>item"`
		NextToken    string           `xml:"nextToken,omitempty"`
	}
	out := &resp{}
	byRes := map[string]int{}
	for _, inst := range insts {
		if inst.state == "pending" {
			inst.state = "running"
		}
		ok := matchTagged(filters, s.tags[inst.id], func(name string) []string {
			switch name {
			case "instance-id":
				return []string{inst.id}
			case "instance-state-name":
				return []string{inst.state}
			case "instance-type":
				return []string{inst.instanceType}
			case "vpc-id", "subnet-id", "private-ip-address", "network-interface.network-interface-id", "instance.group-id", "iam-instance-profile.arn":
				var vs []string
				for i, e := range s.instanceENIsLocked(inst.id) {
					switch {
					case name == "vpc-id" && i == 0:
						vs = append(vs, e.vpcID)
					case name == "subnet-id" && i == 0:
						vs = append(vs, e.subnetID)
					case name == "private-ip-address" && i == 0:
						vs = append(vs, e.privateIP)
					case name == "network-interface.network-interface-id":
						vs = append(vs, e.id)
					case name == "instance.group-id":
						vs = append(vs, e.groups...)
					}
				}
				if as := s.ipAssocs[inst.profileAssoc]; name == "iam-instance-profile.arn" && as != nil {
					vs = append(vs, as.profileARN)
				}
				return vs
			case "image-id":
				return []string{inst.imageID}
			}
			return nil
		})
		if !ok {
			continue
		}
		x := s.xmlInstanceLocked(inst)
		i, seen := byRes[inst.reservation]
		if !seen {
			i = len(out.Reservations)
			byRes[inst.reservation] = i
			out.Reservations = append(out.Reservations, xmlReservation{ReservationID: inst.reservation, OwnerID: inst.owner, GroupSet: x.GroupSet})
		}
		out.Reservations[i].Instances = append(out.Reservations[i].Instances, x)
	}
	return out, nil
}

type xmlVolume struct {
	VolumeID         string `xml:"volumeId"`
	Size             int32  `xml:"size"`
	SnapshotID       string `xml:"snapshotId"`
	AvailabilityZone string `xml:"availabilityZone"`
	Status           string `xml:"status"`
	CreateTime       string `xml:"createTime"`
	Attachments      []struct {
		VolumeID            string `xml:"volumeId"`
		InstanceID          string `xml:"instanceId"`
		Device              string `xml:"device"`
		Status              string `xml:"status"`
		AttachTime          string `xml:"attachTime"`
		DeleteOnTermination bool   `xml:"deleteOnTermination"`
	} `xml:"attachmentSet>item"`
	VolumeType         string   `xml:"volumeType"`
	Iops               int      `xml:"iops"`
	Throughput         int      `xml:"throughput,omitempty"`
	Encrypted          bool     `xml:"encrypted"`
	KmsKeyID           string   `xml:"kmsKeyId,omitempty"`
	TagSet             []xmlTag `xml:"tagSet>item"`
	MultiAttachEnabled bool     `xml:"multiAttachEnabled"`
}

func ec2DescribeVolumes(c *call) (any, error) {
	s := c.sim
	ids := formList(c.form, "VolumeId")
	filters := formFilters(c.form)
	if err := checkFilters(filters, true, "volume-id", "status", "encrypted", "size", "attachment.instance-id", "attachment.device", "snapshot-id"); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	acct := c.who.accountID()
	vols, err := owned(s.volumes, ids, acct, volumeNotFound)
	if err != nil {
		return nil, err
	}
	type resp struct {
		ec2Meta
		Volumes   []xmlVolume `xml:"volumeSet>item"`
		NextToken string      `xml:"nextToken,omitempty"`
	}
	out := &resp{}
	for _, v := range vols {
		status := "available"
		if v.attachment != nil {
			status = "in-use"
		}
		ok := matchTagged(filters, s.tags[v.id], func(name string) []string {
			switch name {
			case "volume-id":
				return []string{v.id}
			case "status":
				return []string{status}
			case "encrypted":
				return []string{strconv.FormatBool(v.kmsKey != nil)}
			case "size":
				return []string{strconv.Itoa(int(v.sizeGiB))}
			case "attachment.instance-id":
				if v.attachment != nil {
					return []string{v.attachment.instanceID}
				}
			case "attachment.device":
				if v.attachment != nil {
					return []string{v.attachment.device}
				}
			case "snapshot-id":
				return []string{v.snapshotID}
			}
			return nil
		})
		if !ok {
			continue
		}
		x := xmlVolume{
			VolumeID: v.id, Size: v.sizeGiB, SnapshotID: v.snapshotID, AvailabilityZone: s.az, Status: status,
			CreateTime: ec2Time(v.created), VolumeType: v.volumeType, Iops: 3000, Encrypted: v.kmsKey != nil,
			TagSet: xmlTags(s.tags[v.id]),
		}
		if v.volumeType == "gp3" {
			x.Throughput = 125
		}
		if v.kmsKey != nil {
			x.KmsKeyID = v.kmsKey.arn
		}
		if at := v.attachment; at != nil {
			x.Attachments = append(x.Attachments, struct {
				VolumeID            string `xml:"volumeId"`
				InstanceID          string `xml:"instanceId"`
				Device              string `xml:"device"`
				Status              string `xml:"status"`
				AttachTime          string `xml:"attachTime"`
				DeleteOnTermination bool   `xml:"deleteOnTermination"`
			}{v.id, at.instanceID, at.device, "attached", ec2Time(at.at), at.deleteOnTermination})
		}
		out.Volumes = append(out.Volumes, x)
	}
	return out, nil
}

// ---- snapshots ----

type xmlSnapshot struct {
	SnapshotID  string   `xml:"snapshotId"`
	VolumeID    string   `xml:"volumeId"`
	Status      string   `xml:"status"`
	StartTime   string   `xml:"startTime"`
	Progress    string   `xml:"progress"`
	OwnerID     string   `xml:"ownerId"`
	Description string   `xml:"description"`
	VolumeSize  int32    `xml:"volumeSize"`
	Encrypted   bool     `xml:"encrypted"`
	KmsKeyID    string   `xml:"kmsKeyId,omitempty"`
	TagSet      []xmlTag `xml:"tagSet>item"`
	StorageTier string   `xml:"storageTier"`
}

func (s *Sim) xmlSnapshotLocked(sn *snapshot) xmlSnapshot {
	x := xmlSnapshot{
		SnapshotID: sn.id, VolumeID: sn.volumeID, Status: sn.state, StartTime: ec2Time(sn.started),
		Progress: "100%", OwnerID: sn.owner, Description: sn.description, VolumeSize: sn.sizeGiB,
		Encrypted: sn.kmsKey != nil, TagSet: xmlTags(s.tags[sn.id]), StorageTier: "standard",
	}
	if sn.state == "pending" {
		x.Progress = "0%"
	}
	if sn.kmsKey != nil {
		x.KmsKeyID = sn.kmsKey.arn
	}
	return x
}

func (s *Sim) snapshotVolumeLocked(v *volume, description string, tags map[string]string) *snapshot {
	s.faults.mu.Lock()
	pending := s.faults.pending
	s.faults.mu.Unlock()
	sn := &snapshot{
		id: s.newID("snap"), owner: v.owner, volumeID: v.id, lineage: v.id, description: description,
		sizeGiB: v.sizeGiB, kmsKey: v.kmsKey, blocks: v.blocks.clone(), started: s.now().UTC(),
		state: "pending", pendingLeft: pending, sharedWith: map[string]bool{},
	}
	s.snapshots[sn.id] = sn
	s.setTagsLocked(sn.id, tags)
	return sn
}

func ec2CreateSnapshot(c *call) (any, error) {
	s := c.sim
	volID := c.form.Get("VolumeId")
	if volID == "" {
		return nil, ec2Missing("VolumeId")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.volumes[volID]
	if v == nil || v.owner != c.who.accountID() {
		return nil, volumeNotFound(volID)
	}
	sn := s.snapshotVolumeLocked(v, c.form.Get("Description"), formTagSpecs(c.form, "snapshot"))
	x := s.xmlSnapshotLocked(sn)
	x.Progress = ""
	return &struct {
		ec2Meta
		xmlSnapshot
	}{xmlSnapshot: x}, nil
}

type xmlSnapshotInfo struct {
	SnapshotID       string   `xml:"snapshotId"`
	VolumeID         string   `xml:"volumeId"`
	State            string   `xml:"state"`
	StartTime        string   `xml:"startTime"`
	Progress         string   `xml:"progress"`
	OwnerID          string   `xml:"ownerId"`
	Description      string   `xml:"description"`
	VolumeSize       int32    `xml:"volumeSize"`
	Encrypted        bool     `xml:"encrypted"`
	AvailabilityZone string   `xml:"availabilityZone"`
	TagSet           []xmlTag `xml:"tagSet>item"`
}

func ec2CreateSnapshots(c *call) (any, error) {
	s := c.sim
	instID := c.form.Get("InstanceSpecification.InstanceId")
	if instID == "" {
		return nil, ec2Missing("InstanceSpecification.InstanceId")
	}
	excludeBoot := formBool(c.form, "InstanceSpecification.ExcludeBootVolume")
	excluded := formList(c.form, "InstanceSpecification.ExcludeDataVolumeId")
	copyTags := c.form.Get("CopyTagsFromSource") == "volume"
	tags := formTagSpecs(c.form, "snapshot")
	s.mu.Lock()
	defer s.mu.Unlock()
	inst := s.instances[instID]
	if inst == nil || inst.owner != c.who.accountID() {
		return nil, instanceNotFound(instID)
	}
	type resp struct {
		ec2Meta
		Snapshots []xmlSnapshotInfo `xml:"snapshotSet>item"`
	}
	out := &resp{}
	for _, d := range inst.devices {
		if (excludeBoot && d.name == inst.rootDevice) || slices.Contains(excluded, d.volumeID) {
			continue
		}
		v := s.volumes[d.volumeID]
		t := map[string]string{}
		if copyTags {
			for k, val := range s.tags[v.id] {
				t[k] = val
			}
		}
		for k, val := range tags {
			t[k] = val
		}
		sn := s.snapshotVolumeLocked(v, c.form.Get("Description"), t)
		out.Snapshots = append(out.Snapshots, xmlSnapshotInfo{
			SnapshotID: sn.id, VolumeID: sn.volumeID, State: sn.state, StartTime: ec2Time(sn.started),
			Progress: "", OwnerID: sn.owner, Description: sn.description, VolumeSize: sn.sizeGiB,
			Encrypted: sn.kmsKey != nil, AvailabilityZone: s.az, TagSet: xmlTags(s.tags[sn.id]),
		})
	}
	return out, nil
}

// restorableBy reports whether account may create volumes from sn.
func restorableBy(sn *snapshot, account string) bool { return sn.visibleTo(account) }

func ec2DescribeSnapshots(c *call) (any, error) {
	s := c.sim
	acct := c.who.accountID()
	ids := formList(c.form, "SnapshotId")
	owners := formList(c.form, "Owner")
	restorable := formList(c.form, "RestorableBy")
	filters := formFilters(c.form)
	if err := checkFilters(filters, true, "snapshot-id", "volume-id", "status", "owner-id", "description", "encrypted", "volume-size", "progress", "kms-key-id", "start-time"); err != nil {
		return nil, err
	}
	for i, o := range owners {
		if o == "self" {
			owners[i] = acct
		}
	}
	for i, r := range restorable {
		if r == "self" {
			restorable[i] = acct
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	snaps, err := visible(s.snapshots, ids, func(sn *snapshot) bool { return sn.visibleTo(acct) }, snapshotNotFound)
	if err != nil {
		return nil, err
	}
	var match []*snapshot
	for _, sn := range snaps {
		if len(owners) > 0 && !slices.Contains(owners, sn.owner) {
			continue
		}
		if len(restorable) > 0 && !slices.ContainsFunc(restorable, func(a string) bool {
			return (a == "all" && sn.public) || restorableBy(sn, a)
		}) {
			continue
		}
		// The state a caller sees is the state after this poll.
		state := sn.state
		if state == "pending" {
			if sn.pendingLeft > 0 {
				state = "pending"
			} else {
				state = "completed"
			}
		}
		ok := matchTagged(filters, s.tags[sn.id], func(name string) []string {
			switch name {
			case "snapshot-id":
				return []string{sn.id}
			case "volume-id":
				return []string{sn.volumeID}
			case "status":
				return []string{state}
			case "owner-id":
				return []string{sn.owner}
			case "description":
				return []string{sn.description}
			case "encrypted":
				return []string{strconv.FormatBool(sn.kmsKey != nil)}
			case "volume-size":
				return []string{strconv.Itoa(int(sn.sizeGiB))}
			case "progress":
				if state == "completed" {
					return []string{"100%"}
				}
				return []string{"0%"}
			case "kms-key-id":
				if sn.kmsKey != nil {
					return []string{sn.kmsKey.arn, sn.kmsKey.id}
				}
			case "start-time":
				return []string{ec2Time(sn.started)}
			}
			return nil
		})
		if ok {
			match = append(match, sn)
		}
	}
	from, to, next, err := page(c.form, len(match))
	if err != nil {
		return nil, err
	}
	type resp struct {
		ec2Meta
		Snapshots []xmlSnapshot `xml:"snapshotSet>item"`
		NextToken string        `xml:"nextToken,omitempty"`
	}
	out := &resp{NextToken: next}
	for _, sn := range match[from:to] {
		if sn.state == "pending" {
			if sn.pendingLeft > 0 {
				sn.pendingLeft--
			} else {
				sn.completedLocked()
			}
		}
		out.Snapshots = append(out.Snapshots, s.xmlSnapshotLocked(sn))
	}
	return out, nil
}

func ec2CopySnapshot(c *call) (any, error) {
	s := c.sim
	srcID := c.form.Get("SourceSnapshotId")
	if srcID == "" {
		return nil, ec2Missing("SourceSnapshotId")
	}
	if r := c.form.Get("SourceRegion"); r == "" {
		return nil, ec2Missing("SourceRegion")
	} else if r != s.region {
		return nil, ec2InvalidParam("The simulator serves only Region %s, not source Region %s", s.region, r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	acct := c.who.account
	src := s.snapshots[srcID]
	if src == nil || !src.visibleTo(acct.id) {
		return nil, snapshotNotFound(srcID)
	}
	if !src.completedLocked() {
		return nil, errf(http.StatusBadRequest, "IncorrectState", "Snapshot '%s' is not in a completed state", srcID)
	}
	if src.kmsKey != nil && !src.kmsKey.canUseLocked(acct.id) {
		return nil, errf(http.StatusBadRequest, "InvalidParameter",
			"The snapshot '%s' is encrypted with KMS key '%s' which the caller cannot use", srcID, src.kmsKey.arn)
	}
	key := src.kmsKey
	encrypt := formBool(c.form, "Encrypted") || src.kmsKey != nil
	if ref := c.form.Get("KmsKeyId"); ref != "" {
		if !formBool(c.form, "Encrypted") {
			return nil, errf(http.StatusBadRequest, "InvalidParameterDependency", "The parameter KmsKeyId requires the parameter Encrypted to be set.")
		}
		k, err := s.resolveKeyLocked(acct, ref)
		if err != nil || !k.canUseLocked(acct.id) {
			return nil, errf(http.StatusBadRequest, "InvalidParameterValue", "Invalid KMS key '%s': the key does not exist or the caller cannot use it", ref)
		}
		if k.spec != "SYMMETRIC_DEFAULT" {
			return nil, errf(http.StatusBadRequest, "InvalidParameterValue", "KMS key '%s' is not a symmetric encryption key", ref)
		}
		key = k
	} else if encrypt && (key == nil || key.owner.id != acct.id && key.manager == "AWS") {
		key = acct.ebsKey
	}
	if !encrypt {
		key = nil
	}
	s.faults.mu.Lock()
	pending := s.faults.pending
	s.faults.mu.Unlock()
	desc := c.form.Get("Description")
	if desc == "" {
		desc = "[Copied " + src.id + " from " + s.region + "]"
	}
	cp := &snapshot{
		id: s.newID("snap"), owner: acct.id, volumeID: "vol-ffffffff", lineage: src.lineage, description: desc,
		sizeGiB: src.sizeGiB, kmsKey: key, blocks: src.blocks, started: s.now().UTC(), state: "pending",
		pendingLeft: pending, sharedWith: map[string]bool{},
	}
	s.snapshots[cp.id] = cp
	s.setTagsLocked(cp.id, formTagSpecs(c.form, "snapshot"))
	return &struct {
		ec2Meta
		SnapshotID string   `xml:"snapshotId"`
		TagSet     []xmlTag `xml:"tagSet>item"`
	}{SnapshotID: cp.id, TagSet: xmlTags(s.tags[cp.id])}, nil
}

// ownSnapshotLocked returns a snapshot the caller owns.
func (c *call) ownSnapshotLocked(id string) (*snapshot, error) {
	if id == "" {
		return nil, ec2Missing("SnapshotId")
	}
	sn := c.sim.snapshots[id]
	acct := c.who.accountID()
	if sn == nil || !sn.visibleTo(acct) {
		return nil, snapshotNotFound(id)
	}
	if sn.owner != acct {
		return nil, errf(http.StatusForbidden, "UnauthorizedOperation", "You are not authorized to perform this operation.")
	}
	return sn, nil
}

func ec2ModifySnapshotAttribute(c *call) (any, error) {
	s := c.sim
	attr := c.form.Get("Attribute")
	if attr == "" && (formList(c.form, "UserId") != nil || formStructs(c.form, "CreateVolumePermission.Add") != nil ||
		formStructs(c.form, "CreateVolumePermission.Remove") != nil) {
		attr = "createVolumePermission"
	}
	if attr != "createVolumePermission" {
		return nil, ec2InvalidParam("Value (%s) for parameter attribute is invalid. Only createVolumePermission can be modified.", attr)
	}
	var add, remove []string
	var addAll, removeAll bool
	for _, p := range formStructs(c.form, "CreateVolumePermission.Add") {
		if u := p.Get("UserId"); u != "" {
			add = append(add, u)
		}
		addAll = addAll || p.Get("Group") == "all"
	}
	for _, p := range formStructs(c.form, "CreateVolumePermission.Remove") {
		if u := p.Get("UserId"); u != "" {
			remove = append(remove, u)
		}
		removeAll = removeAll || p.Get("Group") == "all"
	}
	users := formList(c.form, "UserId")
	groups := formList(c.form, "UserGroup")
	switch c.form.Get("OperationType") {
	case "add":
		add = append(add, users...)
		addAll = addAll || slices.Contains(groups, "all")
	case "remove":
		remove = append(remove, users...)
		removeAll = removeAll || slices.Contains(groups, "all")
	case "":
		if len(users) > 0 || len(groups) > 0 {
			return nil, ec2Missing("OperationType")
		}
	default:
		return nil, ec2InvalidParam("Value (%s) for parameter operationType is invalid.", c.form.Get("OperationType"))
	}
	for _, u := range append(slices.Clone(add), remove...) {
		if !accountIDValid(u) {
			return nil, ec2InvalidParam("Value (%s) for parameter userId is invalid. Only numeric account IDs are allowed.", u)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sn, err := c.ownSnapshotLocked(c.form.Get("SnapshotId"))
	if err != nil {
		return nil, err
	}
	if sn.kmsKey != nil && (len(add) > 0 || addAll) {
		if addAll {
			return nil, errf(http.StatusBadRequest, "OperationNotPermitted", "Encrypted snapshots cannot be shared publicly")
		}
		if sn.kmsKey.manager == "AWS" {
			return nil, errf(http.StatusBadRequest, "OperationNotPermitted", "Encrypted snapshots with EBS default key cannot be shared")
		}
	}
	for _, u := range add {
		sn.sharedWith[u] = true
	}
	for _, u := range remove {
		delete(sn.sharedWith, u)
	}
	if addAll {
		sn.public = true
	}
	if removeAll {
		sn.public = false
	}
	return &struct {
		ec2Meta
		Return bool `xml:"return"`
	}{Return: true}, nil
}

func ec2DescribeSnapshotAttribute(c *call) (any, error) {
	s := c.sim
	attr := c.form.Get("Attribute")
	if attr != "createVolumePermission" && attr != "productCodes" {
		return nil, ec2InvalidParam("Value (%s) for parameter attribute is invalid.", attr)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	sn, err := c.ownSnapshotLocked(c.form.Get("SnapshotId"))
	if err != nil {
		return nil, err
	}
	type perm struct {
		Group  string `xml:"group,omitempty"`
		UserID string `xml:"userId,omitempty"`
	}
	type resp struct {
		ec2Meta
		SnapshotID  string `xml:"snapshotId"`
		Permissions []perm `xml:"createVolumePermission>item,omitempty"`
	}
	out := &resp{SnapshotID: sn.id}
	if attr == "createVolumePermission" {
		if sn.public {
			out.Permissions = append(out.Permissions, perm{Group: "all"})
		}
		for _, u := range sortedKeys(sn.sharedWith) {
			out.Permissions = append(out.Permissions, perm{UserID: u})
		}
	}
	return out, nil
}

// ---- tags ----

func ec2CreateTags(c *call) (any, error) {
	s := c.sim
	ids := formList(c.form, "ResourceId")
	if len(ids) == 0 {
		return nil, ec2Missing("ResourceId")
	}
	tags := map[string]string{}
	for _, t := range formStructs(c.form, "Tag") {
		k := t.Get("Key")
		if k == "" || strings.HasPrefix(k, "aws:") {
			return nil, ec2InvalidParam("Tag key '%s' is invalid", k)
		}
		tags[k] = t.Get("Value")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if typ, ok := s.resourceTypeLocked(id, c.who.accountID()); !ok {
			return nil, resourceNotFound(typ, id)
		}
	}
	for _, id := range ids {
		s.setTagsLocked(id, tags)
	}
	return &struct {
		ec2Meta
		Return bool `xml:"return"`
	}{Return: true}, nil
}

func ec2DescribeTags(c *call) (any, error) {
	s := c.sim
	filters := formFilters(c.form)
	if err := checkFilters(filters, false, "resource-id", "resource-type", "key", "value"); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	type tagDesc struct {
		ResourceID   string `xml:"resourceId"`
		ResourceType string `xml:"resourceType"`
		Key          string `xml:"key"`
		Value        string `xml:"value"`
	}
	var all []tagDesc
	for _, id := range sortedKeys(s.tags) {
		typ, ok := s.resourceTypeLocked(id, c.who.accountID())
		if !ok {
			continue
		}
		for _, k := range sortedKeys(s.tags[id]) {
			td := tagDesc{id, typ, k, s.tags[id][k]}
			if matchFilters(filters, func(name string) []string {
				switch name {
				case "resource-id":
					return []string{td.ResourceID}
				case "resource-type":
					return []string{td.ResourceType}
				case "key":
					return []string{td.Key}
				case "value":
					return []string{td.Value}
				}
				return nil
			}) {
				all = append(all, td)
			}
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].ResourceID < all[j].ResourceID })
	from, to, next, err := page(c.form, len(all))
	if err != nil {
		return nil, err
	}
	return &struct {
		ec2Meta
		Tags      []tagDesc `xml:"tagSet>item"`
		NextToken string    `xml:"nextToken,omitempty"`
	}{Tags: all[from:to], NextToken: next}, nil
}
