package agent

import (
	"context"
	"math"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/coord"
	"github.com/agentd/agentd/telemetry"
)

// Guard holds an agent to its request rate and its daily budgets, checked
// before the model is called: a rate limit per user (or per agent, for
// requests with no user), and token and money budgets per agent per UTC
// day and per user per day. Both are atomic under concurrency, and shared
// by every node when the KV behind them is: a request is admitted only if
// the limit leaves room for it, and a budget only if what was spent, what
// calls in flight have reserved, and this call's estimate fit.
//
// A budget reserves the call's worst case — the estimated prompt plus
// max_tokens of answer, priced for money budgets — and settles the actual
// usage when the call returns.
type Guard struct {
	Rate              *coord.Rate // per user; nil: none
	TokensPerDay      int64       // the agent's; 0: none
	UserTokensPerDay  int64       // each user's with this agent; 0: none
	NanoUSDPerDay     int64       // the agent's, in nanodollars; 0: none
	UserNanoUSDPerDay int64       // each user's, in nanodollars; 0: none

	Limiter *coord.RateLimiter
	Budgets *coord.Budgets
}

// active reports whether the guard limits anything.
func (g *Guard) active() bool {
	return g != nil && (g.Rate != nil || g.budgeted())
}

func (g *Guard) budgeted() bool {
	return g != nil && g.Budgets != nil && (g.TokensPerDay > 0 || g.UserTokensPerDay > 0 || g.NanoUSDPerDay > 0 || g.UserNanoUSDPerDay > 0)
}

// admit counts a request against the rate limit; a refusal is
// KindRateLimited with when to retry.
func (g *Guard) admit(ctx context.Context, agent, userID string, metrics *telemetry.Metrics) error {
	if g == nil || g.Rate == nil || g.Limiter == nil {
		return nil
	}
	d, err := g.Limiter.Allow(ctx, "ratelimit:"+agent+":"+userID, *g.Rate)
	if err != nil {
		return err
	}
	if err := d.Err("agent." + agent); err != nil {
		metrics.Rejected(agent, string(agentd.KindRateLimited))
		return err
	}
	return nil
}

// budgetKind is what a claim of a hold counts.
type budgetKind int

const (
	budgetTokens budgetKind = iota
	budgetMoney
)

// guardHold is a call's reservation on its budgets, to settle with what
// the call spent.
type guardHold struct {
	hold  *coord.Hold
	kinds []budgetKind
}

// reserve claims the call's estimate on every budget that applies; a
// budget without room is KindBudgetExceeded with its reset time.
func (g *Guard) reserve(ctx context.Context, agent, userID string, req agentd.ModelRequest, pricing *telemetry.Pricing, metrics *telemetry.Metrics) (*guardHold, error) {
	if !g.budgeted() {
		return nil, nil
	}
	inputTokens := int64(estimateRequest(req))
	tokens := inputTokens + int64(req.MaxTokens)
	var money int64
	if price, ok := pricing.Lookup(req.Model); ok {
		money = int64(math.Ceil(float64(inputTokens)*price.Input*1e3 + float64(req.MaxTokens)*price.Output*1e3)) // USD per MTok = 1e3 nanodollars per token
	}
	var claims []coord.Claim
	h := &guardHold{}
	add := func(key string, limit, amount int64, kind budgetKind) {
		if limit > 0 {
			claims = append(claims, coord.Claim{Key: key, Limit: limit, Amount: amount})
			h.kinds = append(h.kinds, kind)
		}
	}
	add("budget:tokens:agent:"+agent, g.TokensPerDay, tokens, budgetTokens)
	add("budget:usd:agent:"+agent, g.NanoUSDPerDay, money, budgetMoney)
	if userID != "" {
		add("budget:tokens:user:"+agent+":"+userID, g.UserTokensPerDay, tokens, budgetTokens)
		add("budget:usd:user:"+agent+":"+userID, g.UserNanoUSDPerDay, money, budgetMoney)
	}
	if len(claims) == 0 {
		return nil, nil
	}
	hold, err := g.Budgets.Reserve(ctx, claims...)
	if err != nil {
		if agentd.KindOf(err) == agentd.KindBudgetExceeded {
			metrics.Rejected(agent, string(agentd.KindBudgetExceeded))
		}
		return nil, err
	}
	h.hold = hold
	return h, nil
}

// settle replaces the reservation with what the call spent. It runs after
// the call, whatever the request's context says: spend must be counted.
func (h *guardHold) settle(ctx context.Context, usage agentd.Usage, nanoUSD int64) error {
	if h == nil {
		return nil
	}
	actual := make([]int64, len(h.kinds))
	for i, k := range h.kinds {
		if k == budgetTokens {
			actual[i] = usage.Total()
		} else {
			actual[i] = nanoUSD
		}
	}
	return h.hold.Settle(context.WithoutCancel(ctx), actual...)
}

// estimateRequest estimates a request's prompt tokens as the prompt-cache
// placement does: an overestimate only reserves budget a moment longer.
func estimateRequest(req agentd.ModelRequest) int {
	n := 0
	for _, t := range req.Tools {
		n += toolTokens(t)
	}
	for _, b := range req.System {
		n += blockTokens(b)
	}
	for _, m := range req.Messages {
		for _, b := range m.Content {
			n += blockTokens(b)
		}
	}
	return n
}
