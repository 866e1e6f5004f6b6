package custody

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/impound-ir/impound/vault"
)

// fakeStore is a write-once in-memory store with vault's semantics, plus
// tamper and remove, which no real store allows, for tamper tests.
type fakeStore struct {
	mu      sync.Mutex
	objects map[string][]byte
}

var _ store = (*fakeStore)(nil)

func newFakeStore() *fakeStore { return &fakeStore{objects: map[string][]byte{}} }

type fakeWriter struct {
	s      *fakeStore
	ctx    context.Context
	key    string
	buf    bytes.Buffer
	closed bool
}

func (s *fakeStore) Create(ctx context.Context, key string, _ vault.PutOptions) (vault.Writer, error) {
	if err := vault.CheckKey(key); err != nil {
		return nil, err
	}
	return &fakeWriter{s: s, ctx: ctx, key: key}, nil
}

func (w *fakeWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, fmt.Errorf("fake: write after close")
	}
	return w.buf.Write(p)
}

func (w *fakeWriter) Commit() (*vault.Receipt, error) {
	if w.closed {
		return nil, fmt.Errorf("fake: commit after close")
	}
	w.closed = true
	if err := w.ctx.Err(); err != nil {
		return nil, err
	}
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	b := w.buf.Bytes()
	if old, ok := w.s.objects[w.key]; ok {
		if !bytes.Equal(old, b) {
			return nil, fmt.Errorf("fake: %s: %w", w.key, vault.ErrExists)
		}
	} else {
		w.s.objects[w.key] = slices.Clone(b)
	}
	sum := sha256.Sum256(b)
	return &vault.Receipt{URI: "mem:/" + w.key, Key: w.key, VersionID: "v1", Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}, nil
}

func (w *fakeWriter) Abort() error { w.closed = true; return nil }
func (w *fakeWriter) Checkpoint() ([]byte, int64, error) {
	return nil, 0, fmt.Errorf("fake: no checkpoints")
}

func (s *fakeStore) Get(_ context.Context, key, versionID string) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objects[key]
	if !ok || (versionID != "" && versionID != "v1") {
		return nil, fmt.Errorf("fake: %s: %w", key, vault.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(slices.Clone(b))), nil
}

func (s *fakeStore) List(_ context.Context, prefix string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out, nil
}

// keys lists every stored key, sorted.
func (s *fakeStore) keys() []string {
	k, _ := s.List(context.Background(), "")
	return k
}

func (s *fakeStore) get(key string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.objects[key])
}

func (s *fakeStore) set(key string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[key] = slices.Clone(b)
}

func (s *fakeStore) remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objects, key)
}

func (s *fakeStore) clone() *fakeStore {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := newFakeStore()
	for k, v := range s.objects {
		c.objects[k] = slices.Clone(v)
	}
	return c
}
