package awssim

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Elastic Load Balancing: ELBv2 target groups (API version 2015-12-01) and
// classic load balancers (2012-06-01). Both sign as elasticloadbalancing;
// the request's Version picks the API.

// DeregistrationDelay is how long a deregistered target shows as draining.
const DeregistrationDelay = 300 * time.Second

type targetGroup struct {
	arn, name, owner, vpcID, protocol string
	port                              int
	targets                           []*tgTarget
}

type tgTarget struct {
	id           string
	port         int
	deregistered time.Time // zero while registered
}

func (t *targetGroup) register(id string, port int, now time.Time) {
	for _, x := range t.targets {
		if x.id == id && x.port == port {
			x.deregistered = time.Time{}
			return
		}
	}
	t.targets = append(t.targets, &tgTarget{id: id, port: port})
}

func (t *targetGroup) deregister(id string, now time.Time) {
	for _, x := range t.targets {
		if x.id == id && x.deregistered.IsZero() {
			x.deregistered = now
		}
	}
}

type classicLB struct {
	name, owner, vpcID string
	instances          []string
	created            time.Time
}

func elbService() *service {
	v2 := &service{
		name:       "elasticloadbalancing",
		protocol:   protoQuery,
		xmlns:      "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/",
		throttle:   apiError{status: http.StatusBadRequest, code: "Throttling", message: "Rate exceeded"},
		badSig:     apiError{status: http.StatusForbidden, code: "SignatureDoesNotMatch"},
		authFailed: apiError{status: http.StatusForbidden, code: "InvalidClientTokenId"},
		expired:    apiError{status: http.StatusForbidden, code: "ExpiredToken"},
		ops: map[string]operation{
			"DescribeTargetGroups": elbv2DescribeTargetGroups,
			"DescribeTargetHealth": elbv2DescribeTargetHealth,
			"RegisterTargets":      elbv2RegisterTargets,
			"DeregisterTargets":    elbv2DeregisterTargets,
			"CreateTargetGroup":    elbv2CreateTargetGroup,
		},
	}
	classic := *v2
	classic.xmlns = "http://elasticloadbalancing.amazonaws.com/doc/2012-06-01/"
	classic.ops = map[string]operation{
		"DescribeLoadBalancers":               elbDescribeLoadBalancers,
		"RegisterInstancesWithLoadBalancer":   elbRegisterInstances,
		"DeregisterInstancesFromLoadBalancer": elbDeregisterInstances,
		"CreateLoadBalancer":                  elbCreateLoadBalancer,
	}
	v2.versions = map[string]*service{"2012-06-01": &classic}
	return v2
}

// ---- seeding ----

// TargetGroupOptions describes an ELBv2 instance target group to seed.
type TargetGroupOptions struct {
	Name     string
	VPCID    string
	Protocol string // HTTP when empty
	Port     int    // 80 when 0
	// InstanceIDs are registered on Port.
	InstanceIDs []string
}

// CreateTargetGroup seeds an instance target group and returns its ARN.
func (a *Account) CreateTargetGroup(o TargetGroupOptions) (string, error) {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	if o.Protocol == "" {
		o.Protocol = "HTTP"
	}
	if o.Port == 0 {
		o.Port = 80
	}
	if v := s.vpcs[o.VPCID]; v == nil || v.owner != a.id {
		return "", fmt.Errorf("awssim: target group %s: VPC %s: %w", o.Name, o.VPCID, ErrNotFound)
	}
	t := &targetGroup{name: o.Name, owner: a.id, vpcID: o.VPCID, protocol: o.Protocol, port: o.Port}
	t.arn = "arn:aws:elasticloadbalancing:" + s.region + ":" + a.id + ":targetgroup/" + o.Name + "/" + s.randHex(16)
	for _, id := range o.InstanceIDs {
		if inst := s.instances[id]; inst == nil || inst.owner != a.id {
			return "", fmt.Errorf("awssim: target group %s: instance %s: %w", o.Name, id, ErrNotFound)
		}
		t.register(id, o.Port, s.now())
	}
	s.tgs[t.arn] = t
	return t.arn, nil
}

// CreateClassicLoadBalancer seeds a classic load balancer with the
// instances registered.
func (a *Account) CreateClassicLoadBalancer(name, vpcID string, instanceIDs ...string) error {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clbs[a.id+"/"+name] != nil {
		return fmt.Errorf("awssim: load balancer %s exists", name)
	}
	for _, id := range instanceIDs {
		if inst := s.instances[id]; inst == nil || inst.owner != a.id {
			return fmt.Errorf("awssim: load balancer %s: instance %s: %w", name, id, ErrNotFound)
		}
	}
	s.clbs[a.id+"/"+name] = &classicLB{name: name, owner: a.id, vpcID: vpcID, instances: slices.Clone(instanceIDs), created: s.now().UTC()}
	return nil
}

// ---- ELBv2 ----

func tgNotFound() *apiError {
	return errf(http.StatusBadRequest, "TargetGroupNotFound", "One or more target groups not found")
}

func (c *call) targetGroupLocked() (*targetGroup, error) {
	arn := c.form.Get("TargetGroupArn")
	if arn == "" {
		return nil, errf(http.StatusBadRequest, "ValidationError", "A target group ARN must be specified")
	}
	t := c.sim.tgs[arn]
	if t == nil || t.owner != c.who.accountID() {
		return nil, tgNotFound()
	}
	return t, nil
}

func elbv2DescribeTargetGroups(c *call) (any, error) {
	c.sim.mu.RLock()
	defer c.sim.mu.RUnlock()
	return elbv2DescribeTargetGroupsLocked(c, formList(c.form, "TargetGroupArns.member"), formList(c.form, "Names.member"))
}

func elbv2DescribeTargetGroupsLocked(c *call, arns, names []string) (any, error) {
	s := c.sim
	acct := c.who.accountID()
	for _, a := range arns {
		if t := s.tgs[a]; t == nil || t.owner != acct {
			return nil, tgNotFound()
		}
	}
	type tg struct {
		TargetGroupArn             string `xml:"TargetGroupArn"`
		TargetGroupName            string `xml:"TargetGroupName"`
		Protocol                   string `xml:"Protocol"`
		Port                       int    `xml:"Port"`
		VpcID                      string `xml:"VpcId"`
		HealthCheckProtocol        string `xml:"HealthCheckProtocol"`
		HealthCheckPort            string `xml:"HealthCheckPort"`
		HealthCheckEnabled         bool   `xml:"HealthCheckEnabled"`
		HealthCheckIntervalSeconds int    `xml:"HealthCheckIntervalSeconds"`
		HealthCheckTimeoutSeconds  int    `xml:"HealthCheckTimeoutSeconds"`
		HealthyThresholdCount      int    `xml:"HealthyThresholdCount"`
		UnhealthyThresholdCount    int    `xml:"UnhealthyThresholdCount"`
		HealthCheckPath            string `xml:"HealthCheckPath"`
		Matcher                    struct {
			HTTPCode string `xml:"HttpCode"`
		} `xml:"Matcher"`
		LoadBalancerArns []string `xml:"LoadBalancerArns>member"`
		TargetType       string   `xml:"TargetType"`
		ProtocolVersion  string   `xml:"ProtocolVersion"`
		IPAddressType    string   `xml:"IpAddressType"`
	}
	out := &struct {
		TargetGroups []tg `xml:"TargetGroups>member"`
	}{TargetGroups: []tg{}}
	found := map[string]bool{}
	for _, a := range sortedKeys(s.tgs) {
		t := s.tgs[a]
		if t.owner != acct || (len(arns) > 0 && !slices.Contains(arns, a)) || (len(names) > 0 && !slices.Contains(names, t.name)) {
			continue
		}
		found[t.name] = true
		x := tg{TargetGroupArn: t.arn, TargetGroupName: t.name, Protocol: t.protocol, Port: t.port, VpcID: t.vpcID, HealthCheckProtocol: t.protocol,
			HealthCheckPort: "traffic-port", HealthCheckEnabled: true, HealthCheckIntervalSeconds: 30, HealthCheckTimeoutSeconds: 5,
			HealthyThresholdCount: 5, UnhealthyThresholdCount: 2, HealthCheckPath: "/", LoadBalancerArns: []string{}, TargetType: "instance",
			ProtocolVersion: "HTTP1", IPAddressType: "ipv4"}
		x.Matcher.HTTPCode = "200"
		out.TargetGroups = append(out.TargetGroups, x)
	}
	for _, n := range names {
		if !found[n] {
			return nil, tgNotFound()
		}
	}
	return out, nil
}

func formTargets(c *call) ([]tgTarget, error) {
	var ts []tgTarget
	for _, m := range formStructs(c.form, "Targets.member") {
		t := tgTarget{id: m.Get("Id")}
		if p := m.Get("Port"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				return nil, errf(http.StatusBadRequest, "ValidationError", "Port %s is invalid", p)
			}
			t.port = n
		}
		ts = append(ts, t)
	}
	if len(ts) == 0 {
		return nil, errf(http.StatusBadRequest, "ValidationError", "1 validation error detected: Value null at 'targets' failed to satisfy constraint: Member must not be null")
	}
	return ts, nil
}

func elbv2DescribeTargetHealth(c *call) (any, error) {
	s := c.sim
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, err := c.targetGroupLocked()
	if err != nil {
		return nil, err
	}
	type desc struct {
		Target struct {
			ID   string `xml:"Id"`
			Port int    `xml:"Port"`
		} `xml:"Target"`
		HealthCheckPort string `xml:"HealthCheckPort"`
		TargetHealth    struct {
			State       string `xml:"State"`
			Reason      string `xml:"Reason,omitempty"`
			Description string `xml:"Description,omitempty"`
		} `xml:"TargetHealth"`
	}
	now := s.now()
	mk := func(id string, port int) desc {
		var d desc
		d.Target.ID, d.Target.Port, d.HealthCheckPort = id, port, strconv.Itoa(port)
		i := slices.IndexFunc(t.targets, func(x *tgTarget) bool { return x.id == id && x.port == port })
		switch {
		case i < 0 || (!t.targets[i].deregistered.IsZero() && now.Sub(t.targets[i].deregistered) >= DeregistrationDelay):
			d.TargetHealth.State, d.TargetHealth.Reason, d.TargetHealth.Description = "unused", "Target.NotRegistered", "Target is not registered to the target group"
		case !t.targets[i].deregistered.IsZero():
			d.TargetHealth.State, d.TargetHealth.Reason, d.TargetHealth.Description = "draining", "Target.DeregistrationInProgress", "Target deregistration is in progress"
		case s.instances[id] == nil || s.instances[id].state != "running":
			d.TargetHealth.State, d.TargetHealth.Reason, d.TargetHealth.Description = "unused", "Target.InvalidState", "Target is in the stopped state"
		default:
			d.TargetHealth.State = "healthy"
		}
		return d
	}
	out := &struct {
		Descriptions []desc `xml:"TargetHealthDescriptions>member"`
	}{Descriptions: []desc{}}
	if len(formStructs(c.form, "Targets.member")) > 0 {
		ts, err := formTargets(c)
		if err != nil {
			return nil, err
		}
		for _, x := range ts {
			if x.port == 0 {
				x.port = t.port
			}
			out.Descriptions = append(out.Descriptions, mk(x.id, x.port))
		}
		return out, nil
	}
	for _, x := range t.targets {
		if x.deregistered.IsZero() || now.Sub(x.deregistered) < DeregistrationDelay {
			out.Descriptions = append(out.Descriptions, mk(x.id, x.port))
		}
	}
	return out, nil
}

// changeTargets serves RegisterTargets and DeregisterTargets: change runs
// under the lock with the target group TargetGroupArn names and the Targets.
func changeTargets(c *call, change func(t *targetGroup, ts []tgTarget) (any, error)) (any, error) {
	ts, err := formTargets(c)
	if err != nil {
		return nil, err
	}
	c.sim.mu.Lock()
	defer c.sim.mu.Unlock()
	t, err := c.targetGroupLocked()
	if err != nil {
		return nil, err
	}
	return change(t, ts)
}

func elbv2RegisterTargets(c *call) (any, error) {
	return changeTargets(c, func(t *targetGroup, ts []tgTarget) (any, error) {
		s := c.sim
		for _, x := range ts {
			inst := s.instances[x.id]
			if inst == nil || inst.owner != t.owner {
				return nil, errf(http.StatusBadRequest, "InvalidTarget", "The following targets are not valid instances: '%s'", x.id)
			}
			if inst.state != "running" {
				return nil, errf(http.StatusBadRequest, "InvalidTarget", "The following targets are not in a running state and cannot be registered: '%s'", x.id)
			}
			if enis := s.instanceENIsLocked(x.id); len(enis) == 0 || enis[0].vpcID != t.vpcID {
				return nil, errf(http.StatusBadRequest, "InvalidTarget", "The following targets are not in the target group VPC '%s': '%s'", t.vpcID, x.id)
			}
		}
		for _, x := range ts {
			if x.port == 0 {
				x.port = t.port
			}
			t.register(x.id, x.port, s.now())
		}
		return &struct{}{}, nil
	})
}

func elbv2DeregisterTargets(c *call) (any, error) {
	return changeTargets(c, func(t *targetGroup, ts []tgTarget) (any, error) {
		s := c.sim
		for _, x := range ts {
			if inst := s.instances[x.id]; inst == nil || inst.owner != t.owner {
				return nil, errf(http.StatusBadRequest, "InvalidTarget", "The specified target does not exist, is not in the same VPC as the target group, or has an unsupported instance type")
			}
		}
		for _, x := range ts {
			for _, have := range t.targets {
				if have.id == x.id && (x.port == 0 || have.port == x.port) && have.deregistered.IsZero() {
					have.deregistered = s.now()
				}
			}
		}
		return &struct{}{}, nil
	})
}

// ---- classic ELB ----

type xmlInstanceRef struct {
	InstanceID string `xml:"InstanceId"`
}

func instanceRefs(ids []string) []xmlInstanceRef {
	out := []xmlInstanceRef{}
	for _, id := range ids {
		out = append(out, xmlInstanceRef{id})
	}
	return out
}

func (c *call) classicLBLocked() (*classicLB, error) {
	name := c.form.Get("LoadBalancerName")
	lb := c.sim.clbs[c.who.accountID()+"/"+name]
	if lb == nil {
		return nil, errf(http.StatusBadRequest, "LoadBalancerNotFound", "There is no ACTIVE Load Balancer named '%s'", name)
	}
	return lb, nil
}

func elbDescribeLoadBalancers(c *call) (any, error) {
	s := c.sim
	names := formList(c.form, "LoadBalancerNames.member")
	s.mu.RLock()
	defer s.mu.RUnlock()
	acct := c.who.accountID()
	for _, n := range names {
		if s.clbs[acct+"/"+n] == nil {
			return nil, errf(http.StatusBadRequest, "LoadBalancerNotFound", "There is no ACTIVE Load Balancer named '%s'", n)
		}
	}
	type lbDesc struct {
		LoadBalancerName          string           `xml:"LoadBalancerName"`
		DNSName                   string           `xml:"DNSName"`
		CanonicalHostedZoneNameID string           `xml:"CanonicalHostedZoneNameID"`
		Instances                 []xmlInstanceRef `xml:"Instances>member"`
		VPCID                     string           `xml:"VPCId"`
		AvailabilityZones         []string         `xml:"AvailabilityZones>member"`
		CreatedTime               string           `xml:"CreatedTime"`
		Scheme                    string           `xml:"Scheme"`
	}
	out := &struct {
		Descriptions []lbDesc `xml:"LoadBalancerDescriptions>member"`
	}{Descriptions: []lbDesc{}}
	for _, k := range sortedKeys(s.clbs) {
		lb := s.clbs[k]
		if lb.owner != acct || (len(names) > 0 && !slices.Contains(names, lb.name)) {
			continue
		}
		out.Descriptions = append(out.Descriptions, lbDesc{LoadBalancerName: lb.name,
			DNSName: lb.name + "-" + strings.TrimLeft(lb.owner[6:], "0") + "." + s.region + ".elb.amazonaws.com", CanonicalHostedZoneNameID: "Z35SXDOTRQ7X7K",
			Instances: instanceRefs(lb.instances), VPCID: lb.vpcID, AvailabilityZones: []string{s.az}, CreatedTime: iamTime(lb.created), Scheme: "internet-facing"})
	}
	return out, nil
}

func elbRegisterInstances(c *call) (any, error) {
	ids := formList(c.form, "Instances.member")
	var refs []string
	for _, m := range formStructs(c.form, "Instances.member") {
		refs = append(refs, m.Get("InstanceId"))
	}
	if len(refs) > 0 {
		ids = refs
	}
	return changeClassicLB(c, ids, func(inst *instance) bool { return inst.state != "terminated" }, func(lb *classicLB) {
		for _, id := range ids {
			if !slices.Contains(lb.instances, id) {
				lb.instances = append(lb.instances, id)
			}
		}
	})
}

func elbDeregisterInstances(c *call) (any, error) {
	var ids []string
	for _, m := range formStructs(c.form, "Instances.member") {
		ids = append(ids, m.Get("InstanceId"))
	}
	return changeClassicLB(c, ids, nil, func(lb *classicLB) {
		lb.instances = slices.DeleteFunc(lb.instances, func(id string) bool { return slices.Contains(ids, id) })
	})
}

var classicLBName = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?$`)

// elbCreateLoadBalancer creates a classic load balancer in the VPC of its
// subnets (or the default VPC when only Availability Zones are given), with
// no instances. Listeners are required but not modelled.
func elbCreateLoadBalancer(c *call) (any, error) {
	s := c.sim
	name := c.form.Get("LoadBalancerName")
	if !classicLBName.MatchString(name) {
		return nil, errf(http.StatusBadRequest, "ValidationError", "LoadBalancerName %q must be 1 to 32 letters, digits or hyphens, and not start or end with a hyphen", name)
	}
	if len(formStructs(c.form, "Listeners.member")) == 0 {
		return nil, errf(http.StatusBadRequest, "ValidationError", "Listeners is required")
	}
	subnets := formList(c.form, "Subnets.member")
	s.mu.Lock()
	defer s.mu.Unlock()
	a := c.who.account
	if s.clbs[a.id+"/"+name] != nil {
		return nil, errf(http.StatusBadRequest, "DuplicateLoadBalancerName", "Load Balancer named '%s' already exists", name)
	}
	var vpcID string
	for _, id := range subnets {
		sn := s.subnets[id]
		if sn == nil || sn.owner != a.id {
			return nil, errf(http.StatusBadRequest, "SubnetNotFound", "The subnet %s does not exist", id)
		}
		if vpcID != "" && sn.vpcID != vpcID {
			return nil, errf(http.StatusBadRequest, "InvalidConfigurationRequest", "All subnets must belong to the same VPC")
		}
		vpcID = sn.vpcID
	}
	if vpcID == "" {
		if len(formList(c.form, "AvailabilityZones.member")) == 0 {
			return nil, errf(http.StatusBadRequest, "ValidationError", "Either AvailabilityZones or Subnets must be specified")
		}
		v, _ := s.defaultVPCLocked(a)
		vpcID = v.id
	}
	lb := &classicLB{name: name, owner: a.id, vpcID: vpcID, created: s.now().UTC()}
	s.clbs[a.id+"/"+name] = lb
	return &struct {
		DNSName string `xml:"DNSName"`
	}{name + "-" + strings.TrimLeft(a.id[6:], "0") + "." + s.region + ".elb.amazonaws.com"}, nil
}

// changeClassicLB serves RegisterInstancesWithLoadBalancer and
// DeregisterInstancesFromLoadBalancer: under the lock, every instance of ids
// must be the load balancer's owner's and pass valid (nil: any does), then
// change updates the load balancer, whose instances are the answer.
func changeClassicLB(c *call, ids []string, valid func(*instance) bool, change func(*classicLB)) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	lb, err := c.classicLBLocked()
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if inst := s.instances[id]; inst == nil || inst.owner != lb.owner || (valid != nil && !valid(inst)) {
			return nil, errf(http.StatusBadRequest, "InvalidInstance", "The requested instance %s is not valid", id)
		}
	}
	change(lb)
	return &struct {
		Instances []xmlInstanceRef `xml:"Instances>member"`
	}{instanceRefs(lb.instances)}, nil
}

// elbv2CreateTargetGroup creates an instance target group.
func elbv2CreateTargetGroup(c *call) (any, error) {
	s := c.sim
	f := c.form
	name := f.Get("Name")
	if name == "" || len(name) > 32 {
		return nil, errf(http.StatusBadRequest, "ValidationError", "Target group name '%s' must be 1 to 32 characters", name)
	}
	if tt := f.Get("TargetType"); tt != "" && tt != "instance" {
		return nil, errf(http.StatusBadRequest, "ValidationError", "The simulator supports only instance target groups, not %s", tt)
	}
	port, _ := strconv.Atoi(f.Get("Port"))
	if port < 1 || port > 65535 {
		return nil, errf(http.StatusBadRequest, "ValidationError", "A port must be specified")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := c.who.account
	v := s.vpcs[f.Get("VpcId")]
	if v == nil || v.owner != a.id {
		return nil, errf(http.StatusBadRequest, "ValidationError", "The VPC ID '%s' is not found", f.Get("VpcId"))
	}
	for _, t := range s.tgs {
		if t.owner == a.id && t.name == name {
			return nil, errf(http.StatusBadRequest, "DuplicateTargetGroupName", "A target group with the same name '%s' exists, but with different settings", name)
		}
	}
	proto := f.Get("Protocol")
	if proto == "" {
		proto = "HTTP"
	}
	t := &targetGroup{name: name, owner: a.id, vpcID: v.id, protocol: proto, port: port}
	t.arn = "arn:aws:elasticloadbalancing:" + s.region + ":" + a.id + ":targetgroup/" + name + "/" + s.randHex(16)
	s.tgs[t.arn] = t
	out, err := elbv2DescribeTargetGroupsLocked(c, []string{t.arn}, nil)
	if err != nil {
		return nil, err
	}
	return out, nil
}
