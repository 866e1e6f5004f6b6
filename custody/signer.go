package custody

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/mod/sumdb/note"
)

// Signer signs a case's checkpoints. It is a note.Signer that also gives the
// verifier key others check its signatures with; the case's first entry
// records that key.
type Signer interface {
	note.Signer
	VerifierKey() string
}

// Signature type identifiers of C2SP signed-note.
const (
	sigTypeEd25519 = 0x01
	sigTypeECDSA   = 0x02
)

// GenerateKey returns a new Ed25519 signer key and its verifier key, in
// golang.org/x/mod/sumdb/note's encodings ("PRIVATE+KEY+name+hash+data" and
// "name+hash+data").
func GenerateKey(name string) (skey, vkey string, err error) {
	if err := checkKeyName(name); err != nil {
		return "", "", err
	}
	return note.GenerateKey(rand.Reader, name)
}

// WriteKeyFiles generates an Ed25519 key named name and writes the signer
// key to path (mode 0600, never overwriting) and the verifier key to
// path+".pub". It returns the verifier key.
func WriteKeyFiles(path, name string) (string, error) {
	skey, vkey, err := GenerateKey(name)
	if err != nil {
		return "", err
	}
	pub := path + ".pub"
	if _, err := os.Lstat(pub); err == nil {
		return "", fmt.Errorf("custody: %s already exists; choose another --out or remove it", pub)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("custody: write signing key: %w", err)
	}
	_, werr := f.WriteString(skey + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("custody: write signing key %s: %w", path, err)
	}
	if err := os.WriteFile(pub, []byte(vkey+"\n"), 0o644); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("custody: write verifier key %s: %w", pub, err)
	}
	return vkey, nil
}

// fileSigner is an Ed25519 signer from a note signer key.
type fileSigner struct {
	note.Signer
	vkey string
}

func (s *fileSigner) VerifierKey() string { return s.vkey }

// NewEd25519Signer returns the Signer of a note signer key
// ("PRIVATE+KEY+name+hash+data").
func NewEd25519Signer(skey string) (Signer, error) {
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("custody: signer key: %w", err)
	}
	// The key data is the algorithm byte and the Ed25519 seed.
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 {
		return nil, fmt.Errorf("custody: signer key: malformed")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != sigTypeEd25519 {
		return nil, fmt.Errorf("custody: signer key: not an Ed25519 key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return nil, fmt.Errorf("custody: signer key: %w", err)
	}
	return &fileSigner{Signer: s, vkey: vkey}, nil
}

// LoadKeyFile reads an Ed25519 signer key written by WriteKeyFiles.
func LoadKeyFile(path string) (Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("custody: read signing key: %w", err)
	}
	s, err := NewEd25519Signer(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// NewVerifier returns the note.Verifier of a verifier key: an Ed25519 key
// ("name+hash+base64(0x01 || 32-byte key)", as note.NewVerifier) or an
// ECDSA P-256 key ("name+hash+base64(0x02 || DER SubjectPublicKeyInfo)",
// hash the first four bytes of SHA-256 of the DER, as C2SP signed-note
// specifies for type 0x02).
func NewVerifier(vkey string) (note.Verifier, error) {
	vkey = strings.TrimSpace(vkey)
	name, hash, data, err := splitVerifierKey(vkey)
	if err != nil {
		return nil, err
	}
	switch data[0] {
	case sigTypeEd25519:
		v, err := note.NewVerifier(vkey)
		if err != nil {
			return nil, fmt.Errorf("custody: verifier key: %w", err)
		}
		return v, nil
	case sigTypeECDSA:
		pub, err := parseP256(data[1:])
		if err != nil {
			return nil, err
		}
		if ecdsaKeyHash(data[1:]) != hash {
			return nil, fmt.Errorf("custody: verifier key: hash does not match the key")
		}
		return &ecdsaVerifier{name: name, hash: hash, pub: pub}, nil
	}
	return nil, fmt.Errorf("custody: verifier key: unknown signature type %#x", data[0])
}

func splitVerifierKey(vkey string) (name string, hash uint32, data []byte, err error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return "", 0, nil, fmt.Errorf("custody: verifier key: want name+hash+key")
	}
	name = parts[0]
	if err := checkKeyName(name); err != nil {
		return "", 0, nil, err
	}
	h, err := strconv.ParseUint(parts[1], 16, 32)
	if err != nil || len(parts[1]) != 8 {
		return "", 0, nil, fmt.Errorf("custody: verifier key: malformed key hash")
	}
	data, err = base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(data) < 2 {
		return "", 0, nil, fmt.Errorf("custody: verifier key: malformed key data")
	}
	return name, uint32(h), data, nil
}

// checkKeyName applies note's rule: non-empty UTF-8 with neither spaces nor '+'.
func checkKeyName(name string) error {
	if name == "" || strings.ContainsFunc(name, func(r rune) bool { return unicode.IsSpace(r) || r == '+' || r == unicode.ReplacementChar }) {
		return fmt.Errorf("custody: key name %q: want non-empty text without spaces or '+'", name)
	}
	return nil
}

func parseP256(der []byte) (*ecdsa.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("custody: ECDSA public key: %w", err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("custody: public key is not ECDSA P-256")
	}
	return pub, nil
}

func ecdsaKeyHash(spki []byte) uint32 {
	h := sha256.Sum256(spki)
	return binary.BigEndian.Uint32(h[:4])
}

// ECDSAVerifierKey returns the verifier key of an ECDSA P-256 public key.
func ECDSAVerifierKey(name string, pub *ecdsa.PublicKey) (string, error) {
	if err := checkKeyName(name); err != nil {
		return "", err
	}
	if pub.Curve != elliptic.P256() {
		return "", fmt.Errorf("custody: public key is not ECDSA P-256")
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("custody: encode public key: %w", err)
	}
	data := append([]byte{sigTypeECDSA}, der...)
	return fmt.Sprintf("%s+%08x+%s", name, ecdsaKeyHash(der), base64.StdEncoding.EncodeToString(data)), nil
}

// ecdsaVerifier verifies ASN.1 DER ECDSA P-256 signatures over SHA-256 of the note text.
type ecdsaVerifier struct {
	name string
	hash uint32
	pub  *ecdsa.PublicKey
}

func (v *ecdsaVerifier) Name() string    { return v.name }
func (v *ecdsaVerifier) KeyHash() uint32 { return v.hash }
func (v *ecdsaVerifier) Verify(msg, sig []byte) bool {
	d := sha256.Sum256(msg)
	return ecdsa.VerifyASN1(v.pub, d[:], sig)
}

// Key references name a signing key after sigstore's convention.
const (
	FileKeyPrefix = "file:"
	KMSKeyPrefix  = "awskms://"
)

// ParseKMSRef splits "awskms://[endpoint]/key" (key an ID, alias or ARN).
func ParseKMSRef(ref string) (endpoint, keyID string, err error) {
	rest, ok := strings.CutPrefix(ref, KMSKeyPrefix)
	if !ok {
		return "", "", fmt.Errorf("custody: %q is not an awskms:// key reference", ref)
	}
	endpoint, keyID, ok = strings.Cut(rest, "/")
	if !ok || keyID == "" {
		return "", "", fmt.Errorf("custody: key reference %q: want awskms:///<key ARN, ID or alias>", ref)
	}
	return endpoint, keyID, nil
}

// LoadSigner opens the signing key a reference names: "file:PATH" (or a
// plain path) for an Ed25519 key file, "awskms://[endpoint]/KEY" for an AWS
// KMS key, signed through kms (which may be nil for file keys).
func LoadSigner(ctx context.Context, ref string, kms KMSClient) (Signer, error) {
	switch {
	case ref == "":
		return nil, fmt.Errorf("custody: no signing key; pass --signing-key file:PATH or awskms:///ARN (create a key with `impound ledger keygen`)")
	case strings.HasPrefix(ref, KMSKeyPrefix):
		_, keyID, err := ParseKMSRef(ref)
		if err != nil {
			return nil, err
		}
		if kms == nil {
			return nil, fmt.Errorf("custody: %s: no KMS client", ref)
		}
		return NewKMSSigner(ctx, kms, keyID, "")
	case strings.Contains(ref, "://"):
		return nil, fmt.Errorf("custody: key reference %q: use file:PATH or awskms:///ARN", ref)
	default:
		return LoadKeyFile(strings.TrimPrefix(ref, FileKeyPrefix))
	}
}
