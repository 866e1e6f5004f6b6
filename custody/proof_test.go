package custody

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestInclusionProof(t *testing.T) {
	ctx := context.Background()
	signer := newTestSigner(t, "proof.example/k")
	s := newFakeStore()
	l := openCase(t, s, "P", signer, Options{Now: fixedClock()})
	for range 6 {
		appendNote(t, l, "n")
	}
	v := mustVerifier(t, signer)
	for seq := range int64(7) {
		p, err := l.ProveInclusion(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		e, c, err := CheckProof(p, v, "P")
		if err != nil {
			t.Fatalf("proof of %d: %v\n%s", seq, err, p)
		}
		if e.Seq != seq || c.Size != 7 {
			t.Fatalf("proof of %d proves %d in %d", seq, e.Seq, c.Size)
		}
		if pp, err := ParseProof(p); err != nil || !bytes.Equal(FormatProof(pp), p) {
			t.Fatalf("proof does not round-trip: %v", err)
		}
		// Every single-byte change is refused.
		for i := range p {
			q := bytes.Clone(p)
			q[i] ^= 0x01
			if _, _, err := CheckProof(q, v, "P"); err == nil {
				t.Fatalf("proof of %d with byte %d flipped accepted", seq, i)
			}
		}
		if _, _, err := CheckProof(p, v, "OTHER"); err == nil {
			t.Fatal("proof accepted for another case")
		}
	}
	if !strings.HasPrefix(string(mustProve(t, l, 3)), ProofVersion+"\nextra ") {
		t.Fatal("proof does not start with the tlog-proof header")
	}
}

func mustProve(t *testing.T, l *Ledger, seq int64) []byte {
	p, err := l.ProveInclusion(context.Background(), seq)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBundle(t *testing.T) {
	ctx := context.Background()
	signer := newTestSigner(t, "bundle.example/k")
	s := smallLedger(t, signer)
	var buf bytes.Buffer
	v, err := Export(ctx, s, "T", &buf, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bundle := buf.Bytes()
	res, err := VerifyBundle(ctx, bytes.NewReader(bundle), VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != v.Size || res.Proofs != 1 || !res.KeyFromLedger {
		t.Fatalf("bundle result %+v proofs %d", res.Verified, res.Proofs)
	}
	if _, err := VerifyBundle(ctx, bytes.NewReader(bundle), VerifyOptions{Key: signer.VerifierKey()}); err != nil {
		t.Fatal(err)
	}
	other := newTestSigner(t, "bundle.example/k")
	if _, err := VerifyBundle(ctx, bytes.NewReader(bundle), VerifyOptions{Key: other.VerifierKey()}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("bundle against another key: %v", err)
	}
	// Every byte of every member's content matters.
	members := tarMembers(t, bundle)
	for name, content := range members {
		for i := range content {
			c := bytes.Clone(content)
			c[i] ^= 0x01
			m := map[string][]byte{}
			for k, v := range members {
				m[k] = v
			}
			m[name] = c
			if _, err := VerifyBundle(ctx, bytes.NewReader(writeTar(t, m)), VerifyOptions{}); err == nil {
				t.Fatalf("bundle with %s byte %d flipped verified", name, i)
			}
		}
	}
	// Members removed.
	for name := range members {
		m := map[string][]byte{}
		for k, v := range members {
			if k != name {
				m[k] = v
			}
		}
		if strings.HasPrefix(name, "proofs/") || name == "checkpoints/00000000000000000001" || name == "checkpoints/00000000000000000002" || name == "checkpoints/00000000000000000003" {
			continue // redundant: removing them loses no record
		}
		if _, err := VerifyBundle(ctx, bytes.NewReader(writeTar(t, m)), VerifyOptions{}); err == nil {
			t.Fatalf("bundle without %s verified", name)
		}
	}
	if _, err := VerifyBundle(ctx, strings.NewReader("not a tar"), VerifyOptions{}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("garbage bundle: %v", err)
	}
}

// tarMembers reads a tar in order.
func tarMembers(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name], _ = io.ReadAll(tr)
	}
}

// writeTar writes members with the manifest first, like Export.
func writeTar(t *testing.T, m map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := []string{bundleManifest}
	for k := range m {
		if k != bundleManifest {
			names = append(names, k)
		}
	}
	for _, k := range names {
		c, ok := m[k]
		if !ok {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: k, Mode: 0o444, Size: int64(len(c)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(c)
	}
	tw.Close()
	return buf.Bytes()
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add([]byte(Origin("C") + "\n12\n" + strings.Repeat("A", 43) + "=\n"))
	f.Add([]byte("x\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\next\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCheckpoint(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if !bytes.Equal(c.Format(), b) {
			t.Fatalf("format(parse(b)) != b: %q", b)
		}
	})
}

func FuzzParseProof(f *testing.F) {
	signer := newTestSigner(f, "fuzz.example/k")
	s := newFakeStore()
	l := openCase(f, s, "F", signer, Options{})
	for range 4 {
		appendNote(f, l, "n")
	}
	for seq := range int64(5) {
		p, err := l.ProveInclusion(context.Background(), seq)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	v := mustVerifier(f, signer)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProof(b)
		if err != nil {
			return
		}
		if !bytes.Equal(FormatProof(p), b) {
			t.Fatalf("format(parse(b)) != b: %q", b)
		}
		_, _, _ = CheckProof(b, v, "F") // must not panic
	})
}

func FuzzOpenCheckpoint(f *testing.F) {
	signer := newTestSigner(f, "fuzz.example/k")
	s := newFakeStore()
	l := openCase(f, s, "F", signer, Options{})
	cp, err := l.Checkpoint(context.Background())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(cp)
	v := mustVerifier(f, signer)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := OpenCheckpoint(b, v, "")
		if err != nil {
			return
		}
		// Anything accepted is a signed note of exactly this body and one signature line.
		if !bytes.HasPrefix(b, append(c.Format(), '\n')) || bytes.Count(b[len(c.Format())+1:], []byte("\n")) != 1 {
			t.Fatalf("accepted non-canonical checkpoint %q", b)
		}
	})
}

// FuzzVerifyBundle: no bundle panics or is accepted unless it verifies
// against the key it was made with.
func FuzzVerifyBundle(f *testing.F) {
	signer := newTestSigner(f, "fuzz.example/k")
	s := smallLedger(f, signer)
	var buf bytes.Buffer
	if _, err := Export(context.Background(), s, "T", &buf, VerifyOptions{}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte("BUNDLE"))
	key := signer.VerifierKey()
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := VerifyBundle(context.Background(), bytes.NewReader(b), VerifyOptions{Key: key})
		if err != nil {
			return
		}
		if res.Key != key || res.Size < 1 || res.Signed != res.Size {
			t.Fatalf("accepted bundle with key %q size %d signed %d", res.Key, res.Size, res.Signed)
		}
	})
}
