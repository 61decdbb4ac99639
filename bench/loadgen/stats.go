package loadgen

import (
	"math"
	"slices"
	"time"
)

// Summary is the distribution of one run's latencies.
type Summary struct {
	Count          int
	P50, P99, P999 time.Duration
	Max            time.Duration
}

// Summarize sorts a copy of lat and reads its quantiles.
func Summarize(lat []time.Duration) Summary {
	s := slices.Clone(lat)
	slices.Sort(s)
	if len(s) == 0 {
		return Summary{}
	}
	return Summary{
		Count: len(s),
		P50:   Quantile(s, 0.50),
		P99:   Quantile(s, 0.99),
		P999:  Quantile(s, 0.999),
		Max:   s[len(s)-1],
	}
}

// Quantile is the nearest-rank q-quantile of sorted (ascending): the smallest
// value with at least q of the samples at or below it.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// Median is the median of xs (the mean of the middle two for an even count);
// 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
