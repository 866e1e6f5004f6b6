package vault

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"sort"
	"strings"
	"sync"
)

// memory is a process-local Store with the same write-once semantics as the
// others, for tests. It keeps content in memory: not for evidence.
type memory struct {
	opts Options
	uri  string

	mu      sync.Mutex
	objects map[string][]*memVersion // versions of a key, oldest first
	uploads map[string]*memUpload    // checkpointed, uncommitted writers
}

type memVersion struct {
	data    []byte
	receipt Receipt
}

type memUpload struct {
	key  string
	opts PutOptions
	data []byte // durable bytes as of the last Checkpoint
}

var _ Store = (*memory)(nil)

// NewMemory returns an empty in-memory store with the default options.
func NewMemory() Store { return newMemory(NewOptions()) }

func newMemory(opts Options) *memory {
	return &memory{
		opts:    opts.withDefaults(),
		uri:     "mem:",
		objects: map[string][]*memVersion{},
		uploads: map[string]*memUpload{},
	}
}

func (m *memory) URI() string { return m.uri }

func randomID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (m *memory) Create(ctx context.Context, key string, opts PutOptions) (Writer, error) {
	opts, err := m.opts.prepare(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	w := &memWriter{writerBase: newWriterBase(ctx, key, opts), m: m, id: randomID(), h: sha256.New()}
	w.abortOnCancel(w.Abort)
	return w, nil
}

func (m *memory) Resume(ctx context.Context, state []byte) (Writer, int64, error) {
	c, err := parseCheckpoint(state, m.uri)
	if err != nil {
		return nil, 0, err
	}
	m.mu.Lock()
	up, ok := m.uploads[c.Upload]
	m.mu.Unlock()
	if !ok || up.key != c.Key {
		return nil, 0, fmt.Errorf("vault: resume %s: upload %s: %w", c.Key, c.Upload, ErrNotFound)
	}
	if int64(len(up.data)) < c.Offset {
		return nil, 0, fmt.Errorf("vault: resume %s: %d durable bytes, state says %d", c.Key, len(up.data), c.Offset)
	}
	h, err := restoreHash(c.Hash)
	if err != nil {
		return nil, 0, err
	}
	w := &memWriter{writerBase: newWriterBase(ctx, c.Key, c.Opts), m: m, id: c.Upload, h: h,
		buf: append([]byte(nil), up.data[:c.Offset]...)}
	w.abortOnCancel(w.Abort)
	return w, c.Offset, nil
}

func (m *memory) version(key, versionID string) (*memVersion, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	vs := m.objects[key]
	if len(vs) == 0 {
		return nil, fmt.Errorf("vault: %s: %w", key, ErrNotFound)
	}
	if versionID == "" {
		return vs[len(vs)-1], nil
	}
	for _, v := range vs {
		if v.receipt.VersionID == versionID {
			return v, nil
		}
	}
	return nil, fmt.Errorf("vault: %s version %s: %w", key, versionID, ErrNotFound)
}

func (m *memory) Get(ctx context.Context, key, versionID string) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, err := m.version(key, versionID)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(v.data)), nil
}

func (m *memory) Stat(ctx context.Context, key, versionID string) (*Receipt, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, err := m.version(key, versionID)
	if err != nil {
		return nil, err
	}
	r := v.receipt
	return &r, nil
}

func (m *memory) List(ctx context.Context, prefix string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var keys []string
	for k := range m.objects {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

func (m *memory) SetLegalHold(ctx context.Context, key, versionID string, on bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, err := m.version(key, versionID)
	if err != nil {
		return err
	}
	v.receipt.LegalHold = on
	return nil
}

type memWriter struct {
	writerBase
	m  *memory
	id string

	h   hash.Hash
	buf []byte
}

func (w *memWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writable(); err != nil {
		return 0, err
	}
	w.h.Write(p)
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *memWriter) Checkpoint() ([]byte, int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.closed("checkpoint"); err != nil {
		return nil, 0, err
	}
	hs, err := hashState(w.h)
	if err != nil {
		return nil, 0, err
	}
	w.m.mu.Lock()
	w.m.uploads[w.id] = &memUpload{key: w.key, opts: w.opts, data: append([]byte(nil), w.buf...)}
	w.m.mu.Unlock()
	c := checkpoint{Store: w.m.uri, Key: w.key, Opts: w.opts, Offset: int64(len(w.buf)), Hash: hs, Upload: w.id}
	state, err := c.marshal()
	return state, c.Offset, err
}

func (w *memWriter) Commit() (*Receipt, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.committable(); err != nil {
		return nil, err
	}
	w.close()
	sum := hex.EncodeToString(w.h.Sum(nil))
	size := int64(len(w.buf))

	m := w.m
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.uploads, w.id)
	if vs := m.objects[w.key]; len(vs) > 0 {
		cur := vs[len(vs)-1].receipt
		if cur.SHA256 == sum && cur.Size == size {
			return &cur, nil
		}
		return nil, fmt.Errorf("vault: commit %s: %w", w.key, ErrExists)
	}
	r := Receipt{
		URI: m.uri + w.key, Key: w.key, VersionID: randomID(), Size: size, SHA256: sum,
		RetentionMode: w.opts.RetentionMode, RetainUntil: w.opts.RetainUntil,
		LegalHold: w.opts.LegalHold, StoredAt: m.opts.Now().UTC(),
	}
	m.objects[w.key] = append(m.objects[w.key], &memVersion{data: w.buf, receipt: r})
	return &r, nil
}

func (w *memWriter) Abort() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.close() {
		return nil
	}
	w.m.mu.Lock()
	delete(w.m.uploads, w.id)
	w.m.mu.Unlock()
	w.buf = nil
	return nil
}
