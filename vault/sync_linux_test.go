package vault

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/impound-ir/impound/internal/testenv"
)

// mountExt4 makes a small ext4 filesystem with mkfs.ext4 extra options,
// mounts it through a loop device and returns the mount point.
func mountExt4(t *testing.T, opts ...string) string {
	t.Helper()
	mkfs := testenv.Tool(t, "mkfs.ext4")
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "mounting a loop device needs root")
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	args := append([]string{"-q", "-F"}, opts...)
	if out, err := exec.Command(mkfs, append(args, img, "32M")...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		testenv.SkipOrFail(t, fmt.Sprintf("mount -o loop: %v: %s", err, out))
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

// TestOrdersMetadata: a batch is only grouped on a filesystem that keeps a
// prefix of its links across a crash.
func TestOrdersMetadata(t *testing.T) {
	t.Run("ext4 with journal", func(t *testing.T) {
		if dir := mountExt4(t); !ordersMetadata(dir) {
			t.Fatal("ext4 with its journal reported as not ordering metadata")
		}
	})
	t.Run("ext4 without journal", func(t *testing.T) {
		dir := mountExt4(t, "-O", "^has_journal")
		if ordersMetadata(dir) {
			t.Fatal("ext4 without a journal reported as ordering metadata")
		}
		// PutAll still stores the batch there, one object at a time.
		st, err := Open(context.Background(), dir, testOptions())
		if err != nil {
			t.Fatal(err)
		}
		objs := []Object{{Key: "l/0", Data: []byte("zero")}, {Key: "l/1", Data: []byte("one")}}
		rs, err := PutAll(context.Background(), st, objs, PutOptions{})
		if err != nil || len(rs) != 2 {
			t.Fatalf("PutAll = %d receipts, %v", len(rs), err)
		}
		for _, o := range objs {
			if b, err := os.ReadFile(filepath.Join(dir, o.Key)); err != nil || string(b) != string(o.Data) {
				t.Fatalf("%s holds %q, %v", o.Key, b, err)
			}
		}
	})
	t.Run("tmpfs", func(t *testing.T) {
		if dir := mountTmpfs(t); !ordersMetadata(dir) {
			t.Fatal("tmpfs reported as not ordering metadata")
		}
	})
	t.Run("missing", func(t *testing.T) {
		if ordersMetadata(filepath.Join(t.TempDir(), "nope")) {
			t.Fatal("a missing directory reported as ordering metadata")
		}
	})
}

// TestLocalPutAllJournalled runs the batch suite where the local store
// groups a batch under one syncfs (a journalled ext4): t.TempDir() may sit
// on a filesystem without a journal, where PutAll stores one by one.
func TestLocalPutAllJournalled(t *testing.T) {
	mnt := mountExt4(t)
	if !ordersMetadata(mnt) {
		t.Fatal("the journalled ext4 is not recognised: the group commit would not be tested")
	}
	batchSuite{newStore: func(t *testing.T, now func() time.Time) Store {
		root, err := os.MkdirTemp(mnt, "vault")
		if err != nil {
			t.Fatal(err)
		}
		st, err := openLocal(context.Background(), root, batchOptions(now))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { assertNoTemporaries(t, st) })
		return st
	}, contentVersions: true, clockStoredAt: true}.run(t)
}
