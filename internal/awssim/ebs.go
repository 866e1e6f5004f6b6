package awssim

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Lifetimes of EBS direct tokens.
const (
	blockTokenLifetime = 7 * 24 * time.Hour
	pageTokenLifetime  = time.Hour
)

func ebsService() *service {
	return &service{
		name:       "ebs",
		protocol:   protoRESTJSON,
		throttle:   apiError{status: http.StatusBadRequest, code: "RequestThrottledException", message: "The request was throttled."},
		badSig:     apiError{status: http.StatusForbidden, code: "InvalidSignatureException"},
		authFailed: apiError{status: http.StatusForbidden, code: "UnrecognizedClientException"},
		expired:    apiError{status: http.StatusForbidden, code: "ExpiredTokenException"},
		routes: []route{
			{http.MethodGet, "/snapshots/{SnapshotId}/blocks", "ListSnapshotBlocks"},
			{http.MethodGet, "/snapshots/{SnapshotId}/blocks/{BlockIndex}", "GetSnapshotBlock"},
			{http.MethodGet, "/snapshots/{SecondSnapshotId}/changedblocks", "ListChangedBlocks"},
		},
		ops: map[string]operation{
			"ListSnapshotBlocks": ebsListSnapshotBlocks,
			"GetSnapshotBlock":   ebsGetSnapshotBlock,
			"ListChangedBlocks":  ebsListChangedBlocks,
		},
	}
}

func ebsValidation(reason, format string, args ...any) *apiError {
	e := errf(http.StatusBadRequest, "ValidationException", format, args...)
	e.reason = reason
	return e
}

func ebsSnapshotNotFound(id string) *apiError {
	e := errf(http.StatusNotFound, "ResourceNotFoundException", "The snapshot %s does not exist.", id)
	e.reason = "SNAPSHOT_NOT_FOUND"
	return e
}

// token is an HMAC-protected opaque token: kind, snapshot, index, expiry.
func (s *Sim) token(kind, snap string, idx int64, exp time.Time) string {
	var b []byte
	b = append(b, kind...)
	b = append(b, 0)
	b = append(b, snap...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(idx))
	b = binary.BigEndian.AppendUint64(b, uint64(exp.Unix()))
	m := hmac.New(sha256.New, s.tokKey[:])
	m.Write(b)
	b = m.Sum(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// checkToken verifies a token and returns its index.
func (s *Sim) checkToken(tok, kind, snap string) (int64, bool) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < sha256.Size+16 {
		return 0, false
	}
	body, mac := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	m := hmac.New(sha256.New, s.tokKey[:])
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), mac) {
		return 0, false
	}
	prefix := kind + "\x00" + snap + "\x00"
	if !strings.HasPrefix(string(body), prefix) || len(body) != len(prefix)+16 {
		return 0, false
	}
	rest := body[len(prefix):]
	idx := int64(binary.BigEndian.Uint64(rest[:8]))
	exp := time.Unix(int64(binary.BigEndian.Uint64(rest[8:])), 0)
	if !s.now().Before(exp) {
		return 0, false
	}
	return idx, true
}

// readableSnapshot returns a snapshot the caller may read through EBS direct.
func (c *call) readableSnapshotLocked(id string) (*snapshot, error) {
	if !strings.HasPrefix(id, "snap-") {
		return nil, ebsValidation("INVALID_SNAPSHOT_ID", "Invalid snapshot ID %s", id)
	}
	sn := c.sim.snapshots[id]
	acct := c.who.accountID()
	if sn == nil || !sn.visibleTo(acct) {
		return nil, ebsSnapshotNotFound(id)
	}
	if sn.kmsKey != nil && !sn.kmsKey.canUseLocked(acct) {
		e := errf(http.StatusForbidden, "AccessDeniedException",
			"The caller is not authorized to use KMS key %s of snapshot %s.", sn.kmsKey.arn, id)
		e.reason = "DEPENDENCY_ACCESS_DENIED"
		return nil, e
	}
	if !sn.completedLocked() {
		return nil, ebsValidation("INVALID_SNAPSHOT_ID", "The snapshot %s is not in a completed state.", id)
	}
	return sn, nil
}

// readableSnapshot is readableSnapshotLocked taking the read lock only,
// unless the snapshot is still pending and may have to complete.
func (c *call) readableSnapshot(id string) (*snapshot, error) {
	s := c.sim
	s.mu.RLock()
	sn := s.snapshots[id]
	if sn != nil && sn.state == "completed" {
		defer s.mu.RUnlock()
		return c.readableSnapshotLocked(id)
	}
	s.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return c.readableSnapshotLocked(id)
}

type ebsBlock struct {
	BlockIndex int64
	BlockToken string
}

type ebsChangedBlock struct {
	BlockIndex       int64
	FirstBlockToken  string `json:",omitempty"`
	SecondBlockToken string `json:",omitempty"`
}

// pageArgs reads MaxResults, NextToken and StartingBlockIndex.
func (c *call) pageArgs(snap string) (start int64, max int, err error) {
	max = 10000
	if v := c.query.Get("maxResults"); v != "" {
		max, err = strconv.Atoi(v)
		if err != nil || max < 100 || max > 10000 {
			return 0, 0, ebsValidation("INVALID_PARAMETER_VALUE", "MaxResults must be between 100 and 10000")
		}
	}
	if v := c.query.Get("startingBlockIndex"); v != "" {
		start, err = strconv.ParseInt(v, 10, 64)
		if err != nil || start < 0 {
			return 0, 0, ebsValidation("INVALID_PARAMETER_VALUE", "Invalid StartingBlockIndex %s", v)
		}
	}
	if v := c.query.Get("pageToken"); v != "" {
		idx, ok := c.sim.checkToken(v, "page", snap)
		if !ok {
			return 0, 0, ebsValidation("INVALID_PAGE_TOKEN", "The pagination token is invalid or expired.")
		}
		start = max64(start, idx)
	}
	return start, max, nil
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func sortedIndexes(m blockMap, start int64) []int64 {
	idx := make([]int64, 0, len(m))
	for i := range m {
		if i >= start {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	return idx
}

func ebsListSnapshotBlocks(c *call) (any, error) {
	s := c.sim
	id := c.path["SnapshotId"]
	start, max, err := c.pageArgs(id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	sn, err := c.readableSnapshotLocked(id)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	now := s.now()
	exp := now.Add(blockTokenLifetime)
	idx := sortedIndexes(sn.blocks, start)
	out := struct {
		Blocks     []ebsBlock
		ExpiryTime epoch
		VolumeSize int64
		BlockSize  int
		NextToken  string `json:",omitempty"`
	}{Blocks: []ebsBlock{}, ExpiryTime: epoch(exp), VolumeSize: int64(sn.sizeGiB), BlockSize: BlockSize}
	if len(idx) > max {
		out.NextToken = s.token("page", id, idx[max], now.Add(pageTokenLifetime))
		idx = idx[:max]
	}
	for _, i := range idx {
		out.Blocks = append(out.Blocks, ebsBlock{i, s.token("block", id, i, exp)})
	}
	return out, nil
}

func ebsListChangedBlocks(c *call) (any, error) {
	s := c.sim
	second := c.path["SecondSnapshotId"]
	first := c.query.Get("firstSnapshotId")
	start, max, err := c.pageArgs(second)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	sn2, err := c.readableSnapshotLocked(second)
	var sn1 *snapshot
	if err == nil && first != "" {
		sn1, err = c.readableSnapshotLocked(first)
	}
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var firstBlocks blockMap
	if sn1 != nil {
		if sn1.lineage != sn2.lineage {
			return nil, ebsValidation("UNRELATED_SNAPSHOTS", "The snapshots %s and %s are not of the same volume lineage.", first, second)
		}
		if !sn1.started.Before(sn2.started) && sn1.started != sn2.started {
			return nil, ebsValidation("INVALID_PARAMETER_VALUE", "The first snapshot must be older than the second snapshot.")
		}
		firstBlocks = sn1.blocks
	}
	changed := blockMap{}
	for i, b := range sn2.blocks {
		if firstBlocks[i] != b {
			changed[i] = b
		}
	}
	for i, b := range firstBlocks {
		if _, ok := sn2.blocks[i]; !ok {
			changed[i] = b
		}
	}
	now := s.now()
	exp := now.Add(blockTokenLifetime)
	idx := sortedIndexes(changed, start)
	out := struct {
		ChangedBlocks []ebsChangedBlock
		ExpiryTime    epoch
		VolumeSize    int64
		BlockSize     int
		NextToken     string `json:",omitempty"`
	}{ChangedBlocks: []ebsChangedBlock{}, ExpiryTime: epoch(exp), VolumeSize: int64(sn2.sizeGiB), BlockSize: BlockSize}
	if len(idx) > max {
		out.NextToken = s.token("page", second, idx[max], now.Add(pageTokenLifetime))
		idx = idx[:max]
	}
	for _, i := range idx {
		cb := ebsChangedBlock{BlockIndex: i}
		if _, ok := firstBlocks[i]; ok {
			cb.FirstBlockToken = s.token("block", first, i, exp)
		}
		if _, ok := sn2.blocks[i]; ok {
			cb.SecondBlockToken = s.token("block", second, i, exp)
		}
		out.ChangedBlocks = append(out.ChangedBlocks, cb)
	}
	return out, nil
}

// blockResponse writes a GetSnapshotBlock answer: the block's bytes with
// their precomputed checksum.
type blockResponse struct {
	data     []byte
	checksum string
}

var dataLength = strconv.Itoa(BlockSize)

func (b *blockResponse) respond(w http.ResponseWriter, c *call) {
	h := w.Header()
	h["Content-Type"] = []string{"application/octet-stream"}
	h["Content-Length"] = []string{dataLength}
	h["X-Amz-Data-Length"] = []string{dataLength}
	h["X-Amz-Checksum"] = []string{b.checksum}
	h["X-Amz-Checksum-Algorithm"] = []string{"SHA256"}
	h["X-Amzn-Requestid"] = []string{c.requestID}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.data)
}

// wrongChecksum is a valid-looking checksum that matches no block we serve.
var wrongChecksum = base64.StdEncoding.EncodeToString(make([]byte, sha256.Size))

func ebsGetSnapshotBlock(c *call) (any, error) {
	s := c.sim
	id := c.path["SnapshotId"]
	idx, err := strconv.ParseInt(c.path["BlockIndex"], 10, 64)
	if err != nil || idx < 0 {
		return nil, ebsValidation("INVALID_BLOCK", "Invalid block index %s", c.path["BlockIndex"])
	}
	tok := c.query.Get("blockToken")
	if tok == "" {
		return nil, ebsValidation("INVALID_BLOCK_TOKEN", "BlockToken is required.")
	}
	sn, err := c.readableSnapshot(id)
	if err != nil {
		return nil, err
	}
	if ti, ok := s.checkToken(tok, "block", id); !ok || ti != idx {
		return nil, ebsValidation("INVALID_BLOCK_TOKEN", "The block token is invalid or expired.")
	}
	b := sn.blocks[idx]
	if b == nil {
		return nil, ebsValidation("INVALID_BLOCK", "The block %d of snapshot %s has no data.", idx, id)
	}
	rsp := &blockResponse{data: b.data, checksum: b.sumB64}
	if corrupt, data := s.faults.corrupt(idx); corrupt {
		if data {
			d := slices.Clone(b.data)
			d[len(d)/2] ^= 0xff
			rsp.data = d
		} else {
			rsp.checksum = wrongChecksum
		}
	}
	return rsp, nil
}
