package acquire

import "sync/atomic"

// statCounter counts read costs; sources that retry share it with the run.
type statCounter struct {
	reads, retries, throttled, checksum atomic.Int64
}

func (s *statCounter) snapshot() Stats {
	return Stats{Reads: s.reads.Load(), Retries: s.retries.Load(), Throttled: s.throttled.Load(), ChecksumFailures: s.checksum.Load()}
}

func (s *statCounter) add(o Stats) {
	s.reads.Add(o.Reads)
	s.retries.Add(o.Retries)
	s.throttled.Add(o.Throttled)
	s.checksum.Add(o.ChecksumFailures)
}

// counted is implemented by sources that count their own reads and retries.
type counted interface{ counters() *statCounter }

func statsOf(src Source) *statCounter {
	if c, ok := src.(counted); ok {
		return c.counters()
	}
	return &statCounter{}
}
