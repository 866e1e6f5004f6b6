package awssim

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/rs/zerolog"
)

// protocol is a service's wire protocol.
type protocol int

const (
	protoEC2Query protocol = iota // EC2 query: form in, <OpResponse> out, <Response><Errors> on error
	protoQuery                    // awsQuery (STS): <OpResponse><OpResult>, <ErrorResponse> on error
	protoJSON11                   // awsJson1.1 (KMS): X-Amz-Target, {"__type"} on error
	protoRESTJSON                 // restJson1 (EBS direct): routes, X-Amzn-ErrorType on error
)

// operation handles one API operation. It returns the value to encode in the
// service's protocol, or a value implementing responder to write itself.
type operation func(c *call) (any, error)

// route maps a REST method and path pattern ({Name} segments) to an operation.
type route struct {
	method, pattern, op string
}

// service describes one AWS service the simulator speaks.
type service struct {
	name       string // SigV4 signing name
	protocol   protocol
	xmlns      string // query protocols
	target     string // awsJson1.1 X-Amz-Target prefix, e.g. "TrentService"
	ops        map[string]operation
	routes     []route // restJson1
	throttle   apiError
	authFailed apiError // unknown access key
	badSig     apiError // signature does not match
	expired    apiError // expired session token
	// versions are alternative APIs signed with the same name, chosen by
	// the query protocol's Version (classic ELB and ELBv2).
	versions map[string]*service
}

// serviceTable lists the services by signing name. Adding a service is one
// file defining its table and one entry here.
var serviceTable = map[string]func() *service{
	"sts": stsService,
	"ec2": ec2Service,
	"ebs": ebsService,
	"kms": kmsService,
	"iam": iamService,

	"autoscaling":          autoscalingService,
	"elasticloadbalancing": elbService,
	"cloudtrail":           cloudtrailService,
}

// call is one request being served.
type call struct {
	ctx       context.Context
	sim       *Sim
	svc       *service
	op        string
	who       *principal
	form      url.Values        // query protocols
	body      []byte            // JSON protocols
	path      map[string]string // restJson1 path parameters
	query     url.Values        // restJson1 query string
	requestID string
	r         *http.Request
}

// responder is returned by operations that write their own response.
type responder interface {
	respond(w http.ResponseWriter, c *call)
}

// apiError is an AWS error as a service reports it.
type apiError struct {
	status  int
	code    string
	message string
	reason  string // EBS direct exceptions' Reason
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func (e apiError) with(msg string) *apiError { e.message = msg; return &e }

// Handler returns the http.Handler serving every simulated service.
func (s *Sim) Handler() http.Handler {
	svcs := map[string]*service{}
	for name, f := range serviceTable {
		svcs[name] = f()
	}
	return &handler{sim: s, services: svcs}
}

type handler struct {
	sim      *Sim
	services map[string]*service
}

// credentialScope is the parsed SigV4 credential of a request.
type credentialScope struct {
	accessKeyID, date, region, service string
	sessionToken                       string
}

// parseCredential reads the SigV4 credential from the Authorization header or
// from presigned X-Amz-Credential query parameters.
func parseCredential(r *http.Request) (credentialScope, bool) {
	var cred string
	if auth := r.Header.Get("Authorization"); strings.HasPrefix(auth, "AWS4-HMAC-SHA256 ") {
		for _, part := range strings.Split(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 "), ",") {
			part = strings.TrimSpace(part)
			if v, ok := strings.CutPrefix(part, "Credential="); ok {
				cred = v
			}
		}
	} else {
		cred = r.URL.Query().Get("X-Amz-Credential")
	}
	f := strings.Split(cred, "/")
	if len(f) != 5 || f[4] != "aws4_request" || slices.Contains(f, "") {
		return credentialScope{}, false
	}
	tok := r.Header.Get("X-Amz-Security-Token")
	if tok == "" {
		tok = r.URL.Query().Get("X-Amz-Security-Token")
	}
	return credentialScope{accessKeyID: f[0], date: f[1], region: f[2], service: f[3], sessionToken: tok}, true
}

// guessService routes a request that carries no signature, so that the
// authentication error comes back in the right format.
func guessService(r *http.Request) string {
	switch {
	case strings.HasPrefix(r.Header.Get("X-Amz-Target"), "TrentService."):
		return "kms"
	case strings.Contains(r.Header.Get("X-Amz-Target"), "CloudTrail_"):
		return "cloudtrail"
	case strings.HasPrefix(r.URL.Path, "/snapshots"):
		return "ebs"
	}
	if strings.Contains(r.URL.RawQuery, "Version=2011-06-15") {
		return "sts"
	}
	return "ec2"
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := h.sim
	scope, signed := parseCredential(r)
	name := scope.service
	if !signed {
		name = guessService(r)
	}
	svc := h.services[name]
	if svc == nil {
		http.Error(w, fmt.Sprintf("awssim: service %q is not simulated", name), http.StatusNotImplemented)
		return
	}
	c := &call{ctx: r.Context(), sim: s, svc: svc, r: r, requestID: s.requestID()}
	log := zerolog.Ctx(r.Context())

	if err := c.decode(); err != nil {
		c.writeError(w, err)
		return
	}
	if alt := svc.versions[c.form.Get("Version")]; alt != nil {
		svc, c.svc = alt, alt
	}
	if !signed {
		c.writeError(w, errf(http.StatusForbidden, "MissingAuthenticationToken", "Request is missing Authentication Token"))
		return
	}
	if err := c.authenticate(scope); err != nil {
		c.writeError(w, err)
		return
	}
	op := svc.ops[c.op]
	if op == nil {
		c.writeError(w, errf(http.StatusBadRequest, unknownOpCode(svc), "The action %s is not valid for this web service.", c.op))
		return
	}
	if handled := s.faults.apply(w, c); handled {
		return
	}
	out, err := op(c)
	if err != nil {
		var ae *apiError
		if !errors.As(err, &ae) {
			log.Error().Err(err).Str("service", svc.name).Str("operation", c.op).Msg("awssim: internal error")
			ae = errf(http.StatusInternalServerError, internalErrorCode(svc), "%v", err)
		}
		s.recordCall(c, ae, nil)
		log.Debug().Str("service", svc.name).Str("operation", c.op).Str("account", c.who.accountID()).
			Str("error_code", ae.code).Int("status", ae.status).Msg("awssim request failed")
		c.writeError(w, ae)
		return
	}
	log.Debug().Str("service", svc.name).Str("operation", c.op).Str("account", c.who.accountID()).Msg("awssim request")
	s.recordCall(c, nil, out)
	if rsp, ok := out.(responder); ok {
		rsp.respond(w, c)
		return
	}
	c.writeResult(w, out)
}

// internalErrorCode is the code a service answers its 500s with.
func internalErrorCode(svc *service) string {
	switch {
	case svc.name == "kms":
		return "KMSInternalException"
	case svc.protocol == protoRESTJSON || svc.protocol == protoJSON11:
		return "InternalServerException"
	}
	return "InternalError"
}

func unknownOpCode(svc *service) string {
	switch svc.protocol {
	case protoEC2Query:
		return "InvalidAction"
	case protoQuery:
		return "InvalidAction"
	default:
		return "UnknownOperationException"
	}
}

// decode reads the operation name and its input.
func (c *call) decode() error {
	r := c.r
	switch c.svc.protocol {
	case protoEC2Query, protoQuery:
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return errf(http.StatusBadRequest, "MalformedQueryString", "read body: %v", err)
		}
		c.body = body
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return errf(http.StatusBadRequest, "MalformedQueryString", "%v", err)
		}
		for k, v := range r.URL.Query() {
			if !strings.HasPrefix(k, "X-Amz-") {
				form[k] = v
			}
		}
		c.form = form
		c.op = form.Get("Action")
	case protoJSON11:
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return errf(http.StatusBadRequest, "SerializationException", "read body: %v", err)
		}
		c.body = body
		tgt := r.Header.Get("X-Amz-Target")
		i := strings.LastIndexByte(tgt, '.')
		prefix, op, ok := "", "", i > 0
		if ok {
			prefix, op = tgt[:i], tgt[i+1:]
		}
		// Some clients send the fully qualified target
		// (com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101).
		if !ok || (prefix != c.svc.target && !strings.HasSuffix(prefix, "."+c.svc.target)) {
			return errf(http.StatusBadRequest, "UnknownOperationException", "unknown target %q", tgt)
		}
		c.op = op
	case protoRESTJSON:
		c.query = r.URL.Query()
		for _, rt := range c.svc.routes {
			if rt.method != r.Method {
				continue
			}
			if params, ok := matchPath(rt.pattern, r.URL.EscapedPath()); ok {
				c.op, c.path = rt.op, params
				return nil
			}
		}
		return &apiError{status: http.StatusNotFound, code: "UnknownOperationException", message: "no operation at " + r.Method + " " + r.URL.Path}
	}
	return nil
}

func matchPath(pattern, path string) (map[string]string, bool) {
	ps := strings.Split(strings.Trim(pattern, "/"), "/")
	xs := strings.Split(strings.Trim(path, "/"), "/")
	if len(ps) != len(xs) {
		return nil, false
	}
	params := map[string]string{}
	for i, p := range ps {
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") {
			v, err := url.PathUnescape(xs[i])
			if err != nil {
				return nil, false
			}
			params[p[1:len(p)-1]] = v
		} else if p != xs[i] {
			return nil, false
		}
	}
	return params, true
}

// authenticate identifies the caller by access key and session token.
func (c *call) authenticate(scope credentialScope) error {
	s := c.sim
	s.mu.RLock()
	p := s.principals[scope.accessKeyID]
	var expires time.Time
	if p != nil {
		expires = p.expires // ExpireSessions writes it under s.mu
	}
	s.mu.RUnlock()
	if p == nil {
		return c.svc.authFailed.with("The security token included in the request is invalid.")
	}
	if p.sessionToken != "" && scope.sessionToken != p.sessionToken {
		return c.svc.authFailed.with("The security token included in the request is invalid.")
	}
	if !s.skipSigCheck && !verifySignature(c.r, scope, p.secret, c.body) {
		return c.svc.badSig.with("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
	}
	if !expires.IsZero() && !s.now().Before(expires) {
		return c.svc.expired.with("The security token included in the request is expired")
	}
	c.who = p
	return nil
}

// writeError writes e in the service's error format.
func (c *call) writeError(w http.ResponseWriter, e error) {
	var ae *apiError
	if !errors.As(e, &ae) {
		ae = errf(http.StatusInternalServerError, "InternalError", "%v", e)
	}
	h := w.Header()
	h.Set("X-Amzn-RequestId", c.requestID)
	switch c.svc.protocol {
	case protoEC2Query:
		h.Set("Content-Type", "text/xml;charset=UTF-8")
		w.WriteHeader(ae.status)
		type xmlErr struct {
			Code    string `xml:"Code"`
			Message string `xml:"Message"`
		}
		_ = xml.NewEncoder(w).Encode(struct {
			XMLName   xml.Name `xml:"Response"`
			Errors    []xmlErr `xml:"Errors>Error"`
			RequestID string   `xml:"RequestID"`
		}{Errors: []xmlErr{{ae.code, ae.message}}, RequestID: c.requestID})
	case protoQuery:
		h.Set("Content-Type", "text/xml")
		w.WriteHeader(ae.status)
		type queryErr struct {
			Type    string `xml:"Type"`
			Code    string `xml:"Code"`
			Message string `xml:"Message"`
		}
		qe := queryErr{Type: "Sender", Code: ae.code, Message: ae.message}
		if ae.status >= 500 {
			qe.Type = "Receiver"
		}
		_ = xml.NewEncoder(w).Encode(struct {
			XMLName   xml.Name `xml:"ErrorResponse"`
			Xmlns     string   `xml:"xmlns,attr"`
			Error     queryErr `xml:"Error"`
			RequestID string   `xml:"RequestId"`
		}{Xmlns: c.svc.xmlns, Error: qe, RequestID: c.requestID})
	case protoJSON11:
		h.Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(ae.status)
		_ = json.NewEncoder(w).Encode(map[string]string{"__type": ae.code, "message": ae.message})
	case protoRESTJSON:
		h.Set("Content-Type", "application/json")
		h.Set("X-Amzn-ErrorType", ae.code)
		w.WriteHeader(ae.status)
		body := map[string]string{"Message": ae.message}
		if ae.reason != "" {
			body["Reason"] = ae.reason
		}
		_ = json.NewEncoder(w).Encode(body)
	}
}

// requestIDSetter is implemented by EC2 responses, which carry <requestId>.
type requestIDSetter interface{ setRequestID(string) }

// ec2Meta is embedded first in every EC2 response.
type ec2Meta struct {
	RequestID string `xml:"requestId"`
}

func (m *ec2Meta) setRequestID(id string) { m.RequestID = id }

// writeResult encodes a successful result in the service's protocol.
func (c *call) writeResult(w http.ResponseWriter, out any) {
	h := w.Header()
	h.Set("X-Amzn-RequestId", c.requestID)
	var buf bytes.Buffer
	switch c.svc.protocol {
	case protoEC2Query:
		h.Set("Content-Type", "text/xml;charset=UTF-8")
		if rs, ok := out.(requestIDSetter); ok {
			rs.setRequestID(c.requestID)
		}
		buf.WriteString(xml.Header)
		enc := xml.NewEncoder(&buf)
		start := xml.StartElement{Name: xml.Name{Local: c.op + "Response"}, Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: c.svc.xmlns}}}
		if err := enc.EncodeElement(out, start); err != nil {
			c.writeError(w, fmt.Errorf("encode %s: %w", c.op, err))
			return
		}
	case protoQuery:
		h.Set("Content-Type", "text/xml")
		enc := xml.NewEncoder(&buf)
		start := xml.StartElement{Name: xml.Name{Local: c.op + "Response"}, Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: c.svc.xmlns}}}
		err := errors.Join(
			enc.EncodeToken(start),
			enc.EncodeElement(out, xml.StartElement{Name: xml.Name{Local: c.op + "Result"}}),
			enc.EncodeElement(struct {
				RequestID string `xml:"RequestId"`
			}{c.requestID}, xml.StartElement{Name: xml.Name{Local: "ResponseMetadata"}}),
			enc.EncodeToken(start.End()),
			enc.Flush(),
		)
		if err != nil {
			c.writeError(w, fmt.Errorf("encode %s: %w", c.op, err))
			return
		}
	case protoJSON11, protoRESTJSON:
		if c.svc.protocol == protoJSON11 {
			h.Set("Content-Type", "application/x-amz-json-1.1")
		} else {
			h.Set("Content-Type", "application/json")
		}
		if err := json.NewEncoder(&buf).Encode(out); err != nil {
			c.writeError(w, fmt.Errorf("encode %s: %w", c.op, err))
			return
		}
	}
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// decodeJSON unmarshals a JSON request body into v.
func (c *call) decodeJSON(v any) error {
	if len(bytes.TrimSpace(c.body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(c.body, v); err != nil {
		return errf(http.StatusBadRequest, "SerializationException", "%v", err)
	}
	return nil
}

// epoch is a timestamp encoded as JSON epoch seconds, as AWS JSON protocols do.
type epoch time.Time

func (t epoch) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(float64(time.Time(t).UnixMilli())/1000, 'f', -1, 64)), nil
}

// Server serves a Sim over HTTP.
type Server struct {
	ln   net.Listener
	hs   *http.Server
	url  string
	sim  *Sim
	stop func() bool
}

// Listen starts serving sim on addr (e.g. "127.0.0.1:0") until Close or
// until ctx is done. Requests are logged through zerolog.Ctx(ctx).
func Listen(ctx context.Context, addr string, sim *Sim) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("awssim: listen on %s: %w", addr, err)
	}
	h := sim.Handler()
	srv := &Server{
		ln:  bufferedListener{ln},
		sim: sim,
		url: "http://" + ln.Addr().String(),
		hs: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 30 * time.Second,
			BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		},
	}
	srv.stop = context.AfterFunc(ctx, func() { _ = srv.hs.Close() })
	go func() { _ = srv.hs.Serve(srv.ln) }()
	return srv, nil
}

// bufferedListener gives accepted connections a send buffer that holds a
// whole EBS block, so a GetSnapshotBlock answer leaves in few system calls.
type bufferedListener struct{ net.Listener }

func (l bufferedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(2 * BlockSize)
	}
	return c, err
}

// URL returns the endpoint, e.g. http://127.0.0.1:4566.
func (s *Server) URL() string { return s.url }

// Sim returns the simulator served.
func (s *Server) Sim() *Sim { return s.sim }

// Close stops the server and closes open connections.
func (s *Server) Close() error {
	s.stop()
	return s.hs.Close()
}

// ClientConfig returns an SDK configuration that sends every service's
// requests to the server with the given credentials. Set RetryMaxAttempts
// or Retryer on the result to choose the retry behaviour.
func (s *Server) ClientConfig(creds Credentials) aws.Config {
	return aws.Config{
		Region:       s.sim.region,
		BaseEndpoint: aws.String(s.url),
		Credentials: aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(
			creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken)),
	}
}
