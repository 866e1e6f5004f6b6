package awssim_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/impound-ir/impound/internal/awssim"
)

func TestKMSSignVerifyECDSA(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := kms.NewFromConfig(e.cfg(e.forensics))
	ck, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: kmstypes.KeySpecEccNistP256, KeyUsage: kmstypes.KeyUsageTypeSignVerify, Description: aws.String("ledger")})
	if err != nil {
		t.Fatal(err)
	}
	md := ck.KeyMetadata
	if md.KeySpec != kmstypes.KeySpecEccNistP256 || *md.AWSAccountId != forensicsID || md.KeyManager != kmstypes.KeyManagerTypeCustomer ||
		len(md.SigningAlgorithms) != 1 || md.SigningAlgorithms[0] != kmstypes.SigningAlgorithmSpecEcdsaSha256 || md.CreationDate == nil {
		t.Fatalf("key metadata %+v", md)
	}
	pk, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: md.KeyId})
	if err != nil {
		t.Fatal(err)
	}
	pubAny, err := x509.ParsePKIXPublicKey(pk.PublicKey)
	if err != nil {
		t.Fatalf("public key is not DER SubjectPublicKeyInfo: %v", err)
	}
	pub := pubAny.(*ecdsa.PublicKey)

	msg := []byte("custody ledger checkpoint\n42\n")
	digest := sha256.Sum256(msg)

	raw, err := c.Sign(ctx, &kms.SignInput{KeyId: md.Arn, Message: msg, MessageType: kmstypes.MessageTypeRaw, SigningAlgorithm: kmstypes.SigningAlgorithmSpecEcdsaSha256})
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(pub, digest[:], raw.Signature) {
		t.Fatal("RAW signature does not verify over SHA-256(message)")
	}
	dg, err := c.Sign(ctx, &kms.SignInput{KeyId: md.KeyId, Message: digest[:], MessageType: kmstypes.MessageTypeDigest, SigningAlgorithm: kmstypes.SigningAlgorithmSpecEcdsaSha256})
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(pub, digest[:], dg.Signature) {
		t.Fatal("DIGEST signature does not verify over the digest itself")
	}
	rehashed := sha256.Sum256(digest[:])
	if ecdsa.VerifyASN1(pub, rehashed[:], dg.Signature) {
		t.Fatal("DIGEST was hashed again, as if it were RAW")
	}
	_, err = c.Sign(ctx, &kms.SignInput{KeyId: md.KeyId, Message: msg, MessageType: kmstypes.MessageTypeDigest, SigningAlgorithm: kmstypes.SigningAlgorithmSpecEcdsaSha256})
	wantCode(t, err, "ValidationException")
	_, err = c.Sign(ctx, &kms.SignInput{KeyId: md.KeyId, Message: msg, SigningAlgorithm: kmstypes.SigningAlgorithmSpecRsassaPssSha256})
	wantCode(t, err, "InvalidKeyUsageException")

	v, err := c.Verify(ctx, &kms.VerifyInput{KeyId: md.KeyId, Message: digest[:], MessageType: kmstypes.MessageTypeDigest, Signature: raw.Signature, SigningAlgorithm: kmstypes.SigningAlgorithmSpecEcdsaSha256})
	if err != nil || !v.SignatureValid {
		t.Fatalf("Verify = %+v, %v", v, err)
	}
	_, err = c.Verify(ctx, &kms.VerifyInput{KeyId: md.KeyId, Message: []byte("other"), MessageType: kmstypes.MessageTypeRaw, Signature: raw.Signature, SigningAlgorithm: kmstypes.SigningAlgorithmSpecEcdsaSha256})
	var inv *kmstypes.KMSInvalidSignatureException
	if !errors.As(err, &inv) {
		t.Fatalf("Verify of a wrong message: %v, want KMSInvalidSignatureException", err)
	}
}

func TestKMSSignRSA(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := kms.NewFromConfig(e.cfg(e.forensics))
	ck, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: kmstypes.KeySpecRsa2048, KeyUsage: kmstypes.KeyUsageTypeSignVerify})
	if err != nil {
		t.Fatal(err)
	}
	pk, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: ck.KeyMetadata.KeyId})
	if err != nil {
		t.Fatal(err)
	}
	pubAny, err := x509.ParsePKIXPublicKey(pk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := pubAny.(*rsa.PublicKey)
	msg := []byte("report v1")
	d := sha256.Sum256(msg)
	for _, alg := range []kmstypes.SigningAlgorithmSpec{kmstypes.SigningAlgorithmSpecRsassaPkcs1V15Sha256, kmstypes.SigningAlgorithmSpecRsassaPssSha256} {
		for _, mt := range []kmstypes.MessageType{kmstypes.MessageTypeRaw, kmstypes.MessageTypeDigest} {
			in := msg
			if mt == kmstypes.MessageTypeDigest {
				in = d[:]
			}
			out, err := c.Sign(ctx, &kms.SignInput{KeyId: ck.KeyMetadata.KeyId, Message: in, MessageType: mt, SigningAlgorithm: alg})
			if err != nil {
				t.Fatal(err)
			}
			if alg == kmstypes.SigningAlgorithmSpecRsassaPssSha256 {
				err = rsa.VerifyPSS(pub, crypto.SHA256, d[:], out.Signature, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
			} else {
				err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], out.Signature)
			}
			if err != nil {
				t.Fatalf("%s %s: %v", alg, mt, err)
			}
		}
	}
	_, err = c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String("alias/aws/ebs")})
	wantCode(t, err, "UnsupportedOperationException")
}

func TestKMSCrossAccountAndGrants(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mk := kms.NewFromConfig(e.cfg(e.member))
	fk := kms.NewFromConfig(e.cfg(e.forensics))

	dk, err := mk.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/aws/ebs")})
	if err != nil {
		t.Fatal(err)
	}
	if dk.KeyMetadata.KeyManager != kmstypes.KeyManagerTypeAws || *dk.KeyMetadata.Arn != e.member.EBSDefaultKeyARN() {
		t.Fatalf("aws/ebs = %+v", dk.KeyMetadata)
	}
	_, err = fk.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(e.member.EBSDefaultKeyARN())})
	wantCode(t, err, "AccessDeniedException")
	_, err = fk.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/nope")})
	wantCode(t, err, "NotFoundException")

	// A key policy naming the forensics account lets it use the key.
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::` + memberID + `:root"},"Action":"kms:*","Resource":"*"},` +
		`{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam::` + forensicsID + `:root"]},"Action":["kms:Decrypt","kms:DescribeKey","kms:CreateGrant"],"Resource":"*"}]}`
	shared, err := mk.CreateKey(ctx, &kms.CreateKeyInput{Policy: aws.String(policy)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fk.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: shared.KeyMetadata.Arn}); err != nil {
		t.Fatalf("forensics DescribeKey of a key its policy allows: %v", err)
	}
	// A bare key ID names the caller's own keys.
	_, err = fk.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: shared.KeyMetadata.KeyId})
	wantCode(t, err, "NotFoundException")

	// A private key, reachable only through a grant.
	private, err := e.member.CreateKey(awssim.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vol, _ := e.member.CreateVolume(awssim.VolumeOptions{SizeGiB: 1, Encryption: awssim.EncryptionCMK, KMSKeyID: private.ARN()})
	_ = vol.WriteRandom(0, 1<<20, 5)
	ec := ec2.NewFromConfig(e.cfg(e.member))
	snap, err := ec.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol.ID())})
	if err != nil {
		t.Fatal(err)
	}
	waitCompleted(t, ec, *snap.SnapshotId)
	if _, err := ec.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{SnapshotId: snap.SnapshotId,
		Attribute: "createVolumePermission", OperationType: "add", UserIds: []string{forensicsID}}); err != nil {
		t.Fatal(err)
	}
	fe := ebs.NewFromConfig(e.cfg(e.forensics))
	_, err = fe.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: snap.SnapshotId})
	var ad *ebstypes.AccessDeniedException
	if !errors.As(err, &ad) {
		t.Fatalf("before grant: %v, want AccessDeniedException", err)
	}
	g, err := mk.CreateGrant(ctx, &kms.CreateGrantInput{
		KeyId: aws.String(private.ID()), GranteePrincipal: aws.String("arn:aws:iam::" + forensicsID + ":root"),
		Operations:        []kmstypes.GrantOperation{kmstypes.GrantOperationDecrypt, kmstypes.GrantOperationDescribeKey},
		Name:              aws.String("impound-case-7"),
		RetiringPrincipal: aws.String("arn:aws:iam::" + forensicsID + ":root"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(*g.GrantId) != 64 || *g.GrantToken == "" {
		t.Fatalf("grant %q %q", *g.GrantId, *g.GrantToken)
	}
	lg, err := mk.ListGrants(ctx, &kms.ListGrantsInput{KeyId: aws.String(private.ID())})
	if err != nil || len(lg.Grants) != 1 || *lg.Grants[0].GrantId != *g.GrantId {
		t.Fatalf("ListGrants = %+v, %v", lg, err)
	}
	// The grant operations take a key ID or key ARN, never an alias.
	_, err = mk.ListGrants(ctx, &kms.ListGrantsInput{KeyId: aws.String("alias/impound-transfer")})
	wantCode(t, err, "NotFoundException")
	_, err = mk.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String("arn:aws:kms:" + e.Sim.Region() + ":" + memberID + ":alias/impound-transfer"),
		GranteePrincipal: aws.String(forensicsID), Operations: []kmstypes.GrantOperation{kmstypes.GrantOperationDecrypt}})
	wantCode(t, err, "NotFoundException")
	sum, _, err := readImage(ctx, fe, *snap.SnapshotId)
	if err != nil {
		t.Fatalf("after grant: %v", err)
	}
	img, _ := vol.Image()
	if want := sha256Of(t, img); sum != want {
		t.Fatalf("image %s, want %s", sum, want)
	}
	// The grantee retires the grant when the case closes; access ends.
	if _, err := fk.RetireGrant(ctx, &kms.RetireGrantInput{GrantToken: g.GrantToken}); err != nil {
		t.Fatal(err)
	}
	_, err = fk.RetireGrant(ctx, &kms.RetireGrantInput{GrantToken: g.GrantToken})
	wantCode(t, err, "InvalidGrantTokenException")
	_, err = fe.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: snap.SnapshotId})
	if !errors.As(err, &ad) {
		t.Fatalf("after retiring: %v, want AccessDeniedException", err)
	}
	// A grantee that is not the retiring principal may retire the grant only
	// when RetireGrant is one of its operations.
	g1, err := mk.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String(private.ARN()), GranteePrincipal: aws.String(forensicsID),
		Operations: []kmstypes.GrantOperation{kmstypes.GrantOperationDecrypt}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = fk.RetireGrant(ctx, &kms.RetireGrantInput{GrantToken: g1.GrantToken})
	wantCode(t, err, "AccessDeniedException")
	g1r, err := mk.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String(private.ARN()), GranteePrincipal: aws.String(forensicsID),
		Operations: []kmstypes.GrantOperation{kmstypes.GrantOperationDecrypt, kmstypes.GrantOperationRetireGrant}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fk.RetireGrant(ctx, &kms.RetireGrantInput{GrantToken: g1r.GrantToken}); err != nil {
		t.Fatalf("grantee with RetireGrant: %v", err)
	}
	if _, err := mk.RetireGrant(ctx, &kms.RetireGrantInput{KeyId: aws.String(private.ARN()), GrantId: g1.GrantId}); err != nil {
		t.Fatalf("key owner: %v", err)
	}
	// Retiring by key and grant ID works too.
	g2, err := mk.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String(private.ARN()), GranteePrincipal: aws.String(forensicsID),
		Operations: []kmstypes.GrantOperation{kmstypes.GrantOperationDecrypt}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mk.RetireGrant(ctx, &kms.RetireGrantInput{KeyId: aws.String(private.ARN()), GrantId: g2.GrantId}); err != nil {
		t.Fatal(err)
	}
	lg, _ = mk.ListGrants(ctx, &kms.ListGrantsInput{KeyId: aws.String(private.ID())})
	if len(lg.Grants) != 0 {
		t.Fatalf("grants left: %+v", lg.Grants)
	}
}
