package respond

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/impound-ir/impound/acquire"
)

// keepRecorded makes a resumed case keep the evidence configuration its
// first entry records (hashes, compression, retention, legal hold, the
// objects' KMS key, the CloudTrail window), whatever the options of this
// run say: every object of a case is kept alike, and the report's "options
// used" stay true. It returns the options this run gave differently, for
// the caller to warn about. The snapshot transfer's keys are the recorded
// ones only when this run names none. How the instance is contained is not
// part of it: isolation is an action of a run (a task resuming a case the
// Lambda isolated runs without it).
func keepRecorded(o *Options, attrs map[string]string, now time.Time) []string {
	var differ []string
	set := func(name string, differs bool, apply func()) {
		if differs {
			differ = append(differ, name)
		}
		apply()
	}
	// A case opened by Open records its whole configuration, leaving out
	// only what is off or empty; one opened otherwise (impound ledger open,
	// a first impound acquire) records part of it, and only that part binds.
	full := attrs["retention_mode"] != ""
	has := func(k string) bool { _, ok := attrs[k]; return full || ok }
	if v, ok := attrs["hashes"]; ok {
		rec := strings.Split(v, ",")
		given := append([]string{acquire.SHA256}, without(o.Hashes, acquire.SHA256)...)
		set("hashes", !slices.Equal(rec, given), func() { o.Hashes = rec })
	}
	if rec := attrs["compression"]; has("compression") {
		set("compression", rec != o.Compression, func() { o.Compression = rec })
	}
	if v, ok := attrs["retention_mode"]; ok {
		set("retention mode", v != retentionMode(o.Put), func() { o.Put.RetentionMode = v })
	}
	if days, _ := strconv.Atoi(attrs["retention_days"]); has("retention_days") {
		set("retention days", days != o.RetentionDays, func() {
			o.RetentionDays, o.Put.RetainUntil = days, time.Time{}
			if days > 0 {
				o.Put.RetainUntil = now.UTC().AddDate(0, 0, days)
			}
		})
	}
	if hold := attrs["legal_hold"] == "true"; has("legal_hold") {
		set("legal hold", hold != o.Put.LegalHold, func() { o.Put.LegalHold = hold })
	}
	if key := attrs["kms_key"]; has("kms_key") {
		set("object KMS key", key != o.Put.KMSKeyID, func() { o.Put.KMSKeyID = key })
	}
	// The snapshot transfer's keys are the recorded ones unless this run
	// names others: a key that did not work is fixed by naming another and
	// re-running (each copy records the key it used).
	if fk := attrs["forensics_kms_key"]; o.ForensicsKMSKey == "" {
		o.ForensicsKMSKey = fk
	}
	if mk := attrs["member_kms_key"]; o.MemberKMSKey == "" {
		o.MemberKMSKey = mk
	}
	if v, ok := attrs["cloudtrail_lookback"]; ok {
		if d, err := time.ParseDuration(v); err == nil {
			given := o.CloudTrailLookBack
			if given == 0 {
				given = d // the default, when this run gave none
			}
			set("CloudTrail look-back", given != d, func() { o.CloudTrailLookBack = d })
		}
	}
	return differ
}
