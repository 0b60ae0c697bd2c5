package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/agentd/agentd"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Schema is a compiled JSON Schema: what a task agent's input must match,
// and what its model output must match before anything is done with it.
type Schema struct {
	name   string
	raw    json.RawMessage // compact, as given
	schema *jsonschema.Schema
}

// schemaPrinter renders validation messages; English, as the API's are.
var schemaPrinter = message.NewPrinter(language.English)

// CompileSchema compiles a JSON Schema document. name says where it came
// from (a file path) in errors and as the schema's base URL, so relative
// $refs resolve against it. Drafts 4 to 2020-12 are accepted ("$schema"
// picks one; 2020-12 when absent); remote ($ref to http) documents are not
// loaded: a schema must be whole on disk.
func CompileSchema(name string, doc []byte) (*Schema, error) {
	const op = "schema"
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return nil, agentd.Errorf(agentd.KindInvalid, op, "%s is not valid JSON: %v", name, err)
	}
	if _, ok := v.(map[string]any); !ok {
		if _, isBool := v.(bool); !isBool {
			return nil, agentd.Errorf(agentd.KindInvalid, op, "%s: a JSON Schema is an object", name)
		}
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(jsonschema.SchemeURLLoader{"file": jsonschema.FileLoader{}})
	c.AssertFormat()
	url := schemaURL(name)
	if err := c.AddResource(url, v); err != nil {
		return nil, agentd.Errorf(agentd.KindInvalid, op, "%s: %v", name, err)
	}
	s, err := c.Compile(url)
	if err != nil {
		return nil, agentd.Errorf(agentd.KindInvalid, op, "%s is not a valid JSON Schema: %v", name, err)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, doc); err != nil {
		return nil, agentd.Errorf(agentd.KindInvalid, op, "%s is not valid JSON: %v", name, err)
	}
	return &Schema{name: name, raw: b.Bytes(), schema: s}, nil
}

// schemaURL turns a name into the URL the compiler files the document
// under: a file URL for paths, so relative $refs find their files.
func schemaURL(name string) string {
	if strings.Contains(name, "://") {
		return name
	}
	if strings.HasPrefix(name, "/") {
		return "file://" + name
	}
	return "file:///agentd/" + strings.TrimPrefix(name, "./")
}

// Name is where the schema came from.
func (s *Schema) Name() string { return s.name }

// Raw is the schema document, compact.
func (s *Schema) Raw() json.RawMessage { return s.raw }

// IsObject reports whether the schema describes JSON objects, as a tool's
// input_schema must.
func (s *Schema) IsObject() bool {
	var top struct {
		Type any `json:"type"`
	}
	if json.Unmarshal(s.raw, &top) != nil {
		return false
	}
	switch t := top.Type.(type) {
	case string:
		return t == "object"
	case []any:
		return len(t) == 1 && t[0] == "object"
	}
	return false
}

// ValidateJSON decodes doc and validates it. It returns the decoded value
// (numbers as float64, as encoding/json gives them) and every violation,
// each as "path: message"; none means valid.
func (s *Schema) ValidateJSON(doc []byte) (any, []string) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return nil, []string{"(root): not valid JSON: " + err.Error()}
	}
	if vs := s.violations(v); len(vs) > 0 {
		return nil, vs
	}
	var out any
	if err := json.Unmarshal(doc, &out); err != nil {
		return nil, []string{"(root): not valid JSON: " + err.Error()}
	}
	return out, nil
}

// Validate validates a value of encoding/json's shapes (map[string]any,
// []any, float64, string, bool, nil) and returns every violation.
func (s *Schema) Validate(v any) []string {
	b, err := json.Marshal(v)
	if err != nil {
		return []string{fmt.Sprintf("(root): cannot be encoded as JSON: %v", err)}
	}
	_, vs := s.ValidateJSON(b)
	return vs
}

func (s *Schema) violations(v any) []string {
	err := s.schema.Validate(v)
	if err == nil {
		return nil
	}
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return []string{"(root): " + err.Error()}
	}
	var out []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			out = append(out, instancePath(e.InstanceLocation)+": "+e.ErrorKind.LocalizedString(schemaPrinter))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	slices.Sort(out)
	return slices.Compact(out)
}

// instancePath renders a location in the value as a JSON Pointer, or
// "(root)" for the value itself.
func instancePath(loc []string) string {
	if len(loc) == 0 {
		return "(root)"
	}
	var b strings.Builder
	for _, p := range loc {
		b.WriteByte('/')
		p = strings.ReplaceAll(p, "~", "~0")
		b.WriteString(strings.ReplaceAll(p, "/", "~1"))
	}
	return b.String()
}
