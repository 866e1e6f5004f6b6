package custody

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"golang.org/x/mod/sumdb/note"
)

// fakeKMS is an in-memory KMS holding ECDSA P-256 keys. Like KMS, it signs
// only 32-byte digests with MessageType DIGEST and ECDSA_SHA_256.
type fakeKMS struct {
	keys  map[string]*ecdsa.PrivateKey
	spec  kmstypes.KeySpec
	calls int
}

var _ KMSClient = (*fakeKMS)(nil)

const fakeKeyARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

func newFakeKMS(t testing.TB) *fakeKMS {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeKMS{keys: map[string]*ecdsa.PrivateKey{fakeKeyARN: k}, spec: kmstypes.KeySpecEccNistP256}
}

func (f *fakeKMS) key(id *string) (*ecdsa.PrivateKey, error) {
	k, ok := f.keys[aws.ToString(id)]
	if !ok {
		return nil, fmt.Errorf("NotFoundException: key %s", aws.ToString(id))
	}
	return k, nil
}

func (f *fakeKMS) GetPublicKey(_ context.Context, in *kms.GetPublicKeyInput, _ ...func(*kms.Options)) (*kms.GetPublicKeyOutput, error) {
	k, err := f.key(in.KeyId)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, err
	}
	return &kms.GetPublicKeyOutput{
		KeyId: in.KeyId, PublicKey: der, KeySpec: f.spec, KeyUsage: kmstypes.KeyUsageTypeSignVerify,
		SigningAlgorithms: []kmstypes.SigningAlgorithmSpec{kmstypes.SigningAlgorithmSpecEcdsaSha256},
	}, nil
}

func (f *fakeKMS) Sign(_ context.Context, in *kms.SignInput, _ ...func(*kms.Options)) (*kms.SignOutput, error) {
	k, err := f.key(in.KeyId)
	if err != nil {
		return nil, err
	}
	if in.MessageType != kmstypes.MessageTypeDigest || len(in.Message) != 32 || in.SigningAlgorithm != kmstypes.SigningAlgorithmSpecEcdsaSha256 {
		return nil, fmt.Errorf("ValidationException: want a SHA-256 DIGEST with ECDSA_SHA_256")
	}
	f.calls++
	sig, err := ecdsa.SignASN1(rand.Reader, k, in.Message)
	if err != nil {
		return nil, err
	}
	return &kms.SignOutput{KeyId: in.KeyId, Signature: sig, SigningAlgorithm: in.SigningAlgorithm}, nil
}

func TestKMSSigner(t *testing.T) {
	ctx := context.Background()
	fk := newFakeKMS(t)
	signer, err := LoadSigner(ctx, "awskms:///"+fakeKeyARN, fk)
	if err != nil {
		t.Fatal(err)
	}
	if signer.Name() != fakeKeyARN {
		t.Fatalf("name %q", signer.Name())
	}
	testSignerWithLedger(t, signer)
	if fk.calls == 0 {
		t.Fatal("KMS never asked to sign")
	}
	// The verifier key follows C2SP signed-note type 0x02: hash = SHA-256(SPKI)[:4].
	vkey := signer.VerifierKey()
	name, hash, data, err := splitVerifierKey(vkey)
	if err != nil || name != fakeKeyARN || data[0] != 0x02 || hash != ecdsaKeyHash(data[1:]) || hash != signer.KeyHash() {
		t.Fatalf("verifier key %s: %v", vkey, err)
	}
	// A key of the wrong spec is refused with advice.
	fk.spec = kmstypes.KeySpecRsa2048
	if _, err := NewKMSSigner(ctx, fk, fakeKeyARN, ""); err == nil || !strings.Contains(err.Error(), "ECC_NIST_P256") {
		t.Fatalf("RSA key: %v", err)
	}
}

func TestEd25519FileSigner(t *testing.T) {
	path := t.TempDir() + "/case.key"
	vkey, err := WriteKeyFiles(path, "impound.example/alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteKeyFiles(path, "x"); err == nil {
		t.Fatal("WriteKeyFiles overwrote a key")
	}
	signer, err := LoadSigner(context.Background(), "file:"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if signer.VerifierKey() != vkey {
		t.Fatalf("verifier key %q, file says %q", signer.VerifierKey(), vkey)
	}
	// The verifier key is note's own format: x/mod's verifier accepts it.
	if _, err := note.NewVerifier(vkey); err != nil {
		t.Fatal(err)
	}
	testSignerWithLedger(t, signer)
	for _, ref := range []string{"", "gcpkms://x", "awskms://"} {
		if _, err := LoadSigner(context.Background(), ref, nil); err == nil {
			t.Errorf("LoadSigner(%q) accepted", ref)
		}
	}
}

func testSignerWithLedger(t *testing.T, signer Signer) {
	t.Helper()
	ctx := context.Background()
	s := newFakeStore()
	l := openCase(t, s, "K", signer, Options{})
	appendNote(t, l, "signed")
	v, err := Verify(ctx, s, "K", VerifyOptions{Key: signer.VerifierKey()})
	if err != nil {
		t.Fatal(err)
	}
	if v.Signed != 2 {
		t.Fatalf("signed %d", v.Signed)
	}
	// A flipped signature byte fails.
	cp := s.get(checkpointKey("K", 2))
	cp[len(cp)-10] ^= 1
	s.set(checkpointKey("K", 2), cp)
	var ce *CheckpointError
	if _, err := Verify(ctx, s, "K", VerifyOptions{}); !errors.As(err, &ce) || ce.Size != 2 {
		t.Fatalf("flipped signature: %v", err)
	}
}

func TestNewVerifierRejects(t *testing.T) {
	signer := newTestSigner(t, "k")
	good := signer.VerifierKey()
	for _, vk := range []string{"", "k", "k+00000000+AQ==", strings.Replace(good, "+", "+0", 1), "a b+12345678+AQ==", good[:len(good)-4] + "AAA="} {
		if _, err := NewVerifier(vk); err == nil {
			t.Errorf("NewVerifier(%q) accepted", vk)
		}
	}
}
