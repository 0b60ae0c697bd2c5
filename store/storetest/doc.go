// Package storetest holds the conformance suites of agentd's bindings: one
// suite per binding (KV, Blob, DB) that every backend runs unchanged from its
// own tests, so the embedded and the networked backends behave alike.
//
// Suites take a constructor so each test gets a fresh, isolated store, and a
// clock the suite controls so expiry is tested without sleeping. The package
// imports only the root package and test helpers, never a backend.
package storetest
