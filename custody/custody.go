// Package custody keeps a case's chain-of-custody ledger: every action taken
// on a case, recorded once, in order, signed, in a form anyone holding the
// ledger can check without trusting impound or AWS.
//
// # Guarantees
//
//   - One encoding: an entry has exactly one byte encoding (see
//     [FormatEntry]); [ParseEntry] rejects every other form, so two readers
//     can never disagree on what was recorded.
//   - Chained and logged: each entry carries the hash of the entry before it,
//     and the entries are the leaves of an RFC 6962 Merkle tree
//     (golang.org/x/mod/sumdb/tlog). An edit, a removal or a swap breaks the
//     chain and changes the tree.
//   - Signed: checkpoints (C2SP tlog-checkpoint, signed as a C2SP signed
//     note) commit to the whole tree. The case's first entry names the one
//     key allowed to sign it; other keys are refused.
//   - Written once: entries and checkpoints are write-once objects in the
//     case's vault. Concurrent writers on one case produce one gapless log:
//     a writer that loses the race for entry N re-reads and appends at N+1.
//   - Verifiable offline: [Verify] checks encoding, chain, tree and every
//     checkpoint and names the first bad entry; [Export] writes a
//     self-contained bundle that [VerifyBundle] checks with no AWS access.
//
// # Backwards compatibility
//
// The entry encoding is versioned on its first line ("impound-custody-entry/v1").
// A v1 entry will verify with every later impound. Unknown entry kinds and
// unknown detail fields still verify; their details surface as [RawDetails].
package custody

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/impound-ir/impound/vault"
)

// Errors that are part of the API. Callers test them with errors.Is.
var (
	// ErrMalformed: bytes that are not a canonical entry, checkpoint, proof or bundle.
	ErrMalformed = errors.New("custody: malformed")
	// ErrNoCase: the case has no ledger yet; its first entry must be a CaseOpened.
	ErrNoCase = errors.New("custody: case has no ledger")
	// ErrCaseExists: a CaseOpened entry was appended to a case that is already open.
	ErrCaseExists = errors.New("custody: case already opened")
	// ErrWrongKey: the signing or verifying key is not the one the case's first entry names.
	ErrWrongKey = errors.New("custody: key is not the case's signing key")
	// ErrTampered: the ledger fails verification. Every verification error wraps it.
	ErrTampered = errors.New("custody: ledger fails verification")
	// ErrUnsigned: entries exist beyond the latest signed checkpoint.
	ErrUnsigned = errors.New("custody: entries not covered by a signed checkpoint")
)

// Size caps. Parsers reject anything larger before looking at it.
const (
	MaxEntrySize      = 64 << 10 // one encoded entry
	MaxDetailsSize    = 48 << 10 // the details line of an entry
	MaxErrorSize      = 4 << 10  // an entry's error text; longer text is truncated on Append
	MaxResources      = 256      // resource lines in one entry
	MaxCheckpointSize = 16 << 10 // one signed checkpoint
	maxTextSize       = 2048     // one field value other than details and error
)

// OriginPrefix starts the origin line of every checkpoint; the case ID follows.
const OriginPrefix = "github.com/impound-ir/impound/case/"

// Origin is the checkpoint origin line of a case's ledger.
func Origin(caseID string) string { return OriginPrefix + caseID }

// CheckCaseID reports whether id can name a case (vault.CheckCaseID: 1 to
// 64 letters, digits, '.', '_' or '-', starting with a letter or digit).
func CheckCaseID(id string) error {
	if err := vault.CheckCaseID(id); err != nil {
		return fmt.Errorf("custody: %w", err)
	}
	return nil
}

// Key layout of a case's ledger in its vault, in the case's ledger area
// (vault.AreaLedger). All key building is here.
//
//	cases/<case>/ledger/entries/<20-digit sequence number>
//	cases/<case>/ledger/checkpoints/<20-digit tree size>
const seqDigits = 20

func ledgerPrefix(caseID string) string {
	return vault.CasePrefix(caseID) + vault.AreaLedger + "/"
}
func entriesPrefix(caseID string) string    { return ledgerPrefix(caseID) + "entries/" }
func checkpointPrefix(caseID string) string { return ledgerPrefix(caseID) + "checkpoints/" }

func entryKey(caseID string, seq int64) string {
	return entriesPrefix(caseID) + fmt.Sprintf("%0*d", seqDigits, seq)
}

func checkpointKey(caseID string, size int64) string {
	return checkpointPrefix(caseID) + fmt.Sprintf("%0*d", seqDigits, size)
}

// keyNumber parses the 20-digit number at the end of a key under prefix.
func keyNumber(prefix, key string) (int64, bool) {
	s, ok := strings.CutPrefix(key, prefix)
	if !ok || len(s) != seqDigits {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
