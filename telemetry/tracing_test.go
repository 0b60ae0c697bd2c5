package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/agentd/agentd"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

const secret = "SECRET-TEXT"

// modelRequest is a request whose every text is secret.
func modelRequest() agentd.ModelRequest {
	return agentd.ModelRequest{
		Model:     "claude-sonnet-4-6",
		System:    agentd.SystemText("system " + secret),
		Messages:  []agentd.Message{{Role: agentd.RoleUser, Content: []agentd.Block{agentd.TextBlock("question " + secret)}}},
		MaxTokens: 1024,
	}
}

func newTestTracing(t *testing.T, cfg TracingConfig) (*Tracing, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr, err := NewTracingWithExporter(cfg, exp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Shutdown(context.Background()) })
	return tr, exp
}

// endedSpans flushes tr and returns what exp received.
func endedSpans(t *testing.T, tr *Tracing, exp *tracetest.InMemoryExporter) tracetest.SpanStubs {
	t.Helper()
	if err := tr.ForceFlush(t.Context()); err != nil {
		t.Fatal(err)
	}
	return exp.GetSpans()
}

func attrMap(kvs []attribute.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}

// noSecret fails if the secret text reached the span.
func noSecret(t *testing.T, s tracetest.SpanStub) {
	t.Helper()
	dump := fmt.Sprintf("%s %v %v %v %v", s.Name, s.Attributes, s.Events, s.Status, s.Links)
	if strings.Contains(dump, secret) {
		t.Errorf("span %q carries prompt, answer or error text: %s", s.Name, dump)
	}
}

func TestModelSpanAttributes(t *testing.T) {
	base := map[string]any{
		"gen_ai.operation.name":          "chat",
		"gen_ai.provider.name":           "anthropic",
		"gen_ai.system":                  "anthropic",
		"gen_ai.agent.name":              "support",
		"gen_ai.request.model":           "claude-sonnet-4-6",
		"gen_ai.request.max_tokens":      int64(1024),
		"gen_ai.response.model":          "claude-sonnet-4-6-20260301",
		"gen_ai.response.id":             "msg_1",
		"anthropic.request_id":           "req_1",
		"gen_ai.response.finish_reasons": []string{"end_turn"},
		// 100 input + 300 written + 4000 read, as the conventions count it.
		"gen_ai.usage.input_tokens":                4400,
		"gen_ai.usage.output_tokens":               20,
		"gen_ai.usage.cache_read.input_tokens":     4000,
		"gen_ai.usage.cache_creation.input_tokens": 300,
	}
	with := func(extra map[string]any, drop ...string) map[string]any {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for _, k := range drop {
			delete(m, k)
		}
		for k, v := range extra {
			m[k] = v
		}
		// AsInterface gives int64 for every int attribute.
		for k, v := range m {
			if i, ok := v.(int); ok {
				m[k] = int64(i)
			}
		}
		return m
	}
	answer := agentd.ModelResponse{
		ID: "msg_1", Model: "claude-sonnet-4-6-20260301", StopReason: "end_turn", RequestID: "req_1",
		Content: []agentd.Block{agentd.TextBlock("answer " + secret)},
		Usage:   agentd.Usage{InputTokens: 100, OutputTokens: 20, CacheCreationInputTokens: 300, CacheCreation1hInputTokens: 100, CacheReadInputTokens: 4000},
	}
	for _, tc := range []struct {
		name       string
		resp       agentd.ModelResponse
		err        error
		wantAttrs  map[string]any
		wantStatus codes.Code
		wantDesc   string
	}{
		{"ok", answer, nil, with(nil), codes.Unset, ""},
		{
			name: "upstream failure",
			err: &agentd.Error{Kind: agentd.KindModelUnavailable, Op: "anthropic.generate", Message: "overloaded " + secret,
				Upstream: &agentd.Upstream{Status: 529, Type: "overloaded_error", RequestID: "req_2"}},
			wantAttrs: with(map[string]any{"error.type": "model_unavailable", "http.response.status_code": 529, "anthropic.request_id": "req_2"},
				"gen_ai.response.model", "gen_ai.response.id", "gen_ai.response.finish_reasons", "gen_ai.usage.input_tokens",
				"gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens"),
			wantStatus: codes.Error, wantDesc: "model_unavailable: overloaded_error",
		},
		{
			// An answer that broke the schema: its usage was spent, and
			// the error may quote it.
			name: "invalid answer",
			resp: answer,
			err: &agentd.Error{Kind: agentd.KindInvalidModelOutput, Message: "not JSON: " + secret,
				Violations: []string{"/x: " + secret}},
			wantAttrs:  with(map[string]any{"error.type": "invalid_model_output"}),
			wantStatus: codes.Error, wantDesc: "invalid_model_output",
		},
		{
			name:       "plain error",
			err:        errors.New("dial tcp: " + secret),
			wantAttrs:  with(map[string]any{"error.type": "internal_error"}, "gen_ai.response.model", "gen_ai.response.id", "gen_ai.response.finish_reasons", "anthropic.request_id", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens"),
			wantStatus: codes.Error, wantDesc: "internal_error",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, exp := newTestTracing(t, TracingConfig{ServiceName: "agentd-test"})
			ctx, span := StartModelSpan(t.Context(), tr.Tracer(), "support", modelRequest())
			if !trace.SpanFromContext(ctx).SpanContext().Equal(span.SpanContext()) {
				t.Error("the returned context does not carry the span")
			}
			EndModelSpan(span, tc.resp, tc.err)
			spans := endedSpans(t, tr, exp)
			if len(spans) != 1 {
				t.Fatalf("%d spans, want 1", len(spans))
			}
			s := spans[0]
			if s.Name != "chat claude-sonnet-4-6" || s.SpanKind != trace.SpanKindClient {
				t.Errorf("span %q of kind %v, want \"chat claude-sonnet-4-6\", client", s.Name, s.SpanKind)
			}
			if got := attrMap(s.Attributes); !reflect.DeepEqual(got, tc.wantAttrs) {
				t.Errorf("attributes\n got %v\nwant %v", got, tc.wantAttrs)
			}
			if s.Status.Code != tc.wantStatus || s.Status.Description != tc.wantDesc {
				t.Errorf("status %v %q, want %v %q", s.Status.Code, s.Status.Description, tc.wantStatus, tc.wantDesc)
			}
			if len(s.Events) != 0 {
				t.Errorf("events %v, want none (an exception event would carry the message)", s.Events)
			}
			if got := attrMap(s.Resource.Attributes())["service.name"]; got != "agentd-test" {
				t.Errorf("service.name = %v", got)
			}
			noSecret(t, s)
		})
	}
}

func TestModelSpanChildOfCaller(t *testing.T) {
	tr, exp := newTestTracing(t, TracingConfig{})
	ctx, parent := tr.Tracer().Start(t.Context(), "POST /agents/support")
	_, span := StartModelSpan(ctx, tr.Tracer(), "", agentd.ModelRequest{Model: "m"})
	EndModelSpan(span, agentd.ModelResponse{}, nil)
	parent.End()
	spans := endedSpans(t, tr, exp)
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	child := spans[0]
	if child.Parent.SpanID() != parent.SpanContext().SpanID() || child.SpanContext.TraceID() != parent.SpanContext().TraceID() {
		t.Error("the model span is not a child of the caller's span")
	}
	// No agent, no max_tokens, no answer: only the request's model.
	want := map[string]any{"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic", "gen_ai.system": "anthropic", "gen_ai.request.model": "m"}
	if got := attrMap(child.Attributes); !reflect.DeepEqual(got, want) {
		t.Errorf("attributes %v, want %v", got, want)
	}
	if got := attrMap(child.Resource.Attributes())["service.name"]; got != DefaultServiceName {
		t.Errorf("service.name = %v, want %q", got, DefaultServiceName)
	}
}

func TestSampling(t *testing.T) {
	// A ratio this small samples no new trace in practice (one in 10¹⁵),
	// but a sampled caller's trace is followed.
	tr, exp := newTestTracing(t, TracingConfig{SampleRatio: 1e-15})
	_, root := StartModelSpan(t.Context(), tr.Tracer(), "a", agentd.ModelRequest{Model: "root"})
	EndModelSpan(root, agentd.ModelResponse{}, nil)

	// The ratio alone would drop this trace id: the ratio sampler keeps
	// ids whose low 8 bytes are small, and these are the largest.
	var traceID trace.TraceID
	for i := range traceID {
		traceID[i] = 0xff
	}
	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled, Remote: true,
	})
	_, child := StartModelSpan(trace.ContextWithRemoteSpanContext(t.Context(), remote), tr.Tracer(), "a", agentd.ModelRequest{Model: "child"})
	EndModelSpan(child, agentd.ModelResponse{}, nil)

	spans := endedSpans(t, tr, exp)
	if len(spans) != 1 || spans[0].Name != "chat child" {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name)
		}
		t.Errorf("recorded %v, want only the span of the sampled caller", names)
	}
}

func TestTracingOff(t *testing.T) {
	tr, err := NewTracing(t.Context(), TracingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var nilTracing *Tracing
	for name, tracer := range map[string]trace.Tracer{"no endpoint": tr.Tracer(), "nil": nilTracing.Tracer(), "nil tracer": nil} {
		_, span := StartModelSpan(t.Context(), tracer, "a", modelRequest())
		if span.IsRecording() || span.SpanContext().IsValid() {
			t.Errorf("%s: the span is recorded", name)
		}
		EndModelSpan(span, agentd.ModelResponse{}, errors.New("x"))
	}
	EndModelSpan(nil, agentd.ModelResponse{}, nil) // must not panic
	for _, tt := range []*Tracing{tr, nilTracing} {
		if err := tt.ForceFlush(t.Context()); err != nil {
			t.Error(err)
		}
		if err := tt.Shutdown(t.Context()); err != nil {
			t.Error(err)
		}
	}
}

func TestTracingConfigIsValidated(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   TracingConfig
		field string
	}{
		{"no scheme", TracingConfig{Endpoint: "collector:4318"}, "endpoint"},
		{"another scheme", TracingConfig{Endpoint: "grpc://collector:4317"}, "endpoint"},
		{"no host", TracingConfig{Endpoint: "http://"}, "endpoint"},
		{"not a URL", TracingConfig{Endpoint: "http://a b:4318\x7f"}, "endpoint"},
		{"negative ratio", TracingConfig{Endpoint: "http://c:4318", SampleRatio: -0.1}, "sample_ratio"},
		{"ratio above 1", TracingConfig{Endpoint: "http://c:4318", SampleRatio: 1.5}, "sample_ratio"},
		{"NaN ratio", TracingConfig{Endpoint: "http://c:4318", SampleRatio: math.NaN()}, "sample_ratio"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := NewTracing(t.Context(), tc.cfg)
			if ae := agentd.AsError(err); err == nil || ae.Kind != agentd.KindInvalid || ae.Field != tc.field {
				t.Errorf("NewTracing = %v, want a %s error on %q", err, agentd.KindInvalid, tc.field)
			}
			if tr != nil {
				tr.Shutdown(t.Context())
			}
		})
	}
	if _, err := NewTracingWithExporter(TracingConfig{SampleRatio: 2}, tracetest.NewInMemoryExporter()); agentd.KindOf(err) != agentd.KindInvalid {
		t.Errorf("NewTracingWithExporter with ratio 2: %v", err)
	}
}

func TestTracesURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"http://collector:4318", "http://collector:4318/v1/traces"},
		{"http://collector:4318/", "http://collector:4318/v1/traces"},
		{"https://otlp.example.com/api", "https://otlp.example.com/api/v1/traces"},
		{"https://otlp.example.com/api/v1/traces", "https://otlp.example.com/api/v1/traces"},
	} {
		if got, err := tracesURL(tc.in); err != nil || got != tc.want {
			t.Errorf("tracesURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestOTLPExportReachesCollector checks the real exporter: spans posted as
// protobuf to /v1/traces, with the configured headers.
func TestOTLPExportReachesCollector(t *testing.T) {
	type post struct {
		path, contentType, auth string
		req                     *collectortrace.ExportTraceServiceRequest
		err                     error
	}
	posts := make(chan post, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := post{path: r.URL.Path, contentType: r.Header.Get("Content-Type"), auth: r.Header.Get("Authorization")}
		body, err := io.ReadAll(r.Body)
		if err == nil {
			p.req = &collectortrace.ExportTraceServiceRequest{}
			err = proto.Unmarshal(body, p.req)
		}
		p.err = err
		posts <- p
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	tr, err := NewTracing(t.Context(), TracingConfig{
		Endpoint:    srv.URL,
		Headers:     map[string]string{"Authorization": "Bearer collector-key"},
		ServiceName: "agentd-otlp",
	})
	if err != nil {
		t.Fatal(err)
	}
	_, span := StartModelSpan(t.Context(), tr.Tracer(), "support", modelRequest())
	EndModelSpan(span, agentd.ModelResponse{ID: "msg_9", Usage: agentd.Usage{InputTokens: 3, OutputTokens: 4}}, nil)
	// Shutdown exports what is batched before it returns.
	if err := tr.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	var p post
	select {
	case p = <-posts:
	default:
		t.Fatal("the collector received nothing")
	}
	if p.err != nil {
		t.Fatalf("the body is not an OTLP protobuf export: %v", p.err)
	}
	if p.path != "/v1/traces" || p.contentType != "application/x-protobuf" || p.auth != "Bearer collector-key" {
		t.Errorf("POST %s, Content-Type %q, Authorization %q", p.path, p.contentType, p.auth)
	}
	var names []string
	service := ""
	for _, rs := range p.req.GetResourceSpans() {
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				names = append(names, s.GetName())
				for _, kv := range s.GetAttributes() {
					if kv.GetKey() == "gen_ai.response.id" && kv.GetValue().GetStringValue() != "msg_9" {
						t.Errorf("gen_ai.response.id = %v", kv.GetValue())
					}
				}
			}
		}
	}
	if !reflect.DeepEqual(names, []string{"chat claude-sonnet-4-6"}) || service != "agentd-otlp" {
		t.Errorf("exported spans %v of service %q", names, service)
	}
	if strings.Contains(p.req.String(), secret) {
		t.Error("the export carries prompt text")
	}
}
