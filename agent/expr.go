package agent

import (
	"encoding/base64"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/agentd/agentd"
	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/ext"
)

// exprCostLimit bounds the work of one evaluation, so a rule such as a
// comprehension over a large context list cannot stall a request.
const exprCostLimit = 1_000_000

// Expr is a compiled CEL expression over a task's data: the variables
// input, context, output, vars and decision (JSON-shaped values) and now
// (a timestamp). Conditions of effects, reviews, preconditions and rules, and
// response mappings, are Exprs. CEL is used because it cannot loop forever,
// has no side effects, and is type-checked when the config loads.
type Expr struct {
	src  string
	prog cel.Program
	// refs are the context sources the expression reads; usesInput says
	// it reads the input (or the whole context).
	refs      []string
	usesInput bool
}

// exprEnv is the CEL environment every Expr compiles in.
func exprEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("input", cel.DynType),
		cel.Variable("context", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("output", cel.DynType),
		cel.Variable("vars", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("decision", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("now", cel.TimestampType),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		ext.Strings(),
		ext.Math(),
		ext.Lists(),
		ext.Sets(),
	)
}

// CompileCondition compiles a CEL expression that must yield a bool, such
// as `output.confidence >= 0.9`.
func CompileCondition(src string) (*Expr, error) {
	return compileExpr(src, true)
}

// CompileValue compiles a CEL expression of any type, such as the map
// literal of a response mapping.
func CompileValue(src string) (*Expr, error) {
	return compileExpr(src, false)
}

func compileExpr(src string, wantBool bool) (*Expr, error) {
	const op = "expr"
	env, err := exprEnv()
	if err != nil {
		return nil, agentd.E(agentd.KindInternal, op, err)
	}
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		return nil, agentd.Errorf(agentd.KindInvalid, op, "CEL expression %q: %v", src, iss.Err())
	}
	if wantBool && ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType {
		return nil, agentd.Errorf(agentd.KindInvalid, op, "CEL condition %q yields %s, not bool", src, ast.OutputType())
	}
	prog, err := env.Program(ast, cel.CostLimit(exprCostLimit))
	if err != nil {
		return nil, agentd.Errorf(agentd.KindInvalid, op, "CEL expression %q: %v", src, err)
	}
	e := &Expr{src: src, prog: prog}
	e.analyze(ast.NativeRep().Expr())
	return e, nil
}

// analyze finds what data the expression reads: context.NAME and
// context['NAME'] name a source; input, or context as a whole, is input.
func (e *Expr) analyze(root celast.Expr) {
	refs := map[string]bool{}
	isIdent := func(x celast.Expr, name string) bool {
		return x.Kind() == celast.IdentKind && x.AsIdent() == name
	}
	// Selections of context are recorded here; a bare context ident seen
	// anywhere else means the whole context.
	selected := map[int64]bool{}
	celast.PreOrderVisit(root, celast.NewExprVisitor(func(x celast.Expr) {
		switch x.Kind() {
		case celast.SelectKind:
			if op := x.AsSelect().Operand(); isIdent(op, "context") {
				refs[x.AsSelect().FieldName()] = true
				selected[op.ID()] = true
			}
		case celast.CallKind:
			c := x.AsCall()
			if args := c.Args(); c.FunctionName() == "_[_]" && len(args) == 2 && isIdent(args[0], "context") && args[1].Kind() == celast.LiteralKind {
				if s, ok := args[1].AsLiteral().(types.String); ok {
					refs[string(s)] = true
					selected[args[0].ID()] = true
				}
			}
		}
	}))
	celast.PreOrderVisit(root, celast.NewExprVisitor(func(x celast.Expr) {
		if isIdent(x, "input") || isIdent(x, "output") || (isIdent(x, "context") && !selected[x.ID()]) {
			e.usesInput = true
		}
	}))
	for r := range refs {
		e.refs = append(e.refs, r)
	}
	slices.Sort(e.refs)
}

// ContextRefs names the context sources the expression reads.
func (e *Expr) ContextRefs() []string { return e.refs }

func (e *Expr) inputFree() bool { return !e.usesInput }

// String is the expression's source.
func (e *Expr) String() string { return e.src }

// ExprData is what an expression sees.
type ExprData struct {
	Input    any
	Context  map[string]any
	Output   any
	Vars     map[string]any
	Decision map[string]any // id, agent, at: set once a decision exists
	Now      time.Time
}

func (d ExprData) activation() map[string]any {
	ctx := d.Context
	if ctx == nil {
		ctx = map[string]any{}
	}
	vars := d.Vars
	if vars == nil {
		vars = map[string]any{}
	}
	dec := d.Decision
	if dec == nil {
		dec = map[string]any{}
	}
	return map[string]any{
		"input":    celValue(d.Input),
		"context":  celValue(ctx),
		"output":   celValue(d.Output),
		"vars":     celValue(vars),
		"decision": celValue(dec),
		"now":      d.Now,
	}
}

// Bool evaluates a condition. An evaluation error (a missing field, a type
// mismatch) is an error, not false: a rule that cannot be decided must not
// silently let an effect through or hold it back.
func (e *Expr) Bool(d ExprData) (bool, error) {
	v, err := e.eval(d)
	if err != nil {
		return false, err
	}
	b, ok := v.(types.Bool)
	if !ok {
		return false, agentd.Errorf(agentd.KindInvalid, "expr", "CEL condition %q yielded %s, not bool", e.src, v.Type().TypeName())
	}
	return bool(b), nil
}

// Value evaluates the expression to a JSON-shaped Go value (map[string]any,
// []any, float64 or int64, string, bool, nil; timestamps as RFC 3339
// strings, durations as Go duration strings, bytes as base64).
func (e *Expr) Value(d ExprData) (any, error) {
	v, err := e.eval(d)
	if err != nil {
		return nil, err
	}
	out, err := celToJSON(v)
	if err != nil {
		return nil, agentd.Errorf(agentd.KindInvalid, "expr", "CEL expression %q: %v", e.src, err)
	}
	return out, nil
}

func (e *Expr) eval(d ExprData) (ref.Val, error) {
	v, _, err := e.prog.Eval(d.activation())
	if err != nil {
		return nil, agentd.Errorf(agentd.KindInvalid, "expr", "evaluating %q: %v", e.src, err)
	}
	return v, nil
}

// celValue normalizes values for CEL's adapter: slices of rows and maps of
// any become []any and map[string]any all the way down, and integers int64,
// so every JSON-shaped value has one CEL type.
func celValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = celValue(e)
		}
		return out
	case []map[string]any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = celValue(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = celValue(e)
		}
		return out
	case int:
		return int64(x)
	case int32:
		return int64(x)
	case float32:
		return float64(x)
	case nil:
		return types.NullValue
	}
	return v
}

// celToJSON converts a CEL result into encoding/json's shapes.
func celToJSON(v ref.Val) (any, error) {
	switch x := v.(type) {
	case types.Null:
		return nil, nil
	case types.Bool:
		return bool(x), nil
	case types.Int:
		return int64(x), nil
	case types.Uint:
		return uint64(x), nil
	case types.Double:
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("result %v is not a JSON number", f)
		}
		return f, nil
	case types.String:
		return string(x), nil
	case types.Bytes:
		return base64.StdEncoding.EncodeToString(x), nil
	case types.Timestamp:
		return x.Time.UTC().Format(time.RFC3339Nano), nil
	case types.Duration:
		return x.Duration.String(), nil
	}
	if m, ok := v.(traits.Mapper); ok {
		out := map[string]any{}
		it := m.Iterator()
		for it.HasNext() == types.True {
			k := it.Next()
			ks, ok := k.(types.String)
			if !ok {
				return nil, fmt.Errorf("map key %v is not a string", k)
			}
			e, err := celToJSON(m.Get(k))
			if err != nil {
				return nil, err
			}
			out[string(ks)] = e
		}
		return out, nil
	}
	if l, ok := v.(traits.Lister); ok {
		var out []any
		it := l.Iterator()
		for it.HasNext() == types.True {
			e, err := celToJSON(it.Next())
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		if out == nil {
			out = []any{}
		}
		return out, nil
	}
	if o, ok := v.(interface{ HasValue() bool }); ok {
		// An optional: its value, or null.
		if !o.HasValue() {
			return nil, nil
		}
		if g, ok := v.(interface{ GetValue() ref.Val }); ok {
			return celToJSON(g.GetValue())
		}
	}
	return nil, fmt.Errorf("result of type %s cannot be turned into JSON", v.Type().TypeName())
}
