package agent

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/agentd/agentd"
)

// MaxCacheBreakpoints is the API's limit on cache_control markers in one
// request.
const MaxCacheBreakpoints = 4

// The minimum cacheable prefixes of the API, in tokens: a breakpoint on a
// shorter prefix is silently not cached.
const (
	minCacheTokensSonnet  = 1024 // Sonnet-class, and the default
	minCacheTokensHaiku3  = 2048 // Haiku 3.x
	minCacheTokensOpus45  = 4096 // Opus 4.5 and later, Haiku 4.5 and later
	estimateImageTokens   = 1600 // about a 1.15-megapixel image, the largest sent unscaled
	estimatePDFPageTokens = 1500
)

// CachePolicy says how PlaceCacheBreakpoints marks a request. The zero
// value places breakpoints automatically with the 5-minute TTL, for the
// model the request names.
type CachePolicy struct {
	// Disabled leaves requests as they are.
	Disabled bool
	// TTL of the breakpoints placed; "" means 5 minutes.
	TTL agentd.CacheTTL
	// MinTokens is the shortest prefix worth a breakpoint; 0 means
	// MinCacheTokens of the request's model.
	MinTokens int
	// StaticSystemBlocks is how many leading system blocks never change
	// (the agent's prompt); 0 means all of them. The blocks after them (a
	// conversation summary) change now and then: the last static block is
	// marked too, so that the tools and static prompt are still read from
	// the cache after the summary changes.
	StaticSystemBlocks int
	// StaticContextBlocks is how many leading blocks of the first message
	// are static context (documents, reference text) shared by every
	// request that starts with them; 0 means none. The last of them is a
	// breakpoint candidate.
	StaticContextBlocks int
}

// MinCacheTokens is the minimum cacheable prefix of a model, in tokens:
// 4096 for Opus 4.5 and later and for Haiku 4.5 and later, 2048 for
// Haiku 3.x, and 1024 for Sonnet and any model it does not recognize. The
// id may be an alias, a dated id or a cloud provider's
// (anthropic.claude-opus-4-5-20251101-v1:0, claude-opus-4-5@20251101).
func MinCacheTokens(model string) int {
	family, major, minor := parseModelID(model)
	atLeast45 := major > 4 || major == 4 && minor >= 5
	switch {
	case family == "opus" && atLeast45, family == "haiku" && atLeast45:
		return minCacheTokensOpus45
	case family == "haiku" && major == 3:
		return minCacheTokensHaiku3
	default:
		return minCacheTokensSonnet
	}
}

// parseModelID finds the family and version of a Claude model id, written
// family first (claude-opus-4-5-20251101) or, for the 3.x models, version
// first (claude-3-5-haiku-20241022). A part that is not a one- or two-digit
// number (a date, "v1") ends the version. It returns "" for an id without
// a family.
func parseModelID(id string) (family string, major, minor int) {
	parts := strings.FieldsFunc(strings.ToLower(id), func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	})
	version := func(p string) (int, bool) {
		if len(p) > 2 {
			return 0, false
		}
		n, err := strconv.Atoi(p)
		return n, err == nil
	}
	for i, p := range parts {
		if p != "opus" && p != "sonnet" && p != "haiku" {
			continue
		}
		var nums []int
		for _, q := range parts[i+1:] {
			n, ok := version(q)
			if !ok {
				break
			}
			nums = append(nums, n)
		}
		if len(nums) == 0 {
			// Version first: the numbers right before the family.
			for j := i - 1; j >= 0; j-- {
				n, ok := version(parts[j])
				if !ok {
					break
				}
				nums = append([]int{n}, nums...)
			}
		}
		if len(nums) > 0 {
			major = nums[0]
		}
		if len(nums) > 1 {
			minor = nums[1]
		}
		return p, major, minor
	}
	return "", 0, 0
}

// PlaceCacheBreakpoints marks req's prompt-cache breakpoints, so that what
// stays the same from one request to the next is read from the cache at a
// tenth of the input price instead of processed again. The candidates, in
// the cache's prefix order (tools, system, messages):
//
//  1. the last tool definition;
//  2. the last static system block (see CachePolicy.StaticSystemBlocks) and
//     the last system block, if other (a summary that changes only at
//     compaction);
//  3. the last static context block of the first message
//     (CachePolicy.StaticContextBlocks);
//  4. the last block of the last message: this request writes the cache up
//     to it, and the next one, whose prompt extends this one, reads it (the
//     API looks back up to 20 blocks from a breakpoint for a cached prefix).
//
// A candidate is marked only if the estimated prefix up to and including it
// reaches the minimum cacheable length: a shorter one is not cached and
// only spends a marker. Markers the caller set are kept and count toward
// the API's limit of MaxCacheBreakpoints; when the candidates do not all
// fit, the earliest are dropped, since a later breakpoint covers more.
//
// Placing is idempotent. It never writes to the caller's slices: a marked
// tool, system block or message is copied first, so shared definitions
// (an agent's tools, a cached system prompt) stay unmarked and race-free.
func PlaceCacheBreakpoints(req *agentd.ModelRequest, p CachePolicy) {
	if p.Disabled || req == nil {
		return
	}
	minTokens := p.MinTokens
	if minTokens <= 0 {
		minTokens = MinCacheTokens(req.Model)
	}
	ttl := p.TTL
	if ttl == "" {
		ttl = agentd.CacheTTL5m
	}

	// Every place a breakpoint can go, in prefix order, with the estimated
	// tokens of the prefix that ends there.
	var spots []cacheSpot
	var total int
	for i, t := range req.Tools {
		total += toolTokens(t)
		spots = append(spots, cacheSpot{where: inTools, i: i, tokens: total, cc: t.Cache})
	}
	for i, b := range req.System {
		total += blockTokens(b)
		spots = append(spots, cacheSpot{where: inSystem, i: i, tokens: total, cc: b.Cache})
	}
	for i, m := range req.Messages {
		for j, b := range m.Content {
			total += blockTokens(b)
			spots = append(spots, cacheSpot{where: inMessages, i: i, j: j, tokens: total, cc: b.Cache})
		}
	}
	find := func(where spotKind, i, j int) int {
		return slices.IndexFunc(spots, func(s cacheSpot) bool { return s.where == where && s.i == i && s.j == j })
	}

	var candidates []int
	if n := len(req.Tools); n > 0 {
		candidates = append(candidates, find(inTools, n-1, 0))
	}
	if n := len(req.System); n > 0 {
		static := n
		if p.StaticSystemBlocks > 0 && p.StaticSystemBlocks < n {
			static = p.StaticSystemBlocks
		}
		candidates = append(candidates, find(inSystem, static-1, 0), find(inSystem, n-1, 0))
	}
	if len(req.Messages) > 0 && p.StaticContextBlocks > 0 {
		if n := min(p.StaticContextBlocks, len(req.Messages[0].Content)); n > 0 {
			candidates = append(candidates, find(inMessages, 0, n-1))
		}
	}
	if n := len(req.Messages); n > 0 && len(req.Messages[n-1].Content) > 0 {
		candidates = append(candidates, find(inMessages, n-1, len(req.Messages[n-1].Content)-1))
	}
	slices.Sort(candidates)
	candidates = slices.Compact(candidates)
	candidates = slices.DeleteFunc(candidates, func(k int) bool {
		return spots[k].cc != nil || spots[k].tokens < minTokens
	})

	existing := 0
	for _, s := range spots {
		if s.cc != nil {
			existing++
		}
	}
	room := MaxCacheBreakpoints - existing
	if room <= 0 || len(candidates) == 0 {
		return
	}
	if len(candidates) > room {
		candidates = candidates[len(candidates)-room:]
	}

	var clonedTools, clonedSystem, clonedMessages bool
	clonedContent := map[int]bool{}
	for _, k := range candidates {
		cc := &agentd.CacheControl{TTL: orderedTTL(spots, k, ttl)}
		s := spots[k]
		switch s.where {
		case inTools:
			if !clonedTools {
				req.Tools, clonedTools = slices.Clone(req.Tools), true
			}
			req.Tools[s.i].Cache = cc
		case inSystem:
			if !clonedSystem {
				req.System, clonedSystem = slices.Clone(req.System), true
			}
			req.System[s.i].Cache = cc
		case inMessages:
			if !clonedMessages {
				req.Messages, clonedMessages = slices.Clone(req.Messages), true
			}
			if !clonedContent[s.i] {
				req.Messages[s.i].Content, clonedContent[s.i] = slices.Clone(req.Messages[s.i].Content), true
			}
			req.Messages[s.i].Content[s.j].Cache = cc
		}
	}
}

// orderedTTL is the TTL for a new breakpoint at spots[k]: ttl, unless a
// marker the caller set requires another. The API refuses a 1-hour
// breakpoint after a 5-minute one, so a new marker after a caller's
// 5-minute one is 5-minute, and one before a caller's 1-hour one is 1-hour.
func orderedTTL(spots []cacheSpot, k int, ttl agentd.CacheTTL) agentd.CacheTTL {
	for _, s := range spots[:k] {
		if s.cc != nil && s.cc.TTL != agentd.CacheTTL1h {
			return agentd.CacheTTL5m
		}
	}
	for _, s := range spots[k+1:] {
		if s.cc != nil && s.cc.TTL == agentd.CacheTTL1h {
			return agentd.CacheTTL1h
		}
	}
	return ttl
}

type spotKind int

const (
	inTools spotKind = iota
	inSystem
	inMessages
)

// cacheSpot is a tool or block that can carry a breakpoint: where it is,
// the estimated tokens of the prompt up to and including it, and the
// caller's marker, if any.
type cacheSpot struct {
	where  spotKind
	i, j   int // tool or system block i; block j of message i
	tokens int
	cc     *agentd.CacheControl
}

// estimateText is the usual estimate of a text's tokens: ceil(characters/4).
//
// These estimates only decide whether a prefix is long enough to cache.
// They need not be exact: a prefix overestimated past the minimum spends a
// marker the API ignores, never money.
func estimateText(s string) int { return (utf8.RuneCountInString(s) + 3) / 4 }

// toolTokens estimates a tool definition: its name, description and input
// schema as text.
func toolTokens(t agentd.Tool) int {
	schema := t.InputSchema
	if len(schema) == 0 {
		schema = []byte(`{"type":"object"}`) // what model/anthropic sends
	}
	return estimateText(t.Name + t.Description + string(schema))
}

// blockTokens estimates a content block: text as text, an image at a fixed
// size, a PDF per page.
func blockTokens(b agentd.Block) int {
	switch b.Type {
	case agentd.BlockImage:
		return estimateImageTokens
	case agentd.BlockDocument:
		if b.MediaType == "text/plain" {
			return estimateText(string(b.Data))
		}
		return estimatePDFPageTokens * pdfPages(b.Data)
	case agentd.BlockToolUse:
		return estimateText(b.ToolName) + estimateText(string(b.ToolInput))
	default: // text, tool_result
		return estimateText(b.Text)
	}
}

// pdfPages counts the page objects of a PDF, "/Type /Page" but not
// "/Type /Pages", at least one.
func pdfPages(data []byte) int {
	n := 0
	for {
		i := bytes.Index(data, []byte("/Type"))
		if i < 0 {
			break
		}
		data = bytes.TrimLeft(data[i+len("/Type"):], " \t\r\n")
		if rest, ok := bytes.CutPrefix(data, []byte("/Page")); ok && (len(rest) == 0 || rest[0] != 's') {
			n++
		}
	}
	return max(n, 1)
}
