package migrate

// decisionsV3 creates the ledger of package decision — decisions, their
// planned effects, and the review queue — and the record of applied seed
// files. The SQL is the same in both
// dialects. Times are unix nanoseconds in BIGINT columns, JSON is TEXT.
//
// idempotency_key is NULL for a decision made without one; both SQLite
// and Postgres treat NULLs as distinct in a unique index, so the index
// forbids only a second decision under the same key — the last guard of
// "concurrent duplicates decide once" should the lock that serializes them
// fail.
func decisionsV3() []string {
	return []string{
		`CREATE TABLE decisions (
			id TEXT PRIMARY KEY,
			agent TEXT NOT NULL,
			idempotency_key TEXT,
			input_hash TEXT NOT NULL,
			at BIGINT NOT NULL,
			updated_at BIGINT NOT NULL,
			status TEXT NOT NULL,
			source TEXT NOT NULL,
			model TEXT NOT NULL,
			input TEXT NOT NULL,
			context_refs TEXT NOT NULL,
			output TEXT NOT NULL,
			response TEXT NOT NULL,
			input_tokens BIGINT NOT NULL,
			output_tokens BIGINT NOT NULL,
			cache_creation_input_tokens BIGINT NOT NULL,
			cache_read_input_tokens BIGINT NOT NULL,
			cache_creation_1h_input_tokens BIGINT NOT NULL,
			cost_nusd BIGINT NOT NULL,
			latency_us BIGINT NOT NULL,
			steps BIGINT NOT NULL,
			review_id TEXT NOT NULL
		)`,
		`CREATE UNIQUE INDEX decisions_agent_idempotency ON decisions (agent, idempotency_key)`,
		`CREATE INDEX decisions_agent_input ON decisions (agent, input_hash, at)`,
		`CREATE INDEX decisions_status_updated ON decisions (status, updated_at)`,
		`CREATE INDEX decisions_review ON decisions (review_id)`,
		`CREATE TABLE decision_effects (
			decision_id TEXT NOT NULL REFERENCES decisions (id),
			idx BIGINT NOT NULL,
			name TEXT NOT NULL,
			kind TEXT NOT NULL,
			spec TEXT NOT NULL,
			status TEXT NOT NULL,
			attempts BIGINT NOT NULL,
			last_error TEXT NOT NULL,
			applied_at BIGINT NOT NULL,
			PRIMARY KEY (decision_id, idx)
		)`,
		`CREATE TABLE reviews (
			id TEXT PRIMARY KEY,
			agent TEXT NOT NULL,
			decision_id TEXT REFERENCES decisions (id),
			user_id TEXT NOT NULL,
			status TEXT NOT NULL,
			reason TEXT NOT NULL,
			payload TEXT NOT NULL,
			created_at BIGINT NOT NULL,
			decided_at BIGINT NOT NULL,
			reviewer TEXT NOT NULL,
			note TEXT NOT NULL
		)`,
		`CREATE INDEX reviews_agent_status ON reviews (agent, status, id)`,
		`CREATE INDEX reviews_status ON reviews (status, id)`,
		// The seed files a project's demo data came from, so each runs once.
		`CREATE TABLE agentd_seeds (
			name TEXT PRIMARY KEY,
			sha256 TEXT NOT NULL,
			applied_at BIGINT NOT NULL
		)`,
	}
}
