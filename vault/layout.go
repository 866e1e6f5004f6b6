package vault

import (
	"fmt"
	"regexp"
	"strings"
)

// Areas of a case in the vault, after the forensics-account structure of
// AWS's incident-response guidance (incoming evidence, active
// investigation, legal hold, reports). Objects are written once and never
// move, so a stage is a key prefix written by the step that produces it,
// and legal hold is a flag on object versions (SetLegalHold), not a place.
const (
	AreaEvidence      = "evidence"      // evidence as acquired: images, memory, metadata
	AreaInvestigation = "investigation" // examiners' derived artefacts
	AreaLedger        = "ledger"        // the custody ledger's entries and checkpoints
	AreaReports       = "reports"       // rendered reports
)

var caseIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CheckCaseID reports whether id can name a case: 1–64 letters, digits,
// '.', '_' or '-', starting with a letter or digit.
func CheckCaseID(id string) error {
	if !caseIDRe.MatchString(id) || strings.Contains(id, "..") {
		return fmt.Errorf("vault: case ID %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", id)
	}
	return nil
}

// CaseKey returns the key of name in one area of a case:
// cases/<case>/<area>/<name>. Every key impound writes carries its case.
func CaseKey(caseID, area, name string) (string, error) {
	if err := CheckCaseID(caseID); err != nil {
		return "", err
	}
	switch area {
	case AreaEvidence, AreaInvestigation, AreaLedger, AreaReports:
	default:
		return "", fmt.Errorf("vault: unknown area %q", area)
	}
	key := "cases/" + caseID + "/" + area + "/" + name
	if err := CheckKey(key); err != nil {
		return "", err
	}
	return key, nil
}

// CasePrefix is the prefix under which all of a case's keys lie.
func CasePrefix(caseID string) string { return "cases/" + caseID + "/" }
