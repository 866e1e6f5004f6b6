package custody

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/impound-ir/impound/vault"
)

// BundleVersion is the first line of a bundle's BUNDLE member.
const BundleVersion = "impound-ledger-bundle/v1"

// Bundle layout: a POSIX tar archive, so that it can be unpacked and checked
// by hand with standard tools.
//
//	BUNDLE                          "impound-ledger-bundle/v1\ncase <ID>\nsize <N>\n"
//	key.pub                         the case's verifier key
//	entries/<20-digit seq>          every entry, as stored
//	checkpoints/<20-digit size>     every signed checkpoint, as stored
//	proofs/<20-digit seq>.tlog-proof  an inclusion proof of each evidence-stored
//	                                and report-generated entry against the latest checkpoint
const (
	bundleManifest    = "BUNDLE"
	bundleKey         = "key.pub"
	bundleEntries     = "entries/"
	bundleCheckpoints = "checkpoints/"
	bundleProofs      = "proofs/"
	proofSuffix       = ".tlog-proof"
	maxBundleMembers  = 4 << 20
)

// Export verifies a case's ledger and writes it to w as a self-contained
// bundle that VerifyBundle checks offline. A ledger that fails verification
// is not exported.
func Export(ctx context.Context, s reader, caseID string, w io.Writer, opts VerifyOptions) (*Verified, error) {
	v, err := Verify(ctx, s, caseID, opts)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(w)
	mtime := time.Unix(0, 0).UTC()
	if v.Size > 0 {
		if f, err := parseEntryFields(v.raw[v.Size-1]); err == nil {
			mtime = f.time.Truncate(time.Second)
		}
	}
	put := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o444, Size: int64(len(b)), ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	manifest := fmt.Sprintf("%s\ncase %s\nsize %d\n", BundleVersion, caseID, v.Size)
	if err := put(bundleManifest, []byte(manifest)); err != nil {
		return nil, fmt.Errorf("custody: export %s: %w", caseID, err)
	}
	if err := put(bundleKey, []byte(v.Key+"\n")); err != nil {
		return nil, fmt.Errorf("custody: export %s: %w", caseID, err)
	}
	for i, b := range v.raw {
		if err := put(bundleEntries+seqName(int64(i)), b); err != nil {
			return nil, fmt.Errorf("custody: export %s: %w", caseID, err)
		}
	}
	for _, n := range v.CheckpointSizes() {
		if err := put(bundleCheckpoints+seqName(n), v.checkpoints[n]); err != nil {
			return nil, fmt.Errorf("custody: export %s: %w", caseID, err)
		}
	}
	for i := range v.Signed {
		f, err := parseEntryFields(v.raw[i])
		if err != nil {
			return nil, err
		}
		if f.kind != KindEvidenceStored && f.kind != KindReportGenerated {
			continue
		}
		p, err := v.ProveInclusion(i)
		if err != nil {
			return nil, err
		}
		if err := put(bundleProofs+seqName(i)+proofSuffix, p); err != nil {
			return nil, fmt.Errorf("custody: export %s: %w", caseID, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("custody: export %s: %w", caseID, err)
	}
	return v, nil
}

func seqName(n int64) string { return fmt.Sprintf("%0*d", seqDigits, n) }

// BundleResult is a bundle that passed VerifyBundle.
type BundleResult struct {
	*Verified
	Proofs int // inclusion proofs checked
}

// VerifyBundle checks a bundle written by Export with no access to AWS or
// the vault: the ledger as Verify does, with opts (opts.CheckEvidence is
// ignored), and every inclusion proof. Without opts.Key, the key is the
// bundle's own, which proves the bundle is intact but not who signed it.
func VerifyBundle(ctx context.Context, r io.Reader, opts VerifyOptions) (*BundleResult, error) {
	m := &mapReader{objects: map[string][]byte{}}
	var caseID, key string
	var size int64
	proofs := map[int64][]byte{}
	tr := tar.NewReader(r)
	members := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: bundle: %v", ErrMalformed, err)
		}
		if members++; members > maxBundleMembers {
			return nil, fmt.Errorf("%w: bundle: more than %d members", ErrMalformed, maxBundleMembers)
		}
		if h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("%w: bundle: %s is not a regular file", ErrMalformed, h.Name)
		}
		limit := int64(MaxEntrySize)
		if strings.HasPrefix(h.Name, bundleProofs) {
			limit = 2*MaxEntrySize + MaxCheckpointSize + 8192
		}
		if h.Size > limit {
			return nil, fmt.Errorf("%w: bundle: %s is larger than %d bytes", ErrMalformed, h.Name, limit)
		}
		b, err := io.ReadAll(io.LimitReader(tr, limit))
		if err != nil {
			return nil, fmt.Errorf("%w: bundle: %s: %v", ErrMalformed, h.Name, err)
		}
		switch name := h.Name; {
		case name == bundleManifest:
			if caseID != "" {
				return nil, fmt.Errorf("%w: bundle: two manifests", ErrMalformed)
			}
			if caseID, size, err = parseManifest(b); err != nil {
				return nil, err
			}
		case name == bundleKey:
			key = strings.TrimSuffix(string(b), "\n")
		case strings.HasPrefix(name, bundleEntries), strings.HasPrefix(name, bundleCheckpoints):
			if caseID == "" {
				return nil, fmt.Errorf("%w: bundle: %s before the manifest", ErrMalformed, bundleManifest)
			}
			var k string
			if n, ok := keyNumber(bundleEntries, name); ok {
				k = entryKey(caseID, n)
			} else if n, ok := keyNumber(bundleCheckpoints, name); ok {
				k = checkpointKey(caseID, n)
			} else {
				return nil, fmt.Errorf("%w: bundle: unexpected member %s", ErrMalformed, name)
			}
			if _, dup := m.objects[k]; dup {
				return nil, fmt.Errorf("%w: bundle: %s twice", ErrMalformed, name)
			}
			m.objects[k] = b
		case strings.HasPrefix(name, bundleProofs) && strings.HasSuffix(name, proofSuffix):
			n, ok := keyNumber(bundleProofs, strings.TrimSuffix(name, proofSuffix))
			if !ok {
				return nil, fmt.Errorf("%w: bundle: unexpected member %s", ErrMalformed, name)
			}
			if _, dup := proofs[n]; dup {
				return nil, fmt.Errorf("%w: bundle: %s twice", ErrMalformed, name)
			}
			proofs[n] = b
		default:
			return nil, fmt.Errorf("%w: bundle: unexpected member %s", ErrMalformed, name)
		}
	}
	if caseID == "" {
		return nil, fmt.Errorf("%w: bundle: no %s member; is this an impound ledger bundle?", ErrMalformed, bundleManifest)
	}
	opts.CheckEvidence = nil
	v, err := Verify(ctx, m, caseID, opts)
	if err != nil {
		return nil, err
	}
	if size != v.Size {
		return nil, fmt.Errorf("%w: bundle: manifest says %d entries, bundle holds %d", ErrTampered, size, v.Size)
	}
	if key != v.Key {
		return nil, fmt.Errorf("%w: bundle: key.pub is not the key the case's first entry names", ErrTampered)
	}
	verifier, err := NewVerifier(v.Key)
	if err != nil {
		return nil, err
	}
	res := &BundleResult{Verified: v}
	seqs := make([]int64, 0, len(proofs))
	for n := range proofs {
		seqs = append(seqs, n)
	}
	slices.Sort(seqs)
	for _, n := range seqs {
		e, _, err := CheckProof(proofs[n], verifier, caseID)
		if err != nil {
			return nil, fmt.Errorf("bundle: proof of entry %d: %w", n, err)
		}
		if e.Seq != n || n >= v.Size {
			return nil, fmt.Errorf("%w: bundle: proofs/%s proves entry %d", ErrTampered, seqName(n), e.Seq)
		}
		p, _ := ParseProof(proofs[n])
		if !bytes.Equal(p.Entry, v.raw[n]) {
			return nil, fmt.Errorf("%w: bundle: the proof of entry %d carries other bytes than the entry", ErrTampered, n)
		}
		res.Proofs++
	}
	return res, nil
}

func parseManifest(b []byte) (string, int64, error) {
	lines := strings.Split(string(b), "\n")
	if len(lines) != 4 || lines[0] != BundleVersion || lines[3] != "" {
		return "", 0, fmt.Errorf("%w: bundle: %s is not %s", ErrMalformed, bundleManifest, BundleVersion)
	}
	caseID, ok := strings.CutPrefix(lines[1], "case ")
	if !ok {
		return "", 0, fmt.Errorf("%w: bundle: manifest names no case", ErrMalformed)
	}
	if err := CheckCaseID(caseID); err != nil {
		return "", 0, fmt.Errorf("%w: bundle: %v", ErrMalformed, err)
	}
	sz, ok := strings.CutPrefix(lines[2], "size ")
	n, err := strconv.ParseInt(sz, 10, 64)
	if !ok || err != nil || strconv.FormatInt(n, 10) != sz {
		return "", 0, fmt.Errorf("%w: bundle: manifest size", ErrMalformed)
	}
	return caseID, n, nil
}

// mapReader is a read-only store over objects in memory.
type mapReader struct {
	objects map[string][]byte
}

var _ reader = (*mapReader)(nil)

func (m *mapReader) Get(_ context.Context, key, versionID string) (io.ReadCloser, error) {
	b, ok := m.objects[key]
	if !ok || versionID != "" {
		return nil, fmt.Errorf("%s: %w", key, vault.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m *mapReader) List(_ context.Context, prefix string) ([]string, error) {
	var out []string
	for k := range m.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out, nil
}
