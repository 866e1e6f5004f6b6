package vault

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/rs/zerolog"
)

// local is a Store in a directory: for drills, air-gapped work and external
// evidence drives. Content is written to a temporary file under
// ROOT/.impound/tmp, synced, and hard-linked into place only when complete,
// so a key either holds a whole object or nothing. Stored files are made
// read-only; impound never overwrites or deletes them. Each object's receipt
// (size, SHA-256, retention, legal hold) is kept beside it in
// KEY.impound-receipt.json.
//
// The filesystem cannot enforce retention the way S3 Object Lock does: root
// can delete anything. Retention is recorded, not enforced.
type local struct {
	opts Options
	root string
	uri  string

	// holdMu serialises legal-hold changes within the process; across
	// processes the last rename wins, each writing a whole receipt.
	holdMu sync.Mutex
}

var _ Store = (*local)(nil)

func openLocal(ctx context.Context, path string, opts Options) (*local, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("vault: %s: %w", path, err)
	}
	if fi, err := os.Stat(abs); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("vault: %s is not a directory", abs)
	}
	return &local{opts: opts, root: abs, uri: "file://" + abs}, nil
}

func (l *local) URI() string { return l.uri }

func (l *local) path(key string) string { return filepath.Join(l.root, filepath.FromSlash(key)) }
func (l *local) tmpPath(id string) string {
	return filepath.Join(l.root, reservedPrefix, "tmp", id)
}

func (l *local) Create(ctx context.Context, key string, opts PutOptions) (Writer, error) {
	opts, err := l.opts.prepare(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	// The directory is created by the first write, not by Open, so that
	// reading from a mistyped path does not leave an empty vault behind.
	if err := os.MkdirAll(filepath.Dir(l.tmpPath("x")), 0o755); err != nil {
		return nil, fmt.Errorf("vault: create %s: %w", key, err)
	}
	id := randomID()
	f, err := os.OpenFile(l.tmpPath(id), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vault: create %s: %w", key, err)
	}
	return l.newWriter(ctx, key, opts, id, f, sha256.New(), 0), nil
}

func (l *local) newWriter(ctx context.Context, key string, opts PutOptions, id string, f *os.File, h hash.Hash, off int64) *localWriter {
	w := &localWriter{writerBase: newWriterBase(ctx, key, opts), l: l, id: id, f: f, h: h, size: off}
	w.abortOnCancel(w.Abort)
	return w
}

func (l *local) Resume(ctx context.Context, state []byte) (Writer, int64, error) {
	c, err := parseCheckpoint(state, l.uri)
	if err != nil {
		return nil, 0, err
	}
	if c.Upload == "" || strings.ContainsAny(c.Upload, `/\.`) {
		return nil, 0, fmt.Errorf("vault: resume %s: bad temporary name %q", c.Key, c.Upload)
	}
	f, err := os.OpenFile(l.tmpPath(c.Upload), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("vault: resume %s: upload %s: %w", c.Key, c.Upload, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("vault: resume %s: %w", c.Key, err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() < c.Offset {
		err = fmt.Errorf("%d bytes on disk, state says %d", fi.Size(), c.Offset)
	}
	if err == nil {
		err = f.Truncate(c.Offset) // drop what was written after the checkpoint
	}
	if err == nil {
		_, err = f.Seek(c.Offset, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("vault: resume %s: %w", c.Key, err)
	}
	h, err := restoreHash(c.Hash)
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return l.newWriter(ctx, c.Key, c.Opts, c.Upload, f, h, c.Offset), c.Offset, nil
}

// readReceipt reads the receipt beside key; ErrNotFound when key holds no
// object.
func (l *local) readReceipt(key string) (*Receipt, error) {
	b, err := os.ReadFile(l.path(key) + receiptSuffix)
	if err == nil {
		var r Receipt
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("vault: %s: receipt: %w", key, err)
		}
		return &r, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("vault: %s: receipt: %w", key, err)
	}
	// The object may have been linked by a writer that has not written its
	// receipt yet (or died between the two links): describe it from its
	// content.
	f, err := os.Open(l.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("vault: %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("vault: %s: %w", key, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, fmt.Errorf("vault: %s: %w", key, err)
	}
	fi, _ := f.Stat()
	sum := hex.EncodeToString(h.Sum(nil))
	return &Receipt{URI: "file://" + l.path(key), Key: key, VersionID: localVersion(sum), Size: n, SHA256: sum, StoredAt: fi.ModTime().UTC()}, nil
}

// localVersion is the version identifier of a stored file: derived from
// its content, since a key is written once, so that every writer of the
// same content names the same version.
func localVersion(sum string) string { return sum[:32] }

func (l *local) stat(key, versionID string) (*Receipt, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	r, err := l.readReceipt(key)
	if err != nil {
		return nil, err
	}
	if versionID != "" && versionID != r.VersionID {
		return nil, fmt.Errorf("vault: %s version %s: %w", key, versionID, ErrNotFound)
	}
	return r, nil
}

func (l *local) Stat(ctx context.Context, key, versionID string) (*Receipt, error) {
	return l.stat(key, versionID)
}

func (l *local) Get(ctx context.Context, key, versionID string) (io.ReadCloser, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	if versionID != "" {
		if _, err := l.stat(key, versionID); err != nil {
			return nil, err
		}
	}
	f, err := os.Open(l.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("vault: %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("vault: get %s: %w", key, err)
	}
	return f, nil
}

func (l *local) List(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	err := filepath.WalkDir(l.root, func(p string, d fs.DirEntry, err error) error {
		if p == l.root && errors.Is(err, fs.ErrNotExist) {
			return filepath.SkipAll // an empty vault not written to yet
		}
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != l.root && strings.HasPrefix(d.Name(), reservedPrefix) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, receiptSuffix) || !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(l.root, p)
		if err != nil {
			return err
		}
		if k := filepath.ToSlash(rel); strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("vault: list %s: %w", l.uri, err)
	}
	sort.Strings(keys)
	return keys, nil
}

func (l *local) SetLegalHold(ctx context.Context, key, versionID string, on bool) error {
	l.holdMu.Lock()
	defer l.holdMu.Unlock()
	r, err := l.stat(key, versionID)
	if err != nil {
		return err
	}
	r.LegalHold = on
	tmp := l.tmpPath(randomID() + ".receipt")
	if err := writeReceiptFile(tmp, r); err != nil {
		return fmt.Errorf("vault: legal hold %s: %w", key, err)
	}
	if err := os.Rename(tmp, l.path(key)+receiptSuffix); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("vault: legal hold %s: %w", key, err)
	}
	zerolog.Ctx(ctx).Debug().Str("key", key).Bool("legal_hold", on).Msg("legal hold set")
	return syncDir(filepath.Dir(l.path(key)))
}

func writeReceiptFile(path string, r *Receipt) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeNewFile(path, append(b, '\n'), true)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type localWriter struct {
	writerBase
	l  *local
	id string

	f       *os.File
	h       hash.Hash
	size    int64
	flushed int64 // bytes whose write-back was started (writeBehind)
}

// concurrentHashMin is the smallest write whose hashing runs beside the
// write system call rather than after it.
const concurrentHashMin = 64 << 10

func (w *localWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writable(); err != nil {
		return 0, err
	}
	var n int
	var err error
	if len(p) < concurrentHashMin {
		n, err = w.f.Write(p)
		w.h.Write(p[:n])
	} else {
		// Hash while the kernel copies: the SHA-256 of a large write costs
		// about as much as the copy into the page cache, and with a spare
		// core the two overlap. Both only read p, and neither keeps it
		// after Write returns.
		done := make(chan struct{})
		go func() {
			w.h.Write(p)
			close(done)
		}()
		n, err = w.f.Write(p)
		<-done
	}
	w.size += int64(n)
	if err == nil {
		err = w.writeBehind()
	}
	if err != nil {
		// The file and the hash may now disagree (a short write was hashed
		// whole): nothing written through this writer can be committed.
		// Resume from the last Checkpoint instead.
		w.broken = err
		return n, fmt.Errorf("vault: write %s: %w", w.key, err)
	}
	return n, nil
}

func (w *localWriter) Checkpoint() ([]byte, int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.closed("checkpoint"); err != nil {
		return nil, 0, err
	}
	if err := w.f.Sync(); err != nil {
		return nil, 0, fmt.Errorf("vault: checkpoint %s: %w", w.key, err)
	}
	hs, err := hashState(w.h)
	if err != nil {
		return nil, 0, err
	}
	c := checkpoint{Store: w.l.uri, Key: w.key, Opts: w.opts, Offset: w.size, Hash: hs, Upload: w.id}
	state, err := c.marshal()
	return state, c.Offset, err
}

func (w *localWriter) Commit() (*Receipt, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.committable(); err != nil {
		return nil, err
	}
	r, err := w.commit()
	w.close()
	w.f.Close()
	os.Remove(w.l.tmpPath(w.id))
	if err != nil {
		return nil, err
	}
	logStored(w.ctx, r)
	return r, nil
}

func (w *localWriter) commit() (*Receipt, error) {
	l := w.l
	if err := w.f.Sync(); err != nil {
		return nil, fmt.Errorf("vault: commit %s: %w", w.key, err)
	}
	if err := w.f.Chmod(0o444); err != nil {
		return nil, fmt.Errorf("vault: commit %s: %w", w.key, err)
	}
	sum := hex.EncodeToString(w.h.Sum(nil))
	final := l.path(w.key)
	r := &Receipt{
		URI: "file://" + final, Key: w.key, VersionID: localVersion(sum), Size: w.size, SHA256: sum,
		RetentionMode: w.opts.RetentionMode, RetainUntil: w.opts.RetainUntil, LegalHold: w.opts.LegalHold,
		StoredAt: l.opts.Now().UTC(),
	}
	// The receipt is written in full before the object appears, so that a
	// full disk cannot leave an object without its receipt.
	tmpReceipt := l.tmpPath(w.id + ".receipt")
	if err := writeReceiptFile(tmpReceipt, r); err != nil {
		return nil, fmt.Errorf("vault: commit %s: receipt: %w", w.key, err)
	}
	defer os.Remove(tmpReceipt)
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("vault: commit %s: %w", w.key, err)
	}
	// A key already holding identical content is an idempotent retry; the
	// receipt is linked too, in case its first writer died between the two
	// links.
	if err := l.link(stagedObject{key: w.key, id: w.id, sum: sum, size: w.size}); err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("vault: commit %s: %w", w.key, err)
	}
	return l.readReceipt(w.key)
}

func (w *localWriter) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.close() {
		return nil
	}
	w.f.Close()
	if err := os.Remove(w.l.tmpPath(w.id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("vault: abort %s: %w", w.key, err)
	}
	return nil
}
