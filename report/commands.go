package report

import (
	"encoding/base64"
	"fmt"
	"path"
	"strings"

	"github.com/impound-ir/impound/vault"
)

// ByHandDoc is where checking a checkpoint signature with standard tools is
// explained; Verification.ByHandCommands are those commands for the case's key.
const ByHandDoc = "docs/ledger.md#checking-a-checkpoint-signature-by-hand-ed25519"

// shellQuote quotes s for a POSIX shell when it holds anything but safe characters.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./:=@+,%", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func cmdline(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// splitS3 splits "s3://bucket/key" into bucket and key.
func splitS3(uri string) (bucket, key string, ok bool) {
	rest, ok := strings.CutPrefix(uri, "s3://")
	if !ok {
		return "", "", false
	}
	bucket, key, ok = strings.Cut(rest, "/")
	return bucket, key, ok && bucket != "" && key != ""
}

// localPath is the file of a file:// URI.
func localPath(uri string) (string, bool) {
	p, ok := strings.CutPrefix(uri, "file://")
	return p, ok && p != ""
}

func (b *builder) vaultArg() string {
	if b.vaultURI == "" {
		return "VAULT-URI"
	}
	return b.vaultURI
}

func (b *builder) verificationCommands() Verification {
	c, v, k := b.caseID, b.vaultArg(), b.opts.KeyFile
	return Verification{
		ByHand: ByHandDoc,
		Commands: []Command{
			{"Save the case's verifier key (below) to " + k, "printf '%s\\n' " + shellQuote(b.r.Ledger.VerifierKey) + " > " + shellQuote(k)},
			{"Save the signed checkpoint (below) to checkpoint.txt", "printf '%s' " + shellQuote(b.r.Ledger.Checkpoint) + " > checkpoint.txt"},
			{"Verify the ledger in the vault against the pinned key and this report's checkpoint, and re-read every evidence object",
				cmdline("impound", "ledger", "verify", "--case", c, "--vault", v, "--key", k, "--checkpoint", "checkpoint.txt", "--evidence")},
			{"Export the ledger as a self-contained bundle",
				cmdline("impound", "ledger", "export", "--case", c, "--vault", v, "--key", k, "--out", b.opts.BundleFile)},
			{"Verify the bundle offline (no AWS access)",
				cmdline("impound", "ledger", "verify", "--bundle", b.opts.BundleFile, "--key", k, "--checkpoint", "checkpoint.txt")},
			{"Regenerate the report from the bundle and compare: identical for a bundle of the same entries; a bundle exported later also holds the entries recorded after this report (its storing, the case's closing), and its report shows them",
				cmdline("impound", "report", "--case", c, "--bundle", b.opts.BundleFile, "--key", k, "--format", "json", "--out", "regenerated")},
		},
		ByHandCommands: b.byHandCommands(),
	}
}

// ed25519SPKIPrefix is the DER prefix that makes a raw 32-byte Ed25519 public
// key a SubjectPublicKeyInfo (RFC 8410), written as printf octal escapes
// (POSIX printf has no \x).
const ed25519SPKIPrefix = `\060\052\060\005\006\003\053\145\160\003\041\000`

// byHandCommands check the checkpoint's signature with standard tools
// (POSIX sh, coreutils, OpenSSL 3), on the files the first two verification
// commands write: the key file and checkpoint.txt. A checkpoint is a C2SP
// signed note: the signed text is every line before the blank line, newlines
// included; the one signature line is "— <key name> <base64>", and the
// base64 decodes to the 4-byte key hash followed by the signature. Every
// command exits non-zero when its check fails.
func (b *builder) byHandCommands() []Command {
	k := shellQuote(b.opts.KeyFile)
	hash := shellQuote(b.r.Ledger.KeyHash)
	extract := Command{
		Purpose: "Split checkpoint.txt into the signed text (its lines before the blank line, with their newlines) and the signature (the base64 after the key name on its last line: a 4-byte key hash, then the signature)",
		Command: "sed '/^$/,$d' checkpoint.txt > checkpoint.body &&\n" +
			"tail -n 1 checkpoint.txt | cut -d' ' -f3 | base64 -d > checkpoint.sig",
	}
	sigHash := `test "$(head -c 4 checkpoint.sig | od -An -tx1 | tr -d ' \n')" = ` + hash + " &&\n" +
		`test "$(cut -d+ -f2 ` + k + `)" = ` + hash + " &&\n"
	switch keyType(b.r.Ledger.VerifierKey) {
	case keyEd25519:
		return []Command{extract, {
			Purpose: "Convert the verifier key to PEM: its data (after the second '+') is the type byte 0x01 and the 32-byte Ed25519 public key, which a fixed 12-byte DER prefix makes a SubjectPublicKeyInfo",
			Command: "cut -d+ -f3- " + k + " | base64 -d | tail -c 32 > key.raw &&\n" +
				"(printf '" + ed25519SPKIPrefix + "'; cat key.raw) | openssl pkey -pubin -inform DER -out key.pem",
		}, {
			Purpose: "Check the Ed25519 signature over the signed text; expect “Signature Verified Successfully”",
			Command: "tail -c 64 checkpoint.sig > checkpoint.sig.raw &&\n" +
				"openssl pkeyutl -verify -pubin -inkey key.pem -rawin -in checkpoint.body -sigfile checkpoint.sig.raw",
		}, {
			Purpose: "Check that the signature and the key file name this key: the signature's first 4 bytes, the key file's key hash and the first 4 bytes of SHA-256(key name, a newline, 0x01, the public key) must all be " + hash + "; expect “key hash OK”",
			Command: sigHash +
				`test "$( (printf '%s\n\001' "$(cut -d+ -f1 ` + k + `)"; cat key.raw) | sha256sum | cut -c1-8)" = ` + hash + " &&\n" +
				"echo 'key hash OK'",
		}}
	case keyECDSA:
		return []Command{extract, {
			Purpose: "Convert the verifier key to PEM: its data (after the second '+') is the type byte 0x02 and the DER SubjectPublicKeyInfo of the ECDSA P-256 key",
			Command: "cut -d+ -f3- " + k + " | base64 -d | tail -c +2 > key.der &&\n" +
				"openssl pkey -pubin -inform DER -in key.der -out key.pem",
		}, {
			Purpose: "Check the ECDSA P-256 signature (DER) over the SHA-256 of the signed text; expect “Verified OK”",
			Command: "tail -c +5 checkpoint.sig > checkpoint.sig.der &&\n" +
				"openssl dgst -sha256 -verify key.pem -signature checkpoint.sig.der checkpoint.body",
		}, {
			Purpose: "Check that the signature and the key file name this key: the signature's first 4 bytes, the key file's key hash and the first 4 bytes of SHA-256 of the DER key must all be " + hash + "; expect “key hash OK”",
			Command: sigHash +
				`test "$(sha256sum key.der | cut -c1-8)" = ` + hash + " &&\n" +
				"echo 'key hash OK'",
		}}
	}
	return []Command{}
}

// Verifier key types (C2SP signed-note signature types).
const (
	keyEd25519 = 0x01
	keyECDSA   = 0x02
)

// keyType is the signature type byte of a verifier key, 0 when unreadable.
func keyType(vkey string) byte {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return 0
	}
	data, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(data) == 0 {
		return 0
	}
	return data[0]
}

// evidenceCommands are the commands that re-check one evidence object.
func (b *builder) evidenceCommands(ev *Evidence, rc vault.Receipt) []Command {
	cmds, file := b.objectCommands(rc), path.Base(rc.Key)
	if p, ok := localPath(rc.URI); ok {
		file = p
	}
	if ev.Acquisition != nil && ev.Acquisition.Compression == "zstd" && ev.Hashes["sha256"] != "" {
		cmds = append(cmds, Command{
			Purpose: "Decompress (seekable zstd is standard zstd) and hash the raw image; expect " + ev.Hashes["sha256"],
			Command: "zstd -dc " + shellQuote(file) + " | sha256sum",
		})
	}
	return cmds
}

// objectCommands are the commands that re-read one vault object and hash
// it with impound and with standard tools.
func (b *builder) objectCommands(rc vault.Receipt) []Command {
	cmds := []Command{{
		Purpose: "Re-read the object with impound and compare it with its receipt",
		Command: cmdline("impound", "vault", "verify", "--vault", b.vaultArg(), rc.Key+"@"+rc.VersionID),
	}}
	want := rc.SHA256
	file := path.Base(rc.Key)
	if bucket, objKey, ok := splitS3(rc.URI); ok {
		if len(rc.Segments) == 0 {
			cmds = append(cmds, Command{
				Purpose: "Download the exact version with the AWS CLI and hash it; expect " + want,
				Command: cmdline("aws", "s3api", "get-object", "--bucket", bucket, "--key", objKey, "--version-id", rc.VersionID, file) +
					" > /dev/null && sha256sum " + shellQuote(file),
			})
		} else {
			prefix := strings.TrimSuffix(objKey, rc.Key)
			var parts []string
			var lines []string
			for i, s := range rc.Segments {
				p := fmt.Sprintf("%s.part%04d", file, i)
				parts = append(parts, shellQuote(p))
				lines = append(lines, cmdline("aws", "s3api", "get-object", "--bucket", bucket, "--key", prefix+s.Key, "--version-id", s.VersionID, p)+" > /dev/null")
			}
			lines = append(lines, "cat "+strings.Join(parts, " ")+" | sha256sum")
			cmds = append(cmds, Command{
				Purpose: fmt.Sprintf("Download the %d segments with the AWS CLI and hash them in order; expect %s", len(rc.Segments), want),
				Command: strings.Join(lines, " &&\n"),
			})
		}
	} else if p, ok := localPath(rc.URI); ok {
		cmds = append(cmds, Command{Purpose: "Hash the stored file; expect " + want, Command: "sha256sum " + shellQuote(p)})
	}
	return cmds
}
