package migrate

// Runtime returns the migrations of the runtime's own tables, oldest first.
// It builds them anew on each call, so no caller can change another's.
func Runtime() []Migration {
	return []Migration{
		{
			Version: 1,
			Name:    "audit_events",
			SQL:     both(auditEventsV1()),
		},
	}
}

// both gives the same statements to both dialects.
func both(stmts []string) map[string][]string {
	return map[string][]string{"sqlite": stmts, "postgres": stmts}
}

// auditEventsV1 creates the audit log of telemetry.Auditor. The SQL is the
// same in both dialects: times are unix nanoseconds and latencies
// microseconds in BIGINT columns, which sort and compare alike everywhere
// and need no time zone or driver time handling.
func auditEventsV1() []string {
	return []string{
		`CREATE TABLE audit_events (
			id TEXT PRIMARY KEY,
			at BIGINT NOT NULL,
			agent TEXT NOT NULL,
			user_id TEXT NOT NULL,
			kind TEXT NOT NULL,
			model TEXT NOT NULL,
			input_tokens BIGINT NOT NULL,
			output_tokens BIGINT NOT NULL,
			cache_creation_input_tokens BIGINT NOT NULL,
			cache_read_input_tokens BIGINT NOT NULL,
			latency_us BIGINT NOT NULL,
			outcome TEXT NOT NULL,
			error TEXT NOT NULL,
			request_id TEXT NOT NULL,
			attempts BIGINT NOT NULL
		)`,
		// Audit queries ask for one agent's or one user's newest events.
		`CREATE INDEX audit_events_agent_at ON audit_events (agent, at)`,
		`CREATE INDEX audit_events_user_at ON audit_events (user_id, at)`,
	}
}
