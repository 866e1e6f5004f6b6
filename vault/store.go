package vault

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/rs/zerolog"
)

// Store keeps write-once objects. Every implementation passes the same
// conformance suite (vault's suite_test.go).
type Store interface {
	// URI names the store: "s3://bucket/prefix", "file:///path" or "mem:".
	URI() string
	// Create begins a write-once object at key. Write the content, then
	// Commit; Abort, or cancelling ctx, leaves no object.
	Create(ctx context.Context, key string, opts PutOptions) (Writer, error)
	// Resume continues a Writer from a Checkpoint's state after a crash and
	// returns the offset from which to continue writing.
	Resume(ctx context.Context, state []byte) (Writer, int64, error)
	// Get streams one version of key back; versionID "" is the latest.
	Get(ctx context.Context, key, versionID string) (io.ReadCloser, error)
	// Stat returns the stored receipt of one version of key.
	Stat(ctx context.Context, key, versionID string) (*Receipt, error)
	// List returns the keys under prefix, sorted.
	List(ctx context.Context, prefix string) ([]string, error)
	// SetLegalHold places or lifts a legal hold on one version of key.
	SetLegalHold(ctx context.Context, key, versionID string, on bool) error
}

// Writer receives one object's content.
type Writer interface {
	io.Writer
	// Commit stores the object and returns its receipt. Committing content
	// identical to what the key already holds returns the stored receipt;
	// different content fails with ErrExists and leaves the stored object as
	// it was.
	Commit() (*Receipt, error)
	// Abort discards everything written; no object appears at the key.
	Abort() error
	// Checkpoint makes everything up to the returned offset durable and
	// returns an opaque state from which Store.Resume continues after a
	// crash. Writes after the offset must be repeated after Resume.
	Checkpoint() (state []byte, offset int64, err error)
}

// Size limits of S3 that shape how a stream is cut into parts and segments.
const (
	MinPartSize          = 5 << 20           // smallest part S3 accepts, except the last
	MaxPartSize          = 5 << 30           // largest part S3 accepts
	MaxParts             = 10000             // parts in one multipart upload
	MaxObjectSize        = 5 << 40           // largest S3 object
	DefaultPartSize      = 16 << 20          // parts of a stream of unknown length
	DefaultConcurrency   = 8                 // parts in flight per writer
	DefaultMemoryBudget  = 192 << 20         // part buffers per writer
	DefaultRetentionDays = 365               // see NewOptions
	maxStateSize         = 8 << 20           // cap on a Checkpoint state handed to Resume
	stateVersion         = "impound-vault/1" // first field of every Checkpoint state
)

// Options configure a store. The zero value works: zero fields take the
// values NewOptions gives them.
type Options struct {
	// AWS is the configuration of the S3 client for s3:// stores.
	AWS aws.Config
	// DefaultRetention is how long an object is kept when its PutOptions
	// name no RetainUntil.
	DefaultRetention time.Duration
	// DefaultMode is the retention mode when PutOptions name none.
	DefaultMode string
	// PartSize is the multipart part size for streams of unknown length
	// (S3). With a SizeHint the part size grows so the stream fits.
	PartSize int64
	// Concurrency is the number of parts in flight per writer (S3). Memory
	// held by a writer is about (Concurrency+1) × part size.
	Concurrency int
	// MemoryBudget bounds the part buffers of one writer (S3): parts in
	// flight are reduced, and part sizes capped at half of it, so that a
	// writer holds at most this much whatever the stream's size; streams
	// that then no longer fit in one object are split into segments.
	MemoryBudget int64
	// MaxParts and MaxObjectSize bound one S3 object; beyond them a stream
	// is split into numbered segments. Lowered only by tests.
	MaxParts      int
	MaxObjectSize int64
	// SignPayload makes SigV4 sign each part's body too. By default only
	// the headers are signed, x-amz-checksum-sha256 among them, which binds
	// the body just as well and spares the server a second SHA-256.
	SignPayload bool
	// PathStyle forces path-style S3 addressing; it is implied when
	// AWS.BaseEndpoint is set (MinIO and other S3-compatible servers).
	PathStyle bool
	// MaxAttempts bounds the attempts of one S3 request, throttling
	// (SlowDown) included.
	MaxAttempts int
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// NewOptions returns the defaults: one year of COMPLIANCE retention, 16 MiB
// parts, 8 parts in flight within 192 MiB of buffers, S3's limits.
func NewOptions() Options {
	return Options{
		DefaultRetention: DefaultRetentionDays * 24 * time.Hour,
		DefaultMode:      ModeCompliance,
		PartSize:         DefaultPartSize,
		Concurrency:      DefaultConcurrency,
		MemoryBudget:     DefaultMemoryBudget,
		MaxParts:         MaxParts,
		MaxObjectSize:    MaxObjectSize,
		MaxAttempts:      10,
		Now:              time.Now,
	}
}

// withDefaults fills zero fields from NewOptions.
func (o Options) withDefaults() Options {
	d := NewOptions()
	if o.DefaultRetention <= 0 {
		o.DefaultRetention = d.DefaultRetention
	}
	if o.DefaultMode == "" {
		o.DefaultMode = d.DefaultMode
	}
	if o.PartSize <= 0 {
		o.PartSize = d.PartSize
	}
	if o.Concurrency <= 0 {
		o.Concurrency = d.Concurrency
	}
	if o.MemoryBudget <= 0 {
		o.MemoryBudget = d.MemoryBudget
	}
	if o.MaxParts <= 0 {
		o.MaxParts = d.MaxParts
	}
	if o.MaxObjectSize <= 0 {
		o.MaxObjectSize = d.MaxObjectSize
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = d.MaxAttempts
	}
	if o.Now == nil {
		o.Now = d.Now
	}
	return o
}

// Open returns the store a URI names: "s3://bucket[/prefix]",
// "file:///abs/path" or a plain path, or "mem:" (a new, process-local
// memory store).
func Open(ctx context.Context, uri string, opts Options) (Store, error) {
	opts = opts.withDefaults()
	switch {
	case uri == "":
		return nil, errors.New("vault: empty URI; give s3://bucket[/prefix], file:///path or a directory")
	case uri == "mem:" || strings.HasPrefix(uri, "mem:"):
		return newMemory(opts), nil
	case strings.HasPrefix(uri, "s3://"):
		return openS3(ctx, uri, opts)
	case strings.HasPrefix(uri, "file://"):
		p := strings.TrimPrefix(uri, "file://")
		if !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("vault: %q: a file URI needs an absolute path (file:///path)", uri)
		}
		return openLocal(ctx, p, opts)
	case strings.Contains(uri, "://"):
		return nil, fmt.Errorf("vault: %q: unknown scheme; use s3://, file:// or a directory path", uri)
	default:
		return openLocal(ctx, uri, opts)
	}
}

// resolve fills a PutOptions' retention from the store's defaults.
func (o Options) resolve(p PutOptions) (PutOptions, error) {
	switch strings.ToUpper(p.RetentionMode) {
	case "":
		p.RetentionMode = o.DefaultMode
	case ModeCompliance, ModeGovernance:
		p.RetentionMode = strings.ToUpper(p.RetentionMode)
	default:
		return p, fmt.Errorf("vault: retention mode %q: want %s or %s", p.RetentionMode, ModeCompliance, ModeGovernance)
	}
	if p.RetainUntil.IsZero() {
		p.RetainUntil = o.Now().Add(o.DefaultRetention)
	}
	// S3 keeps retain-until dates with second precision; so do we, so that
	// every store reports the date S3 would.
	p.RetainUntil = p.RetainUntil.UTC().Truncate(time.Second)
	if !p.RetainUntil.After(o.Now()) {
		return p, fmt.Errorf("vault: retain-until %s is in the past", p.RetainUntil.Format(time.RFC3339))
	}
	return p, nil
}

// CheckKey reports whether key is acceptable to every store: non-empty,
// at most 1,024 bytes, slash-separated segments that are neither empty nor
// "." or "..", no NUL or control characters, not ending in a reserved suffix.
func CheckKey(key string) error {
	if key == "" {
		return fmt.Errorf("vault: empty key")
	}
	if len(key) > 1024 {
		return fmt.Errorf("vault: key longer than 1024 bytes")
	}
	for _, c := range key {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return fmt.Errorf("vault: key %q: control character or backslash", key)
		}
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("vault: key %q: empty, \".\" or \"..\" path segment", key)
		}
		if strings.Contains(seg, reservedPrefix) {
			return fmt.Errorf("vault: key %q: names containing %q are reserved", key, reservedPrefix)
		}
	}
	if strings.HasSuffix(key, receiptSuffix) {
		return fmt.Errorf("vault: key %q: suffix %q is reserved", key, receiptSuffix)
	}
	return nil
}

// Names reserved for the stores' own files.
const (
	reservedPrefix = ".impound"
	receiptSuffix  = ".impound-receipt.json"
)

// Put stores r at key: Create, copy, Commit; on any error the writer is
// aborted and no object is left.
func Put(ctx context.Context, s Store, key string, r io.Reader, opts PutOptions) (*Receipt, error) {
	w, err := s.Create(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(w, r); err != nil {
		return nil, errors.Join(fmt.Errorf("vault: put %s: %w", key, err), w.Abort())
	}
	rec, err := w.Commit()
	if err != nil {
		return nil, errors.Join(err, w.Abort())
	}
	return rec, nil
}

// PutBytes stores b, held whole in memory, at key: Create, Write, Commit;
// on any error the writer is aborted and no object is left. It is Put for
// the small objects every package writes (ledger entries, block maps,
// reports) and needs only a Store's Create.
func PutBytes(ctx context.Context, s Creator, key string, b []byte, opts PutOptions) (*Receipt, error) {
	opts.SizeHint = int64(len(b))
	w, err := s.Create(ctx, key, opts)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(b); err != nil {
		return nil, errors.Join(fmt.Errorf("vault: put %s: %w", key, err), w.Abort())
	}
	r, err := w.Commit()
	if err != nil {
		return nil, errors.Join(err, w.Abort())
	}
	return r, nil
}

// MismatchError says how a re-read object differs from its receipt. It
// wraps ErrMismatch.
type MismatchError struct {
	URI, VersionID        string
	WantSize, GotSize     int64
	WantSHA256, GotSHA256 string // hex
}

func (e *MismatchError) Error() string {
	var what []string
	if e.WantSize != e.GotSize {
		what = append(what, fmt.Sprintf("size %d, receipt says %d", e.GotSize, e.WantSize))
	}
	if e.WantSHA256 != e.GotSHA256 {
		what = append(what, fmt.Sprintf("sha256 %s, receipt says %s", e.GotSHA256, e.WantSHA256))
	}
	return fmt.Sprintf("vault: %s version %s: %s: %s", e.URI, e.VersionID, ErrMismatch.Error()[len("vault: "):], strings.Join(what, "; "))
}

func (e *MismatchError) Unwrap() error { return ErrMismatch }

// Verify re-reads the object version a receipt names (all its segments, when
// it was split) and compares its size and SHA-256 with the receipt. A
// difference is a *MismatchError; an object that is gone is ErrNotFound.
func Verify(ctx context.Context, s Store, r *Receipt) error {
	if r == nil {
		return errors.New("vault: verify: nil receipt")
	}
	rc, err := s.Get(ctx, r.Key, r.VersionID)
	if err != nil {
		return fmt.Errorf("vault: verify %s version %s: %w", r.Key, r.VersionID, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return fmt.Errorf("vault: verify %s version %s: read: %w", r.Key, r.VersionID, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != r.Size || got != r.SHA256 {
		return &MismatchError{URI: r.URI, VersionID: r.VersionID, WantSize: r.Size, GotSize: n, WantSHA256: r.SHA256, GotSHA256: got}
	}
	return nil
}

// hashState serialises a SHA-256 hasher for a Checkpoint.
func hashState(h hash.Hash) ([]byte, error) {
	m, ok := h.(encoding.BinaryMarshaler)
	if !ok {
		return nil, errors.New("vault: hasher cannot save its state")
	}
	return m.MarshalBinary()
}

// restoreHash rebuilds a SHA-256 hasher from hashState's output.
func restoreHash(state []byte) (hash.Hash, error) {
	h := sha256.New()
	if len(state) == 0 {
		return h, nil
	}
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
		return nil, fmt.Errorf("vault: resume: hasher state: %w", err)
	}
	return h, nil
}

// checkpoint is the serialised state of an unfinished Writer. One JSON
// object whose first field is the version tag; each store fills its part.
type checkpoint struct {
	V      string     `json:"v"`
	Store  string     `json:"store"` // the URI of the store that wrote it
	Key    string     `json:"key"`
	Opts   PutOptions `json:"opts"`
	Offset int64      `json:"offset"`
	Hash   []byte     `json:"hash"` // SHA-256 state of the whole stream at Offset

	Upload string `json:"upload,omitempty"` // memory/local: temporary name; S3: upload ID

	// S3 only: the part size and every segment's multipart upload, the
	// last one being written. SegHash is the SHA-256 state of that last
	// segment (segments after the first).
	PartSize int64        `json:"part_size,omitempty"`
	Segs     []s3SegState `json:"segs,omitempty"`
	SegHash  []byte       `json:"seg_hash,omitempty"`
}

func (c *checkpoint) marshal() ([]byte, error) {
	c.V = stateVersion
	return json.Marshal(c)
}

// parseCheckpoint parses a Checkpoint state and checks that it belongs to
// the store named storeURI.
func parseCheckpoint(state []byte, storeURI string) (*checkpoint, error) {
	if len(state) > maxStateSize {
		return nil, fmt.Errorf("vault: resume: state of %d bytes exceeds %d", len(state), maxStateSize)
	}
	var c checkpoint
	dec := json.NewDecoder(strings.NewReader(string(state)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("vault: resume: malformed state: %w", err)
	}
	if dec.More() {
		return nil, errors.New("vault: resume: trailing data after state")
	}
	if c.V != stateVersion {
		return nil, fmt.Errorf("vault: resume: state version %q, want %q", c.V, stateVersion)
	}
	if c.Store != storeURI {
		return nil, fmt.Errorf("vault: resume: state belongs to store %s, not %s", c.Store, storeURI)
	}
	if err := CheckKey(c.Key); err != nil {
		return nil, fmt.Errorf("vault: resume: %w", err)
	}
	if c.Offset < 0 {
		return nil, errors.New("vault: resume: negative offset")
	}
	return &c, nil
}

// prepare checks a key and resolves a PutOptions for Create: what every
// store does before it starts a writer.
func (o Options) prepare(ctx context.Context, key string, p PutOptions) (PutOptions, error) {
	if err := CheckKey(key); err != nil {
		return p, err
	}
	p, err := o.resolve(p)
	if err != nil {
		return p, err
	}
	return p, ctx.Err()
}

// writerBase is what every Writer shares: its context, key and options,
// and whether it is closed, under its lock. Methods named "…able" and
// closed are called with mu held.
type writerBase struct {
	ctx  context.Context
	stop func() bool // unregisters the Abort that cancelling ctx triggers
	key  string
	opts PutOptions

	mu     sync.Mutex
	done   bool
	broken error // a failed Commit: only Abort is left
}

func newWriterBase(ctx context.Context, key string, opts PutOptions) writerBase {
	return writerBase{ctx: ctx, key: key, opts: opts}
}

// abortOnCancel makes cancelling the writer's context abort it.
func (b *writerBase) abortOnCancel(abort func() error) {
	b.stop = context.AfterFunc(b.ctx, func() { abort() })
}

// closed says why op cannot go on once the writer was committed, aborted
// or failed to commit.
func (b *writerBase) closed(op string) error {
	if b.done || b.broken != nil {
		return fmt.Errorf("vault: %s %s: writer closed", op, b.key)
	}
	return nil
}

// writable says why Write cannot go on.
func (b *writerBase) writable() error {
	if err := b.closed("write"); err != nil {
		return err
	}
	return b.ctx.Err()
}

// committable says why Commit cannot go on.
func (b *writerBase) committable() error {
	if b.done {
		return fmt.Errorf("vault: commit %s: writer closed", b.key)
	}
	if err := b.ctx.Err(); err != nil {
		return fmt.Errorf("vault: commit %s: %w", b.key, err)
	}
	if b.broken != nil {
		return fmt.Errorf("vault: commit %s: an earlier commit failed: %w", b.key, b.broken)
	}
	return nil
}

// close marks the writer done and unregisters its abort on cancellation;
// false when it was done already.
func (b *writerBase) close() bool {
	if b.done {
		return false
	}
	b.done = true
	b.stop()
	return true
}

func logStored(ctx context.Context, r *Receipt) {
	zerolog.Ctx(ctx).Debug().Str("uri", r.URI).Str("version_id", r.VersionID).Int64("size", r.Size).Str("sha256", r.SHA256).Msg("stored")
}
