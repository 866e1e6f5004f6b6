package awsconf

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// recorder is an HTTP server that answers every request with an error and
// remembers that it was asked.
type recorder struct {
	*httptest.Server
	mu  sync.Mutex
	hit int
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		r.mu.Lock()
		r.hit++
		r.mu.Unlock()
		http.Error(w, "<Error><Code>AccessDenied</Code></Error>", http.StatusForbidden)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) hits() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hit
}

// TestEndpointVariables shows the AWS CLI's conventions hold: AWS_ENDPOINT_URL
// sends every service to one place, AWS_ENDPOINT_URL_S3 sends S3 elsewhere
// (a simulator and an S3 server targeted separately), and --endpoint-url
// (Options.EndpointURL) sends everything to one endpoint whatever the
// variables say.
func TestEndpointVariables(t *testing.T) {
	all, s3srv, flag := newRecorder(t), newRecorder(t), newRecorder(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	t.Setenv("AWS_ENDPOINT_URL", all.URL)
	t.Setenv("AWS_ENDPOINT_URL_S3", s3srv.URL)

	call := func(o Options) {
		t.Helper()
		cfg, err := Load(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RetryMaxAttempts = 1
		_, _ = sts.NewFromConfig(cfg).GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
		_, _ = s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true }).ListBuckets(context.Background(), &s3.ListBucketsInput{})
	}

	call(Options{Region: "us-east-1"})
	if all.hits() != 1 || s3srv.hits() != 1 {
		t.Fatalf("with AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_S3: STS endpoint got %d requests, S3 endpoint %d; want 1 and 1", all.hits(), s3srv.hits())
	}

	call(Options{Region: "us-east-1", EndpointURL: flag.URL})
	if flag.hits() != 2 || all.hits() != 1 || s3srv.hits() != 1 {
		t.Fatalf("with --endpoint-url: it got %d requests (want 2: STS and S3); the variables' endpoints got %d and %d more", flag.hits(), all.hits()-1, s3srv.hits()-1)
	}
}
