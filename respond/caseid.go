package respond

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// NewCaseID returns a case ID that is readable, sorts by creation time and is
// unique without coordination: IR-YYYYMMDD-HHMMSS-xxxxxx (UTC, 24 random bits).
func NewCaseID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "IR-" + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}
