package motocheck

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/impound-ir/impound/internal/awssim"
)

// The two divergences docs/simulator.md gives as the reason impound carries
// its own simulator: moto's EBS direct ListSnapshotBlocks answer cannot be
// decoded by the Go SDK, and moto's KMS Sign treats MessageType=DIGEST as
// RAW. Each is pinned here in both directions: the simulator must behave as
// AWS documents, and moto must still be wrong in exactly the recorded way.
// When moto's answer changes (fixed, or broken differently), these tests
// fail, so the note in docs/simulator.md and the reason for the simulator
// get revisited rather than going stale.

// movedOn is appended to every failure about moto's side.
const movedOn = "moto's behaviour changed (was it fixed?): revisit this divergence and docs/simulator.md, " +
	"and compare this operation field by field with the simulator instead"

// mustDiverge is one field on which moto is known to differ from AWS.
type mustDiverge struct {
	reason string
	aws    any // what AWS documents; the simulator must give it
	moto   any // what moto gives today
}

// simulatorAsAWS checks the simulator's whole record against AWS's
// documented answers: agreed holds the fields moto gets right too, known the
// divergences. It runs whether or not moto is there.
func simulatorAsAWS(t *testing.T, sim, agreed record, known map[string]mustDiverge) {
	t.Helper()
	want := maps.Clone(agreed)
	for k, d := range known {
		want[k] = d.aws
	}
	keys := maps.Clone(want)
	maps.Copy(keys, sim)
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if !reflect.DeepEqual(sim[k], want[k]) {
			t.Errorf("%s: simulator %#v, AWS documents %#v", k, sim[k], want[k])
		}
	}
}

// compareDivergent compares two records field by field: a field with no
// known divergence must be equal on both; a known one must be the recorded
// wrong value on moto (the simulator's side is simulatorAsAWS's).
func compareDivergent(t *testing.T, sim, moto record, known map[string]mustDiverge) {
	t.Helper()
	keys := maps.Clone(sim)
	maps.Copy(keys, moto)
	for k := range known {
		keys[k] = nil
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		d, ok := known[k]
		if !ok {
			if !reflect.DeepEqual(sim[k], moto[k]) {
				t.Errorf("%s: simulator %#v, moto %#v", k, sim[k], moto[k])
			}
			continue
		}
		if !reflect.DeepEqual(moto[k], d.moto) {
			t.Errorf("%s: moto now gives %#v, recorded %#v (%s): %s", k, moto[k], d.moto, d.reason, movedOn)
		}
	}
}

// --- KMS Sign with MessageType=DIGEST -------------------------------------

// kmsSignScenario signs with an ECC_NIST_P256 key in RAW and DIGEST mode and
// checks each signature with crypto/ecdsa against the key GetPublicKey
// returns, which is how anyone holding only the public key (a court's
// expert verifying the custody ledger) checks it.
func kmsSignScenario(t *testing.T, tg target) record {
	ctx := context.Background()
	c := kms.NewFromConfig(tg.member)
	r := record{}
	key, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: kmstypes.KeySpecEccNistP256, KeyUsage: kmstypes.KeyUsageTypeSignVerify,
		Description: aws.String("impound ledger")})
	if err != nil {
		t.Fatalf("%s: create key: %v", tg.name, err)
	}
	id := key.KeyMetadata.KeyId
	r["CreateKey.KeySpec"] = string(key.KeyMetadata.KeySpec)
	r["CreateKey.KeyUsage"] = string(key.KeyMetadata.KeyUsage)
	r["CreateKey.SigningAlgorithms"] = fmt.Sprint(key.KeyMetadata.SigningAlgorithms)

	pk, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: id})
	if err != nil {
		t.Fatalf("%s: get public key: %v", tg.name, err)
	}
	parsed, err := x509.ParsePKIXPublicKey(pk.PublicKey)
	if err != nil {
		t.Fatalf("%s: parse public key: %v", tg.name, err)
	}
	pub, ok := parsed.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("%s: public key is %T, want *ecdsa.PublicKey", tg.name, parsed)
	}
	if pub.Curve != elliptic.P256() {
		t.Fatalf("%s: public key on curve %s, want P-256 for ECC_NIST_P256", tg.name, pub.Curve.Params().Name)
	}
	r["GetPublicKey.KeySpec"] = string(pk.KeySpec)

	sign := func(msg []byte, mt kmstypes.MessageType) ([]byte, error) {
		out, err := c.Sign(ctx, &kms.SignInput{KeyId: id, Message: msg, MessageType: mt,
			SigningAlgorithm: kmstypes.SigningAlgorithmSpecEcdsaSha256})
		if err != nil {
			return nil, err
		}
		return out.Signature, nil
	}
	verify := func(msg []byte, mt kmstypes.MessageType, sig []byte) bool {
		out, err := c.Verify(ctx, &kms.VerifyInput{KeyId: id, Message: msg, MessageType: mt, Signature: sig,
			SigningAlgorithm: kmstypes.SigningAlgorithmSpecEcdsaSha256})
		if err != nil {
			var inv *kmstypes.KMSInvalidSignatureException
			if errors.As(err, &inv) {
				return false
			}
			t.Fatalf("%s: verify %s: %v", tg.name, mt, err)
		}
		return out.SignatureValid
	}

	// RAW: KMS hashes the message with SHA-256 and signs the hash. Both agree;
	// this is the control that shows the key handling below is right.
	msg := []byte("impound custody ledger entry 1")
	msgSum := sha256.Sum256(msg)
	raw, err := sign(msg, kmstypes.MessageTypeRaw)
	if err != nil {
		t.Fatalf("%s: sign RAW: %v", tg.name, err)
	}
	r["RAW: ecdsa verifies over SHA-256(message)"] = ecdsa.VerifyASN1(pub, msgSum[:], raw)
	r["RAW: KMS Verify RAW"] = verify(msg, kmstypes.MessageTypeRaw, raw)

	// DIGEST: the message is already the SHA-256 digest and is signed as is.
	// This is how impound signs ledger entries: it hashes them itself.
	digest := sha256.Sum256([]byte("impound custody ledger entry 2"))
	digestSum := sha256.Sum256(digest[:])
	sig, err := sign(digest[:], kmstypes.MessageTypeDigest)
	if err != nil {
		t.Fatalf("%s: sign DIGEST: %v", tg.name, err)
	}
	r["DIGEST: ecdsa verifies over the digest"] = ecdsa.VerifyASN1(pub, digest[:], sig)
	r["DIGEST: ecdsa verifies over SHA-256(digest)"] = ecdsa.VerifyASN1(pub, digestSum[:], sig)
	r["DIGEST: KMS Verify DIGEST of its own signature"] = verify(digest[:], kmstypes.MessageTypeDigest, sig)
	// Signing RAW m and signing DIGEST SHA-256(m) are the same operation in AWS.
	r["DIGEST: KMS Verify DIGEST SHA-256(m) of the RAW signature of m"] = verify(msgSum[:], kmstypes.MessageTypeDigest, raw)

	// A digest must be as long as the algorithm's hash (32 bytes for ECDSA_SHA_256).
	_, err = sign([]byte("short"), kmstypes.MessageTypeDigest)
	r["DIGEST: 5-byte digest"] = apiCode(err)
	return r
}

// TestDivergenceKMSSignDigest pins moto's MessageType=DIGEST bug. moto
// (5.2.1: moto/kms/responses.py Sign reads MessageType and never passes it
// on; models.sign hashes every message) signs SHA-256(digest) instead of the
// digest, so its signatures verify with crypto/ecdsa only over the
// digest's hash; its own Verify makes the same mistake, so a test using
// only KMS Verify never notices. A ledger signed that way would not verify
// for anyone checking it with the public key, which is why impound's tests
// sign against the simulator.
func TestDivergenceKMSSignDigest(t *testing.T) {
	known := map[string]mustDiverge{
		"DIGEST: ecdsa verifies over the digest": {
			reason: "moto ignores MessageType=DIGEST and signs SHA-256 of the digest", aws: true, moto: false},
		"DIGEST: ecdsa verifies over SHA-256(digest)": {
			reason: "moto ignores MessageType=DIGEST and signs SHA-256 of the digest", aws: false, moto: true},
		"DIGEST: KMS Verify DIGEST SHA-256(m) of the RAW signature of m": {
			reason: "moto's Verify also hashes a DIGEST message again", aws: true, moto: false},
		"DIGEST: 5-byte digest": {
			reason: "moto does not check a digest's length against the signing algorithm", aws: "ValidationException", moto: ""},
		"GetPublicKey.KeySpec": {
			reason: "moto's GetPublicKey returns only the deprecated CustomerMasterKeySpec, not KeySpec", aws: "ECC_NIST_P256", moto: ""},
	}
	agreed := record{
		"CreateKey.KeySpec":                              "ECC_NIST_P256",
		"CreateKey.KeyUsage":                             "SIGN_VERIFY",
		"CreateKey.SigningAlgorithms":                    "[ECDSA_SHA_256]",
		"RAW: ecdsa verifies over SHA-256(message)":      true,
		"RAW: KMS Verify RAW":                            true,
		"DIGEST: KMS Verify DIGEST of its own signature": true,
	}
	sim := kmsSignScenario(t, simTarget(t))
	simulatorAsAWS(t, sim, agreed, known)
	moto := kmsSignScenario(t, motoTarget(t))
	compareDivergent(t, sim, moto, known)
}

// --- EBS direct ListSnapshotBlocks -----------------------------------------

// bodyRecorder keeps a copy of every response body, so a test can show what
// a server sent when the SDK could not decode it.
type bodyRecorder struct {
	next aws.HTTPClient
	mu   sync.Mutex
	last map[string][]byte // by request path
}

func (b *bodyRecorder) Do(req *http.Request) (*http.Response, error) {
	rsp, err := b.next.Do(req)
	if err != nil {
		return rsp, err
	}
	body, err := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	if err != nil {
		return nil, err
	}
	rsp.Body = io.NopCloser(bytes.NewReader(body))
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last == nil {
		b.last = map[string][]byte{}
	}
	b.last[req.URL.Path] = body
	return rsp, nil
}

func (b *bodyRecorder) body(path string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.last[path])
}

// ebsBlocks are the blocks both scenarios write into a 1 GiB volume: the
// first, one in the middle and the last, each distinct.
var ebsBlocks = []int32{0, 3, (1<<30)/awssim.BlockSize - 1}

func ebsBlockData(i int32) []byte {
	data := make([]byte, awssim.BlockSize)
	if _, err := io.ReadFull(awssim.RandomReader(uint64(1000+i), awssim.BlockSize), data); err != nil {
		panic(err)
	}
	return data
}

func ebsChecksum(data []byte) string {
	sum := sha256.Sum256(data)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// TestDivergenceEBSListSnapshotBlocks pins moto's EBS direct divergence:
// the same three blocks, in a 1 GiB snapshot, are listed and read through the
// Go SDK on the simulator as AWS documents, and cannot be listed on moto.
func TestDivergenceEBSListSnapshotBlocks(t *testing.T) {
	t.Run("simulator", ebsListOnSimulator)
	t.Run("moto", ebsListOnMoto)
}

// ebsListOnSimulator is the AWS side: a snapshot made through EC2 of a
// volume with three written blocks lists exactly those blocks, with integer
// indexes, the 512 KiB block size and the volume's size in GiB, and each
// block reads back with its SHA-256 checksum.
func ebsListOnSimulator(t *testing.T) {
	ctx := context.Background()
	sim := awssim.New(awssim.Options{Region: region})
	acct := sim.AddAccount("111111111111")
	vol, err := acct.CreateVolume(awssim.VolumeOptions{SizeGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ebsBlocks {
		if _, err := vol.WriteAt(ebsBlockData(i), int64(i)*awssim.BlockSize); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := awssim.Listen(ctx, "127.0.0.1:0", sim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c := acct.Credentials()
	cfg := clientConfig(srv.URL(), credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, ""))

	ec := ec2.NewFromConfig(cfg)
	snap, err := ec.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol.ID())})
	if err != nil {
		t.Fatal(err)
	}
	if err := ec2.NewSnapshotCompletedWaiter(ec, func(o *ec2.SnapshotCompletedWaiterOptions) {
		o.MinDelay, o.MaxDelay = 10*time.Millisecond, 50*time.Millisecond
	}).Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{aws.ToString(snap.SnapshotId)}}, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	eb := ebs.NewFromConfig(cfg)
	l, err := eb.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: snap.SnapshotId})
	if err != nil {
		t.Fatalf("simulator: ListSnapshotBlocks: %v", err)
	}
	if aws.ToInt32(l.BlockSize) != awssim.BlockSize || aws.ToInt64(l.VolumeSize) != 1 || l.ExpiryTime == nil || l.NextToken != nil {
		t.Fatalf("simulator: BlockSize %d, VolumeSize %d, ExpiryTime %v, NextToken %v; want %d, 1, set, none",
			aws.ToInt32(l.BlockSize), aws.ToInt64(l.VolumeSize), l.ExpiryTime, aws.ToString(l.NextToken), awssim.BlockSize)
	}
	var got []int32
	for _, b := range l.Blocks {
		got = append(got, aws.ToInt32(b.BlockIndex))
	}
	if !reflect.DeepEqual(got, ebsBlocks) {
		t.Fatalf("simulator: block indexes %v, want %v", got, ebsBlocks)
	}
	for _, b := range l.Blocks {
		out, err := eb.GetSnapshotBlock(ctx, &ebs.GetSnapshotBlockInput{SnapshotId: snap.SnapshotId, BlockIndex: b.BlockIndex, BlockToken: b.BlockToken})
		if err != nil {
			t.Fatalf("simulator: GetSnapshotBlock %d: %v", aws.ToInt32(b.BlockIndex), err)
		}
		data, err := io.ReadAll(out.BlockData)
		out.BlockData.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := ebsBlockData(aws.ToInt32(b.BlockIndex))
		if !bytes.Equal(data, want) || aws.ToString(out.Checksum) != ebsChecksum(want) || out.ChecksumAlgorithm != ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256 || aws.ToInt32(out.DataLength) != awssim.BlockSize {
			t.Fatalf("simulator: block %d: %d bytes (equal %v), checksum %s %s, length %d; want the written block, checksum %s SHA256, length %d",
				aws.ToInt32(b.BlockIndex), len(data), bytes.Equal(data, want), aws.ToString(out.Checksum), out.ChecksumAlgorithm, aws.ToInt32(out.DataLength), ebsChecksum(want), awssim.BlockSize)
		}
	}
}

// ebsListOnMoto is moto's side (moto 5.2.1, moto/ebs). Two ways of getting
// blocks into a snapshot, both failing in the Go SDK:
//
//   - A snapshot made through EC2 (CreateVolume, CreateSnapshot) is unknown
//     to moto's EBS backend, which keeps only snapshots started with EBS
//     direct StartSnapshot: ListSnapshotBlocks raises a KeyError and answers
//     HTTP 500 with an HTML page, which the SDK cannot decode as JSON. AWS
//     lists the snapshot's blocks (ebsListOnSimulator).
//   - A snapshot written with StartSnapshot, PutSnapshotBlock and
//     CompleteSnapshot is listed, but BlockIndex comes back as the string
//     taken from the request path ("3", not 3) and BlockSize as 512 instead
//     of 524288: the SDK fails with "expected BlockIndex to be json.Number,
//     got string instead", so no block can be read through the SDK.
func ebsListOnMoto(t *testing.T) {
	ctx := context.Background()
	mt := motoTarget(t)
	rec := &bodyRecorder{next: awshttp.NewBuildableClient()}
	cfg := mt.member.Copy()
	cfg.HTTPClient = rec
	eb := ebs.NewFromConfig(cfg, func(o *ebs.Options) { o.RetryMaxAttempts = 1 })

	// A snapshot made through EC2.
	ec := ec2.NewFromConfig(cfg)
	vol, err := ec.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(region + "a"), Size: aws.Int32(1)})
	if err != nil {
		t.Fatalf("moto: create volume: %v", err)
	}
	snap, err := ec.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: vol.VolumeId})
	if err != nil {
		t.Fatalf("moto: create snapshot: %v", err)
	}
	l, err := eb.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: snap.SnapshotId})
	var re *smithyhttp.ResponseError
	var api smithy.APIError
	switch {
	case err == nil:
		t.Errorf("moto: ListSnapshotBlocks of a snapshot made through EC2 now succeeds (%d blocks, BlockSize %d): %s",
			len(l.Blocks), aws.ToInt32(l.BlockSize), movedOn)
	case errors.As(err, &api):
		t.Errorf("moto: ListSnapshotBlocks of a snapshot made through EC2 now fails with API error %s: %s", api.ErrorCode(), movedOn)
	case !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusInternalServerError ||
		!strings.Contains(err.Error(), "failed to decode response body, invalid character '<'"):
		t.Errorf("moto: ListSnapshotBlocks of a snapshot made through EC2: %v; recorded an undecodable HTTP 500 HTML page: %s", err, movedOn)
	}

	// A snapshot written through EBS direct.
	st, err := eb.StartSnapshot(ctx, &ebs.StartSnapshotInput{VolumeSize: aws.Int64(1), Description: aws.String("impound divergence")})
	if err != nil {
		t.Fatalf("moto: start snapshot: %v", err)
	}
	for _, i := range ebsBlocks {
		data := ebsBlockData(i)
		if _, err := eb.PutSnapshotBlock(ctx, &ebs.PutSnapshotBlockInput{SnapshotId: st.SnapshotId, BlockIndex: aws.Int32(i),
			BlockData: bytes.NewReader(data), DataLength: aws.Int32(int32(len(data))),
			Checksum: aws.String(ebsChecksum(data)), ChecksumAlgorithm: ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256}); err != nil {
			t.Fatalf("moto: put block %d: %v", i, err)
		}
	}
	if _, err := eb.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{SnapshotId: st.SnapshotId, ChangedBlocksCount: aws.Int32(int32(len(ebsBlocks)))}); err != nil {
		t.Fatalf("moto: complete snapshot: %v", err)
	}
	l, err = eb.ListSnapshotBlocks(ctx, &ebs.ListSnapshotBlocksInput{SnapshotId: st.SnapshotId})
	const decodeFailure = "failed to decode response body with invalid JSON, expected BlockIndex to be json.Number, got string instead"
	var de *smithy.DeserializationError
	switch {
	case err == nil:
		t.Errorf("moto: ListSnapshotBlocks now decodes (%d blocks, BlockSize %d): %s", len(l.Blocks), aws.ToInt32(l.BlockSize), movedOn)
	case !errors.As(err, &de) || !strings.Contains(err.Error(), decodeFailure):
		t.Errorf("moto: ListSnapshotBlocks: %v; recorded the SDK's %q: %s", err, decodeFailure, movedOn)
	}
	// The reason, in moto's own words.
	body := rec.body("/snapshots/" + aws.ToString(st.SnapshotId) + "/blocks")
	for _, want := range []string{`"BlockIndex": "0"`, `"BlockIndex": "3"`, fmt.Sprintf(`"BlockIndex": "%d"`, ebsBlocks[2]), `"BlockSize": 512`, `"VolumeSize": 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("moto: ListSnapshotBlocks body %q lacks %s (recorded: BlockIndex as strings, BlockSize 512, the block size in KiB instead of bytes): %s", body, want, movedOn)
		}
	}
}
