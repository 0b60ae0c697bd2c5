package bench

import (
	"math"
	"slices"
	"time"
)

// Percentiles summarize a distribution, in milliseconds.
type Percentiles struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
}

// Point is one point of a percentile curve: the latency at or under which
// fraction P of the requests were.
type Point struct {
	P  float64 `json:"p"`
	Ms float64 `json:"ms"`
}

// quantile is the nearest-rank quantile q of sorted values.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// summarize sorts values (milliseconds) in place and summarizes them.
func summarize(values []float64) Percentiles {
	slices.Sort(values)
	p := Percentiles{N: len(values)}
	if len(values) == 0 {
		return p
	}
	var sum float64
	for _, v := range values {
		sum += v
	}
	p.Mean = sum / float64(len(values))
	p.P50 = quantile(values, 0.50)
	p.P90 = quantile(values, 0.90)
	p.P99 = quantile(values, 0.99)
	p.P999 = quantile(values, 0.999)
	p.Max = values[len(values)-1]
	return p
}

// curve samples sorted values at percentiles spread evenly on the scale of
// a percentile plot, 1/(1−p), up to the largest the sample count supports.
func curve(sorted []float64) []Point {
	n := len(sorted)
	if n == 0 {
		return nil
	}
	// Ten points per decade of 1/(1−p), from p = 0 to p = 1 − 1/n.
	decades := math.Log10(float64(n))
	var pts []Point
	for x := 0.0; x <= decades+1e-9; x += 0.1 {
		p := 1 - math.Pow(10, -x)
		pts = append(pts, Point{P: p, Ms: quantile(sorted, p)})
	}
	return append(pts, Point{P: 1, Ms: sorted[n-1]})
}

// durations turns the durations f picks from the samples that have one
// (f returns false to skip) into milliseconds.
func durations(samples []sample, f func(*sample) (time.Duration, bool)) []float64 {
	out := make([]float64, 0, len(samples))
	for i := range samples {
		if d, ok := f(&samples[i]); ok {
			out = append(out, ms(d))
		}
	}
	return out
}
