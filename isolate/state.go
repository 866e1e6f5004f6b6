package isolate

import (
	"encoding/json"
	"fmt"
	"time"
)

// StateVersion is the version of the State JSON format.
const StateVersion = 1

// State is what Run learned and did: the instance's starting state, which
// impound resources it uses, and how each step ended. The caller persists it
// (as JSON) and hands it back to re-run or release.
type State struct {
	Version    int       `json:"version"`
	CaseID     string    `json:"case_id"`
	InstanceID string    `json:"instance_id"`
	Region     string    `json:"region"`
	AccountID  string    `json:"account_id"`
	StartedAt  time.Time `json:"started_at"`
	// IsolatedAt is the time written in the tags.
	IsolatedAt time.Time `json:"isolated_at"`
	Options    RunFlags  `json:"options"`

	Original  Original  `json:"original"`
	Resources Resources `json:"resources"`
	Steps     []StepLog `json:"steps"`
	// Pending names a step that had begun changing AWS when the State was
	// saved and whose outcome is not logged yet (the process may have died
	// in between); Release treats it as attempted.
	Pending string `json:"pending,omitempty"`
	// ProfileReplacedAt is when the instance-profile association was
	// replaced by the isolation profile; the revoke-sessions cut-off is
	// never earlier.
	ProfileReplacedAt time.Time  `json:"profile_replaced_at,omitzero"`
	Released          bool       `json:"released,omitempty"`
	Release           []StepLog  `json:"release,omitempty"`
	History           []RunEntry `json:"history,omitempty"`
}

// RunFlags are the options that shaped a run.
type RunFlags struct {
	AllowSSM        bool `json:"allow_ssm,omitempty"`
	NACL            bool `json:"nacl,omitempty"`
	ASGDetach       bool `json:"asg_detach,omitempty"`
	AllowDefaultVPC bool `json:"allow_default_vpc,omitempty"`
}

// RunEntry notes one Run or Release over this State.
type RunEntry struct {
	Action string    `json:"action"` // isolate, release
	At     time.Time `json:"at"`
	Result string    `json:"result"`
}

// StepLog is a recorded Step.
type StepLog struct {
	Name      string          `json:"name"`
	Status    Status          `json:"status"`
	Resources []string        `json:"resources,omitempty"`
	Before    json.RawMessage `json:"before,omitempty"`
	After     json.RawMessage `json:"after,omitempty"`
	Note      string          `json:"note,omitempty"`
	Error     string          `json:"error,omitempty"`
	At        time.Time       `json:"at"`
}

// Original is the instance's starting state, captured before any change.
type Original struct {
	State                 string            `json:"state"`
	VpcID                 string            `json:"vpc_id"`
	DefaultVPC            bool              `json:"default_vpc"`
	SubnetID              string            `json:"subnet_id"`
	PrivateIPs            []string          `json:"private_ips,omitempty"`
	DisableAPITermination bool              `json:"disable_api_termination"`
	ShutdownBehavior      string            `json:"shutdown_behavior"`
	Volumes               []VolumeState     `json:"volumes"`
	Interfaces            []InterfaceState  `json:"interfaces"`
	ElasticIPs            []EIPState        `json:"elastic_ips,omitempty"`
	Profile               *ProfileState     `json:"instance_profile,omitempty"`
	AutoScaling           *ASGState         `json:"auto_scaling,omitempty"`
	TargetGroups          []TargetState     `json:"target_groups,omitempty"`
	ClassicELBs           []string          `json:"classic_elbs,omitempty"`
	NetworkACLs           []NACLState       `json:"network_acls,omitempty"`
	Tags                  map[string]string `json:"tags,omitempty"`
}

// VolumeState is an attached EBS volume.
type VolumeState struct {
	DeviceName          string `json:"device_name"`
	VolumeID            string `json:"volume_id"`
	DeleteOnTermination bool   `json:"delete_on_termination"`
}

// InterfaceState is a network interface's groups and connection tracking.
type InterfaceState struct {
	ID       string   `json:"id"`
	SubnetID string   `json:"subnet_id"`
	Groups   []string `json:"groups"`
	IPv6     []string `json:"ipv6,omitempty"`
	// Zero means "not set", which AWS treats as its default.
	TCPEstablishedTimeout int32 `json:"tcp_established_timeout,omitempty"`
	UDPStreamTimeout      int32 `json:"udp_stream_timeout,omitempty"`
	UDPTimeout            int32 `json:"udp_timeout,omitempty"`
}

// EIPState is an Elastic IP association.
type EIPState struct {
	AllocationID       string `json:"allocation_id"`
	AssociationID      string `json:"association_id,omitempty"`
	PublicIP           string `json:"public_ip"`
	NetworkInterfaceID string `json:"network_interface_id"`
	PrivateIP          string `json:"private_ip"`
}

// ProfileState is the instance-profile association.
type ProfileState struct {
	AssociationID string   `json:"association_id"`
	ARN           string   `json:"arn"`
	Roles         []string `json:"roles,omitempty"` // role names
	RoleARNs      []string `json:"role_arns,omitempty"`
}

// ASGState is the instance's Auto Scaling membership.
type ASGState struct {
	GroupName       string `json:"group_name"`
	LifecycleState  string `json:"lifecycle_state"`
	MinSize         int32  `json:"min_size"`
	DesiredCapacity int32  `json:"desired_capacity"`
	// Decremented says whether isolation lowered the desired capacity (it
	// does unless that would go below the minimum).
	Decremented bool `json:"decremented,omitempty"`
}

// TargetState is one registration in an ELBv2 target group.
type TargetState struct {
	TargetGroupARN   string `json:"target_group_arn"`
	ID               string `json:"id"` // instance ID or IP address
	Port             int32  `json:"port,omitempty"`
	AvailabilityZone string `json:"availability_zone,omitempty"`
}

// NACLState is a subnet's network ACL association.
type NACLState struct {
	SubnetID      string `json:"subnet_id"`
	NetworkACLID  string `json:"network_acl_id"`
	AssociationID string `json:"association_id"`
}

// Resources are impound's own resources used for this instance.
type Resources struct {
	AllOpenGroup     string `json:"all_open_group,omitempty"`
	IsolationGroup   string `json:"isolation_group,omitempty"`
	IsolationProfile string `json:"isolation_profile_arn,omitempty"`
	DenyNACL         string `json:"deny_nacl,omitempty"`
	DenyPolicyName   string `json:"deny_policy_name,omitempty"`
}

// MarshalState returns the canonical JSON of s.
func MarshalState(s *State) ([]byte, error) {
	return json.MarshalIndent(s, "", "  ")
}

// UnmarshalState parses a State and checks its version.
func UnmarshalState(b []byte) (*State, error) {
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse isolation state: %w", err)
	}
	if s.Version != StateVersion {
		return nil, fmt.Errorf("%w: isolation state version %d, want %d", ErrStateMismatch, s.Version, StateVersion)
	}
	if s.InstanceID == "" {
		return nil, fmt.Errorf("%w: isolation state names no instance", ErrStateMismatch)
	}
	return &s, nil
}

// step returns the last log of the named step, or nil.
func (s *State) step(name string) *StepLog {
	for i := len(s.Steps) - 1; i >= 0; i-- {
		if s.Steps[i].Name == name {
			return &s.Steps[i]
		}
	}
	return nil
}

// Applied says whether the named step left AWS in its isolated state
// (done now or found done).
func (s *State) Applied(name string) bool {
	l := s.step(name)
	return l != nil && (l.Status == StatusDone || l.Status == StatusAlready)
}

// Isolated says whether the latest run over this state was an isolation that
// completed (every step done or found done), and nothing was released since.
func (s *State) Isolated() bool {
	if s.Released || len(s.History) == 0 {
		return false
	}
	last := s.History[len(s.History)-1]
	return last.Action == "isolate" && last.Result == "isolated"
}

// Failed returns the names of steps whose last run failed.
func (s *State) Failed() []string {
	seen := map[string]Status{}
	var order []string
	for _, l := range s.Steps {
		if _, ok := seen[l.Name]; !ok {
			order = append(order, l.Name)
		}
		seen[l.Name] = l.Status
	}
	var out []string
	for _, n := range order {
		if seen[n] == StatusFailed {
			out = append(out, n)
		}
	}
	return out
}

// clone returns a deep copy, so that a run never changes the State it was
// given.
func (s *State) clone() (*State, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("copy isolation state: %w", err)
	}
	var c State
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("copy isolation state: %w", err)
	}
	return &c, nil
}
