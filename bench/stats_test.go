package bench

import (
	"math"
	"testing"
)

func TestQuantileIsNearestRank(t *testing.T) {
	sorted := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		q    float64
		want float64
	}{
		{0, 1}, {0.1, 1}, {0.11, 2}, {0.5, 5}, {0.9, 9}, {0.91, 10}, {0.99, 10}, {1, 10},
	} {
		if got := quantile(sorted, tc.q); got != tc.want {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := quantile(nil, 0.5); got != 0 {
		t.Errorf("quantile of nothing = %v", got)
	}
}

func TestSummarize(t *testing.T) {
	values := make([]float64, 1000)
	for i := range values {
		values[len(values)-1-i] = float64(i + 1) // unsorted on purpose
	}
	p := summarize(values)
	want := Percentiles{N: 1000, Mean: 500.5, P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000}
	if p != want {
		t.Errorf("summarize = %+v, want %+v", p, want)
	}
	if (summarize(nil) != Percentiles{}) {
		t.Errorf("summarize(nil) = %+v", summarize(nil))
	}
}

func TestCurveEndsAtTheMaximum(t *testing.T) {
	values := make([]float64, 100)
	for i := range values {
		values[i] = float64(i)
	}
	pts := curve(values)
	if len(pts) < 20 || pts[0].P != 0 || pts[len(pts)-1] != (Point{P: 1, Ms: 99}) {
		t.Fatalf("curve = %+v", pts)
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].P < pts[i-1].P || pts[i].Ms < pts[i-1].Ms {
			t.Fatalf("curve not monotonic at %d: %+v", i, pts[i-1:i+1])
		}
	}
}

func TestBilledWeighsCacheTokensByPrice(t *testing.T) {
	u := usage{InputTokens: 100, CacheCreationInputTokens: 400, CacheReadInputTokens: 1000}
	if got := u.billed(); math.Abs(got-(100+1.25*400+0.1*1000)) > 1e-9 {
		t.Errorf("billed without a TTL split = %v", got)
	}
	u.CacheCreation = &struct {
		Ephemeral5m int64 `json:"ephemeral_5m_input_tokens"`
		Ephemeral1h int64 `json:"ephemeral_1h_input_tokens"`
	}{Ephemeral5m: 100, Ephemeral1h: 300}
	if got := u.billed(); math.Abs(got-(100+1.25*100+2*300+0.1*1000)) > 1e-9 {
		t.Errorf("billed with a TTL split = %v", got)
	}
}
