package agent_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/model/anthropictest"
	"github.com/agentd/agentd/telemetry"
)

// TestModelCallsAreSpannedPricedAndCounted checks what a chat turn reports
// besides the audit: a GenAI client span, and tokens and cost in the
// metrics.
func TestModelCallsAreSpannedPricedAndCounted(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tracing, err := telemetry.NewTracingWithExporter(telemetry.TracingConfig{}, exp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tracing.Shutdown(context.Background()) })
	pricing, err := telemetry.NewPricing(nil)
	if err != nil {
		t.Fatal(err)
	}
	metrics := telemetry.NewMetrics()
	fake := anthropictest.New()
	c := newChatWith(t, fake, agent.ChatConfig{}, func(d *agent.ChatDeps) {
		d.Telemetry = agent.Telemetry{Pricing: pricing, Metrics: metrics, Tracer: tracing.Tracer()}
	})
	if _, err := c.Turn(context.Background(), "u1", "Hello there"); err != nil {
		t.Fatal(err)
	}
	if err := tracing.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "chat claude-sonnet-4-6" {
		t.Fatalf("spans %+v", spans)
	}
	attrs := map[attribute.Key]attribute.Value{}
	for _, a := range spans[0].Attributes {
		attrs[a.Key] = a.Value
	}
	if attrs["gen_ai.request.model"].AsString() != "claude-sonnet-4-6" || attrs["gen_ai.usage.output_tokens"].AsInt64() <= 0 {
		t.Errorf("span attributes %v", attrs)
	}
	for k, v := range attrs {
		if v.AsString() == "Hello there" || v.AsString() == "You said: Hello there" {
			t.Errorf("span attribute %s carries conversation text", k)
		}
	}
	body := scrape(t, metrics)
	for _, want := range []string{`agentd_model_calls_total{model="claude-sonnet-4-6",outcome="ok"} 1`, `agentd_cost_usd_total{agent="chat",model="claude-sonnet-4-6"}`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func scrape(t *testing.T, m *telemetry.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}
