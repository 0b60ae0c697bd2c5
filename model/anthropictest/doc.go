// Package anthropictest is a fake Anthropic Messages API: an http.Handler that
// speaks the wire protocol of POST /v1/messages (JSON and SSE) and
// POST /v1/messages/count_tokens closely enough that the official Go SDK is
// its client.
//
// Tests use it to fake the model at the HTTP wire instead of mocking
// agentd.Model, so the SDK's encoding, retries, streaming and error decoding
// are exercised for real. agentd's offline mode (`agentd dev` without a key)
// uses it through [Fake.HTTPClient], which calls the handler in memory.
//
// What it does like the real API:
//
//   - validates requests and answers 400 invalid_request_error naming the
//     field at fault, 401 without a credential, 413 over 32 MB, 404 for other
//     paths, with the real error body and a request-id header on every answer;
//   - answers with a whole Message, or with the real SSE event sequence when
//     the request has "stream": true;
//   - estimates usage deterministically (see [EstimateTokens]) and accounts
//     for prompt caching: breakpoints, the minimum cacheable length, the 5 min
//     and 1 h TTLs, reads and writes;
//   - injects faults on demand: error statuses, headers such as retry-after,
//     latency, dropped connections and SSE error events.
//
// Replies are scripted with [Fake.Enqueue] or computed by a responder; the
// default responder, [Echo], repeats the last user message. [Offline], the
// responder of agentd's offline mode, also answers a forced tool call — a
// task agent's structured output — with a value [Synthesize]d from the
// tool's input schema, so declared agents run end to end without a key.
//
// It imports only the standard library: neither the SDK (its tests drive it
// with the SDK) nor the rest of agentd.
package anthropictest
