package custody

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// KMSClient is the part of the AWS KMS API the KMS signer uses; *kms.Client
// satisfies it.
type KMSClient interface {
	GetPublicKey(ctx context.Context, in *kms.GetPublicKeyInput, optFns ...func(*kms.Options)) (*kms.GetPublicKeyOutput, error)
	Sign(ctx context.Context, in *kms.SignInput, optFns ...func(*kms.Options)) (*kms.SignOutput, error)
}

// kmsSignTimeout bounds one KMS Sign call.
const kmsSignTimeout = 30 * time.Second

// KMSSigner signs checkpoints with an AWS KMS asymmetric key (ECC_NIST_P256,
// SIGN_VERIFY): the private key never leaves KMS. Signatures are ECDSA over
// SHA-256 of the note text, ASN.1 DER, signature type 0x02 of C2SP
// signed-note.
type KMSSigner struct {
	// note.Signer's Sign has no context: the signer keeps the one it was
	// created with, for every KMS call it makes.
	ctx    context.Context
	client KMSClient
	keyID  string
	name   string
	pub    *ecdsa.PublicKey
	hash   uint32
	vkey   string
}

// NewKMSSigner returns a signer for the KMS key keyID (ID, alias or ARN).
// name is the key name in signatures; "" uses the key's ARN. ctx is used
// for every KMS call the signer makes.
func NewKMSSigner(ctx context.Context, c KMSClient, keyID, name string) (*KMSSigner, error) {
	out, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(keyID)})
	if err != nil {
		return nil, fmt.Errorf("custody: KMS key %s: get public key: %w", keyID, err)
	}
	if out.KeySpec != kmstypes.KeySpecEccNistP256 || out.KeyUsage != kmstypes.KeyUsageTypeSignVerify {
		return nil, fmt.Errorf("custody: KMS key %s is %s/%s; create one with KeySpec ECC_NIST_P256 and KeyUsage SIGN_VERIFY", keyID, out.KeySpec, out.KeyUsage)
	}
	if len(out.SigningAlgorithms) > 0 && !slices.Contains(out.SigningAlgorithms, kmstypes.SigningAlgorithmSpecEcdsaSha256) {
		return nil, fmt.Errorf("custody: KMS key %s does not offer ECDSA_SHA_256", keyID)
	}
	pub, err := parseP256(out.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("custody: KMS key %s: %w", keyID, err)
	}
	if name == "" {
		name = aws.ToString(out.KeyId)
		if name == "" {
			name = keyID
		}
	}
	vkey, err := ECDSAVerifierKey(name, pub)
	if err != nil {
		return nil, err
	}
	return &KMSSigner{
		ctx: ctx, client: c, keyID: keyID, name: name, pub: pub,
		hash: ecdsaKeyHash(out.PublicKey), vkey: vkey,
	}, nil
}

func (s *KMSSigner) Name() string        { return s.name }
func (s *KMSSigner) KeyHash() uint32     { return s.hash }
func (s *KMSSigner) VerifierKey() string { return s.vkey }

// Sign signs SHA-256(msg) in KMS (MessageType DIGEST) and checks the answer
// against the public key before returning it.
func (s *KMSSigner) Sign(msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	ctx, cancel := context.WithTimeout(s.ctx, kmsSignTimeout)
	defer cancel()
	out, err := s.client.Sign(ctx, &kms.SignInput{
		KeyId:            aws.String(s.keyID),
		Message:          d[:],
		MessageType:      kmstypes.MessageTypeDigest,
		SigningAlgorithm: kmstypes.SigningAlgorithmSpecEcdsaSha256,
	})
	if err != nil {
		return nil, fmt.Errorf("custody: KMS key %s: sign: %w", s.keyID, err)
	}
	if !ecdsa.VerifyASN1(s.pub, d[:], out.Signature) {
		return nil, fmt.Errorf("custody: KMS key %s returned a signature its public key does not verify", s.keyID)
	}
	return out.Signature, nil
}
