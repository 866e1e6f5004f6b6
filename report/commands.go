package report

import (
	"fmt"
	"path"
	"strings"

	"github.com/impound-ir/impound/vault"
)

// ByHandDoc is where checking a checkpoint signature with standard tools is
// described.
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
			{"Regenerate this report from the bundle and compare",
				cmdline("impound", "report", "--case", c, "--bundle", b.opts.BundleFile, "--key", k, "--format", "json", "--out", "regenerated")},
			{"Check the checkpoint signature with OpenSSL alone: see " + ByHandDoc,
				"sed -n '1,3p' checkpoint.txt  # the signed body: origin, size, root hash"},
		},
	}
}

// evidenceCommands are the commands that re-check one evidence object.
func (b *builder) evidenceCommands(ev *Evidence, rc vault.Receipt) []Command {
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
		file = p
		cmds = append(cmds, Command{Purpose: "Hash the stored file; expect " + want, Command: "sha256sum " + shellQuote(p)})
	}
	if ev.Acquisition != nil && ev.Acquisition.Compression == "zstd" && ev.Hashes["sha256"] != "" {
		cmds = append(cmds, Command{
			Purpose: "Decompress (seekable zstd is standard zstd) and hash the raw image; expect " + ev.Hashes["sha256"],
			Command: "zstd -dc " + shellQuote(file) + " | sha256sum",
		})
	}
	return cmds
}
