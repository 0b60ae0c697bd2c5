// Package coord holds what a Durable Object gives a Workers app, for agentd:
// one writer per key at a time. Conversations are serialized through a Locker
// so concurrent messages to one conversation never lose a turn.
//
// State makes one KV key an atomic read-modify-write over the KV's
// CompareAndSwap, retried on conflict; updates of a key within a process
// wait for each other first, so only other nodes cause retries. RateLimiter
// (GCRA: a burst of N, one more every Per/N) and Budgets (reserve an
// estimate, settle the actual spend, per UTC day; reservations expire so a
// dead node blocks nothing for long) are built on it. Resting on
// CompareAndSwap alone, one implementation serves every backend: exact
// within a node over bolt, shared by every node over Redis — unlike the
// Workers recipe's rate limiter, a KV get then put, which two requests can
// pass at once.
//
// It imports only the root package.
package coord
