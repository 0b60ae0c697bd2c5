package agent_test

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/agent"
)

// FuzzTemplate: any template text either fails to parse with a clear
// error or parses, analyzes and renders without panicking; a missing key
// is an error, never "<no value>".
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"ticket-state:{{.ticketId}}", "{{range .context.history}}{{.id}}{{end}}", "{{json .output}}",
		"{{.context.ticket.subject | upper}}", "{{with $x := .input}}{{$x.a}}{{end}}", "{{template \"x\"}}", "{{", "{{.a.b.c.d}}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		tm, err := agent.ParseTemplate("fuzz", src)
		if err != nil {
			return
		}
		_ = tm.ContextRefs()
		out, err := tm.Execute(agent.TemplateData{Input: map[string]any{"ticketId": "T-1"}, Context: map[string]any{"ticket": map[string]any{"subject": "s"}}})
		if err == nil && strings.Contains(out, "<no value>") && !strings.Contains(src, "<no value>") {
			t.Fatalf("%q rendered %q", src, out)
		}
	})
}

// FuzzExpr: any CEL text compiles or fails cleanly, and evaluating a
// compiled one over JSON-shaped data never panics.
func FuzzExpr(f *testing.F) {
	for _, s := range []string{"output.confidence >= 0.9", "now - timestamp(context.order.ordered_at) <= duration('720h')",
		"{'a': input.x, 'b': [1, 2.5, 'c']}", "input.message.lowerAscii().contains('refund')", "size(context) > 0", "1/0", ")"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := agent.CompileValue(src)
		if err != nil {
			return
		}
		_ = e.ContextRefs()
		_, _ = e.Value(agent.ExprData{Input: map[string]any{"x": 1.5, "message": "Refund"}, Context: map[string]any{"order": map[string]any{"ordered_at": "2026-01-01T00:00:00Z"}}})
	})
}

// FuzzSchema: any document compiles as a schema or fails cleanly, and a
// compiled schema validates any JSON without panicking.
func FuzzSchema(f *testing.F) {
	f.Add(`{"type":"object","required":["a"],"properties":{"a":{"type":"integer","minimum":1}}}`, `{"a":0}`)
	f.Add(`{"enum":["x","y"]}`, `"z"`)
	f.Add(`{"$ref":"#/$defs/a","$defs":{"a":{"type":"string","pattern":"^T-[0-9]+$"}}}`, `"T-1"`)
	f.Add(`true`, `null`)
	f.Fuzz(func(t *testing.T, schema, doc string) {
		s, err := agent.CompileSchema("fuzz.json", []byte(schema))
		if err != nil {
			return
		}
		v, vs := s.ValidateJSON([]byte(doc))
		if len(vs) == 0 && v == nil && strings.TrimSpace(doc) != "null" {
			t.Fatalf("valid %q decoded to nil", doc) // only JSON null decodes to nil
		}
	})
}
