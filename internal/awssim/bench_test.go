package awssim_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ebs/types"
)

// BenchmarkGetSnapshotBlock measures GetSnapshotBlock served to the real
// SDK client over loopback, one request at a time and with parallel clients.
func BenchmarkGetSnapshotBlock(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	const blocks = 64
	v, err := e.member.CreateVolume(volumeOpts(1))
	if err != nil {
		b.Fatal(err)
	}
	if err := v.WriteRandom(0, blocks*512<<10, 1); err != nil {
		b.Fatal(err)
	}
	snap := snapshotID(b, e, v.ID())
	cfg := e.cfg(e.member)
	cfg.HTTPClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	c := ebs.NewFromConfig(cfg)
	list, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: &snap})
	if err != nil {
		b.Fatal(err)
	}
	get := func(buf []byte, blk types.Block) {
		out, err := c.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: &snap, BlockIndex: blk.BlockIndex, BlockToken: blk.BlockToken})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(out.BlockData, buf); err != nil {
			b.Fatal(err)
		}
		out.BlockData.Close()
	}
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(512 << 10)
		buf := make([]byte, 512<<10)
		i := 0
		for b.Loop() {
			get(buf, list.Blocks[i%blocks])
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(512 << 10)
		b.RunParallel(func(pb *testing.PB) {
			buf := make([]byte, 512<<10)
			i := 0
			for pb.Next() {
				get(buf, list.Blocks[i%blocks])
				i++
			}
		})
	})
	_ = aws.String
}

// discardWriter is a ResponseWriter that drops the body.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// BenchmarkGetSnapshotBlockHandler measures the simulator's own cost of a
// GetSnapshotBlock (routing, signature check, token check, lookup), without
// the client and the network.
func BenchmarkGetSnapshotBlockHandler(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	v, _ := e.member.CreateVolume(volumeOpts(1))
	_ = v.WriteRandom(0, 512<<10, 1)
	snap := snapshotID(b, e, v.ID())
	c := ebs.NewFromConfig(e.cfg(e.member))
	list, err := c.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: &snap})
	if err != nil {
		b.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, e.URL()+"/snapshots/"+snap+"/blocks/0?blockToken="+*list.Blocks[0].BlockToken, nil)
	creds := e.member.Credentials()
	const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if err := v4.NewSigner().SignHTTP(ctx, aws.Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey},
		req, emptySHA256, "ebs", "eu-west-1", time.Now()); err != nil {
		b.Fatal(err)
	}
	h := e.Sim.Handler()
	b.SetBytes(512 << 10)
	for b.Loop() {
		w := &discardWriter{h: http.Header{}}
		h.ServeHTTP(w, req)
		if w.code != http.StatusOK || w.n != 512<<10 {
			b.Fatalf("status %d, %d bytes", w.code, w.n)
		}
	}
}
