// Package config holds agentd.toml: its schema, defaults and validation
// (every problem reported with file and line), the environment overrides,
// and the wiring that turns a validated project into a running application —
// stores opened by URL, the model client, and the agents.
//
// It is the one package that knows every other: nothing but cmd/agentd and
// tests imports it.
package config
