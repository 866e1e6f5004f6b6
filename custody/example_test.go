package custody_test

import (
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/impound-ir/impound/custody"
)

// An entry's one encoding: fixed field order, UTC nanosecond time, the
// previous entry's leaf hash, canonical JSON details.
func ExampleFormatEntry() {
	e := &custody.Entry{
		Case:      "IR-7",
		Seq:       2,
		Time:      time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC),
		Actor:     custody.Actor{Operator: "alice", CallerARN: "arn:aws:sts::111122223333:assumed-role/IR/alice"},
		Resources: []string{"arn:aws:ec2:eu-west-1:111122223333:snapshot/snap-0abc"},
		Outcome:   custody.Succeeded,
		Prev:      tlog.RecordHash([]byte("entry 1")),
		Details:   custody.SnapshotCreated{SnapshotID: "snap-0abc", VolumeID: "vol-0def", Encrypted: true, KMSKeyID: "alias/forensics", SizeGiB: 8},
	}
	b, err := custody.FormatEntry(e)
	if err != nil {
		panic(err)
	}
	fmt.Print(string(b))
	// Output:
	// impound-custody-entry/v1
	// case IR-7
	// seq 2
	// time 2026-11-21T10:00:00.000000000Z
	// operator alice
	// caller arn:aws:sts::111122223333:assumed-role/IR/alice
	// kind snapshot-created
	// resource arn:aws:ec2:eu-west-1:111122223333:snapshot/snap-0abc
	// outcome succeeded
	// prev Lfs2xvZsrDYUKc9G34aKuCQtOmRB8Qmcj7P5jsXRCKQ=
	// details {"encrypted":true,"kms_key_id":"alias/forensics","size_gib":8,"snapshot_id":"snap-0abc","volume_id":"vol-0def"}
}

// A checkpoint body (C2SP tlog-checkpoint): origin naming the case, tree
// size, base64 root hash. The ledger signs it as a C2SP signed note.
func ExampleCheckpoint_Format() {
	c := custody.Checkpoint{Origin: custody.Origin("IR-7"), Size: 3, Root: tlog.RecordHash([]byte("root"))}
	fmt.Print(string(c.Format()))
	// Output:
	// github.com/impound-ir/impound/case/IR-7
	// 3
	// PAb5plclr2BSYfY2ZyyWINQJcx2JpFHXRV/pxK4WeCk=
}
