package vault

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeParts is an S3 that takes presigned part PUTs: it refuses a body
// that does not match its x-amz-checksum-sha256 header, as S3 does, and
// answers 503 SlowDown to the first failFirst attempts of every part.
type fakeParts struct {
	failFirst int
	status    int // when non-zero, every attempt is answered with it

	mu       sync.Mutex
	attempts map[int]int
	parts    map[int][]byte
}

func newFakeParts(t *testing.T, f *fakeParts) *httptest.Server {
	f.attempts, f.parts = map[int]int{}, map[int][]byte{}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv
}

func (f *fakeParts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(r.URL.Query().Get("partNumber"))
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.attempts[n]++
	a := f.attempts[n]
	f.mu.Unlock()
	refuse := func(status int, code string) {
		w.WriteHeader(status)
		fmt.Fprintf(w, "<Error><Code>%s</Code><Message>fake</Message></Error>", code)
	}
	switch {
	case f.status != 0:
		refuse(f.status, "Refused")
	case a <= f.failFirst:
		refuse(http.StatusServiceUnavailable, "SlowDown")
	case r.Header.Get("X-Amz-Checksum-Sha256") != b64sum(body):
		refuse(http.StatusBadRequest, "XAmzContentChecksumMismatch")
	default:
		f.mu.Lock()
		f.parts[n] = body
		f.mu.Unlock()
		w.Header().Set("ETag", fmt.Sprintf(`"etag-%d"`, n))
		w.Header().Set("X-Amz-Checksum-Sha256", b64sum(body))
	}
}

func (f *fakeParts) joined() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b []byte
	for i := 1; i <= len(f.parts); i++ {
		b = append(b, f.parts[i]...)
	}
	return b
}

// urlSigner "signs" a part as a URL on srv with the checksum header.
type urlSigner struct{ srv *httptest.Server }

func (s urlSigner) SignPart(ctx context.Context, n int32, sum []byte, size int64) (string, http.Header, error) {
	h := http.Header{}
	h.Set("X-Amz-Checksum-Sha256", b64(sum))
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	return fmt.Sprintf("%s/k?partNumber=%d&X-Amz-Signature=x", s.srv.URL, n), h, nil
}

func TestPartWriterRetriesSlowDown(t *testing.T) {
	f := &fakeParts{failFirst: 1}
	srv := newFakeParts(t, f)
	src := randomBytes(90, 2*MinPartSize+5)
	up, _, err := hostUpload(t, urlSigner{srv}, MinPartSize, src)
	if err != nil {
		t.Fatal(err)
	}
	if up.SHA256 != hexSHA(src) || up.Size != int64(len(src)) || len(up.Parts) != 3 {
		t.Fatalf("report %+v", up)
	}
	for i, p := range up.Parts {
		if p.Number != int32(i+1) || p.ETag != fmt.Sprintf(`"etag-%d"`, i+1) || f.attempts[i+1] != 2 {
			t.Fatalf("part %d: %+v after %d attempts, want its ETag after 2", i+1, p, f.attempts[i+1])
		}
	}
	if !bytes.Equal(f.joined(), src) {
		t.Fatal("parts received do not make the source")
	}
}

func TestPartWriterRefusalIsFinal(t *testing.T) {
	f := &fakeParts{status: http.StatusForbidden}
	srv := newFakeParts(t, f)
	_, _, err := hostUpload(t, urlSigner{srv}, MinPartSize, randomBytes(91, 10))
	var pe *PartRefusedError
	if !errors.As(err, &pe) || pe.Number != 1 || pe.StatusCode != http.StatusForbidden || pe.Code != "Refused" {
		t.Fatalf("upload: %v, want part 1 refused with HTTP 403", err)
	}
	if f.attempts[1] != 1 {
		t.Fatalf("a refused part was sent %d times", f.attempts[1])
	}
}

func TestPartWriterEmptyStream(t *testing.T) {
	f := &fakeParts{}
	srv := newFakeParts(t, f)
	up, _, err := hostUpload(t, urlSigner{srv}, MinPartSize, nil)
	if err != nil {
		t.Fatal(err)
	}
	empty := sha256.Sum256(nil)
	if up.Size != 0 || up.SHA256 != hexSHA(nil) || len(up.Parts) != 1 || up.Parts[0].Size != 0 || up.Parts[0].SHA256 != b64(empty[:]) {
		t.Fatalf("report of an empty stream: %+v", up)
	}
}

func TestPartWriterMaxParts(t *testing.T) {
	srv := newFakeParts(t, &fakeParts{})
	pw, err := NewPartWriter(context.Background(), urlSigner{srv}, PartWriterOptions{PartSize: MinPartSize, MaxParts: 2})
	if err != nil {
		t.Fatal(err)
	}
	_, err = pw.Write(randomBytes(92, 2*MinPartSize+1))
	if err == nil {
		_, err = pw.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "at most 2 parts") {
		t.Fatalf("a third part: %v, want refused", err)
	}
	if err := pw.Abort(); err != nil {
		t.Fatal(err)
	}
}
