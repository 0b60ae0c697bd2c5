package server

import (
	"net/http"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/telemetry"
)

// usage answers GET /usage?agent=&user=&from=&to= with tokens and cost
// from the audit log: totals, and breakdowns per UTC day, agent and user.
// from and to are RFC 3339 times or dates (2026-12-04); from is
// inclusive, to exclusive; the default is the last 30 days.
func (s *Server) usage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := telemetry.UsageFilter{Agent: q.Get("agent"), UserID: q.Get("user")}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		t, err := parseTimeParam(v)
		if err != nil {
			s.writeError(w, r, agentd.InvalidField("usage", p.name, "%s must be an RFC 3339 time or a date (2026-12-04), not %q", p.name, v))
			return
		}
		*p.dst = t
	}
	ctx, cancel := s.withTimeout(r)
	defer cancel()
	// Read what is written: events recorded a moment ago are counted.
	if err := s.cfg.Auditor.Flush(ctx); err != nil && agentd.KindOf(err) == agentd.KindTimeout {
		s.writeError(w, r, err)
		return
	}
	report, err := s.cfg.Auditor.Usage(agentd.WithoutQueryCache(ctx), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, report)
}

func parseTimeParam(v string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	return time.Parse(time.DateOnly, v)
}
