package vault_test

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/impound-ir/impound/vault"
)

// Put streams content into a store and returns the receipt the custody
// ledger records; Verify re-reads the version and compares.
func ExamplePut() {
	ctx := context.Background()
	st := vault.NewMemory()
	key, _ := vault.CaseKey("IR-2026-001", vault.AreaEvidence, "vol-0abc.img")
	r, err := vault.Put(ctx, st, key, strings.NewReader("disk image bytes"), vault.PutOptions{})
	if err != nil {
		panic(err)
	}
	fmt.Println(r.Key)
	fmt.Println(r.Size, r.SHA256)
	fmt.Println(r.RetentionMode, vault.Verify(ctx, st, r))

	// The same content again: an idempotent retry, the same version.
	again, _ := vault.Put(ctx, st, key, strings.NewReader("disk image bytes"), vault.PutOptions{})
	fmt.Println(again.VersionID == r.VersionID)

	// Other content: refused.
	_, err = vault.Put(ctx, st, key, strings.NewReader("something else"), vault.PutOptions{})
	fmt.Println(errors.Is(err, vault.ErrExists))
	// Output:
	// cases/IR-2026-001/evidence/vol-0abc.img
	// 16 5f333e97f50fa03cfe35902ad05d1acae17c2f0cd2b134d67173728d7a2395d6
	// COMPLIANCE <nil>
	// true
	// true
}

// A MismatchError names what differs between a receipt and the object.
func ExampleVerify() {
	ctx := context.Background()
	st := vault.NewMemory()
	r, _ := vault.Put(ctx, st, "cases/c/evidence/x", strings.NewReader("abc"), vault.PutOptions{})
	r.Size = 4 // a receipt that does not match what is stored
	err := vault.Verify(ctx, st, r)
	var me *vault.MismatchError
	fmt.Println(errors.As(err, &me), me.WantSize, me.GotSize, me.WantSHA256 == me.GotSHA256)
	// Output:
	// true 4 3 true
}
