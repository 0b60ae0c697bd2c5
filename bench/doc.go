// Package bench is agentd's load and cost benchmark harness, the logic of
// `agentd bench`.
//
// It measures agentd the way a client sees it, in one run and side by side
// with two baselines:
//
//   - the floor: the same requests sent straight to the fake model;
//   - the naive recipe of the Workers guide (KV get, append, model call,
//     append, KV put, unserialized), over the same embedded bolt KV.
//
// agentd runs as a child process (`agentd serve` on a generated temporary
// project), so its resident memory can be read from /proc without the load
// generator's, and it talks to a fake Anthropic Messages API
// (model/anthropictest) served by this process over TLS and HTTP/2, as the
// real API is, with a configurable model latency. The load generator is open
// loop: request i is due at t0 + i/rate whatever happened to earlier ones,
// and its latency is measured from that due time, so a slow server cannot
// hide its slowness by slowing the generator down (coordinated omission).
//
// A run reports, per scenario, the latency agentd adds to the model's own
// (end to end minus the model time agentd reports in Server-Timing), the
// highest rate whose p99 added latency stays under a bound, how many
// in-flight conversations one node holds and the memory each costs, turns
// lost under concurrent messages to one conversation, and billed input
// tokens per conversation. It prints a table and writes JSON and an SVG
// chart.
//
// It is a tool, not part of the runtime: no runtime package may import it.
package bench
