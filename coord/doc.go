// Package coord holds what a Durable Object gives a Workers app, for agentd:
// one writer per key at a time. Conversations are serialized through a Locker
// so concurrent messages to one conversation never lose a turn.
//
// Later it will also hold rate limits, idempotency and budgets. It imports
// only the root package.
package coord
