package awssim

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// asGroup is an Auto Scaling group.
type asGroup struct {
	name, arn, owner   string
	min, max, desired  int
	instances          []*asInstance
	targetGroups, clbs []string
	created            time.Time
	subnetID           string
	instanceType       string
}

type asInstance struct {
	id, state, health string // state: InService, Standby, Pending, Detaching, ...
}

func autoscalingService() *service {
	return &service{
		name:       "autoscaling",
		protocol:   protoQuery,
		xmlns:      "http://autoscaling.amazonaws.com/doc/2011-01-01/",
		throttle:   apiError{status: http.StatusBadRequest, code: "Throttling", message: "Rate exceeded"},
		badSig:     apiError{status: http.StatusForbidden, code: "SignatureDoesNotMatch"},
		authFailed: apiError{status: http.StatusForbidden, code: "InvalidClientTokenId"},
		expired:    apiError{status: http.StatusForbidden, code: "ExpiredToken"},
		ops: map[string]operation{
			"DescribeAutoScalingGroups":    asDescribeGroups,
			"DescribeAutoScalingInstances": asDescribeInstances,
			"EnterStandby":                 asEnterStandby,
			"ExitStandby":                  asExitStandby,
			"DetachInstances":              asDetachInstances,
			"AttachInstances":              asAttachInstances,
			"CreateAutoScalingGroup":       asCreateGroup,
		},
	}
}

func asValidation(format string, args ...any) *apiError {
	return errf(http.StatusBadRequest, "ValidationError", format, args...)
}

// AutoScalingGroupOptions describes an Auto Scaling group to seed. Its
// instances start InService; MinSize, MaxSize and DesiredCapacity default to
// the number of instances.
type AutoScalingGroupOptions struct {
	Name                      string
	InstanceIDs               []string
	MinSize, MaxSize, Desired int
	// TargetGroupARNs and LoadBalancerNames are registered with the
	// instances, as the group would register them.
	TargetGroupARNs   []string
	LoadBalancerNames []string
}

// CreateAutoScalingGroup seeds an Auto Scaling group and returns its ARN.
func (a *Account) CreateAutoScalingGroup(o AutoScalingGroupOptions) (string, error) {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	key := a.id + "/" + o.Name
	if o.Name == "" || s.asgs[key] != nil {
		return "", fmt.Errorf("awssim: Auto Scaling group %q: empty or exists", o.Name)
	}
	n := len(o.InstanceIDs)
	g := &asGroup{name: o.Name, owner: a.id, min: o.MinSize, max: o.MaxSize, desired: o.Desired, created: s.now().UTC(),
		targetGroups: slices.Clone(o.TargetGroupARNs), clbs: slices.Clone(o.LoadBalancerNames)}
	if g.desired == 0 {
		g.desired = n
	}
	if g.max == 0 {
		g.max = max(n, g.desired)
	}
	g.arn = "arn:aws:autoscaling:" + s.region + ":" + a.id + ":autoScalingGroup:" + s.newUUID() + ":autoScalingGroupName/" + o.Name
	for _, id := range o.InstanceIDs {
		inst := s.instances[id]
		if inst == nil || inst.owner != a.id {
			return "", fmt.Errorf("awssim: Auto Scaling group %s: instance %s: %w", o.Name, id, ErrNotFound)
		}
		if other := s.groupOfLocked(id); other != nil {
			return "", fmt.Errorf("awssim: instance %s is already in group %s", id, other.name)
		}
		g.instances = append(g.instances, &asInstance{id: id, state: "InService", health: "HEALTHY"})
		if g.subnetID == "" {
			if enis := s.instanceENIsLocked(id); len(enis) > 0 {
				g.subnetID = enis[0].subnetID
			}
			g.instanceType = inst.instanceType
		}
	}
	for _, tg := range g.targetGroups {
		t := s.tgs[tg]
		if t == nil || t.owner != a.id {
			return "", fmt.Errorf("awssim: Auto Scaling group %s: target group %s: %w", o.Name, tg, ErrNotFound)
		}
	}
	for _, lb := range g.clbs {
		if s.clbs[a.id+"/"+lb] == nil {
			return "", fmt.Errorf("awssim: Auto Scaling group %s: load balancer %s: %w", o.Name, lb, ErrNotFound)
		}
	}
	s.asgs[key] = g
	for _, i := range g.instances {
		s.registerWithGroupLBsLocked(g, i.id)
	}
	return g.arn, nil
}

func (s *Sim) groupOfLocked(instID string) *asGroup {
	for _, k := range sortedKeys(s.asgs) {
		g := s.asgs[k]
		if slices.ContainsFunc(g.instances, func(i *asInstance) bool { return i.id == instID }) {
			return g
		}
	}
	return nil
}

func (s *Sim) registerWithGroupLBsLocked(g *asGroup, instID string) {
	for _, arn := range g.targetGroups {
		if t := s.tgs[arn]; t != nil {
			t.register(instID, t.port, s.now())
		}
	}
	for _, n := range g.clbs {
		if lb := s.clbs[g.owner+"/"+n]; lb != nil && !slices.Contains(lb.instances, instID) {
			lb.instances = append(lb.instances, instID)
		}
	}
}

func (s *Sim) deregisterFromGroupLBsLocked(g *asGroup, instID string) {
	for _, arn := range g.targetGroups {
		if t := s.tgs[arn]; t != nil {
			t.deregister(instID, s.now())
		}
	}
	for _, n := range g.clbs {
		if lb := s.clbs[g.owner+"/"+n]; lb != nil {
			lb.instances = slices.DeleteFunc(lb.instances, func(id string) bool { return id == instID })
		}
	}
}

// launchReplacementLocked starts an instance that takes the place of one
// that left service, as the group does to keep its desired capacity.
func (s *Sim) launchReplacementLocked(g *asGroup) error {
	a := s.accounts[g.owner]
	inst, err := s.runInstanceLocked(a, g.instanceType, "", map[string]string{"aws:autoscaling:groupName": g.name}, instanceNet{subnetID: g.subnetID})
	if err != nil {
		return err
	}
	inst.state = "running"
	g.instances = append(g.instances, &asInstance{id: inst.id, state: "InService", health: "HEALTHY"})
	s.registerWithGroupLBsLocked(g, inst.id)
	return nil
}

func (c *call) groupLocked() (*asGroup, error) {
	name := c.form.Get("AutoScalingGroupName")
	if name == "" {
		return nil, asValidation("1 validation error detected: Value null at 'autoScalingGroupName' failed to satisfy constraint: Member must not be null")
	}
	g := c.sim.asgs[c.who.accountID()+"/"+name]
	if g == nil {
		return nil, asValidation("AutoScalingGroup name not found - AutoScalingGroup %s not found", name)
	}
	return g, nil
}

type xmlASInstance struct {
	InstanceID           string `xml:"InstanceId"`
	InstanceType         string `xml:"InstanceType"`
	AutoScalingGroupName string `xml:"AutoScalingGroupName,omitempty"`
	AvailabilityZone     string `xml:"AvailabilityZone"`
	LifecycleState       string `xml:"LifecycleState"`
	HealthStatus         string `xml:"HealthStatus"`
	ProtectedFromScaleIn bool   `xml:"ProtectedFromScaleIn"`
}

func (s *Sim) xmlASInstanceLocked(g *asGroup, i *asInstance, withGroup bool) xmlASInstance {
	x := xmlASInstance{InstanceID: i.id, AvailabilityZone: s.az, LifecycleState: i.state, HealthStatus: i.health}
	if inst := s.instances[i.id]; inst != nil {
		x.InstanceType = inst.instanceType
	}
	if withGroup {
		x.AutoScalingGroupName = g.name
	} else if i.health == "HEALTHY" {
		x.HealthStatus = "Healthy" // DescribeAutoScalingGroups spells it so
	} else {
		x.HealthStatus = "Unhealthy"
	}
	return x
}

func asDescribeGroups(c *call) (any, error) {
	s := c.sim
	names := formList(c.form, "AutoScalingGroupNames.member")
	s.mu.RLock()
	defer s.mu.RUnlock()
	type group struct {
		AutoScalingGroupName   string          `xml:"AutoScalingGroupName"`
		AutoScalingGroupARN    string          `xml:"AutoScalingGroupARN"`
		MinSize                int             `xml:"MinSize"`
		MaxSize                int             `xml:"MaxSize"`
		DesiredCapacity        int             `xml:"DesiredCapacity"`
		DefaultCooldown        int             `xml:"DefaultCooldown"`
		AvailabilityZones      []string        `xml:"AvailabilityZones>member"`
		LoadBalancerNames      []string        `xml:"LoadBalancerNames>member"`
		TargetGroupARNs        []string        `xml:"TargetGroupARNs>member"`
		HealthCheckType        string          `xml:"HealthCheckType"`
		HealthCheckGracePeriod int             `xml:"HealthCheckGracePeriod"`
		Instances              []xmlASInstance `xml:"Instances>member"`
		CreatedTime            string          `xml:"CreatedTime"`
		VPCZoneIdentifier      string          `xml:"VPCZoneIdentifier"`
		NewInstancesProtected  bool            `xml:"NewInstancesProtectedFromScaleIn"`
	}
	out := &struct {
		AutoScalingGroups []group `xml:"AutoScalingGroups>member"`
	}{AutoScalingGroups: []group{}}
	for _, k := range sortedKeys(s.asgs) {
		g := s.asgs[k]
		if g.owner != c.who.accountID() || (len(names) > 0 && !slices.Contains(names, g.name)) {
			continue
		}
		x := group{AutoScalingGroupName: g.name, AutoScalingGroupARN: g.arn, MinSize: g.min, MaxSize: g.max, DesiredCapacity: g.desired,
			DefaultCooldown: 300, AvailabilityZones: []string{s.az}, LoadBalancerNames: g.clbs, TargetGroupARNs: g.targetGroups,
			HealthCheckType: "EC2", HealthCheckGracePeriod: 300, CreatedTime: iamTime(g.created), VPCZoneIdentifier: g.subnetID}
		if len(g.targetGroups) > 0 || len(g.clbs) > 0 {
			x.HealthCheckType = "ELB"
		}
		for _, i := range g.instances {
			x.Instances = append(x.Instances, s.xmlASInstanceLocked(g, i, false))
		}
		out.AutoScalingGroups = append(out.AutoScalingGroups, x)
	}
	return out, nil
}

func asDescribeInstances(c *call) (any, error) {
	s := c.sim
	ids := formList(c.form, "InstanceIds.member")
	s.mu.RLock()
	defer s.mu.RUnlock()
	var all []xmlASInstance
	for _, k := range sortedKeys(s.asgs) {
		g := s.asgs[k]
		if g.owner != c.who.accountID() {
			continue
		}
		for _, i := range g.instances {
			if len(ids) == 0 || slices.Contains(ids, i.id) {
				all = append(all, s.xmlASInstanceLocked(g, i, true))
			}
		}
	}
	from := 0
	if t := c.form.Get("NextToken"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 || n > len(all) {
			return nil, errf(http.StatusBadRequest, "InvalidNextToken", "The token '%s' is invalid.", t)
		}
		from = n
	}
	to, next := len(all), ""
	if m := c.form.Get("MaxRecords"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n < 1 || n > 50 {
			return nil, asValidation("1 validation error detected: Value '%s' at 'maxRecords' failed to satisfy constraint: Member must have value less than or equal to 50", m)
		}
		if from+n < to {
			to, next = from+n, strconv.Itoa(from+n)
		}
	}
	return &struct {
		AutoScalingInstances []xmlASInstance `xml:"AutoScalingInstances>member"`
		NextToken            string          `xml:"NextToken,omitempty"`
	}{append([]xmlASInstance{}, all[from:to]...), next}, nil
}

type xmlActivity struct {
	ActivityID           string `xml:"ActivityId"`
	AutoScalingGroupName string `xml:"AutoScalingGroupName"`
	AutoScalingGroupARN  string `xml:"AutoScalingGroupARN"`
	Description          string `xml:"Description"`
	Cause                string `xml:"Cause"`
	StartTime            string `xml:"StartTime"`
	StatusCode           string `xml:"StatusCode"`
	Progress             int    `xml:"Progress"`
	Details              string `xml:"Details"`
}

func (s *Sim) activityLocked(g *asGroup, desc, cause string) xmlActivity {
	return xmlActivity{ActivityID: s.newUUID(), AutoScalingGroupName: g.name, AutoScalingGroupARN: g.arn, Description: desc,
		Cause: "At " + iamTime(s.now()) + " " + cause, StartTime: iamTime(s.now()), StatusCode: "InProgress", Progress: 50,
		Details: `{"Subnet ID":"` + g.subnetID + `","Availability Zone":"` + s.az + `"}`}
}

type asActivities struct {
	Activities []xmlActivity `xml:"Activities>member"`
}

// groupInstancesLocked returns the group AutoScalingGroupName names and
// its members InstanceIds names.
func (c *call) groupInstancesLocked() (*asGroup, []*asInstance, error) {
	g, err := c.groupLocked()
	if err != nil {
		return nil, nil, err
	}
	ids := formList(c.form, "InstanceIds.member")
	var out []*asInstance
	for _, id := range ids {
		i := slices.IndexFunc(g.instances, func(x *asInstance) bool { return x.id == id })
		if i < 0 {
			return nil, nil, asValidation("The instance %s is not part of Auto Scaling group %s.", id, g.name)
		}
		out = append(out, g.instances[i])
	}
	return g, out, nil
}

func shouldDecrement(c *call) (bool, error) {
	v := c.form.Get("ShouldDecrementDesiredCapacity")
	if v == "" {
		return false, asValidation("1 validation error detected: Value null at 'shouldDecrementDesiredCapacity' failed to satisfy constraint: Member must not be null")
	}
	return v == "true", nil
}

func asEnterStandby(c *call) (any, error) {
	return takeOutOfService(c, outOfService{
		what: "place into standby", desc: "Moving EC2 instance to Standby: ",
		cause: "an instance was moved to standby in response to a user request",
		check: func(i *asInstance) error {
			if i.state != "InService" {
				return asValidation("The instance %s is not in InService.", i.id)
			}
			return nil
		},
		take: func(_ *asGroup, i *asInstance) { i.state = "Standby" },
	})
}

// outOfService is how EnterStandby or DetachInstances takes an instance out
// of its group's service.
type outOfService struct {
	what  string                      // the operation, in the min-size error
	desc  string                      // the activity's description, before the instance ID
	cause string                      // the activity's cause, before the capacity change
	check func(*asInstance) error     // whether the instance may be taken; nil: any may
	take  func(*asGroup, *asInstance) // takes it out of the group's service
}

// takeOutOfService takes the instances InstanceIds names out of their
// group's service, as op says: each leaves the group's load balancers, then
// the desired capacity shrinks by one (ShouldDecrementDesiredCapacity) or a
// replacement is launched.
func takeOutOfService(c *call, op outOfService) (any, error) {
	s := c.sim
	dec, err := shouldDecrement(c)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, is, err := c.groupInstancesLocked()
	if err != nil {
		return nil, err
	}
	if op.check != nil {
		for _, i := range is {
			if err := op.check(i); err != nil {
				return nil, err
			}
		}
	}
	if dec && g.desired-len(is) < g.min {
		return nil, asValidation("AutoScalingGroup %s has min-size=%d, max-size=%d, and desired-size=%d. To %s %d instances, please update the AutoScalingGroup sizes appropriately.",
			g.name, g.min, g.max, g.desired, op.what, len(is))
	}
	out := &asActivities{}
	for _, i := range is {
		op.take(g, i)
		s.deregisterFromGroupLBsLocked(g, i.id)
		cause := op.cause
		if dec {
			g.desired--
			cause += ", shrinking the capacity from " + strconv.Itoa(g.desired+1) + " to " + strconv.Itoa(g.desired) + "."
		} else {
			cause += "."
			if err := s.launchReplacementLocked(g); err != nil {
				return nil, err
			}
		}
		out.Activities = append(out.Activities, s.activityLocked(g, op.desc+i.id, cause))
	}
	return out, nil
}

func asExitStandby(c *call) (any, error) {
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	g, is, err := c.groupInstancesLocked()
	if err != nil {
		return nil, err
	}
	for _, i := range is {
		if i.state != "Standby" {
			return nil, asValidation("The instance %s is not in Standby.", i.id)
		}
	}
	if g.desired+len(is) > g.max {
		return nil, asValidation("AutoScalingGroup %s has min-size=%d, max-size=%d, and desired-size=%d. To move %d instances out of standby, please update the AutoScalingGroup sizes appropriately.",
			g.name, g.min, g.max, g.desired, len(is))
	}
	out := &asActivities{}
	for _, i := range is {
		i.state = "InService"
		g.desired++
		s.registerWithGroupLBsLocked(g, i.id)
		out.Activities = append(out.Activities, s.activityLocked(g, "Moving EC2 instance out of Standby: "+i.id,
			"an instance was moved out of standby in response to a user request, increasing the capacity from "+strconv.Itoa(g.desired-1)+" to "+strconv.Itoa(g.desired)+"."))
	}
	return out, nil
}

func asDetachInstances(c *call) (any, error) {
	return takeOutOfService(c, outOfService{
		what: "detach", desc: "Detaching EC2 instance: ",
		cause: "an instance was detached in response to a user request",
		take: func(g *asGroup, i *asInstance) {
			g.instances = slices.DeleteFunc(g.instances, func(x *asInstance) bool { return x == i })
		},
	})
}

func asAttachInstances(c *call) (any, error) {
	s := c.sim
	ids := formList(c.form, "InstanceIds.member")
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := c.groupLocked()
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		inst := s.instances[id]
		if inst == nil || inst.owner != c.who.accountID() {
			return nil, asValidation("Instance %s is not in correct state.", id)
		}
		if inst.state != "running" {
			return nil, asValidation("Instance %s is not in correct state.", id)
		}
		if other := s.groupOfLocked(id); other != nil {
			return nil, asValidation("The instance %s is already part of the Auto Scaling group %s.", id, other.name)
		}
	}
	if g.desired+len(ids) > g.max {
		return nil, asValidation("Instances cannot be added because the maximum size (%d) of the Auto Scaling group %s would be exceeded.", g.max, g.name)
	}
	for _, id := range ids {
		g.instances = append(g.instances, &asInstance{id: id, state: "InService", health: "HEALTHY"})
		g.desired++
		s.registerWithGroupLBsLocked(g, id)
	}
	return &struct{}{}, nil
}

// removeFromLoadBalancingLocked takes a terminated instance out of its Auto
// Scaling group, target groups and classic load balancers.
func (s *Sim) removeFromLoadBalancingLocked(instID string) {
	if g := s.groupOfLocked(instID); g != nil {
		g.instances = slices.DeleteFunc(g.instances, func(x *asInstance) bool { return x.id == instID })
	}
	for _, arn := range sortedKeys(s.tgs) {
		s.tgs[arn].deregister(instID, s.now())
	}
	for _, k := range sortedKeys(s.clbs) {
		lb := s.clbs[k]
		lb.instances = slices.DeleteFunc(lb.instances, func(id string) bool { return id == instID })
	}
}

// asCreateGroup creates a group from an existing instance (InstanceId), the
// one way of describing what to launch the simulator supports: launch
// templates and configurations are not simulated.
func asCreateGroup(c *call) (any, error) {
	s := c.sim
	f := c.form
	name := f.Get("AutoScalingGroupName")
	minS, err1 := strconv.Atoi(f.Get("MinSize"))
	maxS, err2 := strconv.Atoi(f.Get("MaxSize"))
	if name == "" || err1 != nil || err2 != nil {
		return nil, asValidation("1 validation error detected: AutoScalingGroupName, MinSize and MaxSize are required")
	}
	desired := minS
	if v := f.Get("DesiredCapacity"); v != "" {
		var err error
		if desired, err = strconv.Atoi(v); err != nil {
			return nil, asValidation("Invalid DesiredCapacity %q", v)
		}
	}
	if minS < 0 || minS > maxS || desired < minS || desired > maxS {
		return nil, asValidation("Desired capacity:%d must be between the specified min size:%d and max size:%d", desired, minS, maxS)
	}
	instID := f.Get("InstanceId")
	if instID == "" {
		return nil, asValidation("The simulator creates groups only from an instance (InstanceId); launch templates and configurations are not simulated")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := c.who.account
	key := a.id + "/" + name
	if s.asgs[key] != nil {
		return nil, errf(http.StatusBadRequest, "AlreadyExists", "AutoScalingGroup by this name already exists - A group with the name %s already exists", name)
	}
	inst := s.instances[instID]
	if inst == nil || inst.owner != a.id {
		return nil, asValidation("Instance [%s] is invalid.", instID)
	}
	g := &asGroup{name: name, owner: a.id, min: minS, max: maxS, desired: desired, created: s.now().UTC(), instanceType: inst.instanceType,
		targetGroups: formList(f, "TargetGroupARNs.member"), clbs: formList(f, "LoadBalancerNames.member")}
	if enis := s.instanceENIsLocked(instID); len(enis) > 0 {
		g.subnetID = enis[0].subnetID
	}
	if z := f.Get("VPCZoneIdentifier"); z != "" {
		sub, _, _ := strings.Cut(z, ",")
		if sn := s.subnets[sub]; sn == nil || sn.owner != a.id {
			return nil, asValidation("The subnet ID '%s' does not exist", sub)
		}
		g.subnetID = sub
	}
	for _, tg := range g.targetGroups {
		if t := s.tgs[tg]; t == nil || t.owner != a.id {
			return nil, asValidation("Provided Target Groups may not be valid. Please ensure they exist and try again.")
		}
	}
	for _, lb := range g.clbs {
		if s.clbs[a.id+"/"+lb] == nil {
			return nil, asValidation("Provided Load Balancers may not be valid. Please ensure they exist and try again.")
		}
	}
	g.arn = "arn:aws:autoscaling:" + s.region + ":" + a.id + ":autoScalingGroup:" + s.newUUID() + ":autoScalingGroupName/" + name
	s.asgs[key] = g
	for range desired {
		if err := s.launchReplacementLocked(g); err != nil {
			return nil, err
		}
	}
	return &struct{}{}, nil
}
