package anthropictest_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/agentd/agentd/model/anthropictest"
)

// compileSchema compiles a schema as agentd's agents do: draft 2020-12 by
// default, formats asserted. ok is false when it does not compile.
func compileSchema(t testing.TB, doc string) (*jsonschema.Schema, bool) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
	if err != nil {
		return nil, false
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	c.UseLoader(jsonschema.SchemeURLLoader{}) // no files, no network
	if err := c.AddResource("file:///schema.json", v); err != nil {
		return nil, false
	}
	s, err := c.Compile("file:///schema.json")
	if err != nil {
		return nil, false
	}
	return s, true
}

// validate reports why instance breaks schema, or nil.
func validate(t testing.TB, s *jsonschema.Schema, instance []byte) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(instance))
	if err != nil {
		return err
	}
	return s.Validate(v)
}

const (
	triageSchema = `{
  "type": "object",
  "required": ["draftResponse", "sentiment", "confidence"],
  "additionalProperties": false,
  "properties": {
    "draftResponse": { "type": "string", "minLength": 1, "maxLength": 4000 },
    "sentiment": { "enum": ["positive", "neutral", "negative"] },
    "confidence": { "type": "number", "minimum": 0, "maximum": 1 }
  }
}`
	answerSchema = `{"type":"object","required":["answer"],"additionalProperties":false,
  "properties":{"answer":{"type":"string","minLength":1}}}`
	refundSchema = `{
  "type": "object",
  "required": ["decision", "amount", "reason", "confidence"],
  "additionalProperties": false,
  "properties": {
    "decision": { "enum": ["approve", "reject"] },
    "amount": { "type": "number", "minimum": 0 },
    "reason": { "type": "string", "minLength": 1 },
    "confidence": { "type": "number", "minimum": 0, "maximum": 1 }
  }
}`
)

func TestSynthesizeValidates(t *testing.T) {
	const hint = "Customer T-1001 says the app crashes on login since the update."
	tests := []struct {
		name   string
		schema string
		want   string // the exact instance, when it matters; "" checks validity only
	}{
		{"triage", triageSchema,
			`{"draftResponse":"Offline answer: Customer T-1001 says the app crashes on login since the update.","sentiment":"positive","confidence":0.5}`},
		{"answer", answerSchema, `{"answer":"Offline answer: Customer T-1001 says the app crashes on login since the update."}`},
		{"refund", refundSchema,
			`{"decision":"approve","amount":0,"reason":"Offline answer: Customer T-1001 says the app crashes on login since the update.","confidence":0.5}`},
		{"nested objects and arrays", `{
			"type":"object","required":["customer","items"],
			"properties":{
				"customer":{"type":"object","required":["id","tier"],"additionalProperties":false,
					"properties":{"id":{"type":"string","pattern":"^C-[0-9]{4,}$"},"tier":{"enum":["gold","silver"]},"since":{"type":"string","format":"date"}}},
				"items":{"type":"array","minItems":2,"maxItems":3,"items":{"type":"object","required":["sku","qty"],
					"properties":{"sku":{"type":"string","minLength":3,"maxLength":8},"qty":{"type":"integer","minimum":1,"maximum":10}}}},
				"tags":{"type":"array","items":{"type":"string"},"uniqueItems":true}
			}}`,
			`{"customer":{"id":"C-0000","tier":"gold","since":"2025-01-01"},"items":[{"sku":"Offline ","qty":6},{"sku":"Offline ","qty":6}],"tags":["Offline answer: Customer T-1001 says the app crashes on login since the update."]}`},
		{"$defs and $ref", `{"type":"object","required":["a","b"],"properties":{"a":{"$ref":"#/$defs/money"},"b":{"$ref":"#/definitions/label"}},
			"$defs":{"money":{"type":"object","required":["cents","currency"],"properties":{"cents":{"type":"integer","minimum":100},"currency":{"const":"EUR"}}}},
			"definitions":{"label":{"type":"string","maxLength":5}}}`,
			`{"a":{"cents":100,"currency":"EUR"},"b":"Offli"}`},
		{"recursive $ref ends", `{"$ref":"#/$defs/node","$defs":{"node":{"type":"object","required":["name"],
			"properties":{"name":{"type":"string","maxLength":4},"children":{"type":"array","items":{"$ref":"#/$defs/node"}}}}}}`, ""},
		{"type lists and null", `{"type":"object","required":["maybe","n"],"properties":{"maybe":{"type":["null","integer"]},"n":{"type":"null"}}}`,
			`{"maybe":0,"n":null}`},
		{"numbers", `{"type":"object","required":["a","b","c","d","e","f","g"],"properties":{
			"a":{"type":"integer","minimum":1,"maximum":10},
			"b":{"type":"number","exclusiveMinimum":0,"exclusiveMaximum":1},
			"c":{"type":"integer","multipleOf":7,"minimum":20},
			"d":{"type":"number","multipleOf":0.01,"minimum":0.005,"maximum":0.02},
			"e":{"type":"number","maximum":-3,"exclusiveMaximum":-3.5},
			"f":{"type":"integer","exclusiveMinimum":5},
			"g":{"type":"number","minimum":-1e300,"maximum":1e300}}}`,
			`{"a":6,"b":0.5,"c":21,"d":0.01,"e":-4.5,"f":6,"g":0}`},
		{"strings", `{"type":"object","required":["short","long","email","when","uuid","uri","code"],"properties":{
			"short":{"type":"string","maxLength":3},
			"long":{"type":"string","minLength":100},
			"email":{"type":"string","format":"email"},
			"when":{"type":"string","format":"date-time"},
			"uuid":{"type":"string","format":"uuid"},
			"uri":{"type":"string","format":"uri"},
			"code":{"type":"string","pattern":"^[A-Z]{3}-\\d{2}$"}}}`, ""},
		{"unanchored pattern keeps the hint", `{"type":"string","pattern":"\\d{3}"}`,
			`"Offline answer: Customer T-1001 says the app crashes on login since the update."`},
		{"pattern against the hint", `{"type":"string","pattern":"^ok|fine$"}`, `"ok"`},
		{"tuples", `{"type":"array","prefixItems":[{"type":"integer"},{"const":"x"}],"items":false,"minItems":2}`, `[0,"x"]`},
		{"allOf merges", `{"allOf":[{"type":"object","required":["a"],"properties":{"a":{"type":"integer","minimum":3}}},
			{"required":["b"],"properties":{"a":{"maximum":5},"b":{"type":"boolean"}}}]}`, `{"a":4,"b":true}`},
		{"anyOf first branch that works", `{"anyOf":[{"type":"string","minLength":5,"maxLength":2},{"type":"integer","minimum":42}]}`, `42`},
		{"oneOf skips a branch that overlaps", `{"oneOf":[{"type":"number"},{"type":"integer"},{"type":"string"}]}`, ""},
		{"enum takes the first that fits", `{"type":"string","enum":[1,"a","b"]}`, `"a"`},
		{"not", `{"not":{"type":"string"}}`, ""},
		{"additionalProperties schema for a required name", `{"type":"object","required":["x"],"additionalProperties":{"type":"integer","minimum":2}}`, `{"x":2}`},
		{"patternProperties", `{"type":"object","required":["n1"],"patternProperties":{"^n":{"type":"number","maximum":-1}},"additionalProperties":false}`, `{"n1":-1}`},
		{"maxProperties drops optional ones", `{"type":"object","maxProperties":1,"required":["b"],"properties":{"a":{},"b":{"type":"integer"}}}`, `{"b":0}`},
		{"if then else", `{"type":"integer","if":{"minimum":0},"then":{"minimum":10}}`, ""},
		{"true schema", `true`, ""},
		{"empty schema", `{}`, ""},
		{"html is not escaped", `{"const":"a<b>&c"}`, `"a<b>&c"`},
		{"unknown keywords are ignored", `{"type":"object","x-agentd":{"a":1},"required":["a"],"properties":{"a":{"type":"string","description":"d","examples":["e"]}}}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ok := compileSchema(t, tt.schema)
			if !ok {
				t.Fatalf("the test's schema does not compile")
			}
			got, err := anthropictest.Synthesize(json.RawMessage(tt.schema), hint)
			if err != nil {
				t.Fatal(err)
			}
			if err := validate(t, s, got); err != nil {
				t.Errorf("%s does not validate: %v", got, err)
			}
			if tt.want != "" && string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			again, err := anthropictest.Synthesize(json.RawMessage(tt.schema), hint)
			if err != nil || !bytes.Equal(again, got) {
				t.Errorf("not deterministic: %s, then %s (%v)", got, again, err)
			}
		})
	}
}

func TestSynthesizeHint(t *testing.T) {
	long := strings.Repeat("word ", 40)
	tests := []struct{ hint, want string }{
		{"", "Offline answer"},
		{"  two\n\tlines  ", "Offline answer: two lines"},
		{long, "Offline answer: " + strings.TrimSpace(long)[:80]},
		{"naïve \xff café", "Offline answer: naïve café"},
	}
	for _, tt := range tests {
		got, err := anthropictest.Synthesize(json.RawMessage(`{"type":"string"}`), tt.hint)
		if err != nil {
			t.Fatal(err)
		}
		var s string
		if err := json.Unmarshal(got, &s); err != nil || s != tt.want {
			t.Errorf("hint %q: got %s, want %q", tt.hint, got, tt.want)
		}
	}
}

func TestSynthesizeErrors(t *testing.T) {
	tests := []struct{ name, schema, inError string }{
		{"not JSON", `{"type":`, "schema"},
		{"not a schema", `[1]`, "object or a boolean"},
		{"false", `false`, "false"},
		{"lengths", `{"type":"string","minLength":5,"maxLength":3}`, "minLength 5 exceeds maxLength 3"},
		{"bounds", `{"type":"number","minimum":5,"maximum":1}`, "minimum is above the maximum"},
		{"no multiple in range", `{"type":"integer","multipleOf":2,"minimum":3,"maximum":3}`, "multipleOf"},
		{"enum against type", `{"type":"string","enum":[1,2]}`, "enum"},
		{"types disagree", `{"allOf":[{"type":"string"},{"type":"number"}]}`, "no type"},
		{"missing $ref", `{"$ref":"#/$defs/nope"}`, "not found"},
		{"remote $ref", `{"$ref":"https://example.com/s.json"}`, "within the schema"},
		{"bad pattern", `{"type":"string","pattern":"("}`, "pattern"},
		{"pattern and length", `{"type":"string","pattern":"^a$","minLength":2}`, "no string"},
		{"oneOf overlap", `{"oneOf":[{"type":"string"},{"type":"string","maxLength":1000}]}`, "oneOf"},
		{"required but forbidden", `{"type":"object","required":["x"],"properties":{"y":{}},"additionalProperties":false}`, "/x"},
		{"nested path", `{"type":"object","required":["a"],"properties":{"a":{"type":"array","minItems":1,"items":{"type":"integer","minimum":1,"maximum":0}}}}`, "/a/0"},
		{"huge exponent", `{"type":"number","minimum":1e999999}`, "sensible size"},
		{"endless", `{"$defs":{"a":{"type":"object","required":["a"],"properties":{"a":{"$ref":"#/$defs/a"}}}},"$ref":"#/$defs/a"}`, "nest too deeply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := anthropictest.Synthesize(json.RawMessage(tt.schema), "hint")
			if err == nil {
				t.Fatalf("got %s, want an error", got)
			}
			if !strings.Contains(err.Error(), tt.inError) || !strings.HasPrefix(err.Error(), "anthropictest: synthesize: ") {
				t.Errorf("error %q, want it to mention %q", err, tt.inError)
			}
		})
	}
}

// offlineServer is the fake answering with Offline, as dev mode runs it.
func offlineServer(t *testing.T) (*anthropictest.Fake, string) {
	f, url := anthropictest.NewServer(t)
	f.SetResponder(anthropictest.Offline)
	return f, url
}

// wireAnswer is the part of a Messages answer the tests read.
type wireAnswer struct {
	StopReason string `json:"stop_reason"`
	Content    []struct {
		Type  string          `json:"type"`
		Text  string          `json:"text"`
		ID    string          `json:"id"`
		Name  string          `json:"name"`
		Input json.RawMessage `json:"input"`
	} `json:"content"`
}

func TestOffline(t *testing.T) {
	const question = `{"role":"user","content":"Can I get a refund after 20 days?"}`
	tool := func(name, schema string) string {
		return `{"name":"` + name + `","description":"d","input_schema":` + schema + `}`
	}
	respond, other := tool("respond", answerSchema), tool("lookup", `{"type":"object","required":["q"],"properties":{"q":{"type":"integer"}}}`)
	tests := []struct {
		name     string
		body     string
		wantTool string // "" wants a text answer
		schema   string // what the tool input must validate against
		wantText string // a prefix of the text answer
	}{
		{name: "forced tool",
			body:     `{"tools":[` + other + `,` + respond + `],"tool_choice":{"type":"tool","name":"respond"},"messages":[` + question + `]}`,
			wantTool: "respond", schema: answerSchema},
		{name: "any takes the first tool",
			body:     `{"tools":[` + other + `,` + respond + `],"tool_choice":{"type":"any"},"messages":[` + question + `]}`,
			wantTool: "lookup", schema: `{"type":"object","required":["q"],"properties":{"q":{"type":"integer"}}}`},
		{name: "triage schema",
			body:     `{"tools":[` + tool("respond", triageSchema) + `],"tool_choice":{"type":"tool","name":"respond"},"messages":[` + question + `]}`,
			wantTool: "respond", schema: triageSchema},
		{name: "a repair is answered again",
			body: `{"tools":[` + respond + `],"tool_choice":{"type":"tool","name":"respond"},"messages":[` + question + `,
				{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"respond","input":{"answer":""}}]},
				{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","is_error":true,"content":"answer: too short"}]}]}`,
			wantTool: "respond", schema: answerSchema},
		{name: "an empty input schema still gets an object",
			body:     `{"tools":[` + tool("respond", `{}`) + `],"tool_choice":{"type":"tool","name":"respond"},"messages":[` + question + `]}`,
			wantTool: "respond", schema: `{"type":"object"}`},
		{name: "auto is not forced",
			body:     `{"tools":[` + respond + `],"tool_choice":{"type":"auto"},"messages":[` + question + `]}`,
			wantText: "You said: Can I get a refund after 20 days?"},
		{name: "no tools",
			body:     `{"messages":[` + question + `]}`,
			wantText: "You said: Can I get a refund after 20 days?"},
		{name: "an unsatisfiable schema is explained in text",
			body:     `{"tools":[` + tool("respond", `{"type":"object","required":["a"],"properties":{"a":{"type":"string","minLength":3,"maxLength":1}}}`) + `],"tool_choice":{"type":"tool","name":"respond"},"messages":[` + question + `]}`,
			wantText: "Offline model: cannot call respond: anthropictest: synthesize: /a: minLength 3 exceeds maxLength 1"},
		{name: "a schema that is not an object's is explained in text",
			body:     `{"tools":[` + tool("respond", `{"type":"string"}`) + `],"tool_choice":{"type":"tool","name":"respond"},"messages":[` + question + `]}`,
			wantText: "Offline model: cannot call respond: anthropictest: synthesize: no type satisfies the schema"},
	}
	_, url := offlineServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"model":"claude-sonnet-4-6","max_tokens":256,` + strings.TrimPrefix(tt.body, "{")
			resp, b := post(t, url+"/v1/messages", body, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			var a wireAnswer
			if err := json.Unmarshal(b, &a); err != nil || len(a.Content) != 1 {
				t.Fatalf("answer %s: %v", b, err)
			}
			c := a.Content[0]
			if tt.wantTool == "" {
				if c.Type != "text" || !strings.HasPrefix(c.Text, tt.wantText) || a.StopReason != "end_turn" {
					t.Errorf("answer %s, want text %q", b, tt.wantText)
				}
				return
			}
			if c.Type != "tool_use" || c.Name != tt.wantTool || a.StopReason != "tool_use" {
				t.Fatalf("answer %s, want a call of %s", b, tt.wantTool)
			}
			s, ok := compileSchema(t, tt.schema)
			if !ok {
				t.Fatal("the test's schema does not compile")
			}
			if err := validate(t, s, c.Input); err != nil {
				t.Errorf("input %s: %v", c.Input, err)
			}
		})
	}
}

func TestOfflineRepairRepeatsTheAnswer(t *testing.T) {
	f, url := offlineServer(t)
	c := client(url)
	p := params(userText("Where is my order O-1234?"))
	p.Tools = []sdk.ToolUnionParam{sdk.ToolUnionParamOfTool(sdk.ToolInputSchemaParam{
		Properties: map[string]any{"answer": map[string]any{"type": "string", "minLength": 1}},
		Required:   []string{"answer"},
	}, "respond")}
	p.ToolChoice = sdk.ToolChoiceParamOfTool("respond")
	first, err := c.Messages.New(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Content) != 1 || first.Content[0].Type != "tool_use" || first.StopReason != sdk.StopReasonToolUse {
		t.Fatalf("first answer %s", first.RawJSON())
	}
	use := first.Content[0]
	if want := `{"answer":"Offline answer: Where is my order O-1234?"}`; string(use.Input) != want {
		t.Errorf("input %s, want %s", use.Input, want)
	}

	p.Messages = append(p.Messages,
		sdk.NewAssistantMessage(sdk.NewToolUseBlock(use.ID, use.Input, use.Name)),
		sdk.NewUserMessage(sdk.NewToolResultBlock(use.ID, "answer: be more specific", true)))
	second, err := c.Messages.New(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	if len(second.Content) != 1 || second.Content[0].Type != "tool_use" || !bytes.Equal(second.Content[0].Input, use.Input) {
		t.Errorf("repair answer %s, want the same call", second.RawJSON())
	}
	reqs := f.Requests()
	if last := reqs[len(reqs)-1]; len(last.Messages) != 3 || !last.Messages[2].Content[0].IsError {
		t.Errorf("the repair request was not sent as one: %+v", last.Messages)
	}
}

// unsupported are keywords that validators assert and Synthesize ignores,
// or that change how references resolve; the fuzz test only requires valid
// instances of schemas without them.
func unsupported() []string {
	return []string{
		"$schema", "$id", "id", "$anchor", "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "$recursiveAnchor", "$vocabulary",
		"contains", "minContains", "maxContains", "dependentRequired", "dependentSchemas", "dependencies",
		"unevaluatedProperties", "unevaluatedItems", "contentEncoding", "contentMediaType", "contentSchema",
	}
}

// supportedOnly reports whether no object anywhere in doc has an
// unsupported keyword. It looks everywhere, not only at schema positions,
// since a $ref may point anywhere.
func supportedOnly(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if slices.Contains(unsupported(), k) || !supportedOnly(x) {
				return false
			}
		}
	case []any:
		for _, x := range v {
			if !supportedOnly(x) {
				return false
			}
		}
	}
	return true
}

func FuzzSynthesize(f *testing.F) {
	for _, s := range []string{
		triageSchema, answerSchema, refundSchema, `true`, `{}`, `false`,
		`{"type":"object","required":["a"],"properties":{"a":{"$ref":"#/$defs/x"}},"$defs":{"x":{"type":"array","minItems":2,"items":{"enum":[1,2]}}}}`,
		`{"type":"string","pattern":"^[a-f0-9]{8}(-[a-f0-9]{4}){3}-[a-f0-9]{12}$"}`,
		`{"anyOf":[{"type":"null"},{"type":"number","multipleOf":0.25,"exclusiveMinimum":1}]}`,
		`{"oneOf":[{"type":"integer"},{"type":"number","minimum":0.1,"maximum":0.2}]}`,
		`{"type":"object","patternProperties":{"^x":{"type":"string"}},"required":["xa","b"],"additionalProperties":{"type":"boolean"}}`,
		`{"type":"array","prefixItems":[{"type":"string","format":"uuid"}],"items":{"type":"integer"},"minItems":3,"uniqueItems":true}`,
		`{"not":{"anyOf":[{"type":"string"},{"type":"number"}]}}`,
		`{"type":"string","format":"email","enum":["a@b.com","a..b@c.com"]}`,
	} {
		f.Add(s, "hint")
	}
	hugeExponent := regexp.MustCompile(`[eE][+-]?0*\d{4,}`)
	f.Fuzz(func(t *testing.T, schema, hint string) {
		got, err := anthropictest.Synthesize(json.RawMessage(schema), hint)
		if err != nil {
			return
		}
		if !json.Valid(got) {
			t.Fatalf("not JSON: %q", got)
		}
		// Numbers with huge exponents are refused by Synthesize but make
		// the validator's exact arithmetic crawl.
		if hugeExponent.MatchString(schema) {
			return
		}
		doc, err := jsonschema.UnmarshalJSON(strings.NewReader(schema))
		if err != nil || !supportedOnly(doc) {
			return
		}
		s, ok := compileSchema(t, schema)
		if !ok {
			return
		}
		if err := validate(t, s, got); err != nil {
			t.Fatalf("schema %s\ninstance %s\n%v", schema, got, err)
		}
	})
}
