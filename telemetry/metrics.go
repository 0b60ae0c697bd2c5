package telemetry

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/agentd/agentd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// latencyBuckets are the histogram buckets of request and model call
// durations, in seconds: from a cached or refused answer in milliseconds
// to a long generation of minutes. A function, so no histogram shares
// (and could change) another's slice.
func latencyBuckets() []float64 {
	return []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600}
}

// The values of agentd_breaker_state.
const (
	breakerClosed   = 0
	breakerHalfOpen = 1
	breakerOpen     = 2
)

// Metrics holds agentd's Prometheus metrics in a registry of its own (never
// the process-wide default one), with the Go runtime and process
// collectors. Its methods are cheap and safe for concurrent use, and do
// nothing on a nil *Metrics, so code given no metrics needs no checks.
//
// Label values become time series: pass configured names (agents, models)
// and the fixed sets documented on each method, never request input.
type Metrics struct {
	reg *prometheus.Registry

	requests          *prometheus.CounterVec
	requestDuration   *prometheus.HistogramVec
	modelCalls        *prometheus.CounterVec
	modelCallDuration *prometheus.HistogramVec
	tokens            *prometheus.CounterVec
	cost              *prometheus.CounterVec
	retries           *prometheus.CounterVec
	breaker           *prometheus.GaugeVec
	fallbacks         *prometheus.CounterVec
	rejections        *prometheus.CounterVec
}

// NewMetrics returns Metrics with every agentd metric registered, and the
// Go runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_requests_total",
			Help: "HTTP requests to agents, by agent and response status.",
		}, []string{"agent", "status"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentd_request_duration_seconds",
			Help:    "Time to answer an HTTP request to an agent.",
			Buckets: latencyBuckets(),
		}, []string{"agent"}),
		modelCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_model_calls_total",
			Help: `Model calls, retries inside a call not counted separately, by model and outcome ("ok" or the error type).`,
		}, []string{"model", "outcome"}),
		modelCallDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentd_model_call_duration_seconds",
			Help:    "Time of a model call, its retries and backoff included.",
			Buckets: latencyBuckets(),
		}, []string{"model"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_tokens_total",
			Help: "Tokens of model calls, by model and kind (input, output, cache_write, cache_read).",
		}, []string{"model", "kind"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_cost_usd_total",
			Help: "What model calls cost, in USD at the configured prices, by agent and model.",
		}, []string{"agent", "model"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_model_retries_total",
			Help: "Model API attempts retried after a failure, by model.",
		}, []string{"model"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "agentd_breaker_state",
			Help: "State of a model's circuit breaker: 0 closed, 1 half-open, 2 open.",
		}, []string{"model"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_fallbacks_total",
			Help: "Answers given by a fallback instead of the agent's model, by agent and source.",
		}, []string{"agent", "source"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_rejections_total",
			Help: "Requests refused before calling the model, by agent and reason (budget_exceeded, rate_limited).",
		}, []string{"agent", "reason"}),
	}
	// A fresh registry holding collectors of distinct names cannot refuse
	// them, so MustRegister cannot panic here.
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.requestDuration, m.modelCalls, m.modelCallDuration, m.tokens,
		m.cost, m.retries, m.breaker, m.fallbacks, m.rejections,
	)
	return m
}

// Handler serves the metrics in the Prometheus exposition format. A
// collector that fails leaves its metrics out of the answer rather than
// failing the whole scrape. On a nil *Metrics it answers 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:      m.reg, // counts its own errors in promhttp_metric_handler_errors_total
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// Register adds a collector, such as a store's counters, to the metrics.
// Registering a collector again (or one equal to it) is a KindConflict
// error; one that cannot join the others (an invalid description, or a
// name taken with other labels or help) is KindInvalid. On a nil *Metrics
// it does nothing.
func (m *Metrics) Register(c prometheus.Collector) error {
	const op = "metrics.register"
	if m == nil {
		return nil
	}
	if err := m.reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return agentd.E(agentd.KindConflict, op, err)
		}
		return agentd.E(agentd.KindInvalid, op, err)
	}
	return nil
}

// Request counts an HTTP request to an agent, answered with status after
// d: agentd_requests_total{agent,status} and
// agentd_request_duration_seconds{agent}. agent is "" for a request that
// named no configured agent.
func (m *Metrics) Request(agent string, status int, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(agent, strconv.Itoa(status)).Inc()
	m.requestDuration.WithLabelValues(agent).Observe(d.Seconds())
}

// ModelCall counts a model call of agent to model that ended with outcome
// ("ok", or the error's agentd.Kind or upstream type) after d, its tokens
// and its cost: agentd_model_calls_total{model,outcome},
// agentd_model_call_duration_seconds{model},
// agentd_tokens_total{model,kind} (cache_write counts both TTLs) and
// agentd_cost_usd_total{agent,model}. Negative counts are ignored.
func (m *Metrics) ModelCall(agent, model, outcome string, d time.Duration, u agentd.Usage, costNanoUSD int64) {
	if m == nil {
		return
	}
	m.modelCalls.WithLabelValues(model, outcome).Inc()
	m.modelCallDuration.WithLabelValues(model).Observe(d.Seconds())
	for _, t := range []struct {
		kind string
		n    int64
	}{
		{"input", u.InputTokens},
		{"output", u.OutputTokens},
		{"cache_write", u.CacheCreationInputTokens},
		{"cache_read", u.CacheReadInputTokens},
	} {
		// A counter's Add panics on a negative value.
		if t.n > 0 {
			m.tokens.WithLabelValues(model, t.kind).Add(float64(t.n))
		}
	}
	if costNanoUSD > 0 {
		m.cost.WithLabelValues(agent, model).Add(USD(costNanoUSD))
	}
}

// Retry counts an attempt at model retried after a failure:
// agentd_model_retries_total{model}.
func (m *Metrics) Retry(model string) {
	if m == nil {
		return
	}
	m.retries.WithLabelValues(model).Inc()
}

// BreakerState sets agentd_breaker_state{model} to the state of model's
// circuit breaker: "closed" is 0, "half-open" (or "half_open") 1, "open"
// 2. Any other state is ignored.
func (m *Metrics) BreakerState(model, state string) {
	if m == nil {
		return
	}
	var v float64
	switch state {
	case "closed":
		v = breakerClosed
	case "half-open", "half_open":
		v = breakerHalfOpen
	case "open":
		v = breakerOpen
	default:
		return
	}
	m.breaker.WithLabelValues(model).Set(v)
}

// Fallback counts an answer of agent given by source instead of its model
// ("fallback_model", "cache", "rules", "canned"):
// agentd_fallbacks_total{agent,source}.
func (m *Metrics) Fallback(agent, source string) {
	if m == nil {
		return
	}
	m.fallbacks.WithLabelValues(agent, source).Inc()
}

// Rejected counts a request to agent refused for reason
// ("budget_exceeded", "rate_limited"): agentd_rejections_total{agent,reason}.
func (m *Metrics) Rejected(agent, reason string) {
	if m == nil {
		return
	}
	m.rejections.WithLabelValues(agent, reason).Inc()
}
