// Package telemetry holds what agentd records about its own work: audit
// events, the cost ledger, Prometheus metrics and OpenTelemetry traces.
//
// An Auditor writes one AuditEvent per model call to the audit_events table
// (created by migrate.Runtime) off the request path, in batches, and reads
// them back for operators: the events themselves (Query) and what they cost
// by day, agent and user (Usage).
//
// Pricing holds the price of each model and turns a call's token usage into
// its cost in nanodollars, an integer, so sums and budgets are exact.
//
// Metrics holds agentd's Prometheus metrics in a registry of its own, served
// by its Handler. Tracing is an OpenTelemetry tracer provider that exports
// over OTLP/HTTP when configured and does nothing otherwise; StartModelSpan
// and EndModelSpan record model calls by the GenAI semantic conventions.
// Neither is ever installed process-wide: whoever needs them is given them.
package telemetry
