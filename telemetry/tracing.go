package telemetry

import (
	"context"
	"errors"
	"math"
	"net/url"
	"strings"

	"github.com/agentd/agentd"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// TracingConfig configures OpenTelemetry tracing. Tracing is off when
// Endpoint is "".
type TracingConfig struct {
	// Endpoint is the base URL of an OTLP/HTTP collector, e.g.
	// http://collector:4318; spans go to its /v1/traces, unless the URL's
	// path already ends so. http:// sends in the clear, https:// over TLS.
	Endpoint string
	// Headers are sent with every export, e.g. an API key of a hosted
	// collector.
	Headers map[string]string
	// ServiceName is the service.name of the spans; "" means "agentd".
	ServiceName string
	// SampleRatio is the share of new traces recorded, in [0, 1]; 0
	// means 1, every trace. A request whose caller sampled its trace (a
	// traceparent header) follows the caller's choice.
	SampleRatio float64
}

// DefaultServiceName is the service.name of spans when TracingConfig has
// none.
const DefaultServiceName = "agentd"

// tracesPath is the OTLP/HTTP path of trace exports.
const tracesPath = "/v1/traces"

// instrumentationName names the tracer of agentd's spans.
const instrumentationName = "github.com/agentd/agentd/telemetry"

// Tracing is agentd's tracer provider. It is never installed as the
// OpenTelemetry global one: code gets its tracer from Tracer. A nil
// *Tracing traces nothing.
type Tracing struct {
	tp       trace.TracerProvider
	shutdown func(context.Context) error
	flush    func(context.Context) error
}

// NewTracing returns the tracing cfg describes: spans batched and exported
// over OTLP/HTTP when cfg.Endpoint is set, none at all otherwise. It does
// not connect: a collector that is down loses spans later, without failing
// requests. A bad Endpoint or SampleRatio is a KindInvalid error naming
// the field ("endpoint", "sample_ratio").
func NewTracing(ctx context.Context, cfg TracingConfig) (*Tracing, error) {
	const op = "telemetry.tracing"
	if cfg.Endpoint == "" {
		return &Tracing{
			tp:       noop.NewTracerProvider(),
			shutdown: func(context.Context) error { return nil },
			flush:    func(context.Context) error { return nil },
		}, nil
	}
	endpoint, err := tracesURL(cfg.Endpoint)
	if err != nil {
		return nil, &agentd.Error{Kind: agentd.KindInvalid, Op: op, Field: "endpoint", Message: err.Error()}
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(endpoint)}
	if len(cfg.Headers) > 0 {
		opts = append(opts, otlptracehttp.WithHeaders(cfg.Headers))
	}
	if err := checkRatio(op, cfg.SampleRatio); err != nil {
		return nil, err
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, agentd.E(agentd.KindInvalid, op, err)
	}
	return NewTracingWithExporter(cfg, exp)
}

// NewTracingWithExporter returns tracing that batches spans to exp,
// whatever cfg.Endpoint says; tests pass an in-memory exporter.
func NewTracingWithExporter(cfg TracingConfig, exp sdktrace.SpanExporter) (*Tracing, error) {
	const op = "telemetry.tracing"
	if err := checkRatio(op, cfg.SampleRatio); err != nil {
		return nil, err
	}
	ratio := cfg.SampleRatio
	if ratio == 0 {
		ratio = 1
	}
	name := cfg.ServiceName
	if name == "" {
		name = DefaultServiceName
	}
	// The SDK's default resource (SDK name and version, and
	// OTEL_RESOURCE_ATTRIBUTES) uses the same semconv schema, so merging
	// cannot conflict; were it to, the service name alone still serves.
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName(name)))
	if err != nil {
		res = resource.NewSchemaless(semconv.ServiceName(name))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
	)
	return &Tracing{tp: tp, shutdown: tp.Shutdown, flush: tp.ForceFlush}, nil
}

func checkRatio(op string, r float64) error {
	if math.IsNaN(r) || r < 0 || r > 1 {
		return agentd.InvalidField(op, "sample_ratio", "the sample ratio must be between 0 and 1, not %v", r)
	}
	return nil
}

// tracesURL returns the URL spans are posted to for a collector's base
// URL.
func tracesURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The URL is not quoted: it may carry credentials.
		return "", errors.New("the tracing endpoint must be an http:// or https:// URL with a host, such as http://collector:4318")
	}
	if !strings.HasSuffix(u.Path, tracesPath) {
		u.Path = strings.TrimSuffix(u.Path, "/") + tracesPath
	}
	return u.String(), nil
}

// Tracer returns the tracer of agentd's spans.
func (t *Tracing) Tracer() trace.Tracer {
	if t == nil {
		return noop.NewTracerProvider().Tracer(instrumentationName)
	}
	return t.tp.Tracer(instrumentationName)
}

// ForceFlush exports the spans ended so far, or fails when ctx ends first.
func (t *Tracing) ForceFlush(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.flush(ctx); err != nil {
		return agentd.E("", "telemetry.tracing.flush", err)
	}
	return nil
}

// Shutdown exports the spans ended so far and stops tracing; spans started
// after it are not recorded. It fails when ctx ends first.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.shutdown(ctx); err != nil {
		return agentd.E("", "telemetry.tracing.shutdown", err)
	}
	return nil
}

// Attribute keys of the OpenTelemetry GenAI semantic conventions (as of
// semconv 1.41; later releases moved them out of the Go semconv package,
// so they are spelled here). gen_ai.system is the older name of
// gen_ai.provider.name, kept for backends that still read it.
const (
	attrOperationName      = attribute.Key("gen_ai.operation.name")
	attrProviderName       = attribute.Key("gen_ai.provider.name")
	attrSystem             = attribute.Key("gen_ai.system")
	attrAgentName          = attribute.Key("gen_ai.agent.name")
	attrRequestModel       = attribute.Key("gen_ai.request.model")
	attrRequestMaxTokens   = attribute.Key("gen_ai.request.max_tokens")
	attrResponseModel      = attribute.Key("gen_ai.response.model")
	attrResponseID         = attribute.Key("gen_ai.response.id")
	attrFinishReasons      = attribute.Key("gen_ai.response.finish_reasons")
	attrInputTokens        = attribute.Key("gen_ai.usage.input_tokens")
	attrOutputTokens       = attribute.Key("gen_ai.usage.output_tokens")
	attrCacheReadTokens    = attribute.Key("gen_ai.usage.cache_read.input_tokens")
	attrCacheCreateTokens  = attribute.Key("gen_ai.usage.cache_creation.input_tokens")
	attrErrorType          = attribute.Key("error.type")
	attrAnthropicRequestID = attribute.Key("anthropic.request_id")
	attrUpstreamStatus     = attribute.Key("http.response.status_code")
)

// StartModelSpan starts the client span of a model call, named
// "chat {model}", with the request's GenAI attributes. It records no
// prompt text, only the model and the token limit. End it with
// EndModelSpan. A nil tracer traces nothing.
func StartModelSpan(ctx context.Context, tracer trace.Tracer, agentName string, req agentd.ModelRequest) (context.Context, trace.Span) {
	if tracer == nil {
		tracer = noop.NewTracerProvider().Tracer(instrumentationName)
	}
	attrs := []attribute.KeyValue{
		attrOperationName.String("chat"),
		attrProviderName.String("anthropic"),
		attrSystem.String("anthropic"),
		attrRequestModel.String(req.Model),
	}
	if req.MaxTokens > 0 {
		attrs = append(attrs, attrRequestMaxTokens.Int(req.MaxTokens))
	}
	if agentName != "" {
		attrs = append(attrs, attrAgentName.String(agentName))
	}
	return tracer.Start(ctx, "chat "+req.Model, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// EndModelSpan records the outcome of a model call on span and ends it:
// the answer's model, id, stop reason and token counts, and for a failure
// an error status whose error.type is the agentd.Kind. The input token
// count includes cache reads and writes, as the conventions ask (the API's
// input_tokens does not).
//
// No answer text goes into the span, nor the error's message, which may
// quote the model's answer: only its kind and the upstream status and
// type.
func EndModelSpan(span trace.Span, resp agentd.ModelResponse, err error) {
	if span == nil {
		return
	}
	defer span.End()
	var attrs []attribute.KeyValue
	if resp.Model != "" {
		attrs = append(attrs, attrResponseModel.String(resp.Model))
	}
	if resp.ID != "" {
		attrs = append(attrs, attrResponseID.String(resp.ID))
	}
	if resp.StopReason != "" {
		attrs = append(attrs, attrFinishReasons.StringSlice([]string{resp.StopReason}))
	}
	if resp.RequestID != "" {
		attrs = append(attrs, attrAnthropicRequestID.String(resp.RequestID))
	}
	if u := resp.Usage; u != (agentd.Usage{}) {
		attrs = append(attrs,
			attrInputTokens.Int64(u.InputTokens+u.CacheCreationInputTokens+u.CacheReadInputTokens),
			attrOutputTokens.Int64(u.OutputTokens),
			attrCacheReadTokens.Int64(u.CacheReadInputTokens),
			attrCacheCreateTokens.Int64(u.CacheCreationInputTokens),
		)
	}
	if err != nil {
		ae := agentd.AsError(err)
		attrs = append(attrs, attrErrorType.String(string(ae.Kind)))
		desc := string(ae.Kind)
		if up := ae.Upstream; up != nil {
			if up.Status != 0 {
				attrs = append(attrs, attrUpstreamStatus.Int(up.Status))
			}
			if up.Type != "" {
				desc += ": " + up.Type
			}
			if up.RequestID != "" && resp.RequestID == "" {
				attrs = append(attrs, attrAnthropicRequestID.String(up.RequestID))
			}
		}
		span.SetStatus(codes.Error, desc)
	}
	span.SetAttributes(attrs...)
}
