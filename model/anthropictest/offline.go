package anthropictest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Offline is the offline model: a responder for agentd's dev mode without
// an API key (set it with [Fake.SetResponder]). A request that forces a
// tool call — tool_choice {"type":"tool"} names the tool, {"type":"any"}
// means the first tool with an input schema — is answered with a call of
// that tool whose input is [Synthesize]d from the tool's input_schema, so
// a task agent, which asks for its structured output that way, gets an
// answer it can validate and act on. Every other request gets [Echo].
//
// The hint for the synthesized text is the text of the last user message
// that has any, so a repair turn (a user message holding only the
// tool_result, with is_error, of the previous call) is answered like the
// question it repairs: the same answer again, deterministically.
//
// When no input can be synthesized (an unsatisfiable schema, or features
// beyond the subset Synthesize knows), Offline answers with text saying
// why instead of a tool call that would break the schema: the agent then
// reports that the model did not answer as asked, which is the truth, and
// the reason is in the logged answer.
func Offline(req Request) Reply {
	tool, ok := forcedTool(req)
	if !ok {
		return Echo(req)
	}
	input, err := synthesize(tool.InputSchema, offlineHint(req), true)
	if err != nil {
		return Text(fmt.Sprintf("Offline model: cannot call %s: %v", tool.Name, err))
	}
	return ToolUse(tool.Name, input)
}

// forcedTool returns the tool the request forces the model to call, if any.
func forcedTool(req Request) (Tool, bool) {
	if req.ToolChoice == nil {
		return Tool{}, false
	}
	switch req.ToolChoice.Type {
	case "tool":
		for _, t := range req.Tools {
			if t.Name == req.ToolChoice.Name {
				return t, true
			}
		}
	case "any":
		// Server tools (web search and the like) have no input schema to
		// answer: the first client tool is the one a caller would expect.
		for _, t := range req.Tools {
			if len(t.InputSchema) > 0 {
				return t, true
			}
		}
	}
	return Tool{}, false
}

// offlineHint is the text of the last user message that has text blocks.
func offlineHint(req Request) string {
	for _, m := range slices.Backward(req.Messages) {
		if m.Role != "user" {
			continue
		}
		var parts []string
		for _, b := range m.Content {
			if b.Type == "text" && b.Text != "" {
				parts = append(parts, b.Text)
			}
		}
		if len(parts) > 0 {
			return strings.Join(parts, "\n")
		}
	}
	return ""
}

// Synthesize returns a JSON instance of schema, deterministically: the same
// schema and hint always give the same bytes. It knows the subset of JSON
// Schema that agents' output schemas use:
//
//   - type (one or a list, "null" included), enum (the first value that
//     fits), const;
//   - objects: properties (every declared one is filled, in declaration
//     order, while the answer is shallow), required (always filled),
//     patternProperties, additionalProperties, min/maxProperties,
//     propertyNames;
//   - arrays: items, prefixItems (and the older items array with
//     additionalItems), minItems/maxItems (one item when nothing asks for
//     more), uniqueItems;
//   - numbers: minimum, maximum, exclusiveMinimum, exclusiveMaximum (as
//     numbers, or draft-4 booleans), multipleOf, exactly (no float
//     rounding): the midpoint of the bounds when both are given, else the
//     lower one, else 0, moved onto the nearest multiple, so a confidence
//     in [0, 1] is 0.5;
//   - strings: "Offline answer: " and the first 80 characters of hint, cut
//     to maxLength and padded with dots to minLength; a format (date-time,
//     date, time, email, uri, uuid, hostname, ipv4, ipv6 and the rest of
//     the formats validators assert) gives a fixed example value; a pattern
//     (Go regexp syntax, as validators in Go use) the hint text fails is met
//     by a string generated from the pattern's syntax — best effort;
//   - $ref to a local JSON pointer ("#/$defs/x", "#/definitions/x", "#"),
//     allOf (all hold), anyOf and oneOf (the first branch that yields a
//     fitting value), if/then/else (if and then when they can hold, else
//     else), not (checked only: values that fail it are passed over).
//
// Other keywords (contains, dependentRequired, unevaluatedProperties, $id,
// $dynamicRef, …) are ignored, so for schemas that use them the instance
// may not validate. Every instance is checked against the subset before it
// is returned; a schema that cannot be satisfied, or whose satisfying
// instance was not found, is an error naming where.
func Synthesize(schema json.RawMessage, hint string) (json.RawMessage, error) {
	return synthesize(schema, hint, false)
}

// Limits that keep synthesis of hostile or pathological schemas bounded.
const (
	maxSteps       = 100_000 // schema nodes generated or checked
	maxDepth       = 64      // nesting of the instance
	leanDepth      = 6       // below this, only what is required is filled
	maxRefDepth    = 512     // nested $ref, allOf and checks on one path
	maxStringRunes = 1 << 16 // longest string generated
	maxItemsMade   = 1000    // longest array generated
	maxNumberExp   = 400     // largest decimal exponent of a number used
	maxJSONDepth   = 1000    // nesting of the schema document
	hintRunes      = 80      // characters of the hint in generated strings
)

var errTooComplex = errors.New("the schema is too complex to synthesize an instance of")

func synthesize(schema json.RawMessage, hint string, object bool) (json.RawMessage, error) {
	const op = "anthropictest: synthesize"
	root, err := decodeJSON(schema)
	if err != nil {
		return nil, fmt.Errorf("%s: schema: %w", op, err)
	}
	switch root.(type) {
	case bool, *jsonObject:
	default:
		return nil, fmt.Errorf("%s: a JSON Schema is an object or a boolean", op)
	}
	s := &synth{root: root, text: readable(hint), steps: maxSteps, regexps: map[string]*regexp.Regexp{}}
	schemas := []any{root}
	if object {
		// A tool's input is always a JSON object, whatever the schema
		// leaves open.
		schemas = append(schemas, &jsonObject{keys: []string{"type"}, vals: map[string]any{"type": "object"}})
	}
	v, err := s.generate(schemas, nil, "", 0)
	if err == nil {
		s.steps = maxSteps // the final check gets work of its own
		var out bytes.Buffer
		encodeJSON(&out, v)
		// Check what is returned, as it will be parsed, not what was built.
		back, derr := decodeJSON(out.Bytes())
		if derr != nil || !s.checkAll(schemas, back) {
			err = errors.New("the synthesized instance does not validate (a bug)")
		} else {
			return out.Bytes(), nil
		}
	}
	if s.steps < 0 {
		err = errTooComplex
	}
	return nil, fmt.Errorf("%s: %w", op, err)
}

// readable is the text generated strings start from.
func readable(hint string) string {
	h := strings.Join(strings.Fields(strings.ToValidUTF8(hint, "")), " ")
	if r := []rune(h); len(r) > hintRunes {
		h = string(r[:hintRunes])
	}
	if h == "" {
		return "Offline answer"
	}
	return "Offline answer: " + h
}

// synth is one synthesis: the schema document and the work left.
type synth struct {
	root     any
	text     string
	steps    int
	refDepth int
	regexps  map[string]*regexp.Regexp
}

// spend takes one step of work, reporting false when none is left.
func (s *synth) spend() bool {
	s.steps--
	return s.steps >= 0
}

// lean reports whether only required content is generated at depth: deep
// in the instance, or when half the work is spent, optional properties and
// array items are left out so recursive schemas end.
func (s *synth) lean(depth int) bool {
	return depth >= leanDepth || s.steps < maxSteps/2
}

// choice is an anyOf or oneOf whose branch is already chosen.
type choice struct {
	schema  *jsonObject
	keyword string
}

// generate returns a value that satisfies every schema of schemas (at the
// instance location path, depth deep), or why it found none.
func (s *synth) generate(schemas []any, chosen []choice, path string, depth int) (any, error) {
	if !s.spend() {
		return nil, errTooComplex
	}
	if depth > maxDepth {
		return nil, at(path, errors.New("the instance would nest too deeply"))
	}
	members, err := s.flatten(schemas)
	if err != nil {
		return nil, at(path, err)
	}

	// Pick a branch of the first anyOf or oneOf not yet decided, and
	// generate under it; candidates are checked against all of schemas, so
	// a oneOf branch whose value fits a second branch too is passed over.
	for _, m := range members {
		for _, kw := range []string{"anyOf", "oneOf", "if"} {
			raw, ok := m.get(kw)
			if !ok || slices.Contains(chosen, choice{m, kw}) {
				continue
			}
			var branches [][]any
			if kw == "if" {
				// Aim for the condition and then; failing that, for else.
				yes, no := []any{raw}, []any{}
				if t, ok := m.get("then"); ok {
					yes = append(yes, t)
				}
				if e, ok := m.get("else"); ok {
					no = append(no, e)
				}
				branches = [][]any{yes, no}
			} else {
				list, ok := raw.([]any)
				if !ok || len(list) == 0 {
					return nil, at(path, fmt.Errorf("%s must be a non-empty array", kw))
				}
				for _, b := range list {
					branches = append(branches, []any{b})
				}
			}
			next := append(slices.Clip(chosen), choice{m, kw})
			var last error
			for _, b := range branches {
				v, err := s.generate(append(slices.Clip(schemas), b...), next, path, depth)
				if err == nil {
					return v, nil
				}
				if errors.Is(err, errTooComplex) {
					return nil, err
				}
				last = err
			}
			return nil, at(path, fmt.Errorf("no branch of %s can be satisfied (the last: %w)", kw, last))
		}
	}

	// const and enum list the only values there are.
	var listed []any
	constrained := false
	for _, m := range members {
		if c, ok := m.get("const"); ok {
			listed, constrained = append(listed, c), true
		}
	}
	for _, m := range members {
		if e, ok := m.get("enum"); ok {
			constrained = true
			if vs, ok := e.([]any); ok {
				listed = append(listed, vs...)
			}
		}
	}
	if constrained {
		for _, v := range listed {
			if s.checkAll(schemas, v) {
				return v, nil
			}
		}
		if s.steps < 0 {
			return nil, errTooComplex
		}
		return nil, at(path, errors.New("no const or enum value satisfies the schema"))
	}

	types := typesOf(members)
	if types == 0 {
		return nil, at(path, errors.New("no type satisfies the schema"))
	}
	var last error
	for _, t := range preferred(members, types) {
		cands, err := s.candidates(t, members, path, depth)
		if errors.Is(err, errTooComplex) {
			return nil, err
		}
		for _, c := range cands {
			if s.checkAll(schemas, c) {
				return c, nil
			}
		}
		if err == nil {
			err = fmt.Errorf("no %s satisfies the schema", typeName(t))
		}
		last = err
	}
	if s.steps < 0 {
		return nil, errTooComplex
	}
	return nil, at(path, last)
}

// at prefixes an error with the instance location it is about.
func at(path string, err error) error {
	var pe *pathError
	if path == "" || errors.As(err, &pe) || errors.Is(err, errTooComplex) {
		return err
	}
	return &pathError{path: path, err: err}
}

type pathError struct {
	path string
	err  error
}

func (e *pathError) Error() string { return e.path + ": " + e.err.Error() }
func (e *pathError) Unwrap() error { return e.err }

// flatten resolves $ref and allOf into the list of schema objects that
// must all hold. Boolean true schemas drop out; false is an error.
func (s *synth) flatten(schemas []any) ([]*jsonObject, error) {
	var out []*jsonObject
	var add func(v any, depth int) error
	add = func(v any, depth int) error {
		if depth > maxRefDepth {
			return errors.New("$ref and allOf nest too deeply")
		}
		switch v := v.(type) {
		case bool:
			if !v {
				return errors.New("the schema is false: no value is valid")
			}
			return nil
		case *jsonObject:
			if slices.Contains(out, v) {
				return nil // a $ref cycle adds nothing new
			}
			out = append(out, v)
			if r, ok := v.get("$ref"); ok {
				target, err := s.resolve(r)
				if err != nil {
					return err
				}
				if err := add(target, depth+1); err != nil {
					return err
				}
			}
			if a, ok := v.get("allOf"); ok {
				subs, ok := a.([]any)
				if !ok {
					return errors.New("allOf must be an array")
				}
				for _, sub := range subs {
					if err := add(sub, depth+1); err != nil {
						return err
					}
				}
			}
			return nil
		default:
			return errors.New("a schema must be an object or a boolean")
		}
	}
	for _, sc := range schemas {
		if err := add(sc, 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// resolve finds the target of a $ref: a JSON pointer into the schema
// document, as a URI fragment.
func (s *synth) resolve(ref any) (any, error) {
	r, ok := ref.(string)
	if !ok {
		return nil, errors.New("$ref must be a string")
	}
	frag, ok := strings.CutPrefix(r, "#")
	if !ok {
		return nil, fmt.Errorf("$ref %q: only references within the schema (#/…) are supported", r)
	}
	frag, err := url.PathUnescape(frag)
	if err != nil {
		return nil, fmt.Errorf("$ref %q: %v", r, err)
	}
	if frag == "" {
		return s.root, nil
	}
	if !strings.HasPrefix(frag, "/") {
		return nil, fmt.Errorf("$ref %q: anchors are not supported", r)
	}
	cur := s.root
	for _, tok := range strings.Split(frag[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case *jsonObject:
			v, ok := c.get(tok)
			if !ok {
				return nil, fmt.Errorf("$ref %q: not found", r)
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) || (len(tok) > 1 && tok[0] == '0') {
				return nil, fmt.Errorf("$ref %q: not found", r)
			}
			cur = c[i]
		default:
			return nil, fmt.Errorf("$ref %q: not found", r)
		}
	}
	return cur, nil
}

// The JSON types, as a set. number includes integer.
type typeSet uint8

const (
	tNull typeSet = 1 << iota
	tBoolean
	tObject
	tArray
	tNumber
	tInteger
	tString
	tAll = tNull | tBoolean | tObject | tArray | tNumber | tInteger | tString
)

func typeBit(name string) typeSet {
	switch name {
	case "null":
		return tNull
	case "boolean":
		return tBoolean
	case "object":
		return tObject
	case "array":
		return tArray
	case "number":
		return tNumber | tInteger
	case "integer":
		return tInteger
	case "string":
		return tString
	}
	return 0
}

func typeName(t typeSet) string {
	switch t {
	case tNull:
		return "null"
	case tBoolean:
		return "boolean"
	case tObject:
		return "object"
	case tArray:
		return "array"
	case tNumber:
		return "number"
	case tInteger:
		return "integer"
	}
	return "string"
}

// typesOf is the set of types every member allows.
func typesOf(members []*jsonObject) typeSet {
	set := tAll
	for _, m := range members {
		raw, ok := m.get("type")
		if !ok {
			continue
		}
		var ms typeSet
		switch raw := raw.(type) {
		case string:
			ms = typeBit(raw)
		case []any:
			for _, n := range raw {
				if n, ok := n.(string); ok {
					ms |= typeBit(n)
				}
			}
		default:
			ms = tAll
		}
		set &= ms
	}
	return set
}

// preferred orders the allowed types: those the keywords point at first
// (properties mean an object is wanted), then string, the most readable,
// and the rest. number stands for integer too when both are allowed.
func preferred(members []*jsonObject, set typeSet) []typeSet {
	has := func(kws ...string) bool {
		for _, m := range members {
			for _, k := range kws {
				if _, ok := m.get(k); ok {
					return true
				}
			}
		}
		return false
	}
	numeric := tNumber
	if set&tNumber == 0 {
		numeric = tInteger
	}
	var order []typeSet
	if has("properties", "required", "additionalProperties", "patternProperties", "minProperties", "maxProperties", "propertyNames") {
		order = append(order, tObject)
	}
	if has("items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems") {
		order = append(order, tArray)
	}
	if has("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf") {
		order = append(order, numeric)
	}
	order = append(order, tString, numeric, tBoolean, tObject, tArray, tNull)
	var out []typeSet
	for _, t := range order {
		if set&t != 0 && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// candidates are values of type t built from the members' keywords, best
// first; the caller checks them.
func (s *synth) candidates(t typeSet, members []*jsonObject, path string, depth int) ([]any, error) {
	switch t {
	case tNull:
		return []any{nil}, nil
	case tBoolean:
		return []any{true, false}, nil
	case tNumber, tInteger:
		return numberCandidates(members, t == tInteger)
	case tString:
		return s.stringCandidates(members)
	case tObject:
		v, err := s.object(members, path, depth)
		if err != nil {
			return nil, err
		}
		return []any{v}, nil
	case tArray:
		v, err := s.array(members, path, depth)
		if err != nil {
			return nil, err
		}
		return []any{v}, nil
	}
	return nil, nil
}

// object builds an object with every required property and, while not
// lean, every declared one.
func (s *synth) object(members []*jsonObject, path string, depth int) (any, error) {
	var names []string
	required := map[string]bool{}
	for _, m := range members {
		if props, ok := m.get("properties"); ok {
			if p, ok := props.(*jsonObject); ok {
				for _, k := range p.keys {
					if !slices.Contains(names, k) {
						names = append(names, k)
					}
				}
			}
		}
	}
	for _, m := range members {
		if req, ok := m.get("required"); ok {
			if rs, ok := req.([]any); ok {
				for _, r := range rs {
					if r, ok := r.(string); ok {
						required[r] = true
						if !slices.Contains(names, r) {
							names = append(names, r)
						}
					}
				}
			}
		}
	}
	out := &jsonObject{vals: map[string]any{}}
	var optional []string
	for _, name := range names {
		if !required[name] && s.lean(depth) {
			continue
		}
		schemas, err := s.propertySchemas(members, name)
		var v any
		if err == nil {
			v, err = s.generate(schemas, nil, path+"/"+pointerEscape(name), depth+1)
		}
		if err != nil {
			if required[name] || errors.Is(err, errTooComplex) {
				return nil, at(path+"/"+pointerEscape(name), err)
			}
			continue // an optional property that cannot be had is left out
		}
		out.set(name, v)
		if !required[name] {
			optional = append(optional, name)
		}
	}
	if maxP, ok, err := intKeyword(members, "maxProperties", minOf); err != nil {
		return nil, err
	} else if ok {
		for len(out.keys) > maxP && len(optional) > 0 {
			out.remove(optional[len(optional)-1])
			optional = optional[:len(optional)-1]
		}
	}
	return out, nil
}

// propertySchemas are the schemas a property's value must satisfy: its
// declarations, the patternProperties it matches, and where neither, the
// additionalProperties. A name propertyNames refuses is an error.
func (s *synth) propertySchemas(members []*jsonObject, name string) ([]any, error) {
	var out []any
	for _, m := range members {
		if pn, ok := m.get("propertyNames"); ok && !s.check(pn, name) {
			return nil, fmt.Errorf("propertyNames does not allow %q", name)
		}
		matched := false
		if props, ok := m.get("properties"); ok {
			if p, ok := props.(*jsonObject); ok {
				if v, ok := p.get(name); ok {
					out, matched = append(out, v), true
				}
			}
		}
		if pp, ok := m.get("patternProperties"); ok {
			if p, ok := pp.(*jsonObject); ok {
				for _, pat := range p.keys {
					re, err := s.regexp(pat)
					if err != nil {
						return nil, err
					}
					if re.MatchString(name) {
						out, matched = append(out, p.vals[pat]), true
					}
				}
			}
		}
		if !matched {
			if ap, ok := m.get("additionalProperties"); ok {
				out = append(out, ap)
			}
		}
	}
	return out, nil
}

// array builds an array of minItems items, or one while not lean.
func (s *synth) array(members []*jsonObject, path string, depth int) (any, error) {
	minI, _, err := intKeyword(members, "minItems", maxOf)
	if err != nil {
		return nil, err
	}
	maxI, hasMax, err := intKeyword(members, "maxItems", minOf)
	if err != nil {
		return nil, err
	}
	if hasMax && minI > maxI {
		return nil, fmt.Errorf("minItems %d exceeds maxItems %d", minI, maxI)
	}
	if minI > maxItemsMade {
		return nil, fmt.Errorf("minItems %d is more than an offline answer makes", minI)
	}
	n := minI
	if n == 0 && !s.lean(depth) {
		n = 1
	}
	if hasMax && n > maxI {
		n = maxI
	}
	for _, m := range members {
		if u, _ := m.get("uniqueItems"); u == true && n > 1 && minI <= 1 {
			n = 1 // equal items would break uniqueItems; one cannot
		}
	}
	items := []any{}
	for i := range n {
		p := path + "/" + strconv.Itoa(i)
		v, err := s.generate(s.itemSchemas(members, i), nil, p, depth+1)
		if err != nil {
			if i >= minI && !errors.Is(err, errTooComplex) {
				break // an item beyond minItems is optional
			}
			return nil, at(p, err)
		}
		items = append(items, v)
	}
	return items, nil
}

// itemSchemas are the schemas the item at index i must satisfy.
func (s *synth) itemSchemas(members []*jsonObject, i int) []any {
	var out []any
	for _, m := range members {
		if pi, ok := m.get("prefixItems"); ok {
			if arr, ok := pi.([]any); ok && i < len(arr) {
				out = append(out, arr[i])
				continue
			}
		}
		it, ok := m.get("items")
		if !ok {
			continue
		}
		if arr, isTuple := it.([]any); isTuple {
			// Drafts before 2020-12: items as a tuple, then additionalItems.
			if i < len(arr) {
				out = append(out, arr[i])
			} else if ai, ok := m.get("additionalItems"); ok {
				out = append(out, ai)
			}
			continue
		}
		out = append(out, it)
	}
	return out
}

// stringCandidates are strings for the members: the hint text (or a
// format's example value) fitted to the lengths, then strings generated
// from the patterns.
func (s *synth) stringCandidates(members []*jsonObject) ([]any, error) {
	minL, _, err := intKeyword(members, "minLength", maxOf)
	if err != nil {
		return nil, err
	}
	maxL, hasMax, err := intKeyword(members, "maxLength", minOf)
	if err != nil {
		return nil, err
	}
	if hasMax && minL > maxL {
		return nil, fmt.Errorf("minLength %d exceeds maxLength %d", minL, maxL)
	}
	if minL > maxStringRunes {
		return nil, fmt.Errorf("minLength %d is more than an offline answer makes", minL)
	}
	fit := func(str string) string {
		if hasMax && utf8.RuneCountInString(str) > maxL {
			str = string([]rune(str)[:maxL])
		}
		if n := utf8.RuneCountInString(str); n < minL {
			str += strings.Repeat(".", minL-n)
		}
		return str
	}

	var cands []string
	formatted := false
	for _, m := range members {
		if f, ok := m.get("format"); ok {
			if f, ok := f.(string); ok {
				if v, known := formatExample(f); known {
					cands, formatted = append(cands, v), true
				}
			}
		}
	}
	if !formatted {
		cands = append(cands, fit(s.text))
	}
	for _, m := range members {
		p, ok := m.get("pattern")
		if !ok {
			continue
		}
		pat, ok := p.(string)
		if !ok {
			return nil, errors.New("pattern must be a string")
		}
		if _, err := s.regexp(pat); err != nil {
			return nil, err
		}
		re, err := syntax.Parse(pat, syntax.Perl)
		if err != nil {
			return nil, fmt.Errorf("pattern %q: %v", pat, err)
		}
		g0, ok := sample(re, 0)
		if !ok {
			continue
		}
		if !formatted {
			// An unanchored pattern is met by the hint text with a match
			// appended, which reads better than the match alone.
			cands = append(cands, fit(s.text+" "+g0))
		}
		cands = append(cands, g0)
		if n := utf8.RuneCountInString(g0); n < minL {
			if g, ok := sample(re, minL-n); ok {
				cands = append(cands, g)
			}
			cands = append(cands, fit(g0))
		}
	}
	out := make([]any, 0, len(cands))
	for _, c := range cands {
		if !slices.Contains(out, any(c)) {
			out = append(out, c)
		}
	}
	return out, nil
}

// regexp compiles a pattern as Go validators do, once per synthesis.
func (s *synth) regexp(pat string) (*regexp.Regexp, error) {
	if re, ok := s.regexps[pat]; ok {
		return re, nil
	}
	re, err := regexp.Compile(pat)
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %v", pat, err)
	}
	s.regexps[pat] = re
	return re, nil
}

// sample generates a string matching re: the first alternative, the
// minimum repetitions plus extra for unbounded ones, a preferred character
// of each class. Anchors and word boundaries are not steered towards, so
// the caller checks the result.
func sample(re *syntax.Regexp, extra int) (string, bool) {
	work := 100_000
	var out []rune
	var walk func(re *syntax.Regexp) bool
	walk = func(re *syntax.Regexp) bool {
		work--
		if work < 0 || len(out) > maxStringRunes {
			return false
		}
		switch re.Op {
		case syntax.OpNoMatch:
			return false
		case syntax.OpLiteral:
			out = append(out, re.Rune...)
		case syntax.OpCharClass:
			r, ok := pickRune(re.Rune)
			if !ok {
				return false
			}
			out = append(out, r)
		case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
			out = append(out, 'x')
		case syntax.OpCapture:
			return walk(re.Sub[0])
		case syntax.OpStar, syntax.OpPlus, syntax.OpRepeat:
			n, limit := extra, -1
			switch re.Op {
			case syntax.OpPlus:
				n = 1 + extra
			case syntax.OpRepeat:
				n, limit = re.Min+extra, re.Max
			}
			if limit >= 0 && n > limit {
				n = limit
			}
			for range n {
				if !walk(re.Sub[0]) {
					return false
				}
			}
		case syntax.OpConcat:
			for _, sub := range re.Sub {
				if !walk(sub) {
					return false
				}
			}
		case syntax.OpAlternate:
			mark := len(out)
			for _, sub := range re.Sub {
				if walk(sub) {
					return true
				}
				out = out[:mark]
			}
			return false
		}
		// OpEmptyMatch, OpQuest (none), anchors and boundaries add nothing.
		return true
	}
	if !walk(re) {
		return "", false
	}
	return string(out), true
}

// pickRune picks a readable rune of a character class, given as ranges.
func pickRune(ranges []rune) (rune, bool) {
	in := func(r rune) bool {
		for i := 0; i+1 < len(ranges); i += 2 {
			if ranges[i] <= r && r <= ranges[i+1] {
				return true
			}
		}
		return false
	}
	for _, r := range "aA0x -_." {
		if in(r) {
			return r, true
		}
	}
	for i := 0; i+1 < len(ranges); i += 2 {
		if r := max(ranges[i], '!'); r <= ranges[i+1] && utf8.ValidRune(r) {
			return r, true
		}
	}
	for i := 0; i+1 < len(ranges); i += 2 {
		for r := ranges[i]; r <= ranges[i+1] && r < ranges[i]+64; r++ {
			if utf8.ValidRune(r) {
				return r, true
			}
		}
	}
	return 0, false
}

// formatExample is a fixed value of a format, for every format Go
// validators assert; known is false for formats nobody checks.
func formatExample(format string) (v string, known bool) {
	switch format {
	case "date-time":
		return "2025-01-01T00:00:00Z", true
	case "date":
		return "2025-01-01", true
	case "time":
		return "00:00:00Z", true
	case "duration":
		return "P1D", true
	case "period":
		return "2025-01-01T00:00:00Z/P1D", true
	case "email", "idn-email":
		return "offline@example.com", true
	case "hostname", "idn-hostname":
		return "example.com", true
	case "ipv4":
		return "192.0.2.1", true
	case "ipv6":
		return "2001:db8::1", true
	case "uri", "iri", "uri-reference", "iri-reference":
		return "https://example.com/offline", true
	case "uri-template":
		return "https://example.com/offline/{id}", true
	case "uuid":
		return "00000000-0000-4000-8000-000000000000", true
	case "json-pointer":
		return "/offline", true
	case "relative-json-pointer":
		return "0", true
	case "semver":
		return "1.0.0", true
	case "regex":
		return "^offline$", true
	}
	return "", false
}

// formatOK reports whether str is of the format. It accepts the example
// value, and for the formats enums commonly list, strings of a strict
// shape; anything else is refused, which is safe: the checker may refuse a
// valid value, never pass an invalid one.
func formatOK(format, str string) bool {
	want, known := formatExample(format)
	if !known || str == want {
		return true
	}
	var shape string
	switch format {
	case "date":
		shape = `^\d{4}-\d{2}-\d{2}$`
		if _, err := time.Parse(time.DateOnly, str); err != nil {
			return false
		}
	case "date-time":
		shape = `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$`
		if _, err := time.Parse(time.RFC3339, str); err != nil {
			return false
		}
	case "uuid":
		shape = `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`
	case "email", "idn-email":
		shape = `^[a-z0-9]{1,32}([._+-][a-z0-9]{1,32}){0,4}@([a-z0-9]{1,32}(-[a-z0-9]{1,32})?\.){1,4}[a-z]{2,32}$`
	default:
		return false
	}
	return regexp.MustCompile(shape).MatchString(str)
}

// numberCandidates are the numbers the members allow: the midpoint of the
// bounds, or the lower bound, or 0, on a multiple of every multipleOf;
// integer-valued when integer is set, else the integer value second.
func numberCandidates(members []*jsonObject, integer bool) ([]any, error) {
	r, err := numRangeOf(members)
	if err != nil {
		return nil, err
	}
	var out []any
	modes := []bool{true}
	if !integer {
		modes = []bool{false, true}
	}
	for _, intMode := range modes {
		v, err := r.pick(intMode)
		if err != nil {
			if len(out) > 0 {
				break
			}
			return nil, err
		}
		str, ok := decimal(v)
		if !ok {
			continue
		}
		if n := json.Number(str); !slices.Contains(out, any(n)) {
			out = append(out, n)
		}
	}
	return out, nil
}

// numRange is what the members say of a number.
type numRange struct {
	lo, hi     *big.Rat
	loEx, hiEx bool
	step       *big.Rat // every multipleOf's least common multiple
}

func numRangeOf(members []*jsonObject) (numRange, error) {
	var r numRange
	raise := func(v *big.Rat, ex bool) {
		if c := compare(v, r.lo); r.lo == nil || c > 0 {
			r.lo, r.loEx = v, ex
		} else if c == 0 {
			r.loEx = r.loEx || ex
		}
	}
	lower := func(v *big.Rat, ex bool) {
		if c := compare(v, r.hi); r.hi == nil || c < 0 {
			r.hi, r.hiEx = v, ex
		} else if c == 0 {
			r.hiEx = r.hiEx || ex
		}
	}
	for _, m := range members {
		for _, b := range []struct {
			kw, exKw string
			set      func(*big.Rat, bool)
		}{{"minimum", "exclusiveMinimum", raise}, {"maximum", "exclusiveMaximum", lower}} {
			bound, hasBound, err := ratKeyword(m, b.kw)
			if err != nil {
				return r, err
			}
			exclusive := false
			if ex, ok := m.get(b.exKw); ok {
				switch ex := ex.(type) {
				case bool:
					exclusive = ex // draft 4: a modifier of the bound
				default:
					v, _, err := ratKeyword(m, b.exKw)
					if err != nil {
						return r, err
					}
					b.set(v, true)
				}
			}
			if hasBound {
				b.set(bound, exclusive)
			}
		}
		m, ok, err := ratKeyword(m, "multipleOf")
		if err != nil {
			return r, err
		}
		if ok {
			if m.Sign() <= 0 {
				return r, errors.New("multipleOf must be greater than 0")
			}
			r.step = lcm(r.step, m)
		}
	}
	return r, nil
}

// pick chooses the number; in integer mode, a whole one.
func (r numRange) pick(integer bool) (*big.Rat, error) {
	step := r.step
	if integer {
		step = lcm(step, big.NewRat(1, 1))
	}
	one := big.NewRat(1, 1)
	target := new(big.Rat)
	switch {
	case r.lo != nil && r.hi != nil:
		target.Add(r.lo, r.hi).Quo(target, big.NewRat(2, 1))
	case r.lo != nil:
		target.Set(r.lo)
		if r.loEx && step == nil {
			target.Add(target, one)
		}
	case r.hi != nil:
		if c := r.hi.Sign(); c < 0 || (c == 0 && r.hiEx) {
			target.Set(r.hi)
			if r.hiEx && step == nil {
				target.Sub(target, one)
			}
		}
	}
	if r.lo != nil && r.hi != nil {
		if c := r.lo.Cmp(r.hi); c > 0 || (c == 0 && (r.loEx || r.hiEx)) {
			return nil, errors.New("the minimum is above the maximum")
		}
	}
	if step == nil {
		return target, nil
	}
	// The multiples k·step within the bounds: k in [kmin, kmax].
	var kmin, kmax *big.Int
	if r.lo != nil {
		q := new(big.Rat).Quo(r.lo, step)
		if r.loEx {
			kmin = new(big.Int).Add(floor(q), big.NewInt(1))
		} else {
			kmin = ceil(q)
		}
	}
	if r.hi != nil {
		q := new(big.Rat).Quo(r.hi, step)
		if r.hiEx {
			kmax = new(big.Int).Sub(ceil(q), big.NewInt(1))
		} else {
			kmax = floor(q)
		}
	}
	if kmin != nil && kmax != nil && kmin.Cmp(kmax) > 0 {
		return nil, errors.New("no multiple of multipleOf lies within the bounds")
	}
	half := big.NewRat(1, 2)
	k := floor(new(big.Rat).Add(new(big.Rat).Quo(target, step), half))
	if kmin != nil && k.Cmp(kmin) < 0 {
		k = kmin
	}
	if kmax != nil && k.Cmp(kmax) > 0 {
		k = kmax
	}
	return new(big.Rat).Mul(new(big.Rat).SetInt(k), step), nil
}

func compare(a, b *big.Rat) int {
	if b == nil {
		return 0
	}
	return a.Cmp(b)
}

func floor(r *big.Rat) *big.Int {
	// Euclidean division by a positive denominator rounds down.
	return new(big.Int).Div(r.Num(), r.Denom())
}

func ceil(r *big.Rat) *big.Int {
	return new(big.Int).Neg(floor(new(big.Rat).Neg(r)))
}

// lcm is the least common multiple of two positive rationals (a nil a is
// none yet): lcm(p/q, r/s) = lcm(p, r) / gcd(q, s) in lowest terms.
func lcm(a, b *big.Rat) *big.Rat {
	if a == nil {
		return new(big.Rat).Set(b)
	}
	g := new(big.Int).GCD(nil, nil, a.Num(), b.Num())
	num := new(big.Int).Mul(a.Num(), b.Num())
	num.Quo(num, g)
	den := new(big.Int).GCD(nil, nil, a.Denom(), b.Denom())
	return new(big.Rat).SetFrac(num, den)
}

// decimal writes r exactly in decimal, if it has a finite expansion (its
// denominator has no prime factors but 2 and 5).
func decimal(r *big.Rat) (string, bool) {
	if r.IsInt() {
		return r.Num().String(), true
	}
	d := new(big.Int).Set(r.Denom())
	digits := 0
	for _, p := range []int64{2, 5} {
		bp := big.NewInt(p)
		n := 0
		m := new(big.Int)
		for {
			q, rem := new(big.Int).QuoRem(d, bp, m)
			if rem.Sign() != 0 {
				break
			}
			d, n = q, n+1
		}
		digits = max(digits, n)
	}
	if d.Cmp(big.NewInt(1)) != 0 || digits > 2*maxNumberExp {
		return "", false
	}
	return r.FloatString(digits), true
}

// ratOf parses a JSON number exactly, refusing exponents so large that
// exact arithmetic on them would not end.
func ratOf(v any) (*big.Rat, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return nil, false
	}
	str := string(n)
	if i := strings.IndexAny(str, "eE"); i >= 0 {
		exp, err := strconv.Atoi(strings.TrimPrefix(str[i+1:], "+"))
		if err != nil || exp > maxNumberExp || exp < -maxNumberExp {
			return nil, false
		}
	}
	if len(str) > 8*maxNumberExp {
		return nil, false
	}
	r, ok := new(big.Rat).SetString(str)
	return r, ok
}

// ratKeyword reads a number keyword of m.
func ratKeyword(m *jsonObject, kw string) (*big.Rat, bool, error) {
	v, ok := m.get(kw)
	if !ok {
		return nil, false, nil
	}
	r, ok := ratOf(v)
	if !ok {
		return nil, false, fmt.Errorf("%s must be a number (of a sensible size)", kw)
	}
	return r, true, nil
}

func maxOf(a, b int) int { return max(a, b) }
func minOf(a, b int) int { return min(a, b) }

// intKeyword combines a non-negative integer keyword over the members
// with combine; ok is false when no member has it.
func intKeyword(members []*jsonObject, kw string, combine func(a, b int) int) (n int, ok bool, err error) {
	for _, m := range members {
		v, has, err := intOf(m, kw)
		if err != nil {
			return 0, false, err
		}
		if !has {
			continue
		}
		if !ok {
			n, ok = v, true
		} else {
			n = combine(n, v)
		}
	}
	return n, ok, nil
}

// intOf reads a non-negative integer keyword of m; values beyond an int32
// are clamped, as nothing that large is generated anyway.
func intOf(m *jsonObject, kw string) (int, bool, error) {
	r, ok, err := ratKeyword(m, kw)
	if err != nil || !ok {
		return 0, ok, err
	}
	if !r.IsInt() || r.Sign() < 0 {
		return 0, false, fmt.Errorf("%s must be a non-negative integer", kw)
	}
	if !r.Num().IsInt64() || r.Num().Int64() > 1<<31 {
		return 1 << 31, true, nil
	}
	return int(r.Num().Int64()), true, nil
}

// checkAll reports whether v satisfies every schema.
func (s *synth) checkAll(schemas []any, v any) bool {
	for _, sc := range schemas {
		if !s.check(sc, v) {
			return false
		}
	}
	return true
}

// check reports whether v satisfies schema, for the keywords Synthesize
// knows. Where it cannot tell (work exhausted, a keyword it cannot read),
// it says no.
func (s *synth) check(schema any, v any) bool {
	if !s.spend() {
		return false
	}
	var m *jsonObject
	switch sc := schema.(type) {
	case bool:
		return sc
	case *jsonObject:
		m = sc
	default:
		return false
	}
	if r, ok := m.get("$ref"); ok {
		target, err := s.resolve(r)
		if err != nil {
			return false
		}
		s.refDepth++
		ok := s.refDepth <= maxRefDepth && s.check(target, v)
		s.refDepth--
		if !ok {
			return false
		}
	}
	if t, ok := m.get("type"); ok && !typeMatches(t, v) {
		return false
	}
	if c, ok := m.get("const"); ok && !equalJSON(c, v) {
		return false
	}
	if e, ok := m.get("enum"); ok {
		vs, ok := e.([]any)
		if !ok || !slices.ContainsFunc(vs, func(x any) bool { return equalJSON(x, v) }) {
			return false
		}
	}
	if !s.checkCombinators(m, v) {
		return false
	}
	switch v := v.(type) {
	case json.Number:
		return checkNumber(m, v)
	case string:
		return s.checkString(m, v)
	case []any:
		return s.checkArray(m, v)
	case *jsonObject:
		return s.checkObject(m, v)
	}
	return true
}

func (s *synth) checkCombinators(m *jsonObject, v any) bool {
	list := func(kw string) ([]any, bool, bool) {
		raw, ok := m.get(kw)
		if !ok {
			return nil, false, true
		}
		subs, isList := raw.([]any)
		return subs, true, isList && len(subs) > 0
	}
	if subs, ok, valid := list("allOf"); ok && (!valid || !s.checkAll(subs, v)) {
		return false
	}
	if subs, ok, valid := list("anyOf"); ok && (!valid || !slices.ContainsFunc(subs, func(sc any) bool { return s.check(sc, v) })) {
		return false
	}
	if subs, ok, valid := list("oneOf"); ok {
		if !valid {
			return false
		}
		n := 0
		for _, sc := range subs {
			if s.check(sc, v) {
				n++
			}
		}
		if n != 1 {
			return false
		}
	}
	if not, ok := m.get("not"); ok && s.check(not, v) {
		return false
	}
	if cond, ok := m.get("if"); ok {
		branch := "else"
		if s.check(cond, v) {
			branch = "then"
		}
		if b, ok := m.get(branch); ok && !s.check(b, v) {
			return false
		}
	}
	return true
}

func typeMatches(t any, v any) bool {
	var want typeSet
	switch t := t.(type) {
	case string:
		want = typeBit(t)
	case []any:
		for _, n := range t {
			n, ok := n.(string)
			if !ok {
				return false
			}
			want |= typeBit(n)
		}
	default:
		return false
	}
	var got typeSet
	switch v := v.(type) {
	case nil:
		got = tNull
	case bool:
		got = tBoolean
	case string:
		got = tString
	case []any:
		got = tArray
	case *jsonObject:
		got = tObject
	case json.Number:
		got = tNumber
		if r, ok := ratOf(v); ok && r.IsInt() {
			got = tInteger
		}
	}
	// typeBit("number") includes integer, so a whole number matches either.
	return want&got != 0
}

func checkNumber(m *jsonObject, n json.Number) bool {
	v, ok := ratOf(n)
	if !ok {
		return false
	}
	bounds := []struct {
		kw   string
		good func(c int) bool
	}{
		{"minimum", func(c int) bool { return c >= 0 }},
		{"maximum", func(c int) bool { return c <= 0 }},
		{"exclusiveMinimum", func(c int) bool { return c > 0 }},
		{"exclusiveMaximum", func(c int) bool { return c < 0 }},
	}
	for _, b := range bounds {
		raw, has := m.get(b.kw)
		if !has {
			continue
		}
		if ex, isBool := raw.(bool); isBool {
			// Draft 4: exclusiveMinimum true makes minimum exclusive.
			base := strings.ToLower(strings.TrimPrefix(b.kw, "exclusive"))
			bound, hasBase, err := ratKeyword(m, base)
			if err != nil {
				return false
			}
			if ex && hasBase && v.Cmp(bound) == 0 {
				return false
			}
			continue
		}
		bound, _, err := ratKeyword(m, b.kw)
		if err != nil || !b.good(v.Cmp(bound)) {
			return false
		}
	}
	if step, has, err := ratKeyword(m, "multipleOf"); err != nil {
		return false
	} else if has {
		if step.Sign() <= 0 || !new(big.Rat).Quo(v, step).IsInt() {
			return false
		}
	}
	return true
}

func (s *synth) checkString(m *jsonObject, str string) bool {
	n := utf8.RuneCountInString(str)
	if minL, has, err := intOf(m, "minLength"); err != nil || (has && n < minL) {
		return false
	}
	if maxL, has, err := intOf(m, "maxLength"); err != nil || (has && n > maxL) {
		return false
	}
	if p, ok := m.get("pattern"); ok {
		pat, ok := p.(string)
		if !ok {
			return false
		}
		re, err := s.regexp(pat)
		if err != nil || !re.MatchString(str) {
			return false
		}
	}
	if f, ok := m.get("format"); ok {
		if f, ok := f.(string); ok && !formatOK(f, str) {
			return false
		}
	}
	return true
}

func (s *synth) checkArray(m *jsonObject, items []any) bool {
	if minI, has, err := intOf(m, "minItems"); err != nil || (has && len(items) < minI) {
		return false
	}
	if maxI, has, err := intOf(m, "maxItems"); err != nil || (has && len(items) > maxI) {
		return false
	}
	for i, item := range items {
		if !s.checkAll(s.itemSchemas([]*jsonObject{m}, i), item) {
			return false
		}
	}
	if u, ok := m.get("uniqueItems"); ok && u == true {
		for i := range items {
			for j := range i {
				if equalJSON(items[i], items[j]) {
					return false
				}
			}
		}
	}
	return true
}

func (s *synth) checkObject(m *jsonObject, o *jsonObject) bool {
	if req, ok := m.get("required"); ok {
		rs, ok := req.([]any)
		if !ok {
			return false
		}
		for _, r := range rs {
			name, ok := r.(string)
			if !ok {
				return false
			}
			if _, ok := o.get(name); !ok {
				return false
			}
		}
	}
	if minP, has, err := intOf(m, "minProperties"); err != nil || (has && len(o.keys) < minP) {
		return false
	}
	if maxP, has, err := intOf(m, "maxProperties"); err != nil || (has && len(o.keys) > maxP) {
		return false
	}
	for _, k := range o.keys {
		schemas, err := s.propertySchemas([]*jsonObject{m}, k)
		if err != nil || !s.checkAll(schemas, o.vals[k]) {
			return false
		}
	}
	return true
}

// equalJSON is JSON equality: numbers by value, objects by their members.
func equalJSON(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		ra, oka := ratOf(a)
		rb, okb := ratOf(b)
		return oka && okb && ra.Cmp(rb) == 0
	case []any:
		b, ok := b.([]any)
		return ok && slices.EqualFunc(a, b, equalJSON)
	case *jsonObject:
		b, ok := b.(*jsonObject)
		if !ok || len(a.keys) != len(b.keys) {
			return false
		}
		for _, k := range a.keys {
			bv, ok := b.get(k)
			if !ok || !equalJSON(a.vals[k], bv) {
				return false
			}
		}
		return true
	default:
		return a == b // nil, bool, string
	}
}

// jsonObject is a JSON object that keeps its members' order, so that
// properties are generated in the order the schema declares them.
type jsonObject struct {
	keys []string
	vals map[string]any
}

func (o *jsonObject) get(k string) (any, bool) {
	v, ok := o.vals[k]
	return v, ok
}

func (o *jsonObject) set(k string, v any) {
	if _, ok := o.vals[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = v
}

func (o *jsonObject) remove(k string) {
	delete(o.vals, k)
	o.keys = slices.DeleteFunc(o.keys, func(x string) bool { return x == k })
}

func pointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// decodeJSON decodes one JSON value into nil, bool, json.Number, string,
// []any and *jsonObject (a repeated member keeps its first place and its
// last value, as encoding/json does).
func decodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder, depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, errors.New("JSON nests too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		o := &jsonObject{vals: map[string]any{}}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k, ok := kt.(string)
			if !ok {
				return nil, errors.New("an object key must be a string")
			}
			v, err := decodeValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			o.set(k, v)
		}
		_, err := dec.Token() // '}'
		return o, err
	case json.Delim('['):
		a := []any{}
		for dec.More() {
			v, err := decodeValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := dec.Token() // ']'
		return a, err
	case json.Delim('}'), json.Delim(']'):
		return nil, errors.New("unexpected end of a JSON object or array")
	}
	return tok, nil // nil, bool, json.Number, string
}

// encodeJSON writes a decoded value, objects in their members' order.
func encodeJSON(b *bytes.Buffer, v any) {
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case json.Number:
		b.WriteString(string(v))
	case string:
		writeString(b, v)
	case []any:
		b.WriteByte('[')
		for i, x := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			encodeJSON(b, x)
		}
		b.WriteByte(']')
	case *jsonObject:
		b.WriteByte('{')
		for i, k := range v.keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(b, k)
			b.WriteByte(':')
			encodeJSON(b, v.vals[k])
		}
		b.WriteByte('}')
	}
}

// writeString writes a JSON string without escaping <, > and &, so the
// text reads as it was written.
func writeString(b *bytes.Buffer, s string) {
	var tmp bytes.Buffer
	enc := json.NewEncoder(&tmp)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	b.Write(bytes.TrimSuffix(tmp.Bytes(), []byte("\n")))
}
