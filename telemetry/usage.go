package telemetry

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/internal/sqlrow"
)

// UsageFilter selects the audit events a usage report sums: those of the
// agent and the user, when given, at or after From and before To.
type UsageFilter struct {
	Agent  string
	UserID string
	From   time.Time // zero: DefaultUsageRange before To
	To     time.Time // zero: now
}

// Bounds of a usage report.
const (
	// DefaultUsageRange is the range of a filter without From.
	DefaultUsageRange = 30 * 24 * time.Hour
	// MaxUsageRange bounds To − From, so one report reads at most a year
	// of events.
	MaxUsageRange = 366 * 24 * time.Hour
	// MaxUsageGroups bounds the agents and the users a report lists, the
	// costliest first; UsageReport says when some were left out.
	MaxUsageGroups = 1000
)

// UsageTotals sums the model calls of a report or of one of its groups.
type UsageTotals struct {
	Calls int64 `json:"calls"`
	// Errors are the calls that failed (an outcome other than "ok").
	Errors       int64 `json:"errors"`
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	// CacheWriteTokens are all prompt-cache writes, CacheWrite1hTokens
	// the part of them written with the 1-hour TTL.
	CacheWriteTokens   int64 `json:"cache_write_tokens"`
	CacheWrite1hTokens int64 `json:"cache_write_1h_tokens"`
	CacheReadTokens    int64 `json:"cache_read_tokens"`
	// CostNanoUSD is the exact cost in nanodollars; CostUSD the same in
	// dollars, for display.
	CostNanoUSD int64   `json:"cost_nano_usd"`
	CostUSD     float64 `json:"cost_usd"`
	// UnpricedCalls are calls that spent tokens but were recorded with no
	// cost, because their model's price was unknown: the cost above leaves
	// them out.
	UnpricedCalls int64 `json:"unpriced_calls"`
}

func (t *UsageTotals) add(u UsageTotals) {
	t.Calls += u.Calls
	t.Errors += u.Errors
	t.InputTokens += u.InputTokens
	t.OutputTokens += u.OutputTokens
	t.CacheWriteTokens += u.CacheWriteTokens
	t.CacheWrite1hTokens += u.CacheWrite1hTokens
	t.CacheReadTokens += u.CacheReadTokens
	t.CostNanoUSD += u.CostNanoUSD
	t.CostUSD = USD(t.CostNanoUSD)
	t.UnpricedCalls += u.UnpricedCalls
}

// DayUsage is the usage of one UTC day.
type DayUsage struct {
	Day string `json:"day"` // "2026-12-04"
	UsageTotals
}

// AgentUsage is the usage of one agent.
type AgentUsage struct {
	Agent string `json:"agent"`
	UsageTotals
}

// UserUsage is the usage of one user; "" gathers calls made for no user.
type UserUsage struct {
	UserID string `json:"user_id"`
	UsageTotals
}

// UsageReport is what the model calls of a range cost, in all and by UTC
// day (oldest first, days without calls left out), by agent and by user
// (costliest first).
type UsageReport struct {
	Agent  string       `json:"agent,omitempty"`
	UserID string       `json:"user_id,omitempty"`
	From   time.Time    `json:"from"`
	To     time.Time    `json:"to"`
	Total  UsageTotals  `json:"total"`
	Days   []DayUsage   `json:"days"`
	Agents []AgentUsage `json:"agents"`
	Users  []UserUsage  `json:"users"`
	// AgentsTruncated and UsersTruncated say that more than
	// MaxUsageGroups agents or users had calls, and only the costliest are
	// listed. Total and Days count them all.
	AgentsTruncated bool `json:"agents_truncated,omitempty"`
	UsersTruncated  bool `json:"users_truncated,omitempty"`
}

// nsPerDay is a UTC day in the nanoseconds of audit_events.at: at divided
// by it, in BIGINT division, is the day's number since 1970-01-01 in both
// dialects.
const nsPerDay = int64(24 * time.Hour)

// usageSums are the aggregate columns of a usage query, in the order
// scanTotals reads them. SUM over BIGINT is NUMERIC in Postgres, hence the
// casts.
const usageSums = `COUNT(*),
	CAST(SUM(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END) AS BIGINT),
	CAST(SUM(input_tokens) AS BIGINT),
	CAST(SUM(output_tokens) AS BIGINT),
	CAST(SUM(cache_creation_input_tokens) AS BIGINT),
	CAST(SUM(cache_creation_1h_input_tokens) AS BIGINT),
	CAST(SUM(cache_read_input_tokens) AS BIGINT),
	CAST(SUM(cost_nusd) AS BIGINT),
	CAST(SUM(CASE WHEN cost_nusd = 0 AND input_tokens + output_tokens + cache_creation_input_tokens + cache_read_input_tokens > 0 THEN 1 ELSE 0 END) AS BIGINT)`

const numUsageSums = 9

// Usage reports what the model calls that f selects cost, from the audit
// events written so far (call Flush first to count those just recorded).
// Every audited event is a model call, repairs and compactions included.
//
// From is inclusive and To exclusive; From must not be after To, nor more
// than MaxUsageRange before it, nor before 1970: otherwise Usage returns a
// KindInvalid error naming the field. The totals, the days and the groups
// are read by separate queries, so calls written meanwhile may appear in
// some and not others. On Postgres the reads go through the DB's query
// cache, so a report may be up to its max age behind calls written by
// other nodes; pass a ctx from agentd.WithoutQueryCache for a fresh one.
func (a *Auditor) Usage(ctx context.Context, f UsageFilter) (UsageReport, error) {
	const op = "audit.usage"
	if f.To.IsZero() {
		f.To = a.clock.Now()
	}
	if f.From.IsZero() {
		f.From = f.To.Add(-DefaultUsageRange)
	}
	f.From, f.To = f.From.UTC(), f.To.UTC()
	switch {
	case f.From.Before(time.Unix(0, 0)):
		return UsageReport{}, agentd.InvalidField(op, "from", "from (%s) is before 1970", f.From.Format(time.RFC3339))
	case f.To.Before(f.From):
		return UsageReport{}, agentd.InvalidField(op, "to", "to (%s) is before from (%s)", f.To.Format(time.RFC3339), f.From.Format(time.RFC3339))
	case f.To.Sub(f.From) > MaxUsageRange:
		return UsageReport{}, agentd.InvalidField(op, "from", "from (%s) is more than %d days before to (%s)",
			f.From.Format(time.RFC3339), int(MaxUsageRange/(24*time.Hour)), f.To.Format(time.RFC3339))
	}

	where := []string{"at >= $1", "at < $2"}
	args := []any{f.From.UnixNano(), f.To.UnixNano()}
	if f.Agent != "" {
		args = append(args, f.Agent)
		where = append(where, fmt.Sprintf("agent = $%d", len(args)))
	}
	if f.UserID != "" {
		args = append(args, f.UserID)
		where = append(where, fmt.Sprintf("user_id = $%d", len(args)))
	}
	cond := strings.Join(where, " AND ")
	query := func(key, order string, limit int) (*agentd.Rows, error) {
		q := "SELECT " + key + " AS k, " + usageSums + " FROM audit_events WHERE " + cond + " GROUP BY k ORDER BY " + order
		if limit > 0 {
			q += fmt.Sprintf(" LIMIT %d", limit)
		}
		rows, err := a.db.Query(ctx, q, args...)
		if err != nil {
			return nil, agentd.E("", op, err)
		}
		return rows, nil
	}
	unexpected := func(err error) error {
		return &agentd.Error{Kind: agentd.KindInternal, Op: op, Message: "unexpected row in a usage query", Err: err}
	}

	rep := UsageReport{Agent: f.Agent, UserID: f.UserID, From: f.From, To: f.To,
		Days: []DayUsage{}, Agents: []AgentUsage{}, Users: []UserUsage{}}

	rows, err := query(fmt.Sprintf("at / %d", nsPerDay), "k", 0)
	if err != nil {
		return UsageReport{}, err
	}
	for _, r := range rows.Values {
		s := sqlrow.Scanner{Row: r}
		day := s.Int(0)
		t, err := scanTotals(r)
		if err = firstErr(s.Err, err); err != nil {
			return UsageReport{}, unexpected(err)
		}
		rep.Days = append(rep.Days, DayUsage{Day: time.Unix(0, day*nsPerDay).UTC().Format(time.DateOnly), UsageTotals: t})
		rep.Total.add(t)
	}

	// The costliest first; calls, then the name, break ties so the order
	// is the same on every read.
	const byCost = "9 DESC, 2 DESC, 1"
	rows, err = query("agent", byCost, MaxUsageGroups+1)
	if err != nil {
		return UsageReport{}, err
	}
	for i, r := range rows.Values {
		if i == MaxUsageGroups {
			rep.AgentsTruncated = true
			break
		}
		s := sqlrow.Scanner{Row: r}
		name := s.Str(0)
		t, err := scanTotals(r)
		if err = firstErr(s.Err, err); err != nil {
			return UsageReport{}, unexpected(err)
		}
		rep.Agents = append(rep.Agents, AgentUsage{Agent: name, UsageTotals: t})
	}

	rows, err = query("user_id", byCost, MaxUsageGroups+1)
	if err != nil {
		return UsageReport{}, err
	}
	for i, r := range rows.Values {
		if i == MaxUsageGroups {
			rep.UsersTruncated = true
			break
		}
		s := sqlrow.Scanner{Row: r}
		id := s.Str(0)
		t, err := scanTotals(r)
		if err = firstErr(s.Err, err); err != nil {
			return UsageReport{}, unexpected(err)
		}
		rep.Users = append(rep.Users, UserUsage{UserID: id, UsageTotals: t})
	}
	return rep, nil
}

// scanTotals reads the usageSums that follow a usage row's key.
func scanTotals(r []any) (UsageTotals, error) {
	if len(r) != 1+numUsageSums {
		return UsageTotals{}, fmt.Errorf("%d columns, want %d", len(r), 1+numUsageSums)
	}
	s := sqlrow.Scanner{Row: r}
	t := UsageTotals{
		Calls:              s.Int(1),
		Errors:             s.Int(2),
		InputTokens:        s.Int(3),
		OutputTokens:       s.Int(4),
		CacheWriteTokens:   s.Int(5),
		CacheWrite1hTokens: s.Int(6),
		CacheReadTokens:    s.Int(7),
		CostNanoUSD:        s.Int(8),
		UnpricedCalls:      s.Int(9),
	}
	t.CostUSD = USD(t.CostNanoUSD)
	return t, s.Err
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
