package telemetry

import (
	"math"
	"testing"

	"github.com/agentd/agentd"
)

// The prices are spelled out, not derived from the multipliers, so a wrong
// multiplier fails the test.
func TestDefaultPricingShipsEachModel(t *testing.T) {
	opus4 := Price{Input: 5, Output: 25, CacheWrite5m: 6.25, CacheWrite1h: 10, CacheRead: 0.5}
	sonnet4 := Price{Input: 3, Output: 15, CacheWrite5m: 3.75, CacheWrite1h: 6, CacheRead: 0.3}
	haiku4 := Price{Input: 1, Output: 5, CacheWrite5m: 1.25, CacheWrite1h: 2, CacheRead: 0.1}
	want := map[string]Price{
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
		"claude-opus-5-5":            {Input: 4, Output: 20, CacheWrite5m: 5, CacheWrite1h: 8, CacheRead: 0.4},
		"claude-sonnet-5-5":          {Input: 2, Output: 10, CacheWrite5m: 2.5, CacheWrite1h: 4, CacheRead: 0.2},
	}
	got := DefaultPricing()
	if len(got) != len(want) {
		t.Errorf("DefaultPricing has %d models, want %d", len(got), len(want))
	}
	p, err := NewPricing(nil)
	if err != nil {
		t.Fatal(err)
	}
	for id, w := range want {
		if !priceNear(got[id], w) {
			t.Errorf("DefaultPricing()[%q] = %+v, want %+v", id, got[id], w)
		}
		if lp, ok := p.Lookup(id); !ok || !priceNear(lp, w) {
			t.Errorf("Lookup(%q) = %+v, %v", id, lp, ok)
		}
	}
	// Each call is a new map.
	got["claude-opus-4-8"] = Price{}
	delete(got, "claude-haiku-4-5")
	if again := DefaultPricing(); again["claude-opus-4-8"] != opus4 || len(again) != len(want) {
		t.Error("DefaultPricing returns a shared map")
	}
}

func priceNear(a, b Price) bool {
	near := func(x, y float64) bool { return math.Abs(x-y) < 1e-12 }
	return near(a.Input, b.Input) && near(a.Output, b.Output) && near(a.CacheWrite5m, b.CacheWrite5m) &&
		near(a.CacheWrite1h, b.CacheWrite1h) && near(a.CacheRead, b.CacheRead)
}

func TestLookupResolvesIDs(t *testing.T) {
	p, err := NewPricing(map[string]Price{"claude-sonnet-4-6-fast": {Input: 9, Output: 45}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		model string
		want  float64 // the input price; 0 for unknown
	}{
		{"claude-sonnet-4-5-20250929", 3},          // exact
		{"claude-opus-4-5-20251101", 5},            // exact
		{"claude-sonnet-5-5", 2},                   // the newer line
		{"claude-sonnet-4-6-20260301", 3},          // a new snapshot: its alias
		{"claude-opus-5-5-20270101", 4},            // likewise
		{"claude-haiku-4-5-20251001-20251002", 1},  // one date stripped, then exact
		{"claude-opus-4-8-preview", 5},             // prefix at a "-"
		{"claude-opus-4-5@20251101", 5},            // Vertex-style prefix at "@"
		{"claude-haiku-4-5-", 1},                   // a trailing "-" bounds the prefix too
		{"claude-sonnet-4-5-2025092", 3},           // not a date: the prefix
		{"claude-sonnet-4-5-20250929-extra", 3},    // a date not at the end: the prefix
		{"claude-sonnet-4-6-fast", 9},              // an override, exact
		{"claude-sonnet-4-6-fast-20260101", 9},     // the date stripped, then the override
		{"claude-sonnet-4-6-fast-experimental", 9}, // the longest prefix wins
		{"claude-sonnet-4-6-fastest", 3},           // "fast" is not followed by a boundary
		{"claude-sonnet-4-6-fast_1", 3},            // "_" is no boundary
		{"claude-opus-4-50", 0},                    // "claude-opus-4-5" not followed by a boundary
		{"claude-opus-4-1-20250805", 0},            // an older model with another price
		{"claude-sonnet-4-20250514", 0},            // likewise
		{"claude-opus-4", 0},                       // a prefix of known ids is not one of them
		{"CLAUDE-OPUS-4-8", 0},                     // ids are not case-folded
		{"anthropic.claude-opus-4-8-v1:0", 0},      // Bedrock ids need an override
		{"gpt-5", 0},
		{"", 0},
	} {
		got, ok := p.Lookup(tc.model)
		if ok != (tc.want != 0) || got.Input != tc.want {
			t.Errorf("Lookup(%q) = %+v, %v; want input price %v", tc.model, got, ok, tc.want)
		}
	}
}

func TestCostIsExactInNanodollars(t *testing.T) {
	p, err := NewPricing(map[string]Price{
		"tiny":  {Input: 0.0001, Output: 0.0001}, // 100 picodollars a token
		"dear":  {Input: MaxPrice, Output: MaxPrice},
		"free":  {},
		"local": {Input: 1, Output: 2, CacheWrite5m: 3, CacheWrite1h: 4, CacheRead: 5},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		model string
		u     agentd.Usage
		want  int64
	}{
		{"every kind of token", "claude-sonnet-4-6", agentd.Usage{
			InputTokens: 1_000_000, OutputTokens: 1_000_000, CacheCreationInputTokens: 1_000_000,
			CacheCreation1hInputTokens: 400_000, CacheReadInputTokens: 1_000_000,
			// 3 + 15 + 0.6×3.75 + 0.4×6 + 0.3 = 22.95 USD
		}, 22_950_000_000},
		{"one of each on haiku", "claude-haiku-4-5-20251001", agentd.Usage{
			InputTokens: 1, OutputTokens: 1, CacheCreationInputTokens: 1, CacheReadInputTokens: 1,
		}, 1000 + 5000 + 1250 + 100},
		{"opus 5.5", "claude-opus-5-5", agentd.Usage{
			InputTokens: 3, OutputTokens: 7, CacheCreationInputTokens: 11, CacheCreation1hInputTokens: 2, CacheReadInputTokens: 13,
		}, 3*4000 + 7*20000 + 9*5000 + 2*8000 + 13*400},
		{"1-hour writes only", "claude-opus-4-8", agentd.Usage{CacheCreationInputTokens: 10, CacheCreation1hInputTokens: 10}, 10 * 10_000},
		{"more 1-hour writes than writes", "claude-opus-4-8", agentd.Usage{CacheCreationInputTokens: 5, CacheCreation1hInputTokens: 10}, 10 * 10_000},
		{"explicit cache prices", "local", agentd.Usage{
			InputTokens: 1, OutputTokens: 1, CacheCreationInputTokens: 3, CacheCreation1hInputTokens: 1, CacheReadInputTokens: 1,
		}, 1000 + 2000 + 2*3000 + 4000 + 5000},
		{"nothing", "claude-opus-4-8", agentd.Usage{}, 0},
		{"negative counts count as zero", "claude-opus-4-8", agentd.Usage{InputTokens: -5, OutputTokens: 1}, 25_000},
		{"free model", "free", agentd.Usage{InputTokens: 1000, OutputTokens: 1000}, 0},
		{"below half a nanodollar rounds down", "tiny", agentd.Usage{InputTokens: 4}, 0},
		{"half a nanodollar rounds up", "tiny", agentd.Usage{InputTokens: 5}, 1},
		{"sub-nanodollar parts sum before rounding", "tiny", agentd.Usage{InputTokens: 3, OutputTokens: 3}, 1}, // 300 + 300 picodollars
		{"beyond an int64 saturates", "dear", agentd.Usage{InputTokens: math.MaxInt64, OutputTokens: math.MaxInt64}, math.MaxInt64},
		{"a billion dollars is exact", "dear", agentd.Usage{InputTokens: 1_000_000_000}, 1_000_000_000 * 1_000_000_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, known := p.Cost(tc.model, tc.u)
			if got != tc.want || !known {
				t.Errorf("Cost(%q, %+v) = %d, %v; want %d, true", tc.model, tc.u, got, known, tc.want)
			}
		})
	}
}

func TestCostOfUnknownModel(t *testing.T) {
	p, err := NewPricing(nil)
	if err != nil {
		t.Fatal(err)
	}
	u := agentd.Usage{InputTokens: 1000, OutputTokens: 1000}
	for _, model := range []string{"gpt-5", "", "claude-2"} {
		if got, known := p.Cost(model, u); got != 0 || known {
			t.Errorf("Cost(%q) = %d, %v; want 0, false", model, got, known)
		}
	}
	var nilPricing *Pricing
	if got, known := nilPricing.Cost("claude-opus-4-8", u); got != 0 || known {
		t.Errorf("nil Pricing: Cost = %d, %v; want 0, false", got, known)
	}
	if _, ok := nilPricing.Lookup("claude-opus-4-8"); ok {
		t.Error("nil Pricing knows a model")
	}
}

func TestPriceCostMatchesPricing(t *testing.T) {
	u := agentd.Usage{InputTokens: 17, OutputTokens: 19, CacheCreationInputTokens: 23, CacheCreation1hInputTokens: 5, CacheReadInputTokens: 29}
	p, _ := NewPricing(nil)
	price, _ := p.Lookup("claude-sonnet-4-6")
	want := int64(17*3000 + 19*15000 + 18*3750 + 5*6000 + 29*300)
	if got := price.Cost(u); got != want {
		t.Errorf("Price.Cost = %d, want %d", got, want)
	}
}

func TestOverridesMergeOverDefaults(t *testing.T) {
	p, err := NewPricing(map[string]Price{
		"claude-sonnet-4-6":     {Input: 6, Output: 30},                   // cache prices derived
		"my-proxy/claude":       {Input: 1, Output: 2, CacheRead: 0.05},   // a new model, one cache price given
		"claude-opus-4-8-batch": {Input: 2.5, Output: 12.5, CacheRead: 1}, // a variant, by prefix beyond the default
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		model string
		want  Price
	}{
		{"claude-sonnet-4-6", Price{Input: 6, Output: 30, CacheWrite5m: 7.5, CacheWrite1h: 12, CacheRead: 0.6}},
		{"claude-sonnet-4-6-20260301", Price{Input: 6, Output: 30, CacheWrite5m: 7.5, CacheWrite1h: 12, CacheRead: 0.6}},
		{"my-proxy/claude", Price{Input: 1, Output: 2, CacheWrite5m: 1.25, CacheWrite1h: 2, CacheRead: 0.05}},
		{"claude-opus-4-8-batch", Price{Input: 2.5, Output: 12.5, CacheWrite5m: 3.125, CacheWrite1h: 5, CacheRead: 1}},
		{"claude-opus-4-8", Price{Input: 5, Output: 25, CacheWrite5m: 6.25, CacheWrite1h: 10, CacheRead: 0.5}},  // untouched
		{"claude-sonnet-4-5", Price{Input: 3, Output: 15, CacheWrite5m: 3.75, CacheWrite1h: 6, CacheRead: 0.3}}, // untouched
	} {
		got, ok := p.Lookup(tc.model)
		if !ok || !priceNear(got, tc.want) {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v", tc.model, got, ok, tc.want)
		}
	}
	if def, _ := NewPricing(nil); def != nil {
		if got, _ := def.Lookup("claude-sonnet-4-6"); got.Input != 3 {
			t.Errorf("an override leaked into another Pricing: %+v", got)
		}
	}
}

func TestOverridesAreValidated(t *testing.T) {
	for _, tc := range []struct {
		name      string
		overrides map[string]Price
		field     string
	}{
		{"negative input", map[string]Price{"m": {Input: -1}}, "pricing.m.input"},
		{"NaN output", map[string]Price{"m": {Output: math.NaN()}}, "pricing.m.output"},
		{"infinite read", map[string]Price{"m": {CacheRead: math.Inf(1)}}, "pricing.m.cache_read"},
		{"above the maximum", map[string]Price{"m": {CacheWrite1h: MaxPrice + 1}}, "pricing.m.cache_write_1h"},
		{"negative 5m write", map[string]Price{"m": {CacheWrite5m: -0.1}}, "pricing.m.cache_write_5m"},
		{"no id", map[string]Price{" ": {Input: 1}}, "pricing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPricing(tc.overrides)
			ae := agentd.AsError(err)
			if err == nil || ae.Kind != agentd.KindInvalid || ae.Field != tc.field || p != nil {
				t.Errorf("NewPricing = %v, %v; want a %s error on %q", p, err, agentd.KindInvalid, tc.field)
			}
		})
	}
}

func TestBilledInputEquivalents(t *testing.T) {
	for _, tc := range []struct {
		u    agentd.Usage
		want float64
	}{
		{agentd.Usage{}, 0},
		{agentd.Usage{InputTokens: 100, OutputTokens: 999}, 100},
		{agentd.Usage{InputTokens: 100, CacheCreationInputTokens: 400, CacheReadInputTokens: 1000}, 100 + 500 + 100},
		{agentd.Usage{InputTokens: 100, CacheCreationInputTokens: 400, CacheCreation1hInputTokens: 300, CacheReadInputTokens: 1000}, 100 + 125 + 600 + 100},
	} {
		if got := BilledInputEquivalents(tc.u); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("BilledInputEquivalents(%+v) = %v, want %v", tc.u, got, tc.want)
		}
	}
}
