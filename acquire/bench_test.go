package acquire

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	simd "github.com/minio/sha256-simd"

	"github.com/impound-ir/impound/vault"
)

// discardStore is a Store fake that keeps nothing but hashes what it is
// given, as every vault does, so benchmarks measure the pipeline alone.
type discardStore struct{}

type discardWriter struct {
	key string
	h   hash.Hash
	n   int64
}

func (discardStore) Create(ctx context.Context, key string, opts vault.PutOptions) (vault.Writer, error) {
	return &discardWriter{key: key, h: sha256.New()}, nil
}
func (discardStore) Resume(ctx context.Context, state []byte) (vault.Writer, int64, error) {
	return nil, 0, errors.New("discard store cannot resume")
}
func (w *discardWriter) Write(p []byte) (int, error) {
	w.h.Write(p)
	w.n += int64(len(p))
	return len(p), nil
}
func (w *discardWriter) Commit() (*vault.Receipt, error) {
	return &vault.Receipt{Key: w.key, Size: w.n, SHA256: hex.EncodeToString(w.h.Sum(nil))}, nil
}
func (w *discardWriter) Abort() error                       { return nil }
func (w *discardWriter) Checkpoint() ([]byte, int64, error) { return nil, 0, errors.ErrUnsupported }

// BenchmarkSHA256 compares the SHA-256 implementations on one 512 KiB block,
// single-threaded: the whole-image hash's critical path.
func BenchmarkSHA256(b *testing.B) {
	block := randomBytes(1, BlockSize)
	for _, impl := range []struct {
		name string
		new  func() hash.Hash
	}{{"stdlib", sha256.New}, {"simd", simd.New}} {
		b.Run(impl.name, func(b *testing.B) {
			h := impl.new()
			b.SetBytes(BlockSize)
			for b.Loop() {
				h.Write(block)
			}
		})
	}
}

// BenchmarkSHA256Parallel measures per-block (Merkle leaf) hashing on every core.
func BenchmarkSHA256Parallel(b *testing.B) {
	block := randomBytes(1, BlockSize)
	for _, impl := range []string{ImplStdlib, ImplSIMD} {
		b.Run(impl, func(b *testing.B) {
			b.SetBytes(BlockSize)
			b.RunParallel(func(pb *testing.PB) {
				l, _ := newLeafHasher(impl)
				for pb.Next() {
					l.sum(block)
				}
			})
		})
	}
}

// BenchmarkPipelineFile acquires a 256 MiB file (page cache warm) into a
// store that only hashes: the pipeline's own throughput (whole-image
// SHA-256, Merkle leaves, the store's SHA-256).
func BenchmarkPipelineFile(b *testing.B) {
	const size = 256 << 20
	path := filepath.Join(b.TempDir(), "img")
	if err := os.WriteFile(path, randomBytes(5, size), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, impl := range []string{ImplStdlib, ImplSIMD} {
		for _, workers := range []int{1, 2} {
			b.Run(impl+"/workers="+strconv.Itoa(workers), func(b *testing.B) {
				b.SetBytes(size)
				for b.Loop() {
					src, err := OpenFile(path, SourceInfo{})
					if err != nil {
						b.Fatal(err)
					}
					opts := NewOptions()
					opts.Key = "k"
					opts.SHA256Impl = impl
					opts.Workers = workers
					if _, err := Run(context.Background(), src, discardStore{}, opts); err != nil {
						b.Fatal(err)
					}
					src.Close()
				}
			})
		}
	}
}

// BenchmarkPipelineLocalVault acquires a 256 MiB file into the local-directory
// vault (written and synced to disk).
func BenchmarkPipelineLocalVault(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	path := filepath.Join(dir, "img")
	if err := os.WriteFile(path, randomBytes(5, size), 0o600); err != nil {
		b.Fatal(err)
	}
	s, err := vault.Open(context.Background(), filepath.Join(dir, "vault"), vault.NewOptions())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	i := 0
	for b.Loop() {
		i++
		src, err := OpenFile(path, SourceInfo{})
		if err != nil {
			b.Fatal(err)
		}
		opts := NewOptions()
		opts.Key = "cases/b/evidence/img" + strconv.Itoa(i)
		if _, err := Run(context.Background(), src, s, opts); err != nil {
			b.Fatal(err)
		}
		src.Close()
	}
}
