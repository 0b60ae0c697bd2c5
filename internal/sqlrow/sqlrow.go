// Package sqlrow holds the two chores of agentd's hand-written SQL over
// the DB binding: reading a row's values back into Go types (the binding
// hands back int64, string or []byte, whatever the dialect), and building
// a WHERE clause of optional conditions with $N parameters. It imports
// only the standard library.
package sqlrow

import (
	"fmt"
	"strings"
)

// Scanner reads the values of one row, keeping the first mismatch in Err,
// so a caller reads every column and checks once.
type Scanner struct {
	Row []any
	Err error
}

// Str reads a text column.
func (s *Scanner) Str(i int) string {
	switch v := s.Row[i].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	s.fail(i, "a string")
	return ""
}

// NullStr reads a nullable text column; NULL reads as "".
func (s *Scanner) NullStr(i int) string {
	if s.Row[i] == nil {
		return ""
	}
	return s.Str(i)
}

// Int reads an integer column.
func (s *Scanner) Int(i int) int64 {
	if v, ok := s.Row[i].(int64); ok {
		return v
	}
	s.fail(i, "an int64")
	return 0
}

func (s *Scanner) fail(i int, want string) {
	if s.Err == nil {
		s.Err = fmt.Errorf("column %d is %T, want %s", i, s.Row[i], want)
	}
}

// Where collects conditions joined by AND, each with one parameter.
type Where struct {
	conds []string
	Args  []any // the parameters, in $N order
}

// Add adds a condition; expr holds one %d where the parameter's number
// goes, as in "agent = $%d".
func (w *Where) Add(expr string, arg any) {
	w.Args = append(w.Args, arg)
	w.conds = append(w.conds, fmt.Sprintf(expr, len(w.Args)))
}

// Next returns the $N of a parameter appended after the conditions' (a
// LIMIT, say), and appends it.
func (w *Where) Next(arg any) string {
	w.Args = append(w.Args, arg)
	return fmt.Sprintf("$%d", len(w.Args))
}

// String is " WHERE c1 AND c2…", or "" without conditions.
func (w *Where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}
