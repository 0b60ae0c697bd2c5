// Package agent holds agent kinds and their loops. Now: the chat agent — a
// conversation per user, serialized, remembered in KV, answered by the model,
// every model call audited.
//
// It speaks agentd's own types only; it must not import a backend, the model
// SDK or the HTTP server.
package agent
