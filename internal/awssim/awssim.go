// Package awssim is a simulated AWS account served over HTTP, faithful enough
// that the real aws-sdk-go-v2 clients and the AWS CLI work against it
// unchanged. impound's tests and `impound sim serve` use it.
//
// One [Sim] holds several accounts (typically a member account and a
// forensics account). One HTTP server routes each request by the service in
// its SigV4 credential scope; every service speaks its real wire protocol,
// including its real error format and status codes:
//
//   - STS (query/XML): GetCallerIdentity, AssumeRole.
//   - EC2 (EC2 query/XML): instances (launch, describe, terminate,
//     attributes, console output and screenshot, instance-profile
//     associations), EBS snapshots (create, describe, copy, delete, share),
//     networking (VPCs, subnets, network interfaces with group sets and
//     connection tracking, security groups and rules, network ACLs, Elastic
//     IPs, VPC endpoints, prefix lists) and tags on every resource type.
//   - EBS direct (REST-JSON, binary bodies): ListSnapshotBlocks,
//     GetSnapshotBlock, ListChangedBlocks.
//   - KMS (JSON 1.1): CreateKey, DescribeKey, GetPublicKey, Sign, Verify,
//     CreateGrant, RetireGrant, RevokeGrant, ListGrants.
//   - IAM (query/XML): roles, instance profiles, inline and attached policies.
//   - Auto Scaling (query/XML): groups, standby, detach, attach.
//   - ELBv2 target groups and classic ELB (query/XML, one signing name,
//     chosen by Version).
//   - CloudTrail (JSON 1.1): LookupEvents over the management events the
//     simulator records for every mutating call it serves.
//
// docs/simulator.md lists every operation and the AWS behaviour enforced.
//
// Adding an operation is one function and one entry in its service's table;
// adding a service is one file and one entry in [serviceTable].
//
// # Guarantees
//
// Volumes are sparse maps of 512 KiB blocks: unwritten blocks cost nothing.
// Blocks are immutable once stored and carry their SHA-256, computed once; a
// snapshot freezes the volume's block map, and copies of a snapshot (in any
// account) share it, so EBS direct reads of a snapshot and of every copy
// return exactly the bytes the volume held when the snapshot was taken.
//
// Access is enforced the way AWS enforces it: the access key identifies the
// account and principal, an unshared snapshot is invisible to other accounts,
// an encrypted snapshot is readable only by an account that may use its KMS
// key, and a snapshot encrypted with the AWS managed aws/ebs key cannot be
// shared.
//
// Faults (throttling, latency, 5xx, connection resets, corrupted checksums,
// snapshots that stay pending, expiring credentials) are configured at run
// time with [Sim.SetFault] and friends; see faults.go.
package awssim

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// BlockSize is the EBS direct block size.
const BlockSize = 512 << 10

// DefaultRegion is the Region a Sim serves when Options.Region is empty.
const DefaultRegion = "us-east-1"

// DefaultSessionDuration is how long AssumeRole credentials last when the
// request does not say.
const DefaultSessionDuration = time.Hour

// Options configures a Sim.
type Options struct {
	// Region served; DefaultRegion when empty.
	Region string
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
	// Seed makes generated IDs and keys' random choices reproducible when
	// non-zero. Key material always comes from crypto/rand.
	Seed uint64
	// SkipSignatureCheck accepts requests whatever their SigV4 signature;
	// by default a signature not made with the secret we issued is refused
	// with the service's SignatureDoesNotMatch-style error.
	SkipSignatureCheck bool
}

// Sim is a simulated AWS partition holding several accounts in one Region.
// It is safe for concurrent use.
type Sim struct {
	region string
	az     string
	now    func() time.Time
	tokKey [32]byte // HMAC key for EBS page and block tokens

	skipSigCheck bool
	reqBase      uint64
	reqSeq       atomic.Uint64

	mu         sync.RWMutex
	rnd        *mrand.Rand
	accounts   map[string]*Account
	principals map[string]*principal // by access key ID
	volumes    map[string]*volume
	snapshots  map[string]*snapshot
	instances  map[string]*instance
	keys       map[string]*kmsKey // by key ID
	tags       map[string]map[string]string

	// EC2 networking (network.go).
	vpcs      map[string]*vpc
	subnets   map[string]*subnet
	enis      map[string]*eni
	instENIs  map[string][]*eni // attached interfaces by instance, by device index
	sgs       map[string]*secGroup
	nacls     map[string]*nacl
	addresses map[string]*address // by allocation ID
	endpoints map[string]*vpcEndpoint
	ipAssocs  map[string]*ipAssociation

	iam   map[string]*iamAccount  // by account ID (iam.go)
	asgs  map[string]*asGroup     // by account ID + "/" + name (autoscaling.go)
	tgs   map[string]*targetGroup // by ARN (elb.go)
	clbs  map[string]*classicLB   // by account ID + "/" + name
	trail []*trailEvent           // every account's events, oldest first (cloudtrail.go)

	faults faultState
}

// New returns an empty Sim.
func New(o Options) *Sim {
	if o.Region == "" {
		o.Region = DefaultRegion
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	seed := o.Seed
	if seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:])
	}
	s := &Sim{
		region:       o.Region,
		skipSigCheck: o.SkipSignatureCheck,
		az:           o.Region + "a",
		now:          o.Now,
		rnd:          mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		accounts:     map[string]*Account{},
		principals:   map[string]*principal{},
		volumes:      map[string]*volume{},
		snapshots:    map[string]*snapshot{},
		instances:    map[string]*instance{},
		keys:         map[string]*kmsKey{},
		tags:         map[string]map[string]string{},
		vpcs:         map[string]*vpc{},
		subnets:      map[string]*subnet{},
		enis:         map[string]*eni{},
		instENIs:     map[string][]*eni{},
		sgs:          map[string]*secGroup{},
		nacls:        map[string]*nacl{},
		addresses:    map[string]*address{},
		endpoints:    map[string]*vpcEndpoint{},
		ipAssocs:     map[string]*ipAssociation{},
		iam:          map[string]*iamAccount{},
		asgs:         map[string]*asGroup{},
		tgs:          map[string]*targetGroup{},
		clbs:         map[string]*classicLB{},
	}
	_, _ = rand.Read(s.tokKey[:])
	s.reqBase = s.rnd.Uint64()
	s.faults.init()
	return s
}

// Region returns the Region the Sim serves.
func (s *Sim) Region() string { return s.region }

// AvailabilityZone returns the Availability Zone volumes and instances live in.
func (s *Sim) AvailabilityZone() string { return s.az }

// Credentials are an access key as AWS issues it. SessionToken and Expires
// are set only for temporary credentials.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	Expires         time.Time
}

// Account is a handle on one simulated AWS account.
type Account struct {
	sim    *Sim
	id     string
	user   *principal
	ebsKey *kmsKey // the AWS managed aws/ebs key
}

// principal is whoever an access key belongs to.
type principal struct {
	account      *Account
	arn          string
	userID       string
	accessKeyID  string
	secret       string
	sessionToken string    // only for assumed roles
	expires      time.Time // zero: never
	issued       time.Time // when AssumeRole issued the credentials
}

func (p *principal) accountID() string { return p.account.id }

// AddAccount creates the account with the 12-digit ID (or returns it if it
// exists) with an IAM user whose long-term access key [Account.Credentials]
// returns, and its AWS managed aws/ebs KMS key.
func (s *Sim) AddAccount(id string) *Account {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.accounts[id]; ok {
		return a
	}
	a := &Account{sim: s, id: id}
	a.user = &principal{
		account:     a,
		arn:         "arn:aws:iam::" + id + ":user/impound-sim",
		userID:      "AIDA" + s.randUpper(17),
		accessKeyID: "AKIA" + s.randUpper(16),
		secret:      s.randSecret(),
	}
	s.principals[a.user.accessKeyID] = a.user
	s.accounts[id] = a
	k, err := s.newKMSKeyLocked(a, kmsKeyOptions{
		spec:        "SYMMETRIC_DEFAULT",
		usage:       "ENCRYPT_DECRYPT",
		description: "Default key that protects my EBS volumes when no other key is defined",
		manager:     "AWS",
		alias:       "alias/aws/ebs",
	})
	if err != nil {
		panic(err) // symmetric keys cannot fail to generate
	}
	a.ebsKey = k
	return a
}

// Account returns the account with the ID, or nil.
func (s *Sim) Account(id string) *Account {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.accounts[id]
}

// ID returns the 12-digit account ID.
func (a *Account) ID() string { return a.id }

// Credentials returns the long-term access key of the account's IAM user.
func (a *Account) Credentials() Credentials {
	return Credentials{AccessKeyID: a.user.accessKeyID, SecretAccessKey: a.user.secret}
}

// UserARN returns the ARN of the IAM user whose key Credentials returns.
func (a *Account) UserARN() string { return a.user.arn }

// RoleARN returns the ARN of a role in the account. Every role name can be
// assumed by every simulated account; the simulator does not model IAM
// policies.
func (a *Account) RoleARN(name string) string { return "arn:aws:iam::" + a.id + ":role/" + name }

// EBSDefaultKeyARN returns the ARN of the account's AWS managed aws/ebs key.
func (a *Account) EBSDefaultKeyARN() string { return a.ebsKey.arn }

const (
	upperAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	secretSet  = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)

func (s *Sim) randUpper(n int) string {
	var b strings.Builder
	for range n {
		b.WriteByte(upperAlnum[s.rnd.IntN(len(upperAlnum))])
	}
	return b.String()
}

func (s *Sim) randSecret() string {
	var b strings.Builder
	for range 40 {
		b.WriteByte(secretSet[s.rnd.IntN(len(secretSet))])
	}
	return b.String()
}

func (s *Sim) randHex(n int) string {
	b := make([]byte, (n+1)/2)
	for i := range b {
		b[i] = byte(s.rnd.Uint32())
	}
	return hex.EncodeToString(b)[:n]
}

// newID returns an EC2-style ID: prefix-17 hex digits.
func (s *Sim) newID(prefix string) string { return prefix + "-" + s.randHex(17) }

func (s *Sim) newUUID() string {
	h := s.randHex(32)
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
}

// requestID returns a unique request ID in UUID form without locking.
func (s *Sim) requestID() string {
	n := s.reqSeq.Add(1)
	return fmt.Sprintf("%08x-%04x-4%03x-a%03x-%012x", s.reqBase>>32, (s.reqBase>>16)&0xffff, s.reqBase&0xfff, (n>>48)&0xfff, n&0xffffffffffff)
}

// setTagsLocked merges tags into the resource's tags.
func (s *Sim) setTagsLocked(resource string, tags map[string]string) {
	if len(tags) == 0 {
		return
	}
	m := s.tags[resource]
	if m == nil {
		m = map[string]string{}
		s.tags[resource] = m
	}
	for k, v := range tags {
		m[k] = v
	}
}

// Tags returns a copy of the resource's tags.
func (s *Sim) Tags(resource string) map[string]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]string{}
	for k, v := range s.tags[resource] {
		out[k] = v
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func accountIDValid(id string) bool {
	if len(id) != 12 {
		return false
	}
	for _, c := range id {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
