package awssim

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// EC2 instance operations beyond launch and describe: attributes,
// termination, console output and screenshots, IAM instance-profile
// associations; and DeleteSnapshot, DeleteTags.

func ec2DeleteSnapshot(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	sn, err := c.ownSnapshotLocked(c.form.Get("SnapshotId"))
	if err != nil {
		return nil, err
	}
	// Copies share the frozen block map, so a pending copy of this
	// snapshot keeps its data, as on AWS.
	delete(s.snapshots, sn.id)
	delete(s.tags, sn.id)
	return ec2Return(), nil
}

func (c *call) ownInstanceLocked(id string) (*instance, error) {
	if id == "" {
		return nil, ec2Missing("InstanceId")
	}
	inst := c.sim.instances[id]
	if inst == nil || inst.owner != c.who.accountID() {
		return nil, instanceNotFound(id)
	}
	return inst, nil
}

type xmlValue struct {
	Value string `xml:"value"`
}

func ec2DescribeInstanceAttribute(c *call) (any, error) {
	s := c.sim
	attr := c.form.Get("Attribute")
	s.mu.RLock()
	defer s.mu.RUnlock()
	inst, err := c.ownInstanceLocked(c.form.Get("InstanceId"))
	if err != nil {
		return nil, err
	}
	type resp struct {
		ec2Meta
		InstanceID   string           `xml:"instanceId"`
		DisableTerm  *xmlValue        `xml:"disableApiTermination,omitempty"`
		DisableStop  *xmlValue        `xml:"disableApiStop,omitempty"`
		Shutdown     *xmlValue        `xml:"instanceInitiatedShutdownBehavior,omitempty"`
		InstanceType *xmlValue        `xml:"instanceType,omitempty"`
		RootDevice   *xmlValue        `xml:"rootDeviceName,omitempty"`
		SrcDstCheck  *xmlValue        `xml:"sourceDestCheck,omitempty"`
		EbsOptimized *xmlValue        `xml:"ebsOptimized,omitempty"`
		EnaSupport   *xmlValue        `xml:"enaSupport,omitempty"`
		UserData     *struct{}        `xml:"userData,omitempty"`
		BDM          []xmlInstanceBDM `xml:"blockDeviceMapping>item,omitempty"`
		Groups       []xmlGroup       `xml:"groupSet>item,omitempty"`
	}
	out := &resp{InstanceID: inst.id}
	b := func(v bool) *xmlValue { return &xmlValue{fmt.Sprint(v)} }
	switch attr {
	case "disableApiTermination":
		out.DisableTerm = b(inst.disableAPITermination)
	case "disableApiStop":
		out.DisableStop = b(false)
	case "instanceInitiatedShutdownBehavior":
		out.Shutdown = &xmlValue{inst.shutdownBehavior}
	case "instanceType":
		out.InstanceType = &xmlValue{inst.instanceType}
	case "rootDeviceName":
		out.RootDevice = &xmlValue{inst.rootDevice}
	case "sourceDestCheck":
		out.SrcDstCheck = b(inst.sourceDestCheck)
	case "ebsOptimized":
		out.EbsOptimized = b(true)
	case "enaSupport":
		out.EnaSupport = b(true)
	case "userData":
		out.UserData = &struct{}{}
	case "blockDeviceMapping":
		out.BDM = s.xmlInstanceLocked(inst).BlockDeviceMapping
	case "groupSet":
		if enis := s.instanceENIsLocked(inst.id); len(enis) > 0 {
			out.Groups = s.xmlInstanceENILocked(enis[0]).Groups
		}
	case "":
		return nil, ec2Missing("Attribute")
	default:
		return nil, ec2InvalidParam("Value (%s) for parameter attribute is invalid. Unknown attribute.", attr)
	}
	return out, nil
}

func ec2ModifyInstanceAttribute(c *call) (any, error) {
	s := c.sim
	f := c.form
	// The Attribute/Value form sets one attribute by name.
	if a := f.Get("Attribute"); a != "" {
		key := map[string]string{
			"disableApiTermination": "DisableApiTermination.Value", "instanceInitiatedShutdownBehavior": "InstanceInitiatedShutdownBehavior.Value",
			"sourceDestCheck": "SourceDestCheck.Value", "instanceType": "InstanceType.Value",
		}[a]
		if key == "" {
			return nil, ec2InvalidParam("Value (%s) for parameter attribute is invalid.", a)
		}
		f.Set(key, f.Get("Value"))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, err := c.ownInstanceLocked(f.Get("InstanceId"))
	if err != nil {
		return nil, err
	}
	changed := false
	if v := f.Get("DisableApiTermination.Value"); v != "" {
		inst.disableAPITermination = v == "true"
		changed = true
	}
	if v := f.Get("InstanceInitiatedShutdownBehavior.Value"); v != "" {
		if v != "stop" && v != "terminate" {
			return nil, ec2InvalidParam("Value (%s) for parameter instanceInitiatedShutdownBehavior is invalid.", v)
		}
		inst.shutdownBehavior = v
		changed = true
	}
	if v := f.Get("SourceDestCheck.Value"); v != "" {
		inst.sourceDestCheck = v == "true"
		if enis := s.instanceENIsLocked(inst.id); len(enis) > 0 {
			enis[0].sourceDestCheck = inst.sourceDestCheck
		}
		changed = true
	}
	if v := f.Get("InstanceType.Value"); v != "" {
		if inst.state != "stopped" {
			return nil, errf(http.StatusBadRequest, "IncorrectInstanceState", "The instance '%s' is not in the 'stopped' state.", inst.id)
		}
		inst.instanceType = v
		changed = true
	}
	if bdms := formStructs(f, "BlockDeviceMapping"); len(bdms) > 0 {
		for _, b := range bdms {
			dev := b.Get("DeviceName")
			i := slices.IndexFunc(inst.devices, func(d instanceDevice) bool { return d.name == dev })
			if i < 0 {
				return nil, errf(http.StatusBadRequest, "InvalidInstanceAttributeValue", "No device is currently mapped at %s", dev)
			}
		}
		for _, b := range bdms {
			dev := b.Get("DeviceName")
			i := slices.IndexFunc(inst.devices, func(d instanceDevice) bool { return d.name == dev })
			if v := s.volumes[inst.devices[i].volumeID]; v != nil && v.attachment != nil && b.Get("Ebs.DeleteOnTermination") != "" {
				v.attachment.deleteOnTermination = formBool(b, "Ebs.DeleteOnTermination")
			}
		}
		changed = true
	}
	if groups := formList(f, "GroupId"); len(groups) > 0 {
		enis := s.instanceENIsLocked(inst.id)
		if len(enis) > 1 {
			return nil, errf(http.StatusBadRequest, "InvalidInstanceID", "There are multiple interfaces attached to instance '%s'. Please specify an interface ID for the operation instead.", inst.id)
		}
		if len(enis) == 1 {
			if err := s.checkGroupsLocked(inst.owner, enis[0].vpcID, groups); err != nil {
				return nil, err
			}
			enis[0].groups = slices.Compact(slices.Clone(groups))
		}
		changed = true
	}
	if !changed {
		return nil, ec2Missing("Attribute")
	}
	return ec2Return(), nil
}

type xmlStateChange struct {
	InstanceID   string `xml:"instanceId"`
	CurrentState struct {
		Code int    `xml:"code"`
		Name string `xml:"name"`
	} `xml:"currentState"`
	PreviousState struct {
		Code int    `xml:"code"`
		Name string `xml:"name"`
	} `xml:"previousState"`
}

func ec2TerminateInstances(c *call) (any, error) {
	s := c.sim
	ids := formList(c.form, "InstanceId")
	if len(ids) == 0 {
		return nil, ec2Missing("InstanceId")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var insts []*instance
	for _, id := range ids {
		inst, err := c.ownInstanceLocked(id)
		if err != nil {
			return nil, err
		}
		if inst.disableAPITermination {
			return nil, errf(http.StatusBadRequest, "OperationNotPermitted",
				"The instance '%s' may not be terminated. Modify its 'disableApiTermination' instance attribute and try again.", id)
		}
		insts = append(insts, inst)
	}
	out := &struct {
		ec2Meta
		Instances []xmlStateChange `xml:"instancesSet>item"`
	}{}
	for _, inst := range insts {
		var x xmlStateChange
		x.InstanceID = inst.id
		x.PreviousState.Name, x.PreviousState.Code = inst.state, instanceStateCodes[inst.state]
		s.terminateLocked(inst)
		x.CurrentState.Name, x.CurrentState.Code = "shutting-down", instanceStateCodes["shutting-down"]
		out.Instances = append(out.Instances, x)
	}
	return out, nil
}

// terminateLocked terminates an instance: volumes marked DeleteOnTermination
// are deleted, the others detached; interfaces marked so are deleted, the
// others detached; Elastic IPs on deleted interfaces are disassociated; the
// instance leaves its Auto Scaling group, target groups and load balancers.
func (s *Sim) terminateLocked(inst *instance) {
	if inst.state == "terminated" {
		return
	}
	inst.state = "terminated"
	inst.terminated = s.now().UTC()
	for _, d := range inst.devices {
		v := s.volumes[d.volumeID]
		if v == nil {
			continue
		}
		if v.attachment != nil && v.attachment.deleteOnTermination {
			delete(s.volumes, v.id)
			delete(s.tags, v.id)
		} else {
			v.attachment = nil
		}
	}
	inst.devices = nil
	for _, e := range s.instanceENIsLocked(inst.id) {
		if e.attachment.deleteOnTermination {
			if ad := s.addressOfENILocked(e); ad != nil {
				ad.eniID, ad.privateIP, ad.associationID = "", "", ""
			}
			delete(s.enis, e.id)
			delete(s.tags, e.id)
		} else {
			e.attachment = nil
		}
	}
	s.detachENIsLocked(inst.id)
	if as := s.ipAssocs[inst.profileAssoc]; as != nil {
		delete(s.ipAssocs, as.id)
		inst.profileAssoc = ""
	}
	s.removeFromLoadBalancingLocked(inst.id)
}

// ---- console ----

// nitroFamilies lists instance families built on the Nitro system, the
// only ones where GetConsoleOutput's Latest is supported.
var xenFamilyRe = regexp.MustCompile(`^(t2|m4|m3|c4|c3|r4|r3|i3|d2|x1|x1e|p2|p3|g3|f1|h1)\.`)

func ec2GetConsoleOutput(c *call) (any, error) {
	s := c.sim
	s.mu.RLock()
	defer s.mu.RUnlock()
	inst, err := c.ownInstanceLocked(c.form.Get("InstanceId"))
	if err != nil {
		return nil, err
	}
	if formBool(c.form, "Latest") && xenFamilyRe.MatchString(inst.instanceType) {
		return nil, errf(http.StatusBadRequest, "UnsupportedOperation", "This instance type does not support retrieving the latest console output.")
	}
	out := inst.console
	// The console buffer keeps the last 64 KiB.
	if len(out) > 64<<10 {
		out = out[len(out)-64<<10:]
	}
	r := &struct {
		ec2Meta
		InstanceID string `xml:"instanceId"`
		Timestamp  string `xml:"timestamp"`
		Output     string `xml:"output,omitempty"`
	}{InstanceID: inst.id, Timestamp: ec2Time(s.now())}
	if len(out) > 0 {
		r.Output = base64.StdEncoding.EncodeToString(out)
	}
	return r, nil
}

// screenshotUnsupportedRe matches instance types without a virtual
// console: bare metal.
var screenshotUnsupportedRe = regexp.MustCompile(`\.metal(-\d+xl)?$`)

func ec2GetConsoleScreenshot(c *call) (any, error) {
	s := c.sim
	s.mu.RLock()
	defer s.mu.RUnlock()
	inst, err := c.ownInstanceLocked(c.form.Get("InstanceId"))
	if err != nil {
		return nil, err
	}
	if screenshotUnsupportedRe.MatchString(inst.instanceType) {
		return nil, errf(http.StatusBadRequest, "UnsupportedOperation", "The instance type %s does not support console screenshots.", inst.instanceType)
	}
	if inst.state != "running" {
		return nil, errf(http.StatusBadRequest, "IncorrectInstanceState", "The instance '%s' is not in the 'running' state.", inst.id)
	}
	img := inst.screenshot
	if img == nil {
		img = BlankScreenshot()
	}
	return &struct {
		ec2Meta
		InstanceID string `xml:"instanceId"`
		ImageData  string `xml:"imageData"`
	}{InstanceID: inst.id, ImageData: base64.StdEncoding.EncodeToString(img)}, nil
}

// BlankScreenshot returns a small black JPEG, what a console with nothing
// on it looks like.
func BlankScreenshot() []byte {
	m := image.NewGray(image.Rect(0, 0, 64, 48))
	for i := range m.Pix {
		m.Pix[i] = 0
	}
	m.Set(1, 1, color.Gray{Y: 200})
	var b bytes.Buffer
	_ = jpeg.Encode(&b, m, &jpeg.Options{Quality: 75})
	return b.Bytes()
}

// ---- IAM instance-profile associations ----

type xmlIPAssociation struct {
	AssociationID      string        `xml:"associationId"`
	InstanceID         string        `xml:"instanceId"`
	IamInstanceProfile xmlProfileRef `xml:"iamInstanceProfile"`
	State              string        `xml:"state"`
	Timestamp          string        `xml:"timestamp"`
}

func (a *ipAssociation) xml() xmlIPAssociation {
	return xmlIPAssociation{AssociationID: a.id, InstanceID: a.instanceID, IamInstanceProfile: xmlProfileRef{a.profileARN, a.profileID},
		State: a.state, Timestamp: ec2Time(a.at)}
}

var profileARNRe = regexp.MustCompile(`^arn:aws:iam::(\d{12}):instance-profile/(?:[\w+=,.@-]+/)*([\w+=,.@-]+)$`)

// profileByRefLocked resolves an instance profile by name or ARN.
func (s *Sim) profileByRefLocked(acct, name, arn string) (*iamProfile, error) {
	if arn != "" {
		m := profileARNRe.FindStringSubmatch(arn)
		if m == nil || m[1] != acct {
			return nil, ec2InvalidParam("Value (%s) for parameter iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN", arn)
		}
		p := s.iamLocked(acct).profiles[m[2]]
		if p == nil || p.arn != arn {
			return nil, ec2InvalidParam("Value (%s) for parameter iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN", arn)
		}
		return p, nil
	}
	p := s.iamLocked(acct).profiles[name]
	if p == nil {
		return nil, ec2InvalidParam("Value (%s) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name", name)
	}
	return p, nil
}

func (s *Sim) associateProfileLocked(a *Account, inst *instance, name, arn string) (*ipAssociation, error) {
	if inst.profileAssoc != "" {
		return nil, errf(http.StatusBadRequest, "IncorrectState", "There is an existing association for instance %s", inst.id)
	}
	p, err := s.profileByRefLocked(a.id, name, arn)
	if err != nil {
		return nil, err
	}
	as := &ipAssociation{id: s.newID("iip-assoc"), instanceID: inst.id, profileARN: p.arn, profileID: p.id, state: "associated", at: s.now().UTC()}
	s.ipAssocs[as.id] = as
	inst.profileAssoc = as.id
	return as, nil
}

func ec2AssociateIamInstanceProfile(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, err := c.ownInstanceLocked(c.form.Get("InstanceId"))
	if err != nil {
		return nil, err
	}
	if inst.state != "running" && inst.state != "stopped" && inst.state != "pending" {
		return nil, errf(http.StatusBadRequest, "IncorrectInstanceState", "The instance '%s' is not in a valid state for this operation.", inst.id)
	}
	as, err := s.associateProfileLocked(c.who.account, inst, c.form.Get("IamInstanceProfile.Name"), c.form.Get("IamInstanceProfile.Arn"))
	if err != nil {
		return nil, err
	}
	x := as.xml()
	x.State = "associating"
	return &struct {
		ec2Meta
		Association xmlIPAssociation `xml:"iamInstanceProfileAssociation"`
	}{Association: x}, nil
}

func (c *call) ownAssocLocked() (*ipAssociation, *instance, error) {
	id := c.form.Get("AssociationId")
	if id == "" {
		return nil, nil, ec2Missing("AssociationId")
	}
	as := c.sim.ipAssocs[id]
	if as != nil {
		if inst := c.sim.instances[as.instanceID]; inst != nil && inst.owner == c.who.accountID() {
			return as, inst, nil
		}
	}
	return nil, nil, errf(http.StatusBadRequest, "InvalidAssociationID.NotFound", "An association with ID %s could not be found.", id)
}

func ec2ReplaceIamInstanceProfileAssociation(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	old, inst, err := c.ownAssocLocked()
	if err != nil {
		return nil, err
	}
	p, err := s.profileByRefLocked(inst.owner, c.form.Get("IamInstanceProfile.Name"), c.form.Get("IamInstanceProfile.Arn"))
	if err != nil {
		return nil, err
	}
	delete(s.ipAssocs, old.id)
	as := &ipAssociation{id: s.newID("iip-assoc"), instanceID: inst.id, profileARN: p.arn, profileID: p.id, state: "associated", at: s.now().UTC()}
	s.ipAssocs[as.id] = as
	inst.profileAssoc = as.id
	x := as.xml()
	x.State = "associating"
	return &struct {
		ec2Meta
		Association xmlIPAssociation `xml:"iamInstanceProfileAssociation"`
	}{Association: x}, nil
}

func ec2DisassociateIamInstanceProfile(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	as, inst, err := c.ownAssocLocked()
	if err != nil {
		return nil, err
	}
	delete(s.ipAssocs, as.id)
	inst.profileAssoc = ""
	x := as.xml()
	x.State = "disassociating"
	return &struct {
		ec2Meta
		Association xmlIPAssociation `xml:"iamInstanceProfileAssociation"`
	}{Association: x}, nil
}

func ec2DescribeIamInstanceProfileAssociations(c *call) (any, error) {
	s := c.sim
	filters := formFilters(c.form)
	if err := checkFilters(filters, false, "instance-id", "state"); err != nil {
		return nil, err
	}
	ids := formList(c.form, "AssociationId")
	s.mu.RLock()
	defer s.mu.RUnlock()
	acct := c.who.accountID()
	var match []*ipAssociation
	for _, id := range ids {
		as := s.ipAssocs[id]
		if as == nil || s.instances[as.instanceID] == nil || s.instances[as.instanceID].owner != acct {
			return nil, errf(http.StatusBadRequest, "InvalidAssociationID.NotFound", "An association with ID %s could not be found.", id)
		}
	}
	for _, id := range sortedKeys(s.ipAssocs) {
		as := s.ipAssocs[id]
		if inst := s.instances[as.instanceID]; inst == nil || inst.owner != acct {
			continue
		}
		if len(ids) > 0 && !slices.Contains(ids, id) {
			continue
		}
		if matchFilters(filters, func(name string) []string {
			switch name {
			case "instance-id":
				return []string{as.instanceID}
			case "state":
				return []string{as.state}
			}
			return nil
		}) {
			match = append(match, as)
		}
	}
	from, to, next, err := page(c.form, len(match))
	if err != nil {
		return nil, err
	}
	out := &struct {
		ec2Meta
		Associations []xmlIPAssociation `xml:"iamInstanceProfileAssociationSet>item"`
		NextToken    string             `xml:"nextToken,omitempty"`
	}{NextToken: next}
	for _, as := range match[from:to] {
		out.Associations = append(out.Associations, as.xml())
	}
	return out, nil
}

// ---- tags on every resource type ----

// resourceOwnerLocked maps an ID, by its prefix, to its DescribeTags
// resource type, its owner and whether it exists.
func (s *Sim) resourceOwnerLocked(id string) (typ, owner string, exists bool) {
	prefix, _, _ := strings.Cut(id, "-")
	switch prefix {
	case "snap":
		return ownerIn("snapshot", s.snapshots, id)
	case "vol":
		return ownerIn("volume", s.volumes, id)
	case "i":
		return ownerIn("instance", s.instances, id)
	case "vpc":
		return ownerIn("vpc", s.vpcs, id)
	case "vpce":
		return ownerIn("vpc-endpoint", s.endpoints, id)
	case "subnet":
		return ownerIn("subnet", s.subnets, id)
	case "eni":
		return ownerIn("network-interface", s.enis, id)
	case "sg":
		return ownerIn("security-group", s.sgs, id)
	case "sgr":
		for _, g := range s.sgs {
			for _, r := range g.rules {
				if r.id == id {
					return "security-group-rule", g.owner, true
				}
			}
		}
		return "security-group-rule", "", false
	case "acl":
		return ownerIn("network-acl", s.nacls, id)
	case "eipalloc":
		return ownerIn("elastic-ip", s.addresses, id)
	}
	return "", "", false
}

// ownerIn looks id up in m, the resources of type typ: typ, the owner of
// the resource and whether it exists.
func ownerIn[T any, P ownedResource[T]](typ string, m map[string]*T, id string) (string, string, bool) {
	if r := m[id]; r != nil {
		return typ, P(r).ownerID(), true
	}
	return typ, "", false
}

func (s *Sim) resourceTypeLocked(id, account string) (string, bool) {
	typ, owner, ok := s.resourceOwnerLocked(id)
	return typ, ok && owner == account
}

func resourceNotFound(typ, id string) *apiError {
	switch typ {
	case "snapshot":
		return snapshotNotFound(id)
	case "volume":
		return volumeNotFound(id)
	case "instance":
		return instanceNotFound(id)
	case "vpc":
		return vpcNotFound(id)
	case "subnet":
		return subnetNotFound(id)
	case "network-interface":
		return eniNotFound(id)
	case "security-group":
		return sgNotFound(id)
	case "network-acl":
		return naclNotFound(id)
	case "elastic-ip":
		return addressNotFound(id)
	case "vpc-endpoint":
		return endpointNotFound(id)
	case "security-group-rule":
		return sgRuleNotFound(id)
	}
	return errf(http.StatusBadRequest, "InvalidID", "The ID '%s' is not valid", id)
}

func ec2DeleteTags(c *call) (any, error) {
	s := c.sim
	ids := formList(c.form, "ResourceId")
	if len(ids) == 0 {
		return nil, ec2Missing("ResourceId")
	}
	tags := formStructs(c.form, "Tag")
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if typ, ok := s.resourceTypeLocked(id, c.who.accountID()); !ok {
			return nil, resourceNotFound(typ, id)
		}
	}
	for _, id := range ids {
		m := s.tags[id]
		if len(tags) == 0 {
			delete(s.tags, id)
			continue
		}
		for _, t := range tags {
			k := t.Get("Key")
			// A tag with a value is deleted only if the value matches.
			if v, ok := t["Value"]; ok && m[k] != v[0] {
				continue
			}
			delete(m, k)
		}
	}
	return ec2Return(), nil
}
