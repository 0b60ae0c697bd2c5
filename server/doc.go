// Package server holds agentd's HTTP API: routing, body limits, request
// decoding and validation, the one JSON error shape, health and readiness.
// It turns requests into calls on agents and agents' results and errors
// into responses; it holds no agent logic.
package server
