// Package telemetry holds what agentd records about its own work: audit
// events, and later metrics, traces and the cost ledger.
//
// An Auditor writes one AuditEvent per model call to the audit_events table
// (created by migrate.Runtime) off the request path, in batches, and reads
// them back for operators.
package telemetry
