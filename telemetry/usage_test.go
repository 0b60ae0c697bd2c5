package telemetry

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/agentd/agentd"
)

// usageDay returns a time on day d of December 2026, UTC.
func usageDay(d, h, m, s, ns int) time.Time { return time.Date(2026, 12, d, h, m, s, ns, time.UTC) }

// usageEvents are calls around the range [Dec 3, Dec 6): the first and the
// last fall just outside, and are big enough that counting them shows.
func usageEvents() []AuditEvent {
	u := func(in, out, write, write1h, read int64) agentd.Usage {
		return agentd.Usage{InputTokens: in, OutputTokens: out, CacheCreationInputTokens: write,
			CacheCreation1hInputTokens: write1h, CacheReadInputTokens: read}
	}
	huge := u(1e6, 1e6, 1e6, 0, 1e6)
	return []AuditEvent{
		{ID: "before", Time: usageDay(2, 23, 59, 59, 999_999_999), Agent: "agent-a", UserID: "u1", Usage: huge, CostNanoUSD: 1e9, Outcome: "ok"},
		{ID: "e2", Time: usageDay(3, 0, 0, 0, 0), Agent: "agent-a", UserID: "u1", Usage: u(100, 10, 20, 5, 1000), CostNanoUSD: 1000, Outcome: "ok"},
		{ID: "e3", Time: usageDay(3, 12, 0, 0, 0), Agent: "agent-b", UserID: "u2", Usage: u(50, 5, 0, 0, 0), CostNanoUSD: 500, Outcome: "ok"},
		{ID: "e3-failed", Time: usageDay(3, 23, 59, 59, 999_999_999), Agent: "agent-b", UserID: "u2", Outcome: "overloaded_error"},
		{ID: "e4", Time: usageDay(4, 0, 0, 0, 0), Agent: "agent-a", UserID: "u2", Usage: u(300, 30, 40, 40, 0), CostNanoUSD: 4000, Outcome: "ok"},
		{ID: "e5-unpriced", Time: usageDay(5, 12, 0, 0, 0), Agent: "agent-a", UserID: "", Usage: u(7, 3, 0, 0, 0), Outcome: "ok"},
		{ID: "at-to", Time: usageDay(6, 0, 0, 0, 0), Agent: "agent-a", UserID: "u1", Usage: huge, CostNanoUSD: 1e9, Outcome: "ok"},
	}
}

// totals builds expected UsageTotals; CostUSD follows from the nanodollars.
func totals(calls, errs, in, out, write, write1h, read, cost, unpriced int64) UsageTotals {
	return UsageTotals{Calls: calls, Errors: errs, InputTokens: in, OutputTokens: out, CacheWriteTokens: write,
		CacheWrite1hTokens: write1h, CacheReadTokens: read, CostNanoUSD: cost, CostUSD: float64(cost) / 1e9, UnpricedCalls: unpriced}
}

func TestUsageSumsAndGroups(t *testing.T) {
	forEachDB(t, testUsageSumsAndGroups)
}

func testUsageSumsAndGroups(t *testing.T, db agentd.DB) {
	a, _ := newAuditor(t, db)
	for _, ev := range usageEvents() {
		ev.Kind = "model_call"
		a.Record(ev)
	}
	if err := a.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	from, to := usageDay(3, 0, 0, 0, 0), usageDay(6, 0, 0, 0, 0)
	zero := UsageTotals{}
	for _, tc := range []struct {
		name string
		f    UsageFilter
		want UsageReport
	}{
		{
			name: "all",
			f:    UsageFilter{From: from, To: to},
			want: UsageReport{
				Total: totals(5, 1, 457, 48, 60, 45, 1000, 5500, 1),
				Days: []DayUsage{
					{"2026-12-03", totals(3, 1, 150, 15, 20, 5, 1000, 1500, 0)},
					{"2026-12-04", totals(1, 0, 300, 30, 40, 40, 0, 4000, 0)},
					{"2026-12-05", totals(1, 0, 7, 3, 0, 0, 0, 0, 1)},
				},
				Agents: []AgentUsage{
					{"agent-a", totals(3, 0, 407, 43, 60, 45, 1000, 5000, 1)},
					{"agent-b", totals(2, 1, 50, 5, 0, 0, 0, 500, 0)},
				},
				Users: []UserUsage{
					{"u2", totals(3, 1, 350, 35, 40, 40, 0, 4500, 0)},
					{"u1", totals(1, 0, 100, 10, 20, 5, 1000, 1000, 0)},
					{"", totals(1, 0, 7, 3, 0, 0, 0, 0, 1)},
				},
			},
		},
		{
			name: "agent",
			f:    UsageFilter{Agent: "agent-b", From: from, To: to},
			want: UsageReport{
				Agent:  "agent-b",
				Total:  totals(2, 1, 50, 5, 0, 0, 0, 500, 0),
				Days:   []DayUsage{{"2026-12-03", totals(2, 1, 50, 5, 0, 0, 0, 500, 0)}},
				Agents: []AgentUsage{{"agent-b", totals(2, 1, 50, 5, 0, 0, 0, 500, 0)}},
				Users:  []UserUsage{{"u2", totals(2, 1, 50, 5, 0, 0, 0, 500, 0)}},
			},
		},
		{
			name: "user",
			f:    UsageFilter{UserID: "u1", From: from, To: to},
			want: UsageReport{
				UserID: "u1",
				Total:  totals(1, 0, 100, 10, 20, 5, 1000, 1000, 0),
				Days:   []DayUsage{{"2026-12-03", totals(1, 0, 100, 10, 20, 5, 1000, 1000, 0)}},
				Agents: []AgentUsage{{"agent-a", totals(1, 0, 100, 10, 20, 5, 1000, 1000, 0)}},
				Users:  []UserUsage{{"u1", totals(1, 0, 100, 10, 20, 5, 1000, 1000, 0)}},
			},
		},
		{
			name: "agent and user",
			f:    UsageFilter{Agent: "agent-a", UserID: "u2", From: from, To: to},
			want: UsageReport{
				Agent: "agent-a", UserID: "u2",
				Total:  totals(1, 0, 300, 30, 40, 40, 0, 4000, 0),
				Days:   []DayUsage{{"2026-12-04", totals(1, 0, 300, 30, 40, 40, 0, 4000, 0)}},
				Agents: []AgentUsage{{"agent-a", totals(1, 0, 300, 30, 40, 40, 0, 4000, 0)}},
				Users:  []UserUsage{{"u2", totals(1, 0, 300, 30, 40, 40, 0, 4000, 0)}},
			},
		},
		{
			// From is inclusive to the nanosecond: one past it drops e2.
			name: "from one nanosecond later",
			f:    UsageFilter{Agent: "agent-a", UserID: "u1", From: from.Add(1), To: to},
			want: UsageReport{Agent: "agent-a", UserID: "u1", Total: zero},
		},
		{
			// To is exclusive: a range ending one nanosecond later takes
			// the event at To, on a day of its own.
			name: "to one nanosecond later",
			f:    UsageFilter{UserID: "u1", From: usageDay(5, 0, 0, 0, 0), To: to.Add(1)},
			want: UsageReport{
				UserID: "u1",
				Total:  totals(1, 0, 1e6, 1e6, 1e6, 0, 1e6, 1e9, 0),
				Days:   []DayUsage{{"2026-12-06", totals(1, 0, 1e6, 1e6, 1e6, 0, 1e6, 1e9, 0)}},
				Agents: []AgentUsage{{"agent-a", totals(1, 0, 1e6, 1e6, 1e6, 0, 1e6, 1e9, 0)}},
				Users:  []UserUsage{{"u1", totals(1, 0, 1e6, 1e6, 1e6, 0, 1e6, 1e9, 0)}},
			},
		},
		{
			// The last nanosecond of a day is that day's.
			name: "last nanosecond of a day",
			f:    UsageFilter{From: usageDay(3, 23, 59, 59, 999_999_999), To: usageDay(4, 0, 0, 0, 1)},
			want: UsageReport{
				Total: totals(2, 1, 300, 30, 40, 40, 0, 4000, 0),
				Days: []DayUsage{
					{"2026-12-03", totals(1, 1, 0, 0, 0, 0, 0, 0, 0)},
					{"2026-12-04", totals(1, 0, 300, 30, 40, 40, 0, 4000, 0)},
				},
				Agents: []AgentUsage{
					{"agent-a", totals(1, 0, 300, 30, 40, 40, 0, 4000, 0)},
					{"agent-b", totals(1, 1, 0, 0, 0, 0, 0, 0, 0)},
				},
				Users: []UserUsage{{"u2", totals(2, 1, 300, 30, 40, 40, 0, 4000, 0)}},
			},
		},
		{
			name: "empty range",
			f:    UsageFilter{From: from, To: from},
			want: UsageReport{Total: zero},
		},
		{
			name: "nobody",
			f:    UsageFilter{Agent: "nobody", From: from, To: to},
			want: UsageReport{Agent: "nobody", Total: zero},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.Usage(t.Context(), tc.f)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.From, want.To = tc.f.From, tc.f.To
			for _, s := range []any{&want.Days, &want.Agents, &want.Users} {
				// Empty lists are empty, not nil, so they encode as [].
				v := reflect.ValueOf(s).Elem()
				if v.IsNil() {
					v.Set(reflect.MakeSlice(v.Type(), 0, 0))
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Usage(%+v) =\n%+v\nwant\n%+v", tc.f, got, want)
			}
		})
	}
}

func TestUsageDefaultsAndValidation(t *testing.T) {
	now := time.Date(2026, 12, 10, 15, 0, 0, 0, time.FixedZone("CET", 3600))
	a, _ := newAuditor(t, openDB(t), WithClock(fixedClock{now}))
	rep, err := a.Usage(t.Context(), UsageFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.To.Equal(now) || !rep.From.Equal(now.Add(-30*24*time.Hour)) || rep.To.Location() != time.UTC {
		t.Errorf("default range [%v, %v), want the 30 days to now, in UTC", rep.From, rep.To)
	}
	rep, err = a.Usage(t.Context(), UsageFilter{To: usageDay(3, 0, 0, 0, 0)})
	if err != nil || !rep.From.Equal(usageDay(3, 0, 0, 0, 0).Add(-DefaultUsageRange)) {
		t.Errorf("From defaults to DefaultUsageRange before To: %v, %v", rep.From, err)
	}

	for _, tc := range []struct {
		name  string
		f     UsageFilter
		field string
	}{
		{"to before from", UsageFilter{From: usageDay(4, 0, 0, 0, 0), To: usageDay(3, 0, 0, 0, 0)}, "to"},
		{"too long", UsageFilter{From: usageDay(1, 0, 0, 0, 0), To: usageDay(1, 0, 0, 0, 0).Add(MaxUsageRange + 1)}, "from"},
		{"before 1970", UsageFilter{From: time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC), To: time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC)}, "from"},
		{"from after now", UsageFilter{From: now.Add(time.Hour)}, "to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Usage(t.Context(), tc.f)
			if ae := agentd.AsError(err); err == nil || ae.Kind != agentd.KindInvalid || ae.Field != tc.field {
				t.Errorf("Usage(%+v) = %v, want a %s error on %q", tc.f, err, agentd.KindInvalid, tc.field)
			}
		})
	}
	// The longest range is allowed.
	if _, err := a.Usage(t.Context(), UsageFilter{From: usageDay(1, 0, 0, 0, 0), To: usageDay(1, 0, 0, 0, 0).Add(MaxUsageRange)}); err != nil {
		t.Errorf("a range of MaxUsageRange: %v", err)
	}
}

func TestUsageListsTheCostliestGroups(t *testing.T) {
	a, _ := newAuditor(t, openDB(t))
	at := usageDay(3, 12, 0, 0, 0)
	// User i costs i+1 nanodollars: user 0, the cheapest, is left out.
	for i := range MaxUsageGroups + 1 {
		a.Record(AuditEvent{Time: at, Agent: "a", UserID: fmt.Sprintf("user-%04d", i), Kind: "model_call", CostNanoUSD: int64(i + 1), Outcome: "ok"})
	}
	if err := a.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	rep, err := a.Usage(t.Context(), UsageFilter{From: usageDay(3, 0, 0, 0, 0), To: usageDay(4, 0, 0, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	n := int64(MaxUsageGroups + 1)
	if !rep.UsersTruncated || len(rep.Users) != MaxUsageGroups || rep.AgentsTruncated || len(rep.Agents) != 1 {
		t.Fatalf("%d users (truncated %v), %d agents (truncated %v)", len(rep.Users), rep.UsersTruncated, len(rep.Agents), rep.AgentsTruncated)
	}
	if first, last := rep.Users[0], rep.Users[len(rep.Users)-1]; first.UserID != fmt.Sprintf("user-%04d", MaxUsageGroups) || last.UserID != "user-0001" {
		t.Errorf("users from %s to %s, want the costliest first and user-0000 left out", first.UserID, last.UserID)
	}
	// The totals count everyone.
	if rep.Total.Calls != n || rep.Total.CostNanoUSD != n*(n+1)/2 {
		t.Errorf("total %+v, want %d calls costing %d", rep.Total, n, n*(n+1)/2)
	}
}

func TestUsageReportJSON(t *testing.T) {
	rep := UsageReport{
		From: usageDay(3, 0, 0, 0, 0), To: usageDay(4, 0, 0, 0, 0),
		Total:  totals(1, 0, 2, 3, 4, 1, 5, 1_500_000_000, 0),
		Days:   []DayUsage{{"2026-12-03", totals(1, 0, 2, 3, 4, 1, 5, 1_500_000_000, 0)}},
		Agents: []AgentUsage{}, Users: []UserUsage{{"u1", UsageTotals{}}},
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"from": "2026-12-03T00:00:00Z", "to": "2026-12-04T00:00:00Z",
		"total": map[string]any{"calls": 1.0, "errors": 0.0, "input_tokens": 2.0, "output_tokens": 3.0, "cache_write_tokens": 4.0,
			"cache_write_1h_tokens": 1.0, "cache_read_tokens": 5.0, "cost_nano_usd": 1.5e9, "cost_usd": 1.5, "unpriced_calls": 0.0},
		"days": []any{map[string]any{"day": "2026-12-03", "calls": 1.0, "errors": 0.0, "input_tokens": 2.0, "output_tokens": 3.0,
			"cache_write_tokens": 4.0, "cache_write_1h_tokens": 1.0, "cache_read_tokens": 5.0, "cost_nano_usd": 1.5e9, "cost_usd": 1.5, "unpriced_calls": 0.0}},
		"agents": []any{},
		"users": []any{map[string]any{"user_id": "u1", "calls": 0.0, "errors": 0.0, "input_tokens": 0.0, "output_tokens": 0.0,
			"cache_write_tokens": 0.0, "cache_write_1h_tokens": 0.0, "cache_read_tokens": 0.0, "cost_nano_usd": 0.0, "cost_usd": 0.0, "unpriced_calls": 0.0}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("JSON:\n%s\nwant the fields of\n%v", b, want)
	}
}
