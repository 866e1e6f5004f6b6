package vault

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// TestRetrySlowDown: throttling is retried by the client's retryer, not by
// the store's code; a final answer (412) is not retried.
func TestRetrySlowDown(t *testing.T) {
	var puts, heads atomic.Int32
	var conflictFirst atomic.Bool
	content := []byte("throttled evidence")
	sum := hexSHA(content)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/b/k/slow":
			if puts.Add(1) == 1 {
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, `<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
				return
			}
			if r.Header.Get("If-None-Match") != "*" || r.Header.Get("X-Amz-Checksum-Sha256") == "" || r.Header.Get("X-Amz-Object-Lock-Mode") != ModeCompliance {
				t.Errorf("PutObject headers: %v", r.Header)
			}
			w.Header().Set("x-amz-version-id", "v1")
			w.WriteHeader(http.StatusOK)
		case r.Method == http.MethodPut && r.URL.Path == "/b/k/exists":
			if puts.Add(1) == 1 && r.Header.Get("X-Conflict-First") == "" && conflictFirst.Load() {
				w.WriteHeader(http.StatusConflict)
				io.WriteString(w, `<?xml version="1.0"?><Error><Code>ConditionalRequestConflict</Code><Message>A conflicting operation is in progress.</Message></Error>`)
				return
			}
			w.WriteHeader(http.StatusPreconditionFailed)
			io.WriteString(w, `<?xml version="1.0"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>`)
		case r.Method == http.MethodHead && r.URL.Path == "/b/k/exists":
			heads.Add(1)
			w.Header().Set("x-amz-version-id", "v0")
			w.Header().Set("Content-Length", "18")
			w.Header().Set("x-amz-meta-impound-sha256", sum)
			w.WriteHeader(http.StatusOK)
		default:
			t.Errorf("unexpected %s %s", r.Method, r.URL)
			w.WriteHeader(http.StatusNotImplemented)
		}
	}))
	defer srv.Close()
	o := testOptions()
	o.AWS = aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")}
	st, err := Open(context.Background(), "s3://b", o)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Put(context.Background(), st, "k/slow", bytes.NewReader(content), PutOptions{})
	if err != nil {
		t.Fatalf("Put after one SlowDown: %v", err)
	}
	if puts.Load() != 2 || r.VersionID != "v1" || r.SHA256 != sum {
		t.Fatalf("%d PUTs, receipt %+v; want 2 PUTs and version v1", puts.Load(), r)
	}
	puts.Store(0)
	r, err = Put(context.Background(), st, "k/exists", bytes.NewReader(content), PutOptions{})
	if err != nil {
		t.Fatalf("identical retry: %v", err)
	}
	if puts.Load() != 1 || heads.Load() != 1 || r.VersionID != "v0" {
		t.Fatalf("%d PUTs and %d HEADs, version %s: a 412 must not be retried, but resolved by comparing", puts.Load(), heads.Load(), r.VersionID)
	}
	// A conditional write racing another (409) is retried, then resolved.
	puts.Store(0)
	heads.Store(0)
	conflictFirst.Store(true)
	r, err = Put(context.Background(), st, "k/exists", bytes.NewReader(content), PutOptions{})
	if err != nil || puts.Load() != 2 || heads.Load() != 1 || r.VersionID != "v0" {
		t.Fatalf("after a ConditionalRequestConflict: %v, %d PUTs, %d HEADs", err, puts.Load(), heads.Load())
	}
}

// TestSSEKMSHeaders: a KMS key in PutOptions reaches every object impound
// writes (single request and multipart), with retention and legal hold.
func TestSSEKMSHeaders(t *testing.T) {
	const key = "arn:aws:kms:eu-west-1:111122223333:key/0000-test"
	var checked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		q := r.URL.Query()
		creating := r.Method == http.MethodPut && q.Get("uploadId") == "" || r.Method == http.MethodPost && q.Has("uploads")
		if creating {
			checked.Add(1)
			if r.Header.Get("X-Amz-Server-Side-Encryption") != "aws:kms" || r.Header.Get("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id") != key ||
				r.Header.Get("X-Amz-Object-Lock-Mode") != ModeGovernance || r.Header.Get("X-Amz-Object-Lock-Legal-Hold") != "ON" ||
				r.Header.Get("X-Amz-Object-Lock-Retain-Until-Date") == "" {
				t.Errorf("%s %s without the KMS key, retention or hold: %v", r.Method, r.URL, r.Header)
			}
		}
		switch {
		case r.Method == http.MethodPost && q.Has("uploads"):
			io.WriteString(w, `<?xml version="1.0"?><InitiateMultipartUploadResult><UploadId>up1</UploadId></InitiateMultipartUploadResult>`)
		case r.Method == http.MethodPut && q.Get("uploadId") != "":
			w.Header().Set("ETag", `"etag-`+q.Get("partNumber")+`"`)
		case r.Method == http.MethodPost && q.Get("uploadId") != "":
			w.Header().Set("x-amz-version-id", "v-mp")
			io.WriteString(w, `<?xml version="1.0"?><CompleteMultipartUploadResult><ETag>"x-2"</ETag></CompleteMultipartUploadResult>`)
		default:
			w.Header().Set("x-amz-version-id", "v-put")
		}
	}))
	defer srv.Close()
	o := testOptions()
	o.AWS = aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")}
	o.PartSize = MinPartSize
	st, err := Open(context.Background(), "s3://b", o)
	if err != nil {
		t.Fatal(err)
	}
	po := PutOptions{KMSKeyID: key, RetentionMode: ModeGovernance, LegalHold: true}
	if r, err := Put(context.Background(), st, "k/small", bytes.NewReader([]byte("x")), po); err != nil || r.VersionID != "v-put" {
		t.Fatalf("single put: %+v, %v", r, err)
	}
	r, err := Put(context.Background(), st, "k/big", bytes.NewReader(randomBytes(1, MinPartSize+1)), po)
	if err != nil || r.VersionID != "v-mp" || len(r.Parts) != 2 {
		t.Fatalf("multipart put: %+v, %v", r, err)
	}
	// single PUT, CreateMultipartUpload, and the receipt beside the multipart object
	if checked.Load() != 3 {
		t.Fatalf("%d object-creating requests checked, want 3", checked.Load())
	}
}
