package awssim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Encryption says how a seeded volume is encrypted.
type Encryption int

const (
	// EncryptionNone leaves the volume unencrypted.
	EncryptionNone Encryption = iota
	// EncryptionDefault encrypts with the account's AWS managed aws/ebs key.
	EncryptionDefault
	// EncryptionCMK encrypts with the customer managed key VolumeOptions.KMSKeyID.
	EncryptionCMK
)

// VolumeOptions describes a volume to seed.
type VolumeOptions struct {
	SizeGiB    int32 // required, 1..16384
	Encryption Encryption
	KMSKeyID   string // key ID or ARN, for EncryptionCMK
	VolumeType string // gp3 when empty
	Tags       map[string]string
}

// Volume is a handle on a simulated EBS volume.
type Volume struct {
	sim *Sim
	id  string
}

// ID returns the volume ID (vol-…).
func (v *Volume) ID() string { return v.id }

// CreateVolume seeds an available (unattached) volume in the account. Its
// blocks are all unwritten: reading them gives zeros and costs no memory.
func (a *Account) CreateVolume(o VolumeOptions) (*Volume, error) {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	vol, err := s.createVolumeLocked(a, o)
	if err != nil {
		return nil, err
	}
	return &Volume{sim: s, id: vol.id}, nil
}

func (s *Sim) createVolumeLocked(a *Account, o VolumeOptions) (*volume, error) {
	if o.SizeGiB < 1 || o.SizeGiB > 16384 {
		return nil, fmt.Errorf("awssim: volume size %d GiB out of range 1..16384", o.SizeGiB)
	}
	vol := &volume{
		id:         s.newID("vol"),
		owner:      a.id,
		sizeGiB:    o.SizeGiB,
		volumeType: o.VolumeType,
		created:    s.now().UTC(),
		blocks:     blockMap{},
	}
	if vol.volumeType == "" {
		vol.volumeType = "gp3"
	}
	switch o.Encryption {
	case EncryptionNone:
	case EncryptionDefault:
		vol.kmsKey = a.ebsKey
	case EncryptionCMK:
		k, err := s.resolveKeyLocked(a, o.KMSKeyID)
		if err != nil {
			return nil, fmt.Errorf("awssim: volume key %q: %w", o.KMSKeyID, err)
		}
		vol.kmsKey = k
	default:
		return nil, fmt.Errorf("awssim: unknown encryption %d", o.Encryption)
	}
	s.volumes[vol.id] = vol
	s.setTagsLocked(vol.id, o.Tags)
	return vol, nil
}

// WriteAt writes p at byte offset off of the volume. It implements io.WriterAt.
func (v *Volume) WriteAt(p []byte, off int64) (int, error) {
	s := v.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	vol := s.volumes[v.id]
	if vol == nil {
		return 0, fmt.Errorf("awssim: volume %s: %w", v.id, ErrNotFound)
	}
	if off < 0 || off+int64(len(p)) > vol.sizeBytes() {
		return 0, fmt.Errorf("awssim: volume %s: write of %d bytes at %d beyond its %d GiB", v.id, len(p), off, vol.sizeGiB)
	}
	vol.blocks.writeAt(p, off)
	return len(p), nil
}

// ReadFrom writes everything r yields into the volume starting at offset off,
// a block at a time, and returns the number of bytes written.
func (v *Volume) ReadFrom(off int64, r io.Reader) (int64, error) {
	buf := make([]byte, BlockSize)
	var total int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if _, werr := v.WriteAt(buf[:n], off+total); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("awssim: volume %s: read content: %w", v.id, err)
		}
	}
}

// WriteFile copies the file at path into the volume starting at offset off.
func (v *Volume) WriteFile(off int64, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("awssim: volume %s: %w", v.id, err)
	}
	defer f.Close()
	return v.ReadFrom(off, f)
}

// WriteRandom writes n bytes of RandomReader(seed, n) at offset off.
func (v *Volume) WriteRandom(off, n int64, seed uint64) error {
	_, err := v.ReadFrom(off, RandomReader(seed, n))
	return err
}

// Image returns a reader of the volume's current content, zeros included,
// from a frozen view taken now.
func (v *Volume) Image() (io.Reader, error) {
	s := v.sim
	s.mu.RLock()
	defer s.mu.RUnlock()
	vol := s.volumes[v.id]
	if vol == nil {
		return nil, fmt.Errorf("awssim: volume %s: %w", v.id, ErrNotFound)
	}
	return &imageReader{blocks: vol.blocks.clone(), size: vol.sizeBytes()}, nil
}

// WrittenBlocks returns how many blocks of the volume hold data.
func (v *Volume) WrittenBlocks() int {
	s := v.sim
	s.mu.RLock()
	defer s.mu.RUnlock()
	if vol := s.volumes[v.id]; vol != nil {
		return len(vol.blocks)
	}
	return 0
}

// SnapshotImage returns a reader of a snapshot's content, zeros included.
func (s *Sim) SnapshotImage(snapshotID string) (io.Reader, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sn := s.snapshots[snapshotID]
	if sn == nil {
		return nil, fmt.Errorf("awssim: snapshot %s: %w", snapshotID, ErrNotFound)
	}
	return &imageReader{blocks: sn.blocks, size: int64(sn.sizeGiB) << 30}, nil
}

// ErrNotFound is returned by the seeding API for unknown resources.
var ErrNotFound = errors.New("not found")

// Device attaches a volume to an instance under a device name.
type Device struct {
	Name                string // e.g. /dev/xvda, /dev/sdf
	Volume              *Volume
	DeleteOnTermination bool
}

// InstanceOptions describes an instance to seed. The first device is the
// root device; with no devices, an 8 GiB unencrypted root volume is created
// as /dev/xvda.
type InstanceOptions struct {
	InstanceType string // t3.micro when empty
	ImageID      string // ami-… generated when empty
	Devices      []Device
	Tags         map[string]string

	// SubnetID places the primary interface; the account's default
	// subnet when empty. SecurityGroupIDs default to the VPC's default
	// group; IPv6AddressCount gives it IPv6 addresses (the subnet needs an
	// IPv6 CIDR); ConnectionTracking sets its timeouts.
	SubnetID           string
	SecurityGroupIDs   []string
	IPv6AddressCount   int
	ConnectionTracking *ConnectionTracking
	// NetworkInterfaces are further interfaces, attached at device index
	// 1, 2, …
	NetworkInterfaces []NetworkInterfaceOptions
	// InstanceProfile is the name of an IAM instance profile of the
	// account to associate (see Account.CreateInstanceProfile).
	InstanceProfile       string
	DisableAPITermination bool
	// ShutdownBehavior is stop (default) or terminate.
	ShutdownBehavior string
	// ConsoleOutput is what GetConsoleOutput returns; Screenshot the JPEG
	// GetConsoleScreenshot returns (a generated blank image when nil).
	ConsoleOutput string
	Screenshot    []byte
}

// Instance is a handle on a simulated EC2 instance.
type Instance struct {
	sim *Sim
	id  string
}

// ID returns the instance ID (i-…).
func (i *Instance) ID() string { return i.id }

// RunInstance seeds a running instance with its volumes attached.
func (a *Account) RunInstance(o InstanceOptions) (*Instance, error) {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, err := s.runInstanceLocked(a, o.InstanceType, o.ImageID, o.Tags,
		instanceNet{subnetID: o.SubnetID, groups: o.SecurityGroupIDs, ipv6: o.IPv6AddressCount, ct: o.ConnectionTracking})
	if err != nil {
		return nil, err
	}
	inst.state = "running"
	inst.disableAPITermination = o.DisableAPITermination
	if o.ShutdownBehavior != "" {
		inst.shutdownBehavior = o.ShutdownBehavior
	}
	inst.console = []byte(o.ConsoleOutput)
	inst.screenshot = o.Screenshot
	primary := s.instanceENIsLocked(inst.id)[0]
	for i, no := range o.NetworkInterfaces {
		sn := s.subnets[primary.subnetID]
		if no.SubnetID != "" {
			if sn = s.subnets[no.SubnetID]; sn == nil || sn.owner != a.id {
				return nil, fmt.Errorf("awssim: interface %d: subnet %s: %w", i+1, no.SubnetID, ErrNotFound)
			}
		}
		e, err := s.newENILocked(a, sn, no.SecurityGroupIDs, no.IPv6AddressCount, no.Description)
		if err != nil {
			return nil, fmt.Errorf("awssim: interface %d: %w", i+1, err)
		}
		if ct := no.ConnectionTracking; ct != nil {
			e.ct = &connTracking{ct.TCPEstablished, ct.UDPStream, ct.UDP}
		}
		s.setTagsLocked(e.id, no.Tags)
		s.attachENILocked(e, inst, i+1, false)
	}
	if o.InstanceProfile != "" {
		if _, err := s.associateProfileLocked(a, inst, o.InstanceProfile, ""); err != nil {
			return nil, fmt.Errorf("awssim: instance profile %s: %w", o.InstanceProfile, err)
		}
	}
	devs := o.Devices
	if len(devs) == 0 {
		vol, err := s.createVolumeLocked(a, VolumeOptions{SizeGiB: 8})
		if err != nil {
			return nil, err
		}
		devs = []Device{{Name: "/dev/xvda", Volume: &Volume{sim: s, id: vol.id}, DeleteOnTermination: true}}
	}
	for i, d := range devs {
		vol := s.volumes[d.Volume.id]
		if vol == nil || vol.owner != a.id {
			return nil, fmt.Errorf("awssim: attach %s: volume %s: %w", d.Name, d.Volume.id, ErrNotFound)
		}
		if vol.attachment != nil {
			return nil, fmt.Errorf("awssim: attach %s: volume %s is already attached to %s", d.Name, vol.id, vol.attachment.instanceID)
		}
		vol.attachment = &attachment{instanceID: inst.id, device: d.Name, deleteOnTermination: d.DeleteOnTermination, at: inst.launched}
		inst.devices = append(inst.devices, instanceDevice{name: d.Name, volumeID: vol.id})
		if i == 0 {
			inst.rootDevice = d.Name
		}
	}
	return &Instance{sim: s, id: inst.id}, nil
}

// instanceNet places a new instance's primary interface.
type instanceNet struct {
	subnetID string
	groups   []string
	ipv6     int
	ct       *ConnectionTracking
}

func (s *Sim) runInstanceLocked(a *Account, instanceType, imageID string, tags map[string]string, net instanceNet) (*instance, error) {
	if instanceType == "" {
		instanceType = "t3.micro"
	}
	if imageID == "" {
		imageID = s.newID("ami")
	}
	var sn *subnet
	if net.subnetID == "" {
		_, sn = s.defaultVPCLocked(a)
	} else if sn = s.subnets[net.subnetID]; sn == nil || sn.owner != a.id {
		return nil, subnetNotFound(net.subnetID)
	}
	inst := &instance{
		id:               s.newID("i"),
		owner:            a.id,
		imageID:          imageID,
		instanceType:     instanceType,
		launched:         s.now().UTC().Truncate(time.Second),
		state:            "pending",
		reservation:      s.newID("r"),
		shutdownBehavior: "stop",
		sourceDestCheck:  true,
	}
	e, err := s.newENILocked(a, sn, net.groups, net.ipv6, "")
	if err != nil {
		return nil, err
	}
	if net.ct != nil {
		e.ct = &connTracking{net.ct.TCPEstablished, net.ct.UDPStream, net.ct.UDP}
	}
	s.attachENILocked(e, inst, 0, true)
	s.instances[inst.id] = inst
	s.setTagsLocked(inst.id, tags)
	return inst, nil
}

// KeyOptions describes a KMS key to seed.
type KeyOptions struct {
	// Spec is SYMMETRIC_DEFAULT (default), ECC_NIST_P256 or RSA_2048.
	Spec string
	// Usage is ENCRYPT_DECRYPT (default for symmetric) or SIGN_VERIFY
	// (default for asymmetric).
	Usage       string
	Description string
	Alias       string // e.g. alias/forensics; optional
	// AllowAccounts are other account IDs the key policy lets use the key.
	AllowAccounts []string
}

// Key is a handle on a simulated KMS key.
type Key struct {
	id, arn string
}

// ID returns the key ID (a UUID).
func (k *Key) ID() string { return k.id }

// ARN returns the key ARN.
func (k *Key) ARN() string { return k.arn }

// CreateKey seeds a customer managed KMS key in the account.
func (a *Account) CreateKey(o KeyOptions) (*Key, error) {
	s := a.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.newKMSKeyLocked(a, kmsKeyOptions{
		spec: o.Spec, usage: o.Usage, description: o.Description,
		manager: "CUSTOMER", alias: o.Alias, allow: o.AllowAccounts,
	})
	if err != nil {
		return nil, err
	}
	return &Key{id: k.id, arn: k.arn}, nil
}

// VolumeByID returns a handle on an existing volume, such as one created
// through RunInstances, or nil.
func (s *Sim) VolumeByID(id string) *Volume {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.volumes[id] == nil {
		return nil
	}
	return &Volume{sim: s, id: id}
}
