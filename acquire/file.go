package acquire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FileSource reads a regular file or a block device, opened read-only. Holes
// (found with SEEK_DATA/SEEK_HOLE) are not read: their blocks are zeros and
// are left out of the block map. Block devices, which do not report holes,
// are read whole.
type FileSource struct {
	f    *os.File
	size int64
	info SourceInfo
	hole bool // SEEK_DATA/SEEK_HOLE work on f
}

var _ Source = (*FileSource)(nil)

// OpenFile opens path (a regular file or a block device) read-only. The
// caller closes it. info's Kind (file or device) and Path or DevicePath are
// filled in; its other fields (instance, volume) are the caller's to give.
func OpenFile(path string, info SourceInfo) (*FileSource, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOATIME, 0)
	if errors.Is(err, os.ErrPermission) { // O_NOATIME needs ownership or CAP_FOWNER
		f, err = os.OpenFile(path, os.O_RDONLY, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("acquire: open %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("acquire: stat %s: %w", path, err)
	}
	s := &FileSource{f: f, info: info}
	switch {
	case fi.Mode().IsRegular():
		s.size = fi.Size()
		s.hole = true
		s.info.Kind = KindFile
		if s.info.Path == "" {
			s.info.Path = path
		}
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		size, err := deviceSize(f)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("acquire: size of block device %s: %w", path, err)
		}
		s.size = size
		s.info.Kind = KindDevice
		if s.info.DevicePath == "" {
			s.info.DevicePath = path
		}
	default:
		f.Close()
		return nil, fmt.Errorf("acquire: %s is neither a regular file nor a block device", path)
	}
	return s, nil
}

// deviceSize asks the kernel for a block device's size in bytes (BLKGETSIZE64).
func deviceSize(f *os.File) (int64, error) {
	var size uint64
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
	}); err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, errno
	}
	return int64(size), nil
}

// Close closes the file.
func (s *FileSource) Close() error { return s.f.Close() }

// Info describes the source.
func (s *FileSource) Info() SourceInfo { return s.info }

// Size is the file's or device's size in bytes.
func (s *FileSource) Size() int64 { return s.size }

// Concurrency keeps one core for the whole-image hash.
func (s *FileSource) Concurrency() int { return max(1, runtime.NumCPU()-1) }

// Blocks reports every block holding data, skipping holes.
func (s *FileSource) Blocks(ctx context.Context, from int64, fn func(Block) error) error {
	n := (s.size + BlockSize - 1) / BlockSize
	all := func(from int64) error {
		for i := from; i < n; i++ {
			if err := fn(Block{Index: i}); err != nil {
				return err
			}
		}
		return nil
	}
	if !s.hole {
		return all(from)
	}
	fd := int(s.f.Fd())
	next := from // first block not yet reported
	for next < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := unix.Seek(fd, next*BlockSize, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) { // no data after this offset
			return nil
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return all(next)
		}
		if err != nil {
			return fmt.Errorf("seek data in %s: %w", s.info.ID(), err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole in %s: %w", s.info.ID(), err)
		}
		first := max(next, data/BlockSize)
		last := min(n-1, (hole-1)/BlockSize)
		for i := first; i <= last; i++ {
			if err := fn(Block{Index: i}); err != nil {
				return err
			}
		}
		next = max(next, last+1)
		if hole >= s.size {
			return nil
		}
	}
	return nil
}

// ReadBlock reads block b with pread.
func (s *FileSource) ReadBlock(ctx context.Context, b Block, p []byte) error {
	n, err := s.f.ReadAt(p, b.Index*BlockSize)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("%s: %d of %d bytes at block %d: %w", s.info.ID(), n, len(p), b.Index, ErrShortSource)
	}
	return err
}
