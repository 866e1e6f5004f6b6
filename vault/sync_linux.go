//go:build linux

package vault

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// openFilesystem opens dir so that syncFilesystem can later make everything
// written on its filesystem durable with one syncfs(2). It must be called
// before the files are written: Linux reports a writeback error to syncfs
// only through descriptors opened before the error happened, and only since
// Linux 5.8. On older kernels it returns nil, nil: each file must then be
// fsynced, since a syncfs there can succeed although data was lost.
func openFilesystem(dir string) (*os.File, error) {
	if !syncfsReportsErrors() {
		return nil, nil
	}
	return os.Open(dir)
}

// syncFilesystem is syncfs(2) on the filesystem holding f.
func syncFilesystem(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Syncfs(int(fd)) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("syncfs %s: %w", f.Name(), serr)
	}
	return nil
}

// syncfsReportsErrors says whether the running kernel (5.8 or later)
// returns writeback errors from syncfs.
func syncfsReportsErrors() bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	return kernelAtLeast(unix.ByteSliceToString(u.Release[:]), 5, 8)
}

// ordersMetadata says whether the filesystem holding dir makes metadata
// changes (links) durable in the order they were made, so that a crash
// keeps a prefix of a batch's links: XFS and btrfs always, ext4 when it has
// its journal, tmpfs trivially (nothing survives a crash). Anything else,
// or anything it cannot tell, is false.
func ordersMetadata(dir string) bool {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return false
	}
	switch uint32(fs.Type) {
	case unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.TMPFS_MAGIC:
		return true
	case unix.EXT4_SUPER_MAGIC: // also ext2 and ext3 mounted by the ext4 driver
		return ext4Journalled(dir)
	}
	return false
}

// ext4Journalled says whether the ext4 filesystem holding dir runs a
// journal: jbd2 lists each journal it runs in /proc/fs/jbd2 as
// DEVICE-INODE, DEVICE being the kernel's name of the block device.
func ext4Journalled(dir string) bool {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return false
	}
	name := blockDeviceName(unix.Major(st.Dev), unix.Minor(st.Dev))
	if name == "" {
		return false
	}
	journals, err := os.ReadDir("/proc/fs/jbd2")
	if err != nil {
		return false
	}
	for _, j := range journals {
		if strings.HasPrefix(j.Name(), name+"-") {
			return true
		}
	}
	return false
}

// blockDeviceName is the kernel's name of block device major:minor
// ("vda", "nvme0n1p1", "loop3"), from sysfs; "" when unknown.
func blockDeviceName(major, minor uint32) string {
	f, err := os.Open(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", major, minor))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "DEVNAME="); ok {
			return v
		}
	}
	return ""
}
