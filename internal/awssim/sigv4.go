package awssim

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// sigv4 is the signature part of a SigV4-signed request.
type sigv4 struct {
	signedHeaders []string
	signature     string
	amzDate       string
	presigned     bool
}

// parseSignature reads SignedHeaders and Signature from the Authorization
// header or the presigned query.
func parseSignature(r *http.Request) (sigv4, bool) {
	var s sigv4
	if auth := r.Header.Get("Authorization"); strings.HasPrefix(auth, "AWS4-HMAC-SHA256 ") {
		for _, part := range strings.Split(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 "), ",") {
			part = strings.TrimSpace(part)
			if v, ok := strings.CutPrefix(part, "SignedHeaders="); ok {
				s.signedHeaders = strings.Split(v, ";")
			} else if v, ok := strings.CutPrefix(part, "Signature="); ok {
				s.signature = v
			}
		}
		s.amzDate = r.Header.Get("X-Amz-Date")
	} else {
		q := r.URL.Query()
		s.signedHeaders = strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
		s.signature = q.Get("X-Amz-Signature")
		s.amzDate = q.Get("X-Amz-Date")
		s.presigned = true
	}
	return s, s.signature != "" && s.amzDate != "" && len(s.signedHeaders) > 0
}

// sigv4Escape escapes s as SigV4 canonical requests do (RFC 3986 unreserved
// characters are kept).
func sigv4Escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
		}
	}
	return b.String()
}

func canonicalQuery(q url.Values, presigned bool) string {
	type kv struct{ k, v string }
	var items []kv
	for k, vs := range q {
		if presigned && k == "X-Amz-Signature" {
			continue
		}
		for _, v := range vs {
			items = append(items, kv{sigv4Escape(k), sigv4Escape(v)})
		}
	}
	sort.Slice(items, func(i, j int) bool {
		if items[i].k != items[j].k {
			return items[i].k < items[j].k
		}
		return items[i].v < items[j].v
	})
	parts := make([]string, len(items))
	for i, it := range items {
		parts[i] = it.k + "=" + it.v
	}
	return strings.Join(parts, "&")
}

// canonicalURI escapes each path segment again, as SigV4 does for every
// service but S3.
func canonicalURI(r *http.Request) string {
	p := r.URL.EscapedPath()
	if p == "" {
		return "/"
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = sigv4Escape(s)
	}
	return strings.Join(segs, "/")
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// verifySignature checks a SigV4 signature with the secret we issued.
// body is the request body already read (nil for bodiless requests).
func verifySignature(r *http.Request, scope credentialScope, secret string, body []byte) bool {
	sig, ok := parseSignature(r)
	if !ok {
		return false
	}
	var ch strings.Builder
	for _, h := range sig.signedHeaders {
		var v string
		switch h {
		case "host":
			v = r.Host
		case "content-length":
			v = r.Header.Get("Content-Length")
			if v == "" && r.ContentLength >= 0 {
				v = strconv.FormatInt(r.ContentLength, 10)
			}
		default:
			vals := r.Header.Values(h)
			for i := range vals {
				vals[i] = strings.Join(strings.Fields(vals[i]), " ")
			}
			v = strings.Join(vals, ",")
		}
		ch.WriteString(h + ":" + v + "\n")
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if payload == "" {
		if sig.presigned {
			payload = "UNSIGNED-PAYLOAD"
		} else {
			sum := sha256.Sum256(body)
			payload = hex.EncodeToString(sum[:])
		}
	}
	canon := strings.Join([]string{
		r.Method, canonicalURI(r), canonicalQuery(r.URL.Query(), sig.presigned), ch.String(),
		strings.Join(sig.signedHeaders, ";"), payload,
	}, "\n")
	ch2 := sha256.Sum256([]byte(canon))
	credScope := scope.date + "/" + scope.region + "/" + scope.service + "/aws4_request"
	toSign := "AWS4-HMAC-SHA256\n" + sig.amzDate + "\n" + credScope + "\n" + hex.EncodeToString(ch2[:])
	k := hmacSHA256([]byte("AWS4"+secret), scope.date)
	k = hmacSHA256(k, scope.region)
	k = hmacSHA256(k, scope.service)
	k = hmacSHA256(k, "aws4_request")
	want := hex.EncodeToString(hmacSHA256(k, toSign))
	return hmac.Equal([]byte(want), []byte(sig.signature))
}
