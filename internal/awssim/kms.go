package awssim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
)

// kmsKey is a simulated KMS key.
type kmsKey struct {
	id, arn     string
	owner       *Account
	spec, usage string
	description string
	manager     string // CUSTOMER or AWS
	created     time.Time
	aliases     []string
	allowAll    bool
	allow       map[string]bool // account IDs the key policy lets use the key
	ecdsa       *ecdsa.PrivateKey
	rsa         *rsa.PrivateKey
	grants      []*kmsGrant
}

type kmsGrant struct {
	id, token   string
	name        string
	grantee     string
	retiring    string
	ops         []string
	issuer      string
	created     time.Time
	constraints json.RawMessage
}

type kmsKeyOptions struct {
	spec, usage, description, manager, alias string
	allow                                    []string
	allowAll                                 bool
}

// signing algorithms per key spec, with their hash.
var kmsSigningAlgorithms = map[string]map[string]crypto.Hash{
	"ECC_NIST_P256": {"ECDSA_SHA_256": crypto.SHA256},
	"RSA_2048": {
		"RSASSA_PSS_SHA_256": crypto.SHA256, "RSASSA_PSS_SHA_384": crypto.SHA384, "RSASSA_PSS_SHA_512": crypto.SHA512,
		"RSASSA_PKCS1_V1_5_SHA_256": crypto.SHA256, "RSASSA_PKCS1_V1_5_SHA_384": crypto.SHA384, "RSASSA_PKCS1_V1_5_SHA_512": crypto.SHA512,
	},
}

func (s *Sim) newKMSKeyLocked(a *Account, o kmsKeyOptions) (*kmsKey, error) {
	if o.spec == "" {
		o.spec = "SYMMETRIC_DEFAULT"
	}
	k := &kmsKey{
		id: s.newUUID(), owner: a, spec: o.spec, usage: o.usage, description: o.description,
		manager: o.manager, created: s.now().UTC(), allow: map[string]bool{}, allowAll: o.allowAll,
	}
	k.arn = "arn:aws:kms:" + s.region + ":" + a.id + ":key/" + k.id
	var err error
	switch o.spec {
	case "SYMMETRIC_DEFAULT":
		if k.usage == "" {
			k.usage = "ENCRYPT_DECRYPT"
		}
		if k.usage != "ENCRYPT_DECRYPT" {
			return nil, errf(http.StatusBadRequest, "ValidationException", "KeyUsage %s is not compatible with KeySpec SYMMETRIC_DEFAULT", k.usage)
		}
	case "ECC_NIST_P256":
		if k.usage == "" {
			k.usage = "SIGN_VERIFY"
		}
		if k.usage != "SIGN_VERIFY" {
			return nil, errf(http.StatusBadRequest, "ValidationException", "KeyUsage %s is not compatible with KeySpec ECC_NIST_P256", k.usage)
		}
		k.ecdsa, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "RSA_2048":
		if k.usage == "" {
			k.usage = "SIGN_VERIFY"
		}
		if k.usage != "SIGN_VERIFY" && k.usage != "ENCRYPT_DECRYPT" {
			return nil, errf(http.StatusBadRequest, "ValidationException", "KeyUsage %s is not compatible with KeySpec RSA_2048", k.usage)
		}
		k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, errf(http.StatusBadRequest, "ValidationException",
			"1 validation error detected: Value '%s' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [SYMMETRIC_DEFAULT, ECC_NIST_P256, RSA_2048]", o.spec)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", o.spec, err)
	}
	if o.alias != "" {
		if s.findAliasLocked(a.id, o.alias) != nil {
			return nil, errf(http.StatusBadRequest, "AlreadyExistsException", "An alias with the name arn:aws:kms:%s:%s:%s already exists", s.region, a.id, o.alias)
		}
		k.aliases = append(k.aliases, o.alias)
	}
	for _, id := range o.allow {
		k.allow[id] = true
	}
	s.keys[k.id] = k
	return k, nil
}

func (s *Sim) findAliasLocked(account, alias string) *kmsKey {
	for _, k := range s.keys {
		if k.owner.id == account && slices.Contains(k.aliases, alias) {
			return k
		}
	}
	return nil
}

var kmsARNRe = regexp.MustCompile(`^arn:aws:kms:([a-z0-9-]+):(\d{12}):(key/[0-9a-f-]+|alias/[\w/+=,.@-]+)$`)

// resolveKeyLocked finds a key by ID, key ARN, alias name or alias ARN as the
// caller's account sees it: bare IDs and aliases name the caller's keys.
func (s *Sim) resolveKeyLocked(caller *Account, ref string) (*kmsKey, error) {
	notFound := errf(http.StatusBadRequest, "NotFoundException", "Invalid keyId %s", ref)
	account, name := caller.id, ref
	if m := kmsARNRe.FindStringSubmatch(ref); m != nil {
		if m[1] != s.region {
			return nil, notFound
		}
		account, name = m[2], m[3]
	} else if strings.HasPrefix(ref, "arn:") {
		return nil, notFound
	}
	if alias, ok := strings.CutPrefix(name, "alias/"); ok {
		k := s.findAliasLocked(account, "alias/"+alias)
		if k == nil {
			return nil, errf(http.StatusBadRequest, "NotFoundException", "Alias arn:aws:kms:%s:%s:alias/%s is not found.", s.region, account, alias)
		}
		return k, nil
	}
	k := s.keys[strings.TrimPrefix(name, "key/")]
	if k == nil || k.owner.id != account {
		if k == nil && account == caller.id {
			return nil, errf(http.StatusBadRequest, "NotFoundException", "Key '%s' does not exist", "arn:aws:kms:"+s.region+":"+account+":key/"+strings.TrimPrefix(name, "key/"))
		}
		return nil, notFound
	}
	return k, nil
}

// canUseLocked reports whether the account may use the key: its owner, an
// account the key policy allows, or a grantee. AWS managed keys can only be
// used by their own account.
func (k *kmsKey) canUseLocked(account string) bool {
	if k.owner.id == account {
		return true
	}
	if k.manager == "AWS" {
		return false
	}
	if k.allowAll || k.allow[account] {
		return true
	}
	for _, g := range k.grants {
		if principalAccount(g.grantee) == account {
			return true
		}
	}
	return false
}

var accountInARNRe = regexp.MustCompile(`^(?:arn:aws:[a-z]+::)?(\d{12})(?::|$)`)

// principalAccount returns the account ID of an ARN or bare account ID.
func principalAccount(p string) string {
	if m := accountInARNRe.FindStringSubmatch(p); m != nil {
		return m[1]
	}
	return ""
}

// keyOnly refuses an alias where AWS takes only a key ID or key ARN (the
// grant operations: CreateGrant, ListGrants, RetireGrant, RevokeGrant).
func keyOnly(ref string) error {
	if strings.HasPrefix(ref, "alias/") || strings.Contains(ref, ":alias/") {
		return errf(http.StatusBadRequest, "NotFoundException", "Invalid keyId %s: specify the key ID or key ARN, not an alias", ref)
	}
	return nil
}

// useKey resolves ref and checks that the caller may use it.
func (c *call) useKeyLocked(ref string) (*kmsKey, error) {
	if ref == "" {
		return nil, errf(http.StatusBadRequest, "ValidationException", "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null")
	}
	k, err := c.sim.resolveKeyLocked(c.who.account, ref)
	if err != nil {
		return nil, err
	}
	if !k.canUseLocked(c.who.accountID()) {
		return nil, errf(http.StatusBadRequest, "AccessDeniedException",
			"User: %s is not authorized to perform: kms:%s on resource: %s because no resource-based policy allows the kms:%s action", c.who.arn, c.op, k.arn, c.op)
	}
	return k, nil
}

func kmsService() *service {
	return &service{
		name:       "kms",
		protocol:   protoJSON11,
		target:     "TrentService",
		throttle:   apiError{status: http.StatusBadRequest, code: "ThrottlingException", message: "Rate exceeded"},
		badSig:     apiError{status: http.StatusBadRequest, code: "InvalidSignatureException"},
		authFailed: apiError{status: http.StatusBadRequest, code: "UnrecognizedClientException"},
		expired:    apiError{status: http.StatusBadRequest, code: "ExpiredTokenException"},
		ops: map[string]operation{
			"CreateKey":    kmsCreateKey,
			"DescribeKey":  kmsDescribeKey,
			"GetPublicKey": kmsGetPublicKey,
			"Sign":         kmsSign,
			"Verify":       kmsVerify,
			"CreateGrant":  kmsCreateGrant,
			"RetireGrant":  kmsRetireGrant,
			"RevokeGrant":  kmsRevokeGrant,
			"ListGrants":   kmsListGrants,
		},
	}
}

type kmsKeyMetadata struct {
	AWSAccountID          string   `json:"AWSAccountId"`
	KeyID                 string   `json:"KeyId"`
	Arn                   string   `json:"Arn"`
	CreationDate          epoch    `json:"CreationDate"`
	Enabled               bool     `json:"Enabled"`
	Description           string   `json:"Description"`
	KeyUsage              string   `json:"KeyUsage"`
	KeyState              string   `json:"KeyState"`
	Origin                string   `json:"Origin"`
	KeyManager            string   `json:"KeyManager"`
	CustomerMasterKeySpec string   `json:"CustomerMasterKeySpec"`
	KeySpec               string   `json:"KeySpec"`
	EncryptionAlgorithms  []string `json:"EncryptionAlgorithms,omitempty"`
	SigningAlgorithms     []string `json:"SigningAlgorithms,omitempty"`
	MultiRegion           bool     `json:"MultiRegion"`
}

func (k *kmsKey) signingAlgorithms() []string {
	if k.usage != "SIGN_VERIFY" {
		return nil
	}
	return sortedKeys(kmsSigningAlgorithms[k.spec])
}

func (k *kmsKey) metadata() *kmsKeyMetadata {
	m := &kmsKeyMetadata{
		AWSAccountID: k.owner.id, KeyID: k.id, Arn: k.arn, CreationDate: epoch(k.created), Enabled: true,
		Description: k.description, KeyUsage: k.usage, KeyState: "Enabled", Origin: "AWS_KMS",
		KeyManager: k.manager, CustomerMasterKeySpec: k.spec, KeySpec: k.spec,
		SigningAlgorithms: k.signingAlgorithms(),
	}
	if k.usage == "ENCRYPT_DECRYPT" {
		if k.spec == "SYMMETRIC_DEFAULT" {
			m.EncryptionAlgorithms = []string{"SYMMETRIC_DEFAULT"}
		} else {
			m.EncryptionAlgorithms = []string{"RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"}
		}
	}
	return m
}

var twelveDigitsRe = regexp.MustCompile(`\b\d{12}\b`)

// policyAccounts extracts the accounts an Allow statement names as AWS
// principals, and whether it allows everyone ("*").
func policyAccounts(policy string) (accounts []string, all bool, err error) {
	var doc struct {
		Statement json.RawMessage
	}
	if err := json.Unmarshal([]byte(policy), &doc); err != nil {
		return nil, false, err
	}
	type stmt struct {
		Effect    string
		Principal json.RawMessage
	}
	var stmts []stmt
	if err := json.Unmarshal(doc.Statement, &stmts); err != nil {
		var one stmt
		if err := json.Unmarshal(doc.Statement, &one); err != nil {
			return nil, false, err
		}
		stmts = []stmt{one}
	}
	for _, st := range stmts {
		if st.Effect != "Allow" {
			continue
		}
		p := string(st.Principal)
		if p == `"*"` || strings.Contains(p, `"AWS":"*"`) || strings.Contains(p, `"AWS": "*"`) {
			all = true
		}
		accounts = append(accounts, twelveDigitsRe.FindAllString(p, -1)...)
	}
	return accounts, all, nil
}

func kmsCreateKey(c *call) (any, error) {
	var in struct {
		KeySpec, CustomerMasterKeySpec, KeyUsage, Description, Policy string
	}
	if err := c.decodeJSON(&in); err != nil {
		return nil, err
	}
	if in.KeySpec == "" {
		in.KeySpec = in.CustomerMasterKeySpec
	}
	o := kmsKeyOptions{spec: in.KeySpec, usage: in.KeyUsage, description: in.Description, manager: "CUSTOMER"}
	if in.Policy != "" {
		accts, all, err := policyAccounts(in.Policy)
		if err != nil {
			return nil, errf(http.StatusBadRequest, "MalformedPolicyDocumentException", "The policy is not valid JSON: %v", err)
		}
		o.allow, o.allowAll = accts, all
	}
	c.sim.mu.Lock()
	defer c.sim.mu.Unlock()
	k, err := c.sim.newKMSKeyLocked(c.who.account, o)
	if err != nil {
		return nil, err
	}
	return map[string]any{"KeyMetadata": k.metadata()}, nil
}

// withKeyRLocked serves a request that names only a key ({"KeyId": …}):
// answer runs with the key the caller may use, under the read lock.
func (c *call) withKeyRLocked(answer func(*kmsKey) (any, error)) (any, error) {
	var in struct {
		KeyID string `json:"KeyId"`
	}
	if err := c.decodeJSON(&in); err != nil {
		return nil, err
	}
	c.sim.mu.RLock()
	defer c.sim.mu.RUnlock()
	k, err := c.useKeyLocked(in.KeyID)
	if err != nil {
		return nil, err
	}
	return answer(k)
}

func kmsDescribeKey(c *call) (any, error) {
	return c.withKeyRLocked(func(k *kmsKey) (any, error) {
		return map[string]any{"KeyMetadata": k.metadata()}, nil
	})
}

func kmsGetPublicKey(c *call) (any, error) {
	return c.withKeyRLocked(publicKey)
}

// publicKey is GetPublicKey's answer for k.
func publicKey(k *kmsKey) (any, error) {
	var pub any
	switch {
	case k.ecdsa != nil:
		pub = &k.ecdsa.PublicKey
	case k.rsa != nil:
		pub = &k.rsa.PublicKey
	default:
		return nil, errf(http.StatusBadRequest, "UnsupportedOperationException", "%s key type is not supported for this operation.", k.arn)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"KeyId": k.arn, "PublicKey": der, "CustomerMasterKeySpec": k.spec, "KeySpec": k.spec,
		"KeyUsage": k.usage, "SigningAlgorithms": k.signingAlgorithms(),
	}, nil
}

type kmsSignInput struct {
	KeyID            string `json:"KeyId"`
	Message          []byte
	MessageType      string
	SigningAlgorithm string
	Signature        []byte
}

// digestFor checks the sign/verify input and returns the digest to sign.
func (c *call) digestFor(in *kmsSignInput) (*kmsKey, crypto.Hash, []byte, error) {
	c.sim.mu.RLock()
	k, err := c.useKeyLocked(in.KeyID)
	c.sim.mu.RUnlock()
	if err != nil {
		return nil, 0, nil, err
	}
	if k.usage != "SIGN_VERIFY" {
		return nil, 0, nil, errf(http.StatusBadRequest, "InvalidKeyUsageException", "%s key usage is %s which is not valid for %s.", k.arn, k.usage, c.op)
	}
	h, ok := kmsSigningAlgorithms[k.spec][in.SigningAlgorithm]
	if !ok {
		return nil, 0, nil, errf(http.StatusBadRequest, "InvalidKeyUsageException",
			"Algorithm %s is incompatible with key spec %s.", in.SigningAlgorithm, k.spec)
	}
	if len(in.Message) == 0 || len(in.Message) > 4096 {
		return nil, 0, nil, errf(http.StatusBadRequest, "ValidationException",
			"1 validation error detected: Value at 'message' failed to satisfy constraint: Member must have length between 1 and 4096")
	}
	switch in.MessageType {
	case "", "RAW":
		hh := h.New()
		hh.Write(in.Message)
		return k, h, hh.Sum(nil), nil
	case "DIGEST":
		if len(in.Message) != h.Size() {
			return nil, 0, nil, errf(http.StatusBadRequest, "ValidationException",
				"Digest is invalid length for algorithm %s.", in.SigningAlgorithm)
		}
		return k, h, in.Message, nil
	default:
		return nil, 0, nil, errf(http.StatusBadRequest, "ValidationException",
			"1 validation error detected: Value '%s' at 'messageType' failed to satisfy constraint: Member must satisfy enum value set: [DIGEST, RAW]", in.MessageType)
	}
}

func kmsSign(c *call) (any, error) {
	var in kmsSignInput
	if err := c.decodeJSON(&in); err != nil {
		return nil, err
	}
	k, h, digest, err := c.digestFor(&in)
	if err != nil {
		return nil, err
	}
	var sig []byte
	switch {
	case k.ecdsa != nil:
		sig, err = ecdsa.SignASN1(rand.Reader, k.ecdsa, digest)
	case strings.HasPrefix(in.SigningAlgorithm, "RSASSA_PSS"):
		sig, err = rsa.SignPSS(rand.Reader, k.rsa, h, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	default:
		sig, err = rsa.SignPKCS1v15(rand.Reader, k.rsa, h, digest)
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"KeyId": k.arn, "Signature": sig, "SigningAlgorithm": in.SigningAlgorithm}, nil
}

func kmsVerify(c *call) (any, error) {
	var in kmsSignInput
	if err := c.decodeJSON(&in); err != nil {
		return nil, err
	}
	k, h, digest, err := c.digestFor(&in)
	if err != nil {
		return nil, err
	}
	valid := false
	switch {
	case k.ecdsa != nil:
		valid = ecdsa.VerifyASN1(&k.ecdsa.PublicKey, digest, in.Signature)
	case strings.HasPrefix(in.SigningAlgorithm, "RSASSA_PSS"):
		valid = rsa.VerifyPSS(&k.rsa.PublicKey, h, digest, in.Signature, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
	default:
		valid = rsa.VerifyPKCS1v15(&k.rsa.PublicKey, h, digest, in.Signature) == nil
	}
	if !valid {
		return nil, errf(http.StatusBadRequest, "KMSInvalidSignatureException", "")
	}
	return map[string]any{"KeyId": k.arn, "SignatureValid": true, "SigningAlgorithm": in.SigningAlgorithm}, nil
}

var kmsGrantOperations = []string{
	"Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom", "ReEncryptTo",
	"Sign", "Verify", "GetPublicKey", "CreateGrant", "RetireGrant", "DescribeKey", "GenerateDataKeyPair",
	"GenerateDataKeyPairWithoutPlaintext", "GenerateMac", "VerifyMac", "DeriveSharedSecret",
}

func kmsCreateGrant(c *call) (any, error) {
	var in struct {
		KeyID             string `json:"KeyId"`
		GranteePrincipal  string
		RetiringPrincipal string
		Operations        []string
		Name              string
		Constraints       json.RawMessage
	}
	if err := c.decodeJSON(&in); err != nil {
		return nil, err
	}
	if principalAccount(in.GranteePrincipal) == "" {
		return nil, errf(http.StatusBadRequest, "ValidationException", "Invalid GranteePrincipal %q", in.GranteePrincipal)
	}
	if len(in.Operations) == 0 {
		return nil, errf(http.StatusBadRequest, "ValidationException", "1 validation error detected: Value null at 'operations' failed to satisfy constraint: Member must not be null")
	}
	for _, op := range in.Operations {
		if !slices.Contains(kmsGrantOperations, op) {
			return nil, errf(http.StatusBadRequest, "ValidationException", "Value '%s' at 'operations' failed to satisfy constraint", op)
		}
	}
	if err := keyOnly(in.KeyID); err != nil {
		return nil, err
	}
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := c.useKeyLocked(in.KeyID)
	if err != nil {
		return nil, err
	}
	g := &kmsGrant{
		id: s.randHex(64), name: in.Name, grantee: in.GranteePrincipal, retiring: in.RetiringPrincipal,
		ops: in.Operations, issuer: c.who.arn, created: s.now().UTC(), constraints: in.Constraints,
	}
	tok := make([]byte, 96)
	for i := range tok {
		tok[i] = byte(s.rnd.Uint32())
	}
	g.token = "AQpAM2" + base64.RawURLEncoding.EncodeToString(tok)
	k.grants = append(k.grants, g)
	return map[string]any{"GrantId": g.id, "GrantToken": g.token}, nil
}

func (k *kmsKey) removeGrant(g *kmsGrant) {
	k.grants = slices.DeleteFunc(k.grants, func(x *kmsGrant) bool { return x == g })
}

func kmsRetireGrant(c *call) (any, error) {
	var in struct {
		KeyID      string `json:"KeyId"`
		GrantID    string `json:"GrantId"`
		GrantToken string
	}
	if err := c.decodeJSON(&in); err != nil {
		return nil, err
	}
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	var key *kmsKey
	var grant *kmsGrant
	switch {
	case in.GrantToken != "":
		for _, k := range s.keys {
			for _, g := range k.grants {
				if g.token == in.GrantToken {
					key, grant = k, g
				}
			}
		}
		if grant == nil {
			return nil, errf(http.StatusBadRequest, "InvalidGrantTokenException", "Grant token is not valid")
		}
	case in.KeyID != "" && in.GrantID != "":
		if err := keyOnly(in.KeyID); err != nil {
			return nil, err
		}
		k, err := s.resolveKeyLocked(c.who.account, in.KeyID)
		if err != nil {
			return nil, err
		}
		for _, g := range k.grants {
			if g.id == in.GrantID {
				key, grant = k, g
			}
		}
		if grant == nil {
			return nil, errf(http.StatusBadRequest, "NotFoundException", "Grant ID %s not found", in.GrantID)
		}
	default:
		return nil, errf(http.StatusBadRequest, "ValidationException", "Either GrantToken or both KeyId and GrantId must be specified")
	}
	// Who may retire a grant (AWS KMS developer guide, "Retiring and
	// revoking grants"): the account that owns the key, the grant's retiring
	// principal, and its grantee principal only if RetireGrant is one of the
	// grant's operations.
	acct := c.who.accountID()
	if acct != key.owner.id && acct != principalAccount(grant.retiring) &&
		!(acct == principalAccount(grant.grantee) && slices.Contains(grant.ops, "RetireGrant")) {
		return nil, errf(http.StatusBadRequest, "AccessDeniedException", "User: %s is not authorized to perform: kms:RetireGrant on resource: %s", c.who.arn, key.arn)
	}
	key.removeGrant(grant)
	return struct{}{}, nil
}

func kmsRevokeGrant(c *call) (any, error) {
	var in struct {
		KeyID   string `json:"KeyId"`
		GrantID string `json:"GrantId"`
	}
	if err := c.decodeJSON(&in); err != nil {
		return nil, err
	}
	if err := keyOnly(in.KeyID); err != nil {
		return nil, err
	}
	s := c.sim
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := c.useKeyLocked(in.KeyID)
	if err != nil {
		return nil, err
	}
	for _, g := range k.grants {
		if g.id == in.GrantID {
			k.removeGrant(g)
			return struct{}{}, nil
		}
	}
	return nil, errf(http.StatusBadRequest, "NotFoundException", "Grant ID %s not found", in.GrantID)
}

func kmsListGrants(c *call) (any, error) {
	var in struct {
		KeyID            string `json:"KeyId"`
		GrantID          string `json:"GrantId"`
		GranteePrincipal string
	}
	if err := c.decodeJSON(&in); err != nil {
		return nil, err
	}
	if err := keyOnly(in.KeyID); err != nil {
		return nil, err
	}
	s := c.sim
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, err := c.useKeyLocked(in.KeyID)
	if err != nil {
		return nil, err
	}
	type grantOut struct {
		KeyID             string          `json:"KeyId"`
		GrantID           string          `json:"GrantId"`
		Name              string          `json:"Name,omitempty"`
		CreationDate      epoch           `json:"CreationDate"`
		GranteePrincipal  string          `json:"GranteePrincipal"`
		RetiringPrincipal string          `json:"RetiringPrincipal,omitempty"`
		IssuingAccount    string          `json:"IssuingAccount"`
		Operations        []string        `json:"Operations"`
		Constraints       json.RawMessage `json:"Constraints,omitempty"`
	}
	out := []grantOut{}
	for _, g := range k.grants {
		if (in.GrantID != "" && g.id != in.GrantID) || (in.GranteePrincipal != "" && g.grantee != in.GranteePrincipal) {
			continue
		}
		out = append(out, grantOut{
			KeyID: k.arn, GrantID: g.id, Name: g.name, CreationDate: epoch(g.created), GranteePrincipal: g.grantee,
			RetiringPrincipal: g.retiring, IssuingAccount: "arn:aws:iam::" + principalAccount(g.issuer) + ":root",
			Operations: g.ops, Constraints: g.constraints,
		})
	}
	return map[string]any{"Grants": out, "Truncated": false}, nil
}
