package vault

import (
	"context"
	"fmt"
	"io"
	"testing"
)

// repeatReader yields n bytes cycling through buf, without allocating.
type repeatReader struct {
	buf []byte
	off int
	n   int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	c := 0
	for c < len(p) {
		k := copy(p[c:], r.buf[r.off:])
		c += k
		r.off = (r.off + k) % len(r.buf)
	}
	r.n -= int64(c)
	return c, nil
}

func benchPut(b *testing.B, st Store, size int64) {
	ctx := context.Background()
	buf := randomBytes(99, 4<<20)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		// A new key each round: each is written once. The first bytes make
		// the content unique too.
		buf[0], buf[1] = byte(i), byte(i>>8)
		if _, err := Put(ctx, st, fmt.Sprintf("bench/%d", i), &repeatReader{buf: buf, n: size}, PutOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutMinIO: a 256 MiB stream of unknown length into MinIO with
// the default options (16 MiB parts, 4 in flight). scripts/bench-vault
// compares the CLI with `aws s3 cp -` on 2 GiB.
func BenchmarkPutMinIO(b *testing.B) {
	cfg := minioConfig(b)
	bucket, _ := newLockedBucket(b, cfg)
	for _, conc := range []int{4, 8} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			o := testOptions()
			o.AWS, o.Concurrency = cfg, conc
			st, err := Open(context.Background(), fmt.Sprintf("s3://%s/c%d", bucket, conc), o)
			if err != nil {
				b.Fatal(err)
			}
			benchPut(b, st, 256<<20)
		})
	}
}

// BenchmarkPutLocal: a 256 MiB stream into the local directory store.
func BenchmarkPutLocal(b *testing.B) {
	st, err := Open(context.Background(), b.TempDir(), testOptions())
	if err != nil {
		b.Fatal(err)
	}
	benchPut(b, st, 256<<20)
}
