package vault

import (
	"errors"

	"golang.org/x/sys/unix"
)

// writeBehindChunk is how much a local writer lets pile up in the page
// cache before it asks the kernel to start writing it to disk.
const writeBehindChunk = 32 << 20

// writeBehind starts the write-back of what was written since the last
// call, once a chunk has piled up, without waiting for it: the disk then
// works while the pipeline hashes, and Commit's fsync finds little left to
// do. The fsync, not this, is what makes the data durable.
func (w *localWriter) writeBehind() error {
	if w.size-w.flushed < writeBehindChunk {
		return nil
	}
	err := unix.SyncFileRange(int(w.f.Fd()), w.flushed, w.size-w.flushed, unix.SYNC_FILE_RANGE_WRITE)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ESPIPE) {
		err = nil // a filesystem without it: Commit's fsync does all the work
	}
	w.flushed = w.size
	return err
}
