package anthropictest

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"time"
	"unicode/utf8"
)

// Usage is the usage object of an answer.
type Usage struct {
	InputTokens              int64         `json:"input_tokens"`
	CacheCreationInputTokens int64         `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64         `json:"cache_read_input_tokens"`
	CacheCreation            CacheCreation `json:"cache_creation"`
	OutputTokens             int64         `json:"output_tokens"`
}

// CacheCreation splits cache_creation_input_tokens by TTL.
type CacheCreation struct {
	Ephemeral5mInputTokens int64 `json:"ephemeral_5m_input_tokens"`
	Ephemeral1hInputTokens int64 `json:"ephemeral_1h_input_tokens"`
}

// The fixed token estimates of blocks whose size the fake cannot read.
const (
	// ImageTokens is the estimate of any image: about what a 1.15-megapixel
	// image costs, the largest the API sends to the model unscaled.
	ImageTokens = 1600
	// PDFPageTokens is the estimate of one page of a PDF document.
	PDFPageTokens = 1500
)

// DefaultMinCacheTokens is the minimum cacheable prefix of Sonnet-class
// models; shorter prefixes are silently not cached.
const DefaultMinCacheTokens = 1024

// EstimateTokens is the fake's token count of a text: ceil(characters/4).
//
// The rule for a whole request: each tool is its name, description and
// input_schema JSON as text; each system block and text block is its text; a
// tool_use block is its name and input JSON; a tool_result is the sum of its
// content; an image is [ImageTokens]; a base64 PDF is [PDFPageTokens] per page
// (pages counted as "/Type /Page" objects, at least one); a text document is
// its text; other sources (URL, file, content) count as one PDF page; any
// other block is its JSON. Output is the text of the answer plus, per
// tool_use, its name and input JSON, and at least 1.
func EstimateTokens(s string) int64 {
	return int64(utf8.RuneCountInString(s)+3) / 4
}

func blockTokens(b ContentBlock) int64 {
	switch b.Type {
	case "text":
		return EstimateTokens(b.Text)
	case "image":
		return ImageTokens
	case "document":
		switch b.Source.Type {
		case "base64":
			data, _ := b.Source.Bytes() // validated already
			return PDFPageTokens * pdfPages(data)
		case "text":
			return EstimateTokens(b.Source.Data)
		default:
			return PDFPageTokens
		}
	case "tool_use":
		return EstimateTokens(b.Name + string(b.Input))
	case "tool_result":
		var n int64
		for _, c := range b.Content {
			n += blockTokens(c)
		}
		return n
	default:
		return EstimateTokens(string(b.Raw))
	}
}

// pdfPages counts the page objects of a PDF: "/Type /Page" but not
// "/Type /Pages". Anything else (a test's fake bytes) is one page.
func pdfPages(data []byte) int64 {
	var n int64
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

func toolTokens(t Tool) int64 {
	if t.Type == "" || t.Type == "custom" {
		return EstimateTokens(t.Name + t.Description + string(t.InputSchema))
	}
	return EstimateTokens(string(t.Raw))
}

// unit is one block of the prompt in cache order (tools, system, messages):
// what a breakpoint can mark, with its share of the input tokens.
type unit struct {
	tokens int64
	cc     *CacheControl
	key    []byte // the block's identity for the cache, without its cache_control
}

// units lists the prompt's blocks in the order the cache hashes them. keys
// are computed only when the request has breakpoints.
func units(r *Request, keys bool) []unit {
	var us []unit
	key := func(prefix string, v any) []byte {
		if !keys {
			return nil
		}
		return append([]byte(prefix), canonical(v)...)
	}
	for _, t := range r.Tools {
		us = append(us, unit{tokens: toolTokens(t), cc: t.CacheControl, key: key("tool\x00", json.RawMessage(t.Raw))})
	}
	for _, s := range r.System {
		us = append(us, unit{tokens: EstimateTokens(s.Text), cc: s.CacheControl, key: key("system\x00", s.Text)})
	}
	for _, m := range r.Messages {
		for j, b := range m.Content {
			// The first block of a message carries its role, so that the same
			// blocks split into other turns are another prefix.
			prefix := "block\x00"
			if j == 0 {
				prefix = "message\x00" + m.Role + "\x00"
			}
			us = append(us, unit{tokens: blockTokens(b), cc: nestedCacheControl(b), key: key(prefix, json.RawMessage(b.Raw))})
		}
	}
	// Automatic caching marks the last block, unless it is marked already.
	if r.CacheControl != nil && len(r.Messages) > 0 && len(us) > 0 && us[len(us)-1].cc == nil {
		us[len(us)-1].cc = r.CacheControl
	}
	return us
}

// nestedCacheControl is the breakpoint of a block or, for a tool_result, of
// the last of its content blocks that has one: the prefix ends with the
// tool_result either way.
func nestedCacheControl(b ContentBlock) *CacheControl {
	cc := b.CacheControl
	for _, c := range b.Content {
		if c.CacheControl != nil {
			cc = c.CacheControl
		}
	}
	return cc
}

// canonical is v as JSON with every cache_control removed and keys sorted,
// so that moving a breakpoint does not change the identity of a block.
func canonical(v any) []byte {
	b, _ := json.Marshal(v)
	var x any
	if json.Unmarshal(b, &x) != nil {
		return b
	}
	var strip func(any)
	strip = func(x any) {
		switch x := x.(type) {
		case map[string]any:
			delete(x, "cache_control")
			for _, v := range x {
				strip(v)
			}
		case []any:
			for _, v := range x {
				strip(v)
			}
		}
	}
	strip(x)
	b, _ = json.Marshal(x)
	return b
}

// inputTokens is the estimate of the whole prompt, as count_tokens answers.
func inputTokens(r *Request) int64 {
	var n int64
	for _, u := range units(r, false) {
		n += u.tokens
	}
	return n
}

// cacheEntry is a cached prefix.
type cacheEntry struct {
	ttl     time.Duration
	expires time.Time
}

// lookback is how many blocks before a breakpoint the API checks for an
// earlier cached prefix.
const lookback = 20

func ttlOf(cc *CacheControl) time.Duration {
	if cc.TTL == "1h" {
		return time.Hour
	}
	return 5 * time.Minute
}

// prefixes is the cache plan of a request: the tokens and hash of every
// prefix that ends with a block, and where the breakpoints are. Computing it
// (hashing, canonical JSON) needs no lock.
type prefixes struct {
	ttls   []time.Duration // per block: the TTL of its breakpoint, 0 if none
	cum    []int64         // cum[i]: tokens of the prefix that ends with block i
	hashes [][32]byte      // hashes[i]: the identity of that prefix
	bps    []int           // the blocks with a breakpoint, in order
	total  int64
}

func plan(r *Request) prefixes {
	us := units(r, r.breakpoints() > 0)
	p := prefixes{ttls: make([]time.Duration, len(us)), cum: make([]int64, len(us))}
	for i, u := range us {
		p.total += u.tokens
		p.cum[i] = p.total
		if u.cc != nil {
			p.bps = append(p.bps, i)
			p.ttls[i] = ttlOf(u.cc)
		}
	}
	if len(p.bps) == 0 {
		return p
	}
	// Rolling hashes, per model: caches are.
	p.hashes = make([][32]byte, len(us))
	h := sha256.Sum256([]byte("model\x00" + r.Model))
	for i, u := range us {
		h = sha256.Sum256(append(h[:], u.key...))
		p.hashes[i] = h
	}
	return p
}

// usage computes the input side of the usage of r, reading and writing the
// fake's prompt cache like the API does:
//
//   - without breakpoints nothing is cached;
//   - the longest cached prefix ending at a breakpoint or up to 20 blocks
//     before one is read (and its TTL refreshed);
//   - every breakpoint after it whose prefix reaches the minimum cacheable
//     length is written, its tokens counted as creation under its TTL;
//   - the rest is input_tokens.
func (f *Fake) usage(r *Request) Usage {
	p := plan(r)
	if len(p.bps) == 0 || p.cum[p.bps[len(p.bps)-1]] < f.minCacheTokens {
		return Usage{InputTokens: p.total}
	}
	now := f.now()

	f.mu.Lock()
	defer f.mu.Unlock()
	best := -1
	for _, b := range p.bps {
		for j := b; j >= 0 && j > b-lookback && j > best; j-- {
			e, ok := f.cache[p.hashes[j]]
			if !ok {
				continue
			}
			if !now.Before(e.expires) {
				delete(f.cache, p.hashes[j])
				continue
			}
			best = j
			break
		}
	}
	var u Usage
	covered := int64(0)
	if best >= 0 {
		e := f.cache[p.hashes[best]]
		e.expires = now.Add(e.ttl)
		f.cache[p.hashes[best]] = e
		covered = p.cum[best]
		u.CacheReadInputTokens = covered
	}
	if len(f.cache) >= sweepAt {
		f.sweep(now)
	}
	for _, b := range p.bps {
		if b <= best || p.cum[b] < f.minCacheTokens {
			continue
		}
		ttl := p.ttls[b]
		f.cache[p.hashes[b]] = cacheEntry{ttl: ttl, expires: now.Add(ttl)}
		written := p.cum[b] - covered
		covered = p.cum[b]
		if ttl == time.Hour {
			u.CacheCreation.Ephemeral1hInputTokens += written
		} else {
			u.CacheCreation.Ephemeral5mInputTokens += written
		}
		u.CacheCreationInputTokens += written
	}
	u.InputTokens = p.total - u.CacheReadInputTokens - u.CacheCreationInputTokens
	return u
}

// sweepAt is the cache size from which expired entries are swept before a
// write, so that a long offline session does not keep every prefix forever.
const sweepAt = 1024

// sweep deletes expired entries. Callers hold f.mu.
func (f *Fake) sweep(now time.Time) {
	for k, e := range f.cache {
		if !now.Before(e.expires) {
			delete(f.cache, k)
		}
	}
}

// outputTokens is the estimate of an answer's content.
func outputTokens(blocks []replyBlock) int64 {
	var n int64
	for _, b := range blocks {
		if b.typ == "tool_use" {
			n += EstimateTokens(b.name + string(b.input))
		} else {
			n += EstimateTokens(b.text)
		}
	}
	return max(n, 1)
}
