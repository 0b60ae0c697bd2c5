package telemetry

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

func TestMetricsCountersAndGauges(t *testing.T) {
	m := NewMetrics()
	m.Request("chat", 200, 120*time.Millisecond)
	m.Request("chat", 200, 80*time.Millisecond)
	m.Request("chat", 429, time.Millisecond)
	m.Request("", 404, time.Millisecond)
	u := agentd.Usage{InputTokens: 100, OutputTokens: 20, CacheCreationInputTokens: 300, CacheCreation1hInputTokens: 100, CacheReadInputTokens: 4000}
	m.ModelCall("chat", "claude-sonnet-4-6", "ok", 2*time.Second, u, 1_500_000_000)
	m.ModelCall("triage", "claude-sonnet-4-6", "ok", 3*time.Second, u, 500_000_000)
	m.ModelCall("chat", "claude-sonnet-4-6", "overloaded_error", 40*time.Second, agentd.Usage{}, 0)
	m.ModelCall("chat", "claude-haiku-4-5", "ok", time.Second, agentd.Usage{InputTokens: -1, OutputTokens: 7}, -5) // negatives ignored
	m.Retry("claude-sonnet-4-6")
	m.Retry("claude-sonnet-4-6")
	m.Fallback("chat", "fallback_model")
	m.Fallback("chat", "canned")
	m.Rejected("chat", "budget_exceeded")
	m.Rejected("triage", "rate_limited")
	m.Rejected("triage", "rate_limited")
	m.BreakerState("claude-sonnet-4-6", "open")

	const want = `
# HELP agentd_requests_total HTTP requests to agents, by agent and response status.
# TYPE agentd_requests_total counter
agentd_requests_total{agent="",status="404"} 1
agentd_requests_total{agent="chat",status="200"} 2
agentd_requests_total{agent="chat",status="429"} 1
# HELP agentd_model_calls_total Model calls, retries inside a call not counted separately, by model and outcome ("ok" or the error type).
# TYPE agentd_model_calls_total counter
agentd_model_calls_total{model="claude-haiku-4-5",outcome="ok"} 1
agentd_model_calls_total{model="claude-sonnet-4-6",outcome="ok"} 2
agentd_model_calls_total{model="claude-sonnet-4-6",outcome="overloaded_error"} 1
# HELP agentd_tokens_total Tokens of model calls, by model and kind (input, output, cache_write, cache_read).
# TYPE agentd_tokens_total counter
agentd_tokens_total{kind="cache_read",model="claude-sonnet-4-6"} 8000
agentd_tokens_total{kind="cache_write",model="claude-sonnet-4-6"} 600
agentd_tokens_total{kind="input",model="claude-sonnet-4-6"} 200
agentd_tokens_total{kind="output",model="claude-haiku-4-5"} 7
agentd_tokens_total{kind="output",model="claude-sonnet-4-6"} 40
# HELP agentd_cost_usd_total What model calls cost, in USD at the configured prices, by agent and model.
# TYPE agentd_cost_usd_total counter
agentd_cost_usd_total{agent="chat",model="claude-sonnet-4-6"} 1.5
agentd_cost_usd_total{agent="triage",model="claude-sonnet-4-6"} 0.5
# HELP agentd_model_retries_total Model API attempts retried after a failure, by model.
# TYPE agentd_model_retries_total counter
agentd_model_retries_total{model="claude-sonnet-4-6"} 2
# HELP agentd_breaker_state State of a model's circuit breaker: 0 closed, 1 half-open, 2 open.
# TYPE agentd_breaker_state gauge
agentd_breaker_state{model="claude-sonnet-4-6"} 2
# HELP agentd_fallbacks_total Answers given by a fallback instead of the agent's model, by agent and source.
# TYPE agentd_fallbacks_total counter
agentd_fallbacks_total{agent="chat",source="canned"} 1
agentd_fallbacks_total{agent="chat",source="fallback_model"} 1
# HELP agentd_rejections_total Requests refused before calling the model, by agent and reason (budget_exceeded, rate_limited).
# TYPE agentd_rejections_total counter
agentd_rejections_total{agent="chat",reason="budget_exceeded"} 1
agentd_rejections_total{agent="triage",reason="rate_limited"} 2
`
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want),
		"agentd_requests_total", "agentd_model_calls_total", "agentd_tokens_total", "agentd_cost_usd_total",
		"agentd_model_retries_total", "agentd_breaker_state", "agentd_fallbacks_total", "agentd_rejections_total"); err != nil {
		t.Error(err)
	}

	// Histograms: count, sum and where the observations fell.
	for _, tc := range []struct {
		name, label, value string
		count              uint64
		sum                float64
		le                 float64 // a bucket bound
		below              uint64  // observations at or under it
	}{
		{"agentd_request_duration_seconds", "agent", "chat", 3, 0.201, 0.1, 2},
		{"agentd_model_call_duration_seconds", "model", "claude-sonnet-4-6", 3, 45, 30, 2},
		{"agentd_model_call_duration_seconds", "model", "claude-haiku-4-5", 1, 1, 0.5, 0},
	} {
		h := histogram(t, m.reg, tc.name, tc.label, tc.value)
		if h.GetSampleCount() != tc.count || math.Abs(h.GetSampleSum()-tc.sum) > 1e-9 {
			t.Errorf("%s{%s=%q}: count %d sum %v, want %d and %v", tc.name, tc.label, tc.value, h.GetSampleCount(), h.GetSampleSum(), tc.count, tc.sum)
		}
		found := false
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() == tc.le {
				found = true
				if b.GetCumulativeCount() != tc.below {
					t.Errorf("%s{%s=%q}: %d at or under %vs, want %d", tc.name, tc.label, tc.value, b.GetCumulativeCount(), tc.le, tc.below)
				}
			}
		}
		if !found {
			t.Errorf("%s has no bucket at %vs", tc.name, tc.le)
		}
	}

	// The names and help follow the Prometheus conventions.
	problems, err := testutil.GatherAndLint(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "agentd_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

// histogram returns the histogram of the metric name whose label is value.
func histogram(t *testing.T, g prometheus.Gatherer, name, label, value string) *dto.Histogram {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return mt.GetHistogram()
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return nil
}

func TestBreakerState(t *testing.T) {
	m := NewMetrics()
	g := m.breaker.WithLabelValues("m")
	for _, tc := range []struct {
		state string
		want  float64
	}{
		{"open", 2},
		{"half-open", 1},
		{"closed", 0},
		{"half_open", 1},
		{"sideways", 1}, // unknown: unchanged
		{"", 1},
		{"open", 2},
	} {
		m.BreakerState("m", tc.state)
		if got := testutil.ToFloat64(g); got != tc.want {
			t.Errorf("after %q: %v, want %v", tc.state, got, tc.want)
		}
	}
}

func TestMetricsHandlerServesTheRegistry(t *testing.T) {
	m := NewMetrics()
	m.ModelCall("chat", "claude-opus-4-8", "ok", 1500*time.Millisecond, agentd.Usage{InputTokens: 5}, 25_000)
	extra := prometheus.NewCounter(prometheus.CounterOpts{Name: "agentd_store_cache_hits_total", Help: "Reads answered from the query cache."})
	if err := m.Register(extra); err != nil {
		t.Fatal(err)
	}
	extra.Add(3)

	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	text := string(body)
	for _, line := range []string{
		`agentd_model_calls_total{model="claude-opus-4-8",outcome="ok"} 1`,
		`agentd_model_call_duration_seconds_bucket{model="claude-opus-4-8",le="2.5"} 1`,
		`agentd_model_call_duration_seconds_bucket{model="claude-opus-4-8",le="1"} 0`,
		`agentd_model_call_duration_seconds_bucket{model="claude-opus-4-8",le="600"} 1`,
		`agentd_cost_usd_total{agent="chat",model="claude-opus-4-8"} 2.5e-05`,
		`agentd_store_cache_hits_total 3`,
		"# TYPE go_goroutines gauge",
		"# TYPE process_cpu_seconds_total counter",
	} {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("the scrape lacks %q", line)
		}
	}
	if err := testutil.ScrapeAndCompare(srv.URL, strings.NewReader(`
# HELP agentd_store_cache_hits_total Reads answered from the query cache.
# TYPE agentd_store_cache_hits_total counter
agentd_store_cache_hits_total 3
`), "agentd_store_cache_hits_total"); err != nil {
		t.Error(err)
	}
}

func TestMetricsRegister(t *testing.T) {
	m := NewMetrics()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "extra_total", Help: "An extra counter."})
	if err := m.Register(c); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		kind agentd.Kind
	}{
		{"the same again", c, agentd.KindConflict},
		{"a clash with an agentd metric", prometheus.NewCounter(prometheus.CounterOpts{Name: "agentd_requests_total", Help: "x"}), agentd.KindInvalid},
		{"a reserved label", prometheus.NewCounter(prometheus.CounterOpts{Name: "bad_total", Help: "x", ConstLabels: prometheus.Labels{"__bad": "x"}}), agentd.KindInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := m.Register(tc.c); agentd.KindOf(err) != tc.kind {
				t.Errorf("Register: %v, want %s", err, tc.kind)
			}
		})
	}
	// Two Metrics are independent: no registry is shared.
	if err := NewMetrics().Register(prometheus.NewCounter(prometheus.CounterOpts{Name: "extra_total", Help: "An extra counter."})); err != nil {
		t.Errorf("a second Metrics shares the first's registry: %v", err)
	}
}

func TestNilMetricsDoNothing(t *testing.T) {
	var m *Metrics
	m.Request("a", 200, time.Second)
	m.ModelCall("a", "m", "ok", time.Second, agentd.Usage{InputTokens: 1}, 1)
	m.Retry("m")
	m.BreakerState("m", "open")
	m.Fallback("a", "cache")
	m.Rejected("a", "rate_limited")
	if err := m.Register(prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "x"})); err != nil {
		t.Errorf("Register on nil: %v", err)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("nil Handler answered %d, want 404", rec.Code)
	}
}

func TestMetricsConcurrentUse(t *testing.T) {
	m := NewMetrics()
	const workers, each = 8, 200
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				m.ModelCall("chat", "m", "ok", time.Millisecond, agentd.Usage{InputTokens: 2}, 1000)
				m.Request("chat", 200, time.Millisecond)
				m.BreakerState("m", "closed")
			}
		})
	}
	// Scrapes race with the updates too.
	wg.Go(func() {
		for range 5 {
			if _, err := m.reg.Gather(); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	if got := testutil.ToFloat64(m.modelCalls.WithLabelValues("m", "ok")); got != workers*each {
		t.Errorf("%v calls, want %d", got, workers*each)
	}
	if got := testutil.ToFloat64(m.tokens.WithLabelValues("m", "input")); got != 2*workers*each {
		t.Errorf("%v input tokens, want %d", got, 2*workers*each)
	}
}
