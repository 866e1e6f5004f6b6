package acquire_test

import (
	"fmt"
	"os"

	"github.com/impound-ir/impound/acquire"
)

// The block map stored beside every image: which 512 KiB blocks held data.
func ExampleBlockMap() {
	m := &acquire.BlockMap{Size: 3 << 20, BlockSize: acquire.BlockSize, Runs: []acquire.Extent{{First: 0, Count: 2}, {First: 5, Count: 1}}}
	text, _ := m.MarshalText()
	os.Stdout.Write(text)
	parsed, err := acquire.ParseBlockMap(text)
	fmt.Println(err, parsed.Blocks(), parsed.Written(), parsed.Contains(1), parsed.Contains(2))
	// Output:
	// impound-blockmap/1
	// size 3145728
	// block-size 524288
	// runs 2
	// 0 2
	// 5 1
	// <nil> 6 3 true false
}

func ExampleParseHashes() {
	h, err := acquire.ParseHashes("md5,SHA-1")
	fmt.Println(h, err)
	// Output: [sha256 md5 sha1] <nil>
}

func ExampleDefaultKey() {
	k, _ := acquire.DefaultKey("IR-2026-001", acquire.SourceInfo{SnapshotID: "snap-0123456789abcdef0"}, acquire.CompressZstd)
	fmt.Println(k)
	k, _ = acquire.DefaultKey("IR-2026-001", acquire.SourceInfo{Kind: acquire.KindDevice, DevicePath: "/dev/xvdf"}, acquire.CompressNone)
	fmt.Println(k)
	// Output:
	// cases/IR-2026-001/evidence/snap-0123456789abcdef0.img.zst
	// cases/IR-2026-001/evidence/xvdf.img
}
