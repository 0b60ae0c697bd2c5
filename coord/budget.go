package coord

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/agentd/agentd"
)

// Claim asks a budget for an amount: the budget named Key may have at most
// Limit spent per window (a UTC calendar day). Amounts are whole units the
// caller chooses: tokens, or nano-USD for a money budget.
type Claim struct {
	// Key names the budget, e.g. "budget:tokens:agent:support". The KV key
	// of its current window is Key + ":" + the day, e.g.
	// "budget:tokens:agent:support:2026-12-04".
	Key    string
	Limit  int64
	Amount int64
}

// Budgets keeps spending budgets per window in the KV, exact under
// concurrency and shared by every node when the KV is.
//
// A caller reserves its estimate before the work that costs (a model call)
// and settles the actual amount after it. A budget's KV value holds what was
// spent in the window and the outstanding reservations, each with an expiry,
// so a node that dies holding one blocks nothing for longer than the hold
// TTL: expired reservations are dropped at every update and count nowhere.
// Budgets is safe for concurrent use.
type Budgets struct {
	state   *State
	clock   agentd.Clock
	holdTTL time.Duration
}

// NewBudgets returns Budgets over kv, taking "now" from clock, which also
// decides the window (the UTC day of now).
func NewBudgets(kv agentd.KV, clock agentd.Clock, opts ...Option) *Budgets {
	o := newOptions(opts)
	return &Budgets{state: newState(kv, o), clock: clock, holdTTL: o.holdTTL}
}

// Reserve admits all the claims or none. A claim is admitted iff the
// budget's spent amount, plus its unexpired reservations, plus the claim's
// Amount is at most its Limit. When one is refused, the reservations already
// made for the others are dropped and the error is of KindBudgetExceeded,
// with ResetAt the start of the next window and RetryAfter the time until a
// retry can be admitted if nothing else happens.
//
// Claims are reserved one after the other, so while Reserve runs another
// caller may see (and be refused for) a reservation that is then rolled
// back: refusals may err on the side of caution, admissions never exceed a
// limit.
func (b *Budgets) Reserve(ctx context.Context, claims ...Claim) (*Hold, error) {
	const op = "coord.budget.reserve"
	for i, c := range claims {
		field := fmt.Sprintf("claims[%d]", i)
		switch {
		case c.Key == "":
			return nil, agentd.InvalidField(op, field+".key", "a budget claim needs a key")
		case c.Limit < 0:
			return nil, agentd.InvalidField(op, field+".limit", "budget %s has a negative limit %d", c.Key, c.Limit)
		case c.Amount < 0:
			return nil, agentd.InvalidField(op, field+".amount", "claim on budget %s is negative: %d", c.Key, c.Amount)
		}
	}
	// One window for all claims, so a Reserve running across midnight
	// does not split its claims between two days.
	day, resetAt := dayWindow(b.clock.Now())
	h := &Hold{b: b, claims: make([]heldClaim, 0, len(claims))}
	id := rand.Text()
	for i, c := range claims {
		hc := heldClaim{key: c.Key + ":" + day, id: id + "." + strconv.Itoa(i)}
		err := b.state.Update(ctx, hc.key, func(old []byte, exists bool) ([]byte, time.Duration, error) {
			now := b.clock.Now()
			st, err := decodeBudget(op, hc.key, old, exists)
			if err != nil {
				return nil, 0, err
			}
			st.prune(now)
			if !fits(st.Spent, st.reserved(), c.Amount, c.Limit) {
				return nil, 0, refusal(op, c, st, now, resetAt)
			}
			st.Holds = append(st.Holds, budgetHold{ID: hc.id, Amount: c.Amount, Expires: now.Add(b.holdTTL).UnixNano()})
			return st.encode(), budgetTTL(now, resetAt), nil
		})
		if err != nil {
			// Roll back even when ctx is what ended the Reserve: the
			// reservations would otherwise block the budget until they
			// expire.
			if rerr := h.Release(context.WithoutCancel(ctx)); rerr != nil {
				return nil, errors.Join(err, rerr)
			}
			return nil, err
		}
		h.claims = append(h.claims, hc)
	}
	return h, nil
}

// Spent returns what was spent in the current window of the budget named
// key, and what unexpired reservations hold on it.
func (b *Budgets) Spent(ctx context.Context, key string) (spent, reserved int64, err error) {
	const op = "coord.budget.spent"
	now := b.clock.Now()
	day, _ := dayWindow(now)
	entry, err := b.state.kv.Get(ctx, key+":"+day)
	if agentd.KindOf(err) == agentd.KindNotFound {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, agentd.E("", op, err)
	}
	st, err := decodeBudget(op, entry.Key, entry.Value, true)
	if err != nil {
		return 0, 0, err
	}
	st.prune(now)
	return st.Spent, st.reserved(), nil
}

// Hold is the reservations of one admitted Reserve. Settle it with the
// actual amounts once they are known, or Release it if the work failed
// before it cost anything. Release after Settle does nothing, so
// `defer hold.Release(ctx)` is a safe fallback. A Hold is safe for
// concurrent use.
type Hold struct {
	b      *Budgets
	mu     sync.Mutex
	claims []heldClaim
	// settled and released record how the hold ended, once every claim
	// has been settled or released.
	settled, released bool
}

// heldClaim is one claim's reservation: the KV key of the budget's window
// it was made in, and its id in the budget's value.
type heldClaim struct {
	key     string
	id      string
	settled bool // settled or released
}

// Settle replaces the reservations by the amounts actually spent, one per
// claim in the order of Reserve's claims. The spend goes to the window the
// reservation was made in, and is added even if the reservation expired
// meanwhile: the money or tokens were spent either way. After an error it
// may be called again: it settles only the claims not yet settled.
func (h *Hold) Settle(ctx context.Context, actual ...int64) error {
	const op = "coord.budget.settle"
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.released:
		return agentd.Errorf(agentd.KindInternal, op, "the hold was released; settling it would count its spend twice or never")
	case h.settled:
		return agentd.Errorf(agentd.KindInternal, op, "the hold is already settled")
	case len(actual) != len(h.claims):
		return agentd.InvalidField(op, "actual", "%d amounts for %d claims", len(actual), len(h.claims))
	}
	for i, a := range actual {
		if a < 0 {
			return agentd.InvalidField(op, fmt.Sprintf("actual[%d]", i), "actual amount %d is negative", a)
		}
	}
	for i := range h.claims {
		c := &h.claims[i]
		if c.settled {
			continue
		}
		err := h.b.state.Update(ctx, c.key, func(old []byte, exists bool) ([]byte, time.Duration, error) {
			now := h.b.clock.Now()
			st, err := decodeBudget(op, c.key, old, exists)
			if err != nil {
				return nil, 0, err
			}
			st.prune(now)
			st.drop(c.id)
			st.Spent = addSat(st.Spent, actual[i])
			_, resetAt := dayWindow(now)
			return st.encode(), budgetTTL(now, resetAt), nil
		})
		if err != nil {
			return err
		}
		c.settled = true
	}
	h.settled = true
	return nil
}

// Release drops the reservations without spending anything, for work that
// failed before it cost. Claims already settled stay settled; releasing
// again does nothing.
func (h *Hold) Release(ctx context.Context) error {
	const op = "coord.budget.release"
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.settled {
		return nil
	}
	for i := range h.claims {
		c := &h.claims[i]
		if c.settled {
			continue
		}
		err := h.b.state.Update(ctx, c.key, func(old []byte, exists bool) ([]byte, time.Duration, error) {
			if !exists {
				return nil, 0, nil // expired with its window: nothing to drop
			}
			now := h.b.clock.Now()
			st, err := decodeBudget(op, c.key, old, exists)
			if err != nil {
				return nil, 0, err
			}
			before := len(st.Holds)
			st.prune(now)
			st.drop(c.id)
			if len(st.Holds) == before {
				return nil, 0, nil // already expired and pruned: no write needed
			}
			_, resetAt := dayWindow(now)
			return st.encode(), budgetTTL(now, resetAt), nil
		})
		if err != nil {
			return err
		}
		c.settled = true
	}
	h.released = true
	return nil
}

// budgetState is the KV value of one budget's window.
type budgetState struct {
	Spent int64        `json:"spent"`
	Holds []budgetHold `json:"holds,omitempty"`
}

// budgetHold is one outstanding reservation.
type budgetHold struct {
	ID      string `json:"id"`
	Amount  int64  `json:"amount"`
	Expires int64  `json:"exp"` // Unix nanoseconds
}

func decodeBudget(op, key string, raw []byte, exists bool) (budgetState, error) {
	var st budgetState
	if !exists {
		return st, nil
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, &agentd.Error{Kind: agentd.KindInternal, Op: op, Message: fmt.Sprintf("budget state of %q is corrupt", key), Err: err}
	}
	return st, nil
}

func (st *budgetState) encode() []byte {
	// A struct of integers and strings always encodes.
	b, _ := json.Marshal(st)
	return b
}

// prune drops the reservations that expired at now.
func (st *budgetState) prune(now time.Time) {
	n := now.UnixNano()
	st.Holds = slices.DeleteFunc(st.Holds, func(h budgetHold) bool { return h.Expires <= n })
}

func (st *budgetState) drop(id string) {
	st.Holds = slices.DeleteFunc(st.Holds, func(h budgetHold) bool { return h.ID == id })
}

func (st *budgetState) reserved() int64 {
	var sum int64
	for _, h := range st.Holds {
		sum = addSat(sum, h.Amount)
	}
	return sum
}

// fits reports whether spent+reserved+amount ≤ limit, for non-negative
// amounts, without overflowing.
func fits(spent, reserved, amount, limit int64) bool {
	room := limit - spent
	return spent <= limit && reserved <= room && amount <= room-reserved
}

// addSat adds non-negative amounts, saturating instead of wrapping: a
// budget that overflowed int64 is spent, not negative.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// refusal is the error of a claim the budget cannot admit at now.
func refusal(op string, c Claim, st budgetState, now, resetAt time.Time) error {
	e := &agentd.Error{
		Kind:    agentd.KindBudgetExceeded,
		Op:      op,
		ResetAt: resetAt,
		// Zero when the window ended while Reserve ran: retry at once.
		RetryAfter: max(resetAt.Sub(now), 0),
	}
	reset := resetAt.Format(time.RFC3339)
	switch {
	case c.Amount > c.Limit:
		e.Message = fmt.Sprintf("budget %s allows %d per day, less than the %d asked; it resets at %s",
			c.Key, c.Limit, c.Amount, reset)
	case fits(st.Spent, 0, c.Amount, c.Limit):
		// Only reservations of calls in progress stand in the way. They
		// end when settled or at their expiry at the latest, so the
		// claim fits once enough of them are gone: waiting for midnight
		// would be wrong.
		holds := slices.SortedFunc(slices.Values(st.Holds), func(a, b budgetHold) int { return cmp.Compare(a.Expires, b.Expires) })
		reserved := st.reserved()
		for _, h := range holds {
			reserved -= h.Amount
			if fits(st.Spent, reserved, c.Amount, c.Limit) {
				if at := time.Unix(0, h.Expires); at.Before(resetAt) {
					e.RetryAfter = at.Sub(now)
				}
				break
			}
		}
		e.Message = fmt.Sprintf("budget %s is held by calls in progress (%d spent and %d reserved of %d per day, %d asked); retry in %s",
			c.Key, st.Spent, st.reserved(), c.Limit, c.Amount, roundUpSeconds(e.RetryAfter))
	default:
		e.Message = fmt.Sprintf("budget %s is spent (%d of %d per day, %d asked); it resets at %s",
			c.Key, st.Spent, c.Limit, c.Amount, reset)
	}
	return e
}

// dayWindow returns the window of now, a UTC calendar day: its name, which
// ends the budget's KV key, and when it ends, which is when the budget
// resets. Other windows (hours, months) fit here later by the same two
// values.
func dayWindow(now time.Time) (name string, end time.Time) {
	u := now.UTC()
	start := time.Date(u.Year(), u.Month(), u.Day(), 0, 0, 0, 0, time.UTC)
	return start.Format(time.DateOnly), start.AddDate(0, 0, 1)
}

// budgetTTL keeps a window's value until the window ends; a write after its
// end (a late Settle) still needs a valid TTL.
func budgetTTL(now, end time.Time) time.Duration {
	return max(end.Sub(now), agentd.MinKVTTL)
}
