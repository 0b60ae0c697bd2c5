package sqlrow

import (
	"slices"
	"testing"
)

func TestScanner(t *testing.T) {
	s := Scanner{Row: []any{"a", []byte("b"), int64(7), nil, 3.5}}
	if s.Str(0) != "a" || s.Str(1) != "b" || s.Int(2) != 7 || s.NullStr(3) != "" || s.Err != nil {
		t.Fatalf("reads: %v", s.Err)
	}
	s.Int(4)
	s.Str(2)
	if s.Err == nil || s.Err.Error() != "column 4 is float64, want an int64" {
		t.Fatalf("first mismatch kept: %v", s.Err)
	}
}

func TestWhere(t *testing.T) {
	var w Where
	if w.String() != "" {
		t.Fatalf("empty: %q", w.String())
	}
	w.Add("agent = $%d", "a")
	w.Add("at >= $%d", int64(5))
	limit := w.Next(int64(10))
	if got := w.String() + " LIMIT " + limit; got != " WHERE agent = $1 AND at >= $2 LIMIT $3" {
		t.Fatalf("query %q", got)
	}
	if !slices.Equal(w.Args, []any{"a", int64(5), int64(10)}) {
		t.Fatalf("args %v", w.Args)
	}
}
