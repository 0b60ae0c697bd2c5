package telemetry

import (
	"fmt"
	"math"
	"math/bits"
	"strings"

	"github.com/agentd/agentd"
)

// Price is what a model costs, in USD per million tokens.
type Price struct {
	Input        float64 `json:"input" toml:"input"`
	Output       float64 `json:"output" toml:"output"`
	CacheWrite5m float64 `json:"cache_write_5m" toml:"cache_write_5m"` // a prompt-cache write with the 5-minute TTL
	CacheWrite1h float64 `json:"cache_write_1h" toml:"cache_write_1h"` // a prompt-cache write with the 1-hour TTL
	CacheRead    float64 `json:"cache_read" toml:"cache_read"`
}

// The API's prompt-cache prices, relative to the input price.
const (
	cacheWrite5mFactor = 1.25
	cacheWrite1hFactor = 2
	cacheReadFactor    = 0.1
)

// MaxPrice bounds every field of a Price, in USD per million tokens: far
// above any real price, and low enough that the cost of any usage fits the
// arithmetic of Cost.
const MaxPrice = 1_000_000

// withCache returns p with each zero cache price derived from Input by the
// API's multipliers, so a price given as input and output alone is whole.
func (p Price) withCache() Price {
	if p.CacheWrite5m == 0 {
		p.CacheWrite5m = p.Input * cacheWrite5mFactor
	}
	if p.CacheWrite1h == 0 {
		p.CacheWrite1h = p.Input * cacheWrite1hFactor
	}
	if p.CacheRead == 0 {
		p.CacheRead = p.Input * cacheReadFactor
	}
	return p
}

// DefaultPricing returns the list prices of the current Claude models,
// keyed by model id, each call a new map the caller may change. Cache
// prices follow the API: a 5-minute write costs 1.25× the input price, a
// 1-hour write 2×, a read 0.1×.
//
// Both the aliases and the dated ids the API names are listed; Pricing
// also finds other dated ids by their alias. "claude-opus-5-5" and
// "claude-sonnet-5-5" are our names for the newer Opus 5.5 and Sonnet 5.5
// lines, whose price list gives no id: correct them with an override if
// the API names them otherwise.
func DefaultPricing() map[string]Price {
	opus4 := Price{Input: 5, Output: 25}.withCache()
	sonnet4 := Price{Input: 3, Output: 15}.withCache()
	haiku4 := Price{Input: 1, Output: 5}.withCache()
	return map[string]Price{
		"claude-opus-4-8":            opus4,
		"claude-opus-4-7":            opus4,
		"claude-opus-4-6":            opus4,
		"claude-opus-4-5":            opus4,
		"claude-opus-4-5-20251101":   opus4,
		"claude-sonnet-4-6":          sonnet4,
		"claude-sonnet-4-5":          sonnet4,
		"claude-sonnet-4-5-20250929": sonnet4,
		"claude-haiku-4-5":           haiku4,
		"claude-haiku-4-5-20251001":  haiku4,
		"claude-opus-5-5":            Price{Input: 4, Output: 20}.withCache(),
		"claude-sonnet-5-5":          Price{Input: 2, Output: 10}.withCache(),
	}
}

// rates are a Price in picodollars per token, so that costs are sums of
// integer products, exact whatever the number of tokens (1 USD per million
// tokens is 10⁶ picodollars per token).
type rates struct {
	input, output, write5m, write1h, read uint64
}

func toRates(p Price) rates {
	pico := func(usdPerMTok float64) uint64 { return uint64(math.Round(usdPerMTok * 1e6)) }
	return rates{pico(p.Input), pico(p.Output), pico(p.CacheWrite5m), pico(p.CacheWrite1h), pico(p.CacheRead)}
}

// Pricing finds the price of a model by its id. It never changes once
// made, so it is safe for concurrent use. A nil *Pricing knows no model.
type Pricing struct {
	prices map[string]Price
	rates  map[string]rates
}

// NewPricing returns the DefaultPricing with overrides merged over it: an
// override replaces the price of its id, or adds a model (a dated id, a
// model behind a proxy). In an override, a zero cache price is derived
// from Input by the API's multipliers. A price that is negative, not a
// number or above MaxPrice is a KindInvalid error naming the field, as
// "pricing.<id>.<field>".
func NewPricing(overrides map[string]Price) (*Pricing, error) {
	const op = "telemetry.pricing"
	prices := DefaultPricing()
	for id, p := range overrides {
		if strings.TrimSpace(id) == "" {
			return nil, agentd.InvalidField(op, "pricing", "a price needs a model id")
		}
		for _, f := range []struct {
			name string
			v    float64
		}{{"input", p.Input}, {"output", p.Output}, {"cache_write_5m", p.CacheWrite5m}, {"cache_write_1h", p.CacheWrite1h}, {"cache_read", p.CacheRead}} {
			if math.IsNaN(f.v) || f.v < 0 || f.v > MaxPrice {
				return nil, agentd.InvalidField(op, fmt.Sprintf("pricing.%s.%s", id, f.name),
					"the %s price of %s must be between 0 and %d USD per million tokens, not %v", f.name, id, MaxPrice, f.v)
			}
		}
		prices[id] = p.withCache()
	}
	pr := &Pricing{prices: prices, rates: make(map[string]rates, len(prices))}
	for id, p := range prices {
		pr.rates[id] = toRates(p)
	}
	return pr, nil
}

// Lookup returns the price of model: the price of its exact id, else of
// the id without a trailing -YYYYMMDD date (so a new snapshot of a known
// model is priced as its alias), else of the longest known id the model's
// id begins with, followed by "-" or "@" ("claude-sonnet-4-6-fast" and
// "claude-sonnet-4-6@20260101" as "claude-sonnet-4-6"). It reports false
// for a model it does not know.
func (p *Pricing) Lookup(model string) (Price, bool) {
	id, ok := p.resolve(model)
	if !ok {
		return Price{}, false
	}
	return p.prices[id], true
}

// resolve returns the known id whose price model has.
func (p *Pricing) resolve(model string) (string, bool) {
	if p == nil || model == "" {
		return "", false
	}
	if _, ok := p.prices[model]; ok {
		return model, true
	}
	if base, ok := stripDate(model); ok {
		if _, ok := p.prices[base]; ok {
			return base, true
		}
	}
	best := ""
	for id := range p.prices {
		if len(id) > len(best) && len(model) > len(id) && strings.HasPrefix(model, id) &&
			(model[len(id)] == '-' || model[len(id)] == '@') {
			best = id
		}
	}
	return best, best != ""
}

// stripDate removes a trailing "-YYYYMMDD" from id.
func stripDate(id string) (string, bool) {
	const n = len("-20060102")
	if len(id) <= n || id[len(id)-n] != '-' {
		return "", false
	}
	for _, c := range id[len(id)-n+1:] {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return id[:len(id)-n], true
}

// Cost returns what u cost on model in nanodollars (10⁻⁹ USD), and whether
// the model's price is known; an unknown model costs 0. Money is an integer
// so that sums and budgets are exact: with today's prices, every token
// costs a whole number of nanodollars. The 5-minute cache writes are the
// cache writes that are not 1-hour ones.
func (p *Pricing) Cost(model string, u agentd.Usage) (nanoUSD int64, known bool) {
	id, ok := p.resolve(model)
	if !ok {
		return 0, false
	}
	return p.rates[id].cost(u), true
}

// Cost returns what u cost at price p in nanodollars, as Pricing.Cost.
func (p Price) Cost(u agentd.Usage) int64 { return toRates(p).cost(u) }

// cost sums tokens × picodollars per token in 128 bits, which no usage
// overflows (tokens < 2⁶³, rates ≤ MaxPrice × 10⁶ < 2⁴⁰), and rounds to
// the nearest nanodollar; a cost beyond an int64 is MaxInt64. Negative
// counts, which no API answer has, count as zero.
func (r rates) cost(u agentd.Usage) int64 {
	pos := func(n int64) uint64 { return uint64(max(n, 0)) }
	write1h := pos(u.CacheCreation1hInputTokens)
	write5m := pos(u.CacheCreationInputTokens - u.CacheCreation1hInputTokens)
	var hi, lo uint64
	add := func(tokens, rate uint64) {
		h, l := bits.Mul64(tokens, rate)
		var carry uint64
		lo, carry = bits.Add64(lo, l, 0)
		hi += h + carry
	}
	add(pos(u.InputTokens), r.input)
	add(pos(u.OutputTokens), r.output)
	add(write5m, r.write5m)
	add(write1h, r.write1h)
	add(pos(u.CacheReadInputTokens), r.read)
	add(1, 500) // rounds half up in the division below
	if hi >= 1000 {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, 1000)
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(q)
}

// USD converts nanodollars to dollars, for display: sum nanodollars, and
// convert last.
func USD(nanoUSD int64) float64 { return float64(nanoUSD) / 1e9 }

// BilledInputEquivalents is what u's input side costs in input tokens:
// input + 1.25 × 5-minute cache writes + 2 × 1-hour writes + 0.1 × cache
// reads. Output is not counted. It compares the cost of caching strategies
// whatever the model's price.
func BilledInputEquivalents(u agentd.Usage) float64 {
	write1h := max(u.CacheCreation1hInputTokens, 0)
	write5m := max(u.CacheCreationInputTokens-u.CacheCreation1hInputTokens, 0)
	return float64(u.InputTokens) + cacheWrite5mFactor*float64(write5m) +
		cacheWrite1hFactor*float64(write1h) + cacheReadFactor*float64(u.CacheReadInputTokens)
}
