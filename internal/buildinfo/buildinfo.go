// Package buildinfo says which impound is running: the version, the commit it
// was built from, the Go toolchain, and the SHA-256 of the running binary, which
// examiners record beside the evidence the binary produced.
package buildinfo

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
)

// Version is set at link time (-ldflags "-X github.com/impound-ir/impound/internal/buildinfo.Version=v1.2.3");
// a build without it reports the module version, or "devel".
var Version = ""

// Commit and Modified ("true" or "false") are set at link time by the
// Makefile from git, because Go's own VCS stamping is off where GOFLAGS has
// -buildvcs=false; when set they win over what Go stamped.
var (
	Commit   = ""
	Modified = ""
)

// Info describes the running binary.
type Info struct {
	Version      string `json:"version"`
	Commit       string `json:"commit"`
	Modified     bool   `json:"modified"` // built from a work tree with uncommitted changes
	GoVersion    string `json:"go_version"`
	Platform     string `json:"platform"`
	BinaryPath   string `json:"binary_path"`
	BinarySHA256 string `json:"binary_sha256"`
}

var (
	once    sync.Once
	cached  Info
	errHash error
)

// Read returns the running binary's Info. The binary's hash is computed once per
// process; an error reading the binary is returned with the rest filled in.
func Read() (Info, error) {
	once.Do(func() {
		cached = Info{
			Version:   Version,
			GoVersion: runtime.Version(),
			Platform:  runtime.GOOS + "/" + runtime.GOARCH,
		}
		if bi, ok := debug.ReadBuildInfo(); ok {
			if cached.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
				cached.Version = bi.Main.Version
			}
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					cached.Commit = s.Value
				case "vcs.modified":
					cached.Modified = s.Value == "true"
				}
			}
		}
		if Commit != "" {
			cached.Commit, cached.Modified = Commit, Modified == "true"
		}
		if cached.Version == "" {
			cached.Version = "devel"
		}
		cached.BinaryPath, cached.BinarySHA256, errHash = hashExecutable()
	})
	return cached, errHash
}

func hashExecutable() (path, sum string, err error) {
	path, err = os.Executable()
	if err != nil {
		return "", "", fmt.Errorf("locate running binary: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return path, "", fmt.Errorf("hash running binary: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return path, "", fmt.Errorf("hash running binary %s: %w", path, err)
	}
	return path, hex.EncodeToString(h.Sum(nil)), nil
}
