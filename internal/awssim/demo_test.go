package awssim_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/impound-ir/impound/internal/awssim"
)

func TestSeedDemoOptions(t *testing.T) {
	e := newEnv(t)
	img := make([]byte, 3*awssim.BlockSize+777)
	if _, err := rand.Read(img); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := awssim.SeedDemo(e.Sim, awssim.DemoOptions{MemberAccountID: memberID, ForensicsAccountID: forensicsID, RootGiB: 2, DataGiB: 1, RootImage: path})
	if err != nil {
		t.Fatal(err)
	}
	root := e.Sim.VolumeByID(d.RootVolumeID)
	r, err := root.Image()
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, len(img)+zeroTail)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(head[:len(img)], img) || !bytes.Equal(head[len(img):], make([]byte, zeroTail)) {
		t.Fatal("root volume does not start with the image followed by zeros")
	}
	n, err := io.Copy(io.Discard, r)
	if err != nil || int64(len(head))+n != 2<<30 {
		t.Fatalf("root volume is %d bytes, want 2 GiB (%v)", int64(len(head))+n, err)
	}
	if got := root.WrittenBlocks(); got != 4 {
		t.Errorf("root volume has %d written blocks, want the image's 4", got)
	}
	if w := e.Sim.VolumeByID(d.DataVolumeID).WrittenBlocks(); w != 32+2 {
		t.Errorf("1 GiB data volume has %d written blocks, want 16 MiB at 0 and 1 MiB at 512 MiB (34)", w)
	}

	var f struct {
		ID        string  `json:"id"`
		Type      string  `json:"type"`
		Severity  float64 `json:"severity"`
		AccountID string  `json:"accountId"`
		Region    string  `json:"region"`
		Resource  struct {
			ResourceType    string `json:"resourceType"`
			InstanceDetails struct {
				InstanceID string `json:"instanceId"`
			} `json:"instanceDetails"`
		} `json:"resource"`
		Service struct {
			Count int `json:"count"`
		} `json:"service"`
	}
	if err := json.Unmarshal(d.Finding, &f); err != nil {
		t.Fatal(err)
	}
	if f.ID == "" || f.Type != "Backdoor:EC2/C&CActivity.B" || f.Severity < 7 || f.AccountID != memberID || f.Region != "eu-west-1" ||
		f.Resource.ResourceType != "Instance" || f.Resource.InstanceDetails.InstanceID != d.InstanceID || f.Service.Count < 1 {
		t.Errorf("finding %+v", f)
	}
	if len(d.VPCEndpointIDs) != 4 || d.SecondInstanceID == "" || len(d.NetworkInterfaceIDs) != 2 {
		t.Errorf("demo %+v", d)
	}

	// An image larger than the root volume is refused.
	big := filepath.Join(t.TempDir(), "big.img")
	fh, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := fh.Truncate(2<<30 + 1); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	e2 := newEnv(t)
	if _, err := awssim.SeedDemo(e2.Sim, awssim.DemoOptions{RootGiB: 2, RootImage: big}); err == nil {
		t.Error("an image larger than the root volume was accepted")
	}
}

// zeroTail is how many bytes after the image the test checks are zero.
const zeroTail = 4096
