package custody

import (
	"context"
	"testing"

	kmssdk "github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/impound-ir/impound/internal/awssim"
	"github.com/impound-ir/impound/internal/awssim/simtest"
)

// TestKMSSignerAgainstSimulator signs a ledger through the real SDK KMS
// client against the simulated account's KMS (CreateKey ECC_NIST_P256,
// GetPublicKey, Sign with MessageType DIGEST).
func TestKMSSignerAgainstSimulator(t *testing.T) {
	ctx := context.Background()
	e := simtest.Start(t, awssim.Options{Region: "eu-west-1"})
	acct := e.Sim.AddAccount("222222222222")
	cfg := e.ClientConfig(acct.Credentials())
	cfg.RetryMaxAttempts = 1
	c := kmssdk.NewFromConfig(cfg)
	ck, err := c.CreateKey(ctx, &kmssdk.CreateKeyInput{KeySpec: kmstypes.KeySpecEccNistP256, KeyUsage: kmstypes.KeyUsageTypeSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := LoadSigner(ctx, "awskms:///"+*ck.KeyMetadata.Arn, c)
	if err != nil {
		t.Fatal(err)
	}
	if signer.Name() != *ck.KeyMetadata.Arn {
		t.Fatalf("key name %q, want the key ARN", signer.Name())
	}
	testSignerWithLedger(t, signer)

	// A symmetric key is refused.
	sym, err := c.CreateKey(ctx, &kmssdk.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewKMSSigner(ctx, c, *sym.KeyMetadata.KeyId, ""); err == nil {
		t.Fatal("symmetric key accepted as a signer")
	}
}
