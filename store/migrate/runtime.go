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
		{
			Version: 2,
			Name:    "audit_cost",
			SQL:     both(auditCostV2()),
		},
		{
			Version: 3,
			Name:    "task_agents",
			SQL:     both(decisionsV3()),
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

// auditCostV2 adds to audit_events what the cost ledger needs: the 1-hour
// cache writes (priced above the 5-minute ones), the call's cost in
// nanodollars, its total retry backoff in microseconds, and what answered
// it. ADD COLUMN with NOT NULL and a constant DEFAULT is valid in both
// dialects and leaves older rows reading as zero and "", which is what
// they were: recorded before costs were. The index on at serves usage
// reports over a time range for all agents and users; (agent, at) and
// (user_id, at) serve the filtered ones.
func auditCostV2() []string {
	return []string{
		`ALTER TABLE audit_events ADD COLUMN cache_creation_1h_input_tokens BIGINT NOT NULL DEFAULT 0`,
		`ALTER TABLE audit_events ADD COLUMN cost_nusd BIGINT NOT NULL DEFAULT 0`,
		`ALTER TABLE audit_events ADD COLUMN retry_wait_us BIGINT NOT NULL DEFAULT 0`,
		`ALTER TABLE audit_events ADD COLUMN source TEXT NOT NULL DEFAULT ''`,
		`CREATE INDEX audit_events_at ON audit_events (at)`,
	}
}
