package custody

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is the body of a signed checkpoint (C2SP tlog-checkpoint): the
// ledger's origin, tree size and root hash. impound writes no extension lines.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// Format returns the checkpoint body: three lines.
func (c Checkpoint) Format() []byte {
	return []byte(c.Origin + "\n" + strconv.FormatInt(c.Size, 10) + "\n" + base64.StdEncoding.EncodeToString(c.Root[:]) + "\n")
}

// ParseCheckpoint parses a checkpoint body, rejecting non-canonical forms
// and extension lines.
func ParseCheckpoint(body []byte) (Checkpoint, error) {
	var c Checkpoint
	bad := func(format string, a ...any) (Checkpoint, error) {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint: "+format, append([]any{ErrMalformed}, a...)...)
	}
	if len(body) > MaxCheckpointSize || !utf8.Valid(body) {
		return bad("invalid UTF-8 or too long")
	}
	lines := strings.Split(string(body), "\n")
	if len(lines) != 4 || lines[3] != "" {
		return bad("want exactly origin, size and root hash lines")
	}
	c.Origin = lines[0]
	if err := checkToken("origin", c.Origin); err != nil || strings.Contains(c.Origin, "+") {
		return bad("origin %q", truncate(c.Origin, 80))
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != lines[1] {
		return bad("size %q is not a canonical decimal", truncate(lines[1], 40))
	}
	c.Size = n
	if c.Root, err = parseHash(lines[2]); err != nil {
		return bad("root: %v", err)
	}
	return c, nil
}

// SignCheckpoint returns c as a signed note.
func SignCheckpoint(c Checkpoint, s note.Signer) ([]byte, error) {
	msg, err := note.Sign(&note.Note{Text: string(c.Format())}, s)
	if err != nil {
		return nil, fmt.Errorf("custody: sign checkpoint of %s at size %d: %w", c.Origin, c.Size, err)
	}
	return msg, nil
}

// OpenCheckpoint checks a signed checkpoint: canonical signed-note form, one
// signature, by v, over a canonical checkpoint body whose origin is origin
// (any origin when origin is "").
func OpenCheckpoint(msg []byte, v note.Verifier, origin string) (Checkpoint, error) {
	if len(msg) > MaxCheckpointSize {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint longer than %d bytes", ErrMalformed, MaxCheckpointSize)
	}
	if err := checkSignedNote(msg); err != nil {
		return Checkpoint{}, err
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		if errors.As(err, &unverified) {
			return Checkpoint{}, fmt.Errorf("%w: checkpoint not signed by %s (%08x)", ErrWrongKey, v.Name(), v.KeyHash())
		}
		return Checkpoint{}, fmt.Errorf("checkpoint signature: %w", err)
	}
	if len(n.Sigs) != 1 || len(n.UnverifiedSigs) != 0 {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint: want exactly one signature", ErrMalformed)
	}
	c, err := ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, err
	}
	if origin != "" && c.Origin != origin {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint origin %q, want %q", ErrMalformed, c.Origin, origin)
	}
	return c, nil
}

// checkSignedNote rejects signed notes that note.Open would accept but that
// are not in the one form impound writes: the base64 of a signature must be
// canonical (no stray padding bits), so that no byte of a stored checkpoint
// can change without failing verification.
func checkSignedNote(msg []byte) error {
	if !utf8.Valid(msg) {
		return fmt.Errorf("%w: checkpoint: invalid UTF-8", ErrMalformed)
	}
	i := bytes.LastIndex(msg, []byte("\n\n"))
	if i < 0 {
		return fmt.Errorf("%w: checkpoint: no signature block", ErrMalformed)
	}
	sigs := msg[i+2:]
	if len(sigs) == 0 || sigs[len(sigs)-1] != '\n' {
		return fmt.Errorf("%w: checkpoint: signature block does not end in a newline", ErrMalformed)
	}
	for _, line := range strings.Split(string(sigs[:len(sigs)-1]), "\n") {
		rest, ok := strings.CutPrefix(line, "— ")
		if !ok {
			return fmt.Errorf("%w: checkpoint: malformed signature line", ErrMalformed)
		}
		name, b64, ok := strings.Cut(rest, " ")
		if !ok || name == "" || strings.Contains(b64, " ") {
			return fmt.Errorf("%w: checkpoint: malformed signature line", ErrMalformed)
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(b64)
		if err != nil || base64.StdEncoding.EncodeToString(raw) != b64 || len(raw) < 5 {
			return fmt.Errorf("%w: checkpoint: signature is not canonical base64", ErrMalformed)
		}
	}
	return nil
}
