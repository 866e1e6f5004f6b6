package custody

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// ProofVersion is the first line of a proof (C2SP tlog-proof).
const ProofVersion = "c2sp.org/tlog-proof@v1"

// maxProofHashes bounds an inclusion path: a tree of 2^63 leaves needs 63.
const maxProofHashes = 63

// Proof is an offline-checkable proof that one entry is in a case's ledger,
// in C2SP tlog-proof form. The entry itself travels in the "extra" line so
// that its leaf hash can be recomputed; the extra data is not trusted until
// the inclusion proof and the checkpoint signature have been checked.
type Proof struct {
	Entry      []byte // the encoded entry
	Index      int64
	Path       tlog.RecordProof // from the leaf's sibling up to the root's child
	Checkpoint []byte           // signed checkpoint, verbatim
}

// FormatProof encodes p.
func FormatProof(p *Proof) []byte {
	var b bytes.Buffer
	b.WriteString(ProofVersion + "\n")
	b.WriteString("extra " + base64.StdEncoding.EncodeToString(p.Entry) + "\n")
	b.WriteString("index " + strconv.FormatInt(p.Index, 10) + "\n")
	for _, h := range p.Path {
		b.WriteString(base64.StdEncoding.EncodeToString(h[:]) + "\n")
	}
	b.WriteString("\n")
	b.Write(p.Checkpoint)
	return b.Bytes()
}

// ParseProof parses a proof, rejecting non-canonical forms. It checks
// nothing cryptographic: use CheckProof.
func ParseProof(b []byte) (*Proof, error) {
	bad := func(format string, a ...any) (*Proof, error) {
		return nil, fmt.Errorf("%w: proof: "+format, append([]any{ErrMalformed}, a...)...)
	}
	if len(b) > 2*MaxEntrySize+MaxCheckpointSize+maxProofHashes*64 {
		return bad("too long")
	}
	head, cp, ok := bytes.Cut(b, []byte("\n\n"))
	if !ok {
		return bad("no checkpoint")
	}
	lines := strings.Split(string(head), "\n")
	if len(lines) < 3 || lines[0] != ProofVersion {
		return bad("first line is not %q", ProofVersion)
	}
	p := &Proof{Checkpoint: cp}
	extra, ok := strings.CutPrefix(lines[1], "extra ")
	if !ok {
		return bad("no entry in the extra line")
	}
	var err error
	if p.Entry, err = base64.StdEncoding.Strict().DecodeString(extra); err != nil || base64.StdEncoding.EncodeToString(p.Entry) != extra || len(p.Entry) > MaxEntrySize {
		return bad("extra is not canonical base64 of an entry")
	}
	idx, ok := strings.CutPrefix(lines[2], "index ")
	if !ok {
		return bad("no index line")
	}
	if p.Index, err = strconv.ParseInt(idx, 10, 64); err != nil || p.Index < 0 || strconv.FormatInt(p.Index, 10) != idx {
		return bad("index %q is not a canonical decimal", truncate(idx, 30))
	}
	if len(lines)-3 > maxProofHashes {
		return bad("more than %d hashes", maxProofHashes)
	}
	for _, l := range lines[3:] {
		h, err := parseHash(l)
		if err != nil {
			return bad("%v", err)
		}
		p.Path = append(p.Path, h)
	}
	if !bytes.Equal(FormatProof(p), b) {
		return bad("not in canonical form")
	}
	return p, nil
}

// CheckProof checks a proof against the case's verifier key: the
// checkpoint's signature and origin, the entry's encoding, case and index,
// and the inclusion path to the checkpoint's root. It returns the entry and
// the checkpoint.
func CheckProof(b []byte, v note.Verifier, caseID string) (*Entry, Checkpoint, error) {
	p, err := ParseProof(b)
	if err != nil {
		return nil, Checkpoint{}, err
	}
	c, err := OpenCheckpoint(p.Checkpoint, v, Origin(caseID))
	if err != nil {
		return nil, Checkpoint{}, fmt.Errorf("proof: %w", err)
	}
	e, err := ParseEntry(p.Entry)
	if err != nil {
		return nil, c, fmt.Errorf("proof: %w", err)
	}
	if e.Case != caseID || e.Seq != p.Index {
		return nil, c, fmt.Errorf("%w: proof: entry is %s #%d, not %s #%d", ErrTampered, e.Case, e.Seq, caseID, p.Index)
	}
	if p.Index >= c.Size {
		return nil, c, fmt.Errorf("%w: proof: index %d beyond checkpoint size %d", ErrTampered, p.Index, c.Size)
	}
	if err := tlog.CheckRecord(p.Path, c.Size, c.Root, p.Index, EntryHash(p.Entry)); err != nil {
		return nil, c, fmt.Errorf("%w: proof: entry %d is not in the checkpointed tree: %v", ErrTampered, p.Index, err)
	}
	return e, c, nil
}

// CheckConsistency checks that the signed checkpoint newer extends the
// signed checkpoint older of the same case: both signed by v, and p (from
// Verified.ProveConsistency) proves the older tree is a prefix of the newer.
func CheckConsistency(v note.Verifier, caseID string, older, newer []byte, p tlog.TreeProof) error {
	co, err := OpenCheckpoint(older, v, Origin(caseID))
	if err != nil {
		return fmt.Errorf("older checkpoint: %w", err)
	}
	cn, err := OpenCheckpoint(newer, v, Origin(caseID))
	if err != nil {
		return fmt.Errorf("newer checkpoint: %w", err)
	}
	if co.Size > cn.Size {
		return fmt.Errorf("%w: older checkpoint covers %d entries, newer only %d", ErrTampered, co.Size, cn.Size)
	}
	if err := tlog.CheckTree(p, cn.Size, cn.Root, co.Size, co.Root); err != nil {
		return &InconsistentError{Size: co.Size}
	}
	return nil
}
