package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// histBuckets covers latencies from 0 to about 2^38 µs with a relative
// error under 1/128: values below 256 µs have a bucket each, larger ones
// share 128 buckets per power of two.
const histBuckets = 256 + 31*128

// histogram counts latencies in microseconds. Record is safe from many
// goroutines at once.
type histogram struct {
	counts [histBuckets]atomic.Int64
	max    atomic.Int64
}

func bucketOf(us int64) int {
	if us < 0 {
		us = 0
	}
	if us < 256 {
		return int(us)
	}
	shift := bits.Len64(uint64(us)) - 8
	i := 256 + (shift-1)*128 + int(us>>shift) - 128
	return min(i, histBuckets-1)
}

// bucketTop is the largest value that falls into bucket i.
func bucketTop(i int) int64 {
	if i < 256 {
		return int64(i)
	}
	shift := (i-256)/128 + 1
	m := int64((i-256)%128 + 128)
	return (m+1)<<shift - 1
}

func (h *histogram) record(d time.Duration) {
	us := d.Microseconds()
	h.counts[bucketOf(us)].Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

// sparse returns the non-empty buckets, for the report to the coordinator.
func (h *histogram) sparse() map[int]int64 {
	out := make(map[int]int64)
	for i := range h.counts {
		if n := h.counts[i].Load(); n > 0 {
			out[i] = n
		}
	}
	return out
}

// merged is a histogram summed from the children's sparse ones.
type merged struct {
	counts [histBuckets]int64
	total  int64
	maxUS  int64
}

func (m *merged) add(sparse map[int]int64, maxUS int64) {
	for i, n := range sparse {
		if i >= 0 && i < histBuckets {
			m.counts[i] += n
			m.total += n
		}
	}
	m.maxUS = max(m.maxUS, maxUS)
}

// quantile returns the upper bound of the bucket holding quantile q, so it
// errs on the slow side.
func (m *merged) quantile(q float64) time.Duration {
	if m.total == 0 {
		return 0
	}
	rank := int64(q*float64(m.total) + 0.5)
	rank = max(rank, 1)
	var seen int64
	for i, n := range m.counts {
		seen += n
		if seen >= rank {
			return time.Duration(min(bucketTop(i), m.maxUS)) * time.Microsecond
		}
	}
	return time.Duration(m.maxUS) * time.Microsecond
}
