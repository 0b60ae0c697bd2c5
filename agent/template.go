package agent

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"
	"unicode/utf8"

	"github.com/agentd/agentd"
)

// Template is a Go text/template over a task's data. Its data is a map:
// .input, .context (each source by name), .output (after the model
// answered), .vars (the project's variables) and .decision (its id and
// time, for effects) — and, for brevity, the input's own top-level fields,
// so `ticket-state:{{.ticketId}}` means `{{.input.ticketId}}`. A missing key
// is an error, never an empty string: a key built from nothing must not
// silently collide with another.
type Template struct {
	src string
	t   *template.Template
	// contextRefs are the context sources the template reads; inputFree
	// says it reads no input (directly or through a dynamic context), so it
	// renders the same for every request.
	contextRefs []string
	inputFree   bool
}

// reservedTemplateKeys are the data keys agentd sets; an input field of one
// of these names is reachable only as .input.NAME.
var reservedTemplateKeys = []string{"input", "context", "output", "vars", "decision"}

// templateFuncs are the functions templates may call, besides the
// builtins. Plain, pure helpers only.
func templateFuncs() template.FuncMap {
	return template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		"default": func(def, v any) any {
			if v == nil || v == "" {
				return def
			}
			return v
		},
		"lower": strings.ToLower,
		"upper": strings.ToUpper,
		"trim":  strings.TrimSpace,
		"join": func(sep string, v []any) string {
			parts := make([]string, len(v))
			for i, e := range v {
				parts[i] = fmt.Sprint(e)
			}
			return strings.Join(parts, sep)
		},
		"truncate": func(n int, s string) string {
			if len(s) <= n {
				return s
			}
			for n > 0 && !utf8.RuneStart(s[n]) {
				n--
			}
			return s[:n]
		},
	}
}

// ParseTemplate parses src; name says where it came from in errors.
func ParseTemplate(name, src string) (*Template, error) {
	t, err := template.New(name).Funcs(templateFuncs()).Option("missingkey=error").Parse(src)
	if err != nil {
		return nil, agentd.Errorf(agentd.KindInvalid, "template", "%v", err)
	}
	tm := &Template{src: src, t: t}
	tm.analyze()
	return tm, nil
}

// MustParseTemplate is ParseTemplate for templates known to be valid.
func MustParseTemplate(name, src string) *Template {
	t, err := ParseTemplate(name, src)
	if err != nil {
		panic(err)
	}
	return t
}

// String is the template's source.
func (t *Template) String() string { return t.src }

// ContextRefs names the context sources the template reads.
func (t *Template) ContextRefs() []string { return t.contextRefs }

// TemplateData is what a template sees.
type TemplateData struct {
	Input    any
	Context  map[string]any
	Output   any
	Vars     map[string]any
	Decision map[string]any
}

func (d TemplateData) root() map[string]any {
	m := map[string]any{}
	if in, ok := d.Input.(map[string]any); ok {
		for k, v := range in {
			m[k] = v
		}
	}
	m["input"] = d.Input
	m["context"] = orEmpty(d.Context)
	m["output"] = d.Output
	m["vars"] = orEmpty(d.Vars)
	m["decision"] = orEmpty(d.Decision)
	return m
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// Execute renders the template.
func (t *Template) Execute(d TemplateData) (string, error) {
	var b strings.Builder
	if err := t.t.Execute(&b, d.root()); err != nil {
		return "", agentd.Errorf(agentd.KindInvalid, "template", "%v", err)
	}
	return b.String(), nil
}

// analyze walks the parse tree for the data the template reads. Inside
// range and with, dot is no longer the root, so a field there could be
// anything: such a template is taken to depend on the input.
func (t *Template) analyze() {
	refs := map[string]bool{}
	inputFree := true
	var walk func(n parse.Node, rooted bool)
	field := func(idents []string, rooted bool) {
		if !rooted || len(idents) == 0 {
			inputFree = false
			return
		}
		switch idents[0] {
		case "context":
			if len(idents) > 1 {
				refs[idents[1]] = true
			} else {
				inputFree = false // the whole context: every source
			}
		case "vars":
		default:
			inputFree = false
		}
	}
	walk = func(n parse.Node, rooted bool) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c, rooted)
			}
		case *parse.ActionNode:
			walk(n.Pipe, rooted)
		case *parse.PipeNode:
			if n == nil {
				return
			}
			for _, c := range n.Cmds {
				walk(c, rooted)
			}
		case *parse.CommandNode:
			for _, a := range n.Args {
				walk(a, rooted)
			}
		case *parse.FieldNode:
			field(n.Ident, rooted)
		case *parse.VariableNode:
			if len(n.Ident) > 0 && n.Ident[0] == "$" {
				field(n.Ident[1:], true)
			}
		case *parse.ChainNode:
			walk(n.Node, rooted)
			inputFree = false
		case *parse.DotNode:
			if rooted {
				inputFree = false // the whole data
			}
		case *parse.IfNode:
			walk(n.Pipe, rooted)
			walk(n.List, rooted)
			walk(n.ElseList, rooted)
		case *parse.RangeNode:
			walk(n.Pipe, rooted)
			walk(n.List, false)
			walk(n.ElseList, rooted)
		case *parse.WithNode:
			walk(n.Pipe, rooted)
			walk(n.List, false)
			walk(n.ElseList, rooted)
		case *parse.TemplateNode:
			walk(n.Pipe, rooted)
			inputFree = false
		}
	}
	for _, tt := range t.t.Templates() {
		if tt.Tree != nil {
			walk(tt.Root, true)
		}
	}
	t.contextRefs = make([]string, 0, len(refs))
	for r := range refs {
		t.contextRefs = append(t.contextRefs, r)
	}
	slices.Sort(t.contextRefs)
	t.inputFree = inputFree
}
