package vault

import "testing"

func TestPartSize(t *testing.T) {
	s := newS3Store(nil, "b", "", Options{})
	for _, c := range []struct {
		hint, want int64
	}{
		{0, DefaultPartSize},
		{1 << 30, DefaultPartSize},
		{200 << 30, 21 << 20},              // 200 GiB / 10,000 = 20.48 MiB, rounded up to whole MiB
		{1 << 40, DefaultMemoryBudget / 2}, // capped by the memory budget: split into segments
		{64 << 40, DefaultMemoryBudget / 2},
	} {
		got := s.partSize(c.hint)
		if got != c.want {
			t.Errorf("partSize(%d) = %d, want %d", c.hint, got, c.want)
		}
		if got*MaxParts < min(c.hint, MaxParts*(DefaultMemoryBudget/2)) {
			t.Errorf("partSize(%d) = %d: the stream does not fit the segments", c.hint, got)
		}
		w := s.newWriter(t.Context(), "k", PutOptions{}, got)
		if mem := int64(w.inflight+1) * got; mem > DefaultMemoryBudget {
			t.Errorf("part size %d: %d in flight hold %d bytes, over the budget", got, w.inflight, mem)
		}
		w.Abort()
	}
	small := newS3Store(nil, "b", "", Options{PartSize: 1})
	if got := small.partSize(0); got != MinPartSize {
		t.Errorf("part size below S3's minimum: %d", got)
	}
}
