package vault

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Object is one small object for PutAll, held whole in memory (a custody
// entry, a receipt): evidence streams go through Create or Put.
type Object struct {
	Key  string
	Data []byte
}

// Creator is the part of a Store that PutAll needs; every Store is one.
type Creator interface {
	Create(ctx context.Context, key string, opts PutOptions) (Writer, error)
}

// putAller is a store that keeps a batch of small objects faster than one
// by one: the local store makes the whole batch durable with one
// filesystem sync instead of several fsyncs per object.
type putAller interface {
	putAll(ctx context.Context, objs []Object, opts PutOptions) ([]*Receipt, error)
}

// PutAll stores objs in order, each write-once as Put would: content
// identical to what a key already holds is an idempotent success returning
// the stored receipt; different content stops the batch there with an error
// wrapping ErrExists. It returns the receipts of the objects stored before
// the first error: objs[:len(receipts)] are stored. After an error the
// others may or may not be (an answer lost, a directory that could not be
// synced); putting them again is safe, identical content being an
// idempotent success. Every key is checked first; a bad key stores nothing.
//
// On the local store, on a filesystem that journals its metadata (ext4 with
// its journal, XFS, btrfs; tmpfs, which keeps nothing across a crash), the
// batch is written with one filesystem sync, a group commit, and a crash
// leaves a prefix of it stored. Elsewhere (a filesystem without a metadata
// journal, S3, memory) it is Create, Write, Commit per object, each durable
// before the next.
func PutAll(ctx context.Context, s Creator, objs []Object, opts PutOptions) ([]*Receipt, error) {
	for _, o := range objs {
		if err := CheckKey(o.Key); err != nil {
			return nil, err
		}
	}
	if p, ok := s.(putAller); ok {
		return p.putAll(ctx, objs, opts)
	}
	return putEach(ctx, s, objs, opts)
}

// putEach stores objs one after the other, each durable before the next.
func putEach(ctx context.Context, s Creator, objs []Object, opts PutOptions) ([]*Receipt, error) {
	rs := make([]*Receipt, 0, len(objs))
	for _, o := range objs {
		r, err := PutBytes(ctx, s, o.Key, o.Data, opts)
		if err != nil {
			return rs, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// stagedObject is one object of a local batch, written with its receipt
// under ROOT/.impound/tmp (as id and id.receipt) but not yet linked.
type stagedObject struct {
	key  string
	id   string
	sum  string // hex SHA-256
	size int64
}

var _ putAller = (*local)(nil)

func (l *local) putAll(ctx context.Context, objs []Object, opts PutOptions) ([]*Receipt, error) {
	if len(objs) == 0 {
		return nil, ctx.Err()
	}
	// The vault's directory is made by its first write; the filesystem is
	// only known once it exists.
	tmpDir := filepath.Dir(l.tmpPath("x"))
	if err := os.MkdirAll(tmpDir, 0o755); err != nil {
		return nil, fmt.Errorf("vault: put %s: %w", objs[0].Key, err)
	}
	if !ordersMetadata(tmpDir) {
		// Without a metadata journal a crash could keep any subset of a
		// batch's links: a gap in a ledger. One by one, each object is
		// durable before the next is linked.
		return putEach(ctx, l, objs, opts)
	}
	return l.putBatch(ctx, objs, opts, syncFilesystem)
}

// putBatch is the local store's group commit. Each object ends exactly as
// localWriter.Commit leaves it (same files, permissions, receipt), but the
// batch pays one filesystem sync instead of three fsyncs per object:
//
//  1. every object and its receipt are written to temporary files, not
//     synced;
//  2. one syncfs(2) makes them all durable (each file is fsynced where
//     syncfs is unavailable or does not report errors). If it fails, the
//     temporary files are removed and nothing is linked;
//  3. the objects are linked into place in order, each object before its
//     receipt, as commit does: a key already holding identical content is
//     an idempotent success, different content stops the batch with
//     ErrExists;
//  4. each distinct directory linked into is fsynced once;
//  5. the temporary names are removed.
//
// The order is what makes a crash safe. No link is made before the data it
// names is durable, so a linked object is never empty or partial. Links are
// made one after the other in batch order, and a filesystem that journals
// its metadata (ext4 with its journal, the default; XFS; btrfs; APFS; NTFS)
// makes them durable in that order, so a crash leaves a prefix of the batch
// in place, never a gap. (On a filesystem without a metadata journal, such
// as ext4 made with "^has_journal", a crash before step 4 ends may keep any
// subset of the batch's links: putAll does not batch there, see
// ordersMetadata.) Only objects whose directory was fsynced are reported
// stored.
//
// syncFS is syncFilesystem; tests pass a failing one.
func (l *local) putBatch(ctx context.Context, objs []Object, opts PutOptions, syncFS func(*os.File) error) ([]*Receipt, error) {
	if len(objs) == 0 {
		return nil, ctx.Err()
	}
	tmpDir := filepath.Dir(l.tmpPath("x"))
	if err := os.MkdirAll(tmpDir, 0o755); err != nil {
		return nil, fmt.Errorf("vault: put %s: %w", objs[0].Key, err)
	}
	// Opened before anything is written, so that syncfs reports writeback
	// errors of the batch's files (see openFilesystem).
	fsys, err := openFilesystem(tmpDir)
	if err != nil {
		return nil, fmt.Errorf("vault: put %s: %w", objs[0].Key, err)
	}
	if fsys != nil {
		defer fsys.Close()
	}

	staged := make([]stagedObject, 0, len(objs))
	defer func() {
		for _, s := range staged {
			os.Remove(l.tmpPath(s.id))
			os.Remove(l.tmpPath(s.id + ".receipt"))
		}
	}()
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("vault: put %s: %w", o.Key, err)
		}
		s, err := l.stage(o, opts, fsys == nil)
		if err != nil {
			return nil, err
		}
		staged = append(staged, s)
	}
	if fsys != nil {
		if err := syncFS(fsys); err != nil {
			return nil, fmt.Errorf("vault: put %s and %d more: %w", objs[0].Key, len(objs)-1, err)
		}
	}

	var (
		linkErr  error
		linked   int
		dirs     []string           // in order of first use
		dirFirst = map[string]int{} // first object linked into each
	)
	for i, s := range staged {
		if err := ctx.Err(); err != nil {
			linkErr = fmt.Errorf("vault: put %s: %w", s.key, err)
			break
		}
		dir := filepath.Dir(l.path(s.key))
		if _, ok := dirFirst[dir]; !ok {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				linkErr = fmt.Errorf("vault: put %s: %w", s.key, err)
				break
			}
			dirFirst[dir] = i
			dirs = append(dirs, dir)
		}
		if err := l.link(s); err != nil {
			linkErr = err
			break
		}
		linked++
	}

	stored := linked
	var syncErr error
	for _, dir := range dirs {
		if err := syncDir(dir); err != nil {
			first := dirFirst[dir]
			stored = min(stored, first)
			syncErr = errors.Join(syncErr, fmt.Errorf("vault: put %s: %w", staged[first].key, err))
		}
	}
	rs := make([]*Receipt, 0, stored)
	for _, s := range staged[:stored] {
		r, err := l.readReceipt(s.key)
		if err != nil {
			return rs, errors.Join(fmt.Errorf("vault: put %s: %w", s.key, err), linkErr, syncErr)
		}
		logStored(ctx, r)
		rs = append(rs, r)
	}
	return rs, errors.Join(linkErr, syncErr)
}

// stage writes o and its receipt to temporary files, fsynced only when
// fsync is set. The receipt is built as localWriter.commit builds it, with
// the options resolved for this object as Create would.
func (l *local) stage(o Object, opts PutOptions, fsync bool) (stagedObject, error) {
	opts, err := l.opts.resolve(opts)
	if err != nil {
		return stagedObject{}, err
	}
	h := sha256.Sum256(o.Data)
	s := stagedObject{key: o.Key, id: randomID(), sum: hex.EncodeToString(h[:]), size: int64(len(o.Data))}
	r := &Receipt{
		URI: "file://" + l.path(o.Key), Key: o.Key, VersionID: localVersion(s.sum), Size: s.size, SHA256: s.sum,
		RetentionMode: opts.RetentionMode, RetainUntil: opts.RetainUntil, LegalHold: opts.LegalHold,
		StoredAt: l.opts.Now().UTC(),
	}
	rb, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return stagedObject{}, fmt.Errorf("vault: put %s: receipt: %w", o.Key, err)
	}
	if err := writeNewFile(l.tmpPath(s.id), o.Data, fsync); err != nil {
		return stagedObject{}, fmt.Errorf("vault: put %s: %w", o.Key, err)
	}
	if err := writeNewFile(l.tmpPath(s.id+".receipt"), append(rb, '\n'), fsync); err != nil {
		os.Remove(l.tmpPath(s.id))
		return stagedObject{}, fmt.Errorf("vault: put %s: receipt: %w", o.Key, err)
	}
	return s, nil
}

// writeNewFile creates path holding b, read-only (0444) like every stored
// file, and fsyncs it when fsync is set. On failure nothing is left.
func writeNewFile(path string, b []byte, fsync bool) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o444)
	}
	if err == nil && fsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// link puts an object written under its temporary id in place, for a
// Writer's commit and for a batch alike: the object, then its receipt. A
// key already taken is compared with the stored
// receipt (or, when its writer died between its two links, the stored
// content): identical is an idempotent retry, anything else ErrExists.
func (l *local) link(s stagedObject) error {
	final := l.path(s.key)
	if err := os.Link(l.tmpPath(s.id), final); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("vault: put %s: %w", s.key, err)
		}
		cur, err := l.readReceipt(s.key)
		if err != nil {
			return fmt.Errorf("vault: put %s: compare with stored object: %w", s.key, err)
		}
		if cur.SHA256 != s.sum || cur.Size != s.size {
			return fmt.Errorf("vault: put %s: %w", s.key, ErrExists)
		}
	}
	if err := os.Link(l.tmpPath(s.id+".receipt"), final+receiptSuffix); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("vault: put %s: receipt: %w", s.key, err)
	}
	return nil
}

// kernelAtLeast says whether a Linux kernel release such as "6.1.0-18-amd64"
// or "5.8-rc1" is major.minor or later; false when it cannot be parsed.
func kernelAtLeast(release string, major, minor int) bool {
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	mi, err2 := strconv.Atoi(leadingDigits(parts[1]))
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

func leadingDigits(s string) string {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i]
}
