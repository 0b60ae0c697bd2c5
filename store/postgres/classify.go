package postgres

import (
	"slices"
	"strings"
)

// This file decides, from SQL text alone, what the read cache may do with a
// statement: whether a query may be cached, which tables a cached result
// depends on, and which tables a write changes. It is a lexer plus a few
// pattern rules, not a parser, so every rule errs on the safe side: when in
// doubt a query is not cached, its reads are "any table" (dropped by every
// write), and a write is "every table" (drops the whole cache). A wrong guess
// can cost hit rate, never serve a result that a write made through this
// binding has outdated.
//
// The lexer assumes standard_conforming_strings = on (the default since
// PostgreSQL 9.1): a backslash in '...' is an ordinary character.

// tokenKind says what a token is.
type tokenKind uint8

const (
	tokWord   tokenKind = iota // unquoted identifier or keyword, ASCII lower-cased as Postgres folds it
	tokIdent                   // "quoted identifier", unescaped, case kept
	tokString                  // string literal of any quoting; text is its content
	tokNumber                  // numeric literal
	tokParam                   // $1, $2, …
	tokPunct                   // one character of punctuation or operator
)

type token struct {
	kind tokenKind
	text string
}

func (t token) is(kind tokenKind, text string) bool { return t.kind == kind && t.text == text }

func (t token) isWord(text string) bool { return t.kind == tokWord && t.text == text }

func (t token) isPunct(c byte) bool { return t.kind == tokPunct && len(t.text) == 1 && t.text[0] == c }

// isName reports whether t can name a relation or a function.
func (t token) isName() bool { return t.kind == tokWord || t.kind == tokIdent }

// lex splits SQL text into tokens, dropping whitespace and comments. It
// accepts any input, well-formed or not: an unterminated literal or comment
// runs to the end of the text.
func lex(s string) []token {
	toks := make([]token, 0, len(s)/4+1)
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			j := strings.IndexByte(s[i:], '\n')
			if j < 0 {
				i = len(s)
			} else {
				i += j + 1
			}
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			i = skipBlockComment(s, i)
		case c == '\'':
			text, end := lexQuoted(s, i, '\'', false)
			toks = append(toks, token{tokString, text})
			i = end
		case c == '"':
			text, end := lexQuoted(s, i, '"', false)
			toks = append(toks, token{tokIdent, text})
			i = end
		case c == '$':
			if i+1 < len(s) && isDigit(s[i+1]) {
				j := i + 1
				for j < len(s) && isDigit(s[j]) {
					j++
				}
				toks = append(toks, token{tokParam, s[i:j]})
				i = j
				continue
			}
			if tag, ok := dollarTag(s, i); ok {
				body := i + len(tag)
				end := strings.Index(s[body:], tag)
				if end < 0 {
					toks = append(toks, token{tokString, s[body:]})
					i = len(s)
				} else {
					toks = append(toks, token{tokString, s[body : body+end]})
					i = body + end + len(tag)
				}
				continue
			}
			toks = append(toks, token{tokPunct, "$"})
			i++
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			word := asciiLower(s[i:j])
			// A one-letter prefix glued to a quote makes a string
			// literal: E'…' with backslash escapes, B'…' and X'…' bit
			// strings, N'…' national characters; U&'…' and U&"…" are
			// Unicode-escaped.
			if j < len(s) && s[j] == '\'' {
				switch word {
				case "e":
					text, end := lexQuoted(s, j, '\'', true)
					toks = append(toks, token{tokString, text})
					i = end
					continue
				case "b", "x", "n":
					text, end := lexQuoted(s, j, '\'', false)
					toks = append(toks, token{tokString, text})
					i = end
					continue
				}
			}
			if word == "u" && j+1 < len(s) && s[j] == '&' && (s[j+1] == '\'' || s[j+1] == '"') {
				text, end := lexQuoted(s, j+1, s[j+1], false)
				kind := tokString
				if s[j+1] == '"' {
					kind = tokIdent
				}
				toks = append(toks, token{kind, text})
				i = end
				continue
			}
			toks = append(toks, token{tokWord, word})
			i = j
		case isDigit(c) || (c == '.' && i+1 < len(s) && isDigit(s[i+1])):
			j := i + 1
			for j < len(s) {
				d := s[j]
				if isDigit(d) || d == '.' || d == '_' || isLetter(d) {
					j++
					continue
				}
				// An exponent's sign: 1e-5.
				if (d == '+' || d == '-') && (s[j-1] == 'e' || s[j-1] == 'E') {
					j++
					continue
				}
				break
			}
			toks = append(toks, token{tokNumber, s[i:j]})
			i = j
		default:
			toks = append(toks, token{tokPunct, s[i : i+1]})
			i++
		}
	}
	return toks
}

// skipBlockComment returns the index after the /* … */ comment at i.
// Postgres block comments nest.
func skipBlockComment(s string, i int) int {
	depth := 0
	for i < len(s) {
		switch {
		case s[i] == '/' && i+1 < len(s) && s[i+1] == '*':
			depth++
			i += 2
		case s[i] == '*' && i+1 < len(s) && s[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return len(s)
}

// lexQuoted reads the literal opened by the quote at s[i]; a doubled quote
// stands for itself, and with backslashes a backslash escapes the next
// character. It returns the content and the index after the closing quote.
func lexQuoted(s string, i int, quote byte, backslashes bool) (string, int) {
	var b strings.Builder
	j := i + 1
	for j < len(s) {
		c := s[j]
		switch {
		case backslashes && c == '\\' && j+1 < len(s):
			b.WriteByte(s[j+1])
			j += 2
		case c == quote && j+1 < len(s) && s[j+1] == quote:
			b.WriteByte(quote)
			j += 2
		case c == quote:
			return b.String(), j + 1
		default:
			b.WriteByte(c)
			j++
		}
	}
	return b.String(), len(s)
}

// dollarTag returns the opening tag ($$ or $name$) of a dollar-quoted
// string at s[i].
func dollarTag(s string, i int) (string, bool) {
	j := i + 1
	if j < len(s) && s[j] == '$' {
		return "$$", true
	}
	if j >= len(s) || !isIdentStart(s[j]) {
		return "", false
	}
	for j < len(s) && isIdentStart(s[j]) || j < len(s) && isDigit(s[j]) {
		j++
	}
	if j < len(s) && s[j] == '$' {
		return s[i : j+1], true
	}
	return "", false
}

func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// Bytes of multi-byte UTF-8 characters are identifier characters, as in
// Postgres.
func isIdentStart(c byte) bool { return isLetter(c) || c == '_' || c >= 0x80 }
func isIdentChar(c byte) bool  { return isIdentStart(c) || isDigit(c) || c == '$' }

// asciiLower folds ASCII letters only, as Postgres does for identifiers in
// UTF-8 databases.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// statements splits tokens at semicolons, dropping empty statements.
func statements(toks []token) [][]token {
	var out [][]token
	start := 0
	for i, t := range toks {
		if t.isPunct(';') {
			if i > start {
				out = append(out, toks[start:i])
			}
			start = i + 1
		}
	}
	if start < len(toks) {
		out = append(out, toks[start:])
	}
	return out
}

// leadingKeyword returns the first word of a statement after any opening
// parentheses, and its index; "" if the statement does not start with one.
func leadingKeyword(stmt []token) (string, int) {
	for i, t := range stmt {
		if t.isPunct('(') {
			continue
		}
		if t.kind == tokWord {
			return t.text, i
		}
		return "", i
	}
	return "", len(stmt)
}

// maxAnalyzedQuery bounds the length of a query analyzeRead looks into:
// following FROM items is quadratic in the worst case, and a query this long
// is no small, hot read worth caching.
const maxAnalyzedQuery = 32 << 10

// maxFromDepth bounds the nesting of parenthesized joins fromItem follows.
const maxFromDepth = 32

// readInfo is what the cache needs to know about a query.
type readInfo struct {
	cacheable bool
	reason    string   // why it is not cacheable, for tests and logs
	tables    []string // tables it reads, see relationName
	anyTable  bool     // it may read tables not in tables: any write drops it
}

// analyzeRead decides whether a query's result may be cached and which
// tables it reads. A query is cacheable if it is one statement starting with
// SELECT, VALUES, TABLE, SHOW or WITH, contains no data-modifying or
// row-locking clause, and calls no volatile function.
func analyzeRead(sql string) readInfo {
	if len(sql) > maxAnalyzedQuery {
		return readInfo{reason: "too long to analyze"}
	}
	stmts := statements(lex(sql))
	if len(stmts) != 1 {
		return readInfo{reason: "not exactly one statement"}
	}
	stmt := stmts[0]
	switch kw, _ := leadingKeyword(stmt); kw {
	case "select", "values", "table", "show", "with":
	default:
		return readInfo{reason: "not a read-only statement"}
	}
	for i, t := range stmt {
		callee := i+1 < len(stmt) && stmt[i+1].isPunct('(')
		switch t.kind {
		case tokWord:
			switch t.text {
			case "insert", "update", "delete", "merge", "truncate", "copy":
				// In a WITH, a data-modifying CTE; elsewhere FOR
				// [NO KEY] UPDATE, or a column named like a keyword,
				// which only costs a cache miss.
				return readInfo{reason: "may modify or lock rows (" + t.text + ")"}
			case "into":
				return readInfo{reason: "SELECT INTO creates a table"}
			case "for":
				if i+1 < len(stmt) && (stmt[i+1].isWord("share") || stmt[i+1].isWord("key") || stmt[i+1].isWord("no")) {
					return readInfo{reason: "locks rows (FOR SHARE)"}
				}
			}
			if isTimeKeyword(t.text) {
				return readInfo{reason: "reads the clock (" + t.text + ")"}
			}
			if callee && isVolatileFunc(t.text) {
				return readInfo{reason: "calls a volatile function (" + t.text + ")"}
			}
		case tokIdent:
			if callee && isVolatileFunc(t.text) {
				return readInfo{reason: "calls a volatile function (" + t.text + ")"}
			}
		case tokString:
			// 'now'::timestamptz is the current time, 'today' the current
			// date.
			if isTimeLiteral(t.text) {
				return readInfo{reason: "reads the clock ('" + t.text + "')"}
			}
		}
	}
	r := readScan{stmt: stmt, tables: map[string]struct{}{}}
	r.scan()
	info := readInfo{cacheable: true, anyTable: r.anyTable}
	for t := range r.tables {
		info.tables = append(info.tables, t)
	}
	return info
}

// readScan finds the tables a read statement names: the relations after
// FROM and JOIN (and comma lists of them), and after TABLE. Anything it
// cannot account for — a function call it does not know to leave tables
// alone (a user function may read any table), a FROM list it cannot follow —
// sets anyTable. Extra names (a CTE's, a column after EXTRACT(… FROM col))
// are harmless: they only make writes to tables of those names drop the
// result too.
type readScan struct {
	stmt     []token
	tables   map[string]struct{}
	anyTable bool
}

func (r *readScan) scan() {
	st := r.stmt
	// owners holds, for each open parenthesis, the word before it, to tell
	// EXTRACT(x FROM y) from a FROM clause.
	var owners []string
	for i := 0; i < len(st); i++ {
		t := st[i]
		switch {
		case t.isPunct('('):
			owner := ""
			if i > 0 && st[i-1].isName() {
				owner = st[i-1].text
			}
			owners = append(owners, owner)
		case t.isPunct(')'):
			if len(owners) > 0 {
				owners = owners[:len(owners)-1]
			}
		case t.isWord("from"):
			if i > 0 && st[i-1].isWord("distinct") { // IS [NOT] DISTINCT FROM
				continue
			}
			if len(owners) > 0 {
				switch owners[len(owners)-1] {
				case "extract", "substring", "trim", "overlay":
					continue
				}
			}
			r.fromList(i + 1)
		case t.isWord("join"):
			r.fromList(i + 1)
		case t.isWord("table"):
			if _, end := qualifiedName(st, i+1); end < 0 {
				r.anyTable = true
			} else {
				r.add(st, i+1)
			}
		}
		if callsUnknownFunction(st, i) {
			r.anyTable = true
		}
	}
}

// callsUnknownFunction reports whether st[i] names a function being called
// that is not a built-in known to touch no table: a user function, which may
// read or write any table.
func callsUnknownFunction(st []token, i int) bool {
	t := st[i]
	if !t.isName() || i+1 >= len(st) || !st[i+1].isPunct('(') {
		return false
	}
	if i > 0 && st[i-1].isWord("as") { // AS alias(col, …)
		return false
	}
	return t.kind == tokIdent || !isTableFreeWord(t.text) && !isVolatileFunc(t.text)
}

// fromList reads a FROM list (or a JOIN's one item) starting at i: items
// separated by commas, ending at a clause keyword, a parenthesis or the end.
func (r *readScan) fromList(i int) {
	st := r.stmt
	for {
		i = r.fromItem(i, 0)
		if i < 0 {
			r.anyTable = true
			return
		}
		if i < len(st) && st[i].isPunct(',') {
			i++
			continue
		}
		if i >= len(st) || st[i].isPunct(')') || st[i].kind == tokWord && isFromEnd(st[i].text) {
			return
		}
		r.anyTable = true
		return
	}
}

// fromItem reads one FROM item at i — [ONLY|LATERAL] a relation, function
// call or parenthesized subquery or join, then alias and TABLESAMPLE — and
// returns the index after it, or -1 if it is not one.
func (r *readScan) fromItem(i, depth int) int {
	st := r.stmt
	if depth > maxFromDepth {
		return -1
	}
	for i < len(st) && (st[i].isWord("only") || st[i].isWord("lateral")) {
		i++
	}
	if i >= len(st) {
		return -1
	}
	switch t := st[i]; {
	case t.isPunct('('):
		next := ""
		if i+1 < len(st) && st[i+1].kind == tokWord {
			next = st[i+1].text
		}
		switch next {
		case "select", "with", "values", "table":
			// A subquery: the scan finds its FROMs by itself.
		default:
			// A parenthesized join: its first item follows the
			// parenthesis, the others follow JOINs.
			if r.fromItem(i+1, depth+1) < 0 {
				r.anyTable = true
			}
		}
		i = skipParens(st, i)
	case t.isName():
		if t.kind == tokWord && (isFromEnd(t.text) || isReservedStart(t.text)) {
			return -1
		}
		name, end := qualifiedName(st, i)
		if end < 0 {
			return -1
		}
		i = end
		if i < len(st) && st[i].isPunct('(') {
			// A set-returning function: the scan judges the call.
			i = skipParens(st, i)
			if i+1 < len(st) && st[i].isWord("with") && st[i+1].isWord("ordinality") {
				i += 2
			}
		} else {
			r.tables[name] = struct{}{}
			if i < len(st) && st[i].isPunct('*') { // inheritance: FROM t *
				i++
			}
		}
	default:
		return -1
	}
	// [AS] alias [(columns)]
	if i < len(st) && st[i].isWord("as") {
		i++
		if i >= len(st) || !st[i].isName() {
			return -1
		}
	}
	if i < len(st) && (st[i].kind == tokIdent || st[i].kind == tokWord && !isFromEnd(st[i].text) && st[i].text != "tablesample") {
		i++
		if i < len(st) && st[i].isPunct('(') {
			i = skipParens(st, i)
		}
	}
	if i < len(st) && st[i].isWord("tablesample") {
		i += 2 // the method
		if i < len(st) && st[i].isPunct('(') {
			i = skipParens(st, i)
		}
		if i < len(st) && st[i].isWord("repeatable") {
			i = skipParens(st, i+1)
		}
	}
	return min(i, len(st))
}

// add records the relation named at i and returns the index after its name,
// or -1 if no name is there.
func (r *readScan) add(st []token, i int) int {
	name, end := qualifiedName(st, i)
	if end < 0 {
		return -1
	}
	r.tables[name] = struct{}{}
	return end
}

// qualifiedName reads a possibly schema-qualified name at i (a, s.a,
// db.s.a) and returns its relation name and the index after it, or -1.
func qualifiedName(st []token, i int) (string, int) {
	if i >= len(st) || !st[i].isName() {
		return "", -1
	}
	for i+2 < len(st) && st[i+1].isPunct('.') && st[i+2].isName() {
		i += 2
	}
	if st[i].text == "" { // "" is no name (an unterminated quote lexes so)
		return "", -1
	}
	return relationName(st[i]), i + 1
}

// relationName is the key a table is known by in the cache: its name
// without schema, folded like Postgres folds it (unquoted names to lower
// case, quoted names kept). Dropping the schema means a write to s1.t also
// drops reads of s2.t — harmless — and needs no knowledge of search_path.
func relationName(t token) string { return t.text }

// skipParens returns the index after the parenthesis group opening at i.
func skipParens(st []token, i int) int {
	if i >= len(st) || !st[i].isPunct('(') {
		return i
	}
	depth := 0
	for ; i < len(st); i++ {
		switch {
		case st[i].isPunct('('):
			depth++
		case st[i].isPunct(')'):
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return len(st)
}

// writeInfo is what a statement may have changed.
type writeInfo struct {
	tables []string // relation names, see relationName
	all    bool     // unknown: drop every cached result
}

// merge adds what o wrote to w, each table once: a Tx of many inserts into
// one table writes one table.
func (w *writeInfo) merge(o writeInfo) {
	w.all = w.all || o.all
	for _, t := range o.tables {
		if !slices.Contains(w.tables, t) {
			w.tables = append(w.tables, t)
		}
	}
}

func (w writeInfo) empty() bool { return !w.all && len(w.tables) == 0 }

// analyzeWrite names the tables a statement (or several, separated by
// semicolons) writes. Reads (SELECT, VALUES, TABLE, SHOW, WITH without
// data-modifying CTEs) write nothing unless they call a function that is
// not a known built-in, which may write anything; INSERT, UPDATE, DELETE, MERGE,
// TRUNCATE, COPY and ALTER/DROP/CREATE TABLE write the tables they name;
// anything else — other DDL, DO, CALL, SET, a DROP … CASCADE — may change
// what any query returns, so it is "all".
//
// Not seen: a trigger's writes to other tables, ON DELETE CASCADE reaching other tables, and
// writes by other processes. Results those change stay until max_age, as
// in Hyperdrive, which never invalidates.
func analyzeWrite(sql string) writeInfo {
	var w writeInfo
	for _, stmt := range statements(lex(sql)) {
		w.merge(writeOfStatement(stmt))
		if w.all {
			return writeInfo{all: true}
		}
	}
	return w
}

func writeOfStatement(st []token) writeInfo {
	kw, k := leadingKeyword(st)
	word := func(i int) string {
		if i < len(st) && st[i].kind == tokWord {
			return st[i].text
		}
		return ""
	}
	hasWord := func(w string) bool {
		for _, t := range st {
			if t.isWord(w) {
				return true
			}
		}
		return false
	}
	// A read writes nothing, unless it calls a user function, which may
	// write anything: SELECT place_order($1) is a write.
	readOnly := func() writeInfo {
		for i := range st {
			if callsUnknownFunction(st, i) {
				return writeInfo{all: true}
			}
		}
		return writeInfo{}
	}
	switch kw {
	case "select", "values", "table", "show":
		return readOnly()
	case "with":
		if !hasDML(st) {
			return readOnly()
		}
		return dmlTargets(st)
	case "insert", "update", "delete", "merge", "truncate", "copy":
		return dmlTargets(st)
	case "alter", "drop":
		if word(k+1) != "table" || hasWord("cascade") {
			return writeInfo{all: true}
		}
		return nameList(st, skipWords(st, k+2, "if", "exists", "only"))
	case "create":
		i := skipWords(st, k+1, "or", "replace", "temp", "temporary", "unlogged", "global", "local", "materialized", "recursive")
		switch word(i) {
		case "index", "unique":
			// An index changes no query's result.
			return writeInfo{}
		case "table", "view":
			// A new relation may shadow one of the same name later in
			// search_path.
			return nameList(st, skipWords(st, i+1, "if", "not", "exists"))
		}
		return writeInfo{all: true}
	case "refresh":
		if word(k+1) == "materialized" && word(k+2) == "view" {
			return nameList(st, skipWords(st, k+3, "concurrently"))
		}
		return writeInfo{all: true}
	case "":
		if k >= len(st) {
			return writeInfo{} // only parentheses
		}
	}
	return writeInfo{all: true}
}

// hasDML reports whether a statement contains a data-modifying keyword.
func hasDML(st []token) bool {
	for _, t := range st {
		if t.kind == tokWord {
			switch t.text {
			case "insert", "update", "delete", "merge", "truncate":
				return true
			}
		}
	}
	return false
}

// dmlTargets finds the targets of every INSERT INTO, UPDATE, DELETE FROM,
// MERGE INTO, TRUNCATE and COPY in a statement, including data-modifying
// CTEs. A data-modifying keyword whose target it cannot read makes it "all".
func dmlTargets(st []token) writeInfo {
	var w writeInfo
	found := false
	for i, t := range st {
		if t.kind != tokWord {
			continue
		}
		var start int
		switch t.text {
		case "insert":
			// INSERT without INTO is MERGE's WHEN NOT MATCHED THEN INSERT.
			if i+1 >= len(st) || !st[i+1].isWord("into") {
				continue
			}
			start = i + 2
		case "update":
			// UPDATE SET is ON CONFLICT DO UPDATE or MERGE's THEN UPDATE;
			// FOR [NO KEY] UPDATE locks.
			if i+1 < len(st) && st[i+1].isWord("set") || i > 0 && (st[i-1].isWord("for") || st[i-1].isWord("key")) {
				continue
			}
			start = i + 1
		case "delete":
			// DELETE without FROM is MERGE's THEN DELETE.
			if i+1 >= len(st) || !st[i+1].isWord("from") {
				continue
			}
			start = i + 2
		case "merge":
			if i+1 >= len(st) || !st[i+1].isWord("into") {
				return writeInfo{all: true}
			}
			start = i + 2
		case "truncate":
			n := nameList(st, skipWords(st, i+1, "table"))
			if n.all {
				return n
			}
			w.merge(n)
			found = true
			continue
		case "copy":
			if i+1 < len(st) && st[i+1].isPunct('(') {
				continue // COPY (query) TO: a read
			}
			start = i + 1
		default:
			continue
		}
		name, end := qualifiedName(st, skipWords(st, start, "only"))
		if end < 0 {
			return writeInfo{all: true}
		}
		w.tables = append(w.tables, name)
		found = true
	}
	if !found {
		return writeInfo{all: true}
	}
	return w
}

// nameList reads a comma-separated list of relation names at i, each maybe
// with ONLY before or * after it (TRUNCATE a, ONLY b; DROP TABLE a, b).
func nameList(st []token, i int) writeInfo {
	var w writeInfo
	for {
		name, end := qualifiedName(st, skipWords(st, i, "only"))
		if end < 0 {
			return writeInfo{all: true}
		}
		w.tables = append(w.tables, name)
		i = end
		if i < len(st) && st[i].isPunct('*') {
			i++
		}
		if i < len(st) && st[i].isPunct(',') {
			i++
			continue
		}
		return w
	}
}

// skipWords returns the index of the first token at or after i that is not
// one of words.
func skipWords(st []token, i int, words ...string) int {
	for i < len(st) && st[i].kind == tokWord {
		skip := false
		for _, w := range words {
			if st[i].text == w {
				skip = true
				break
			}
		}
		if !skip {
			break
		}
		i++
	}
	return i
}

// isFromEnd reports whether a keyword ends a FROM item: a clause or join
// keyword, or an operator word of the enclosing expression.
func isFromEnd(w string) bool {
	switch w {
	case "where", "group", "having", "window", "order", "limit", "offset", "fetch", "for",
		"union", "intersect", "except", "join", "inner", "left", "right", "full", "cross",
		"natural", "outer", "on", "using", "returning", "into", "then", "else", "end", "when",
		"and", "or", "not", "is", "in", "as", "select", "from", "with", "values", "set":
		return true
	}
	return false
}

// isReservedStart reports words that cannot be a relation name.
func isReservedStart(w string) bool {
	switch w {
	case "select", "values", "table", "case", "distinct", "all", "null", "true", "false":
		return true
	}
	return false
}

// isTimeKeyword reports the SQL-standard keywords that read the clock
// without parentheses.
func isTimeKeyword(w string) bool {
	switch w {
	case "current_timestamp", "current_time", "current_date", "localtime", "localtimestamp":
		return true
	}
	return false
}

// isTimeLiteral reports the special date/time input strings that mean "the
// current time": 'now', 'today', 'tomorrow', 'yesterday' (with or without a
// time after them).
func isTimeLiteral(s string) bool {
	s = strings.TrimSpace(s)
	for _, w := range []string{"now", "today", "tomorrow", "yesterday"} {
		if len(s) >= len(w) && strings.EqualFold(s[:len(w)], w) && (len(s) == len(w) || s[len(w)] == ' ' || s[len(w)] == '\t') {
			return true
		}
	}
	return false
}

// isVolatileFunc reports functions whose result changes from call to call
// or that have side effects, so a query calling them must not be cached.
// name is as lexed: unquoted names lower-cased. Stable time functions such
// as now() are here too: stable within a transaction, they still change
// between queries.
func isVolatileFunc(name string) bool {
	switch name {
	case "now", "random", "random_normal", "setseed", "nextval", "currval", "lastval", "setval",
		"clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday", "age",
		"gen_random_uuid", "gen_random_bytes", "gen_salt", "uuidv4", "uuidv7",
		"pg_backend_pid", "pg_notify", "set_config", "current_setting", "pg_reload_conf",
		"pg_rotate_logfile", "pg_switch_wal", "pg_create_restore_point", "pg_stat_clear_snapshot",
		"inet_client_addr", "inet_client_port", "pg_postmaster_start_time", "pg_conf_load_time":
		return true
	}
	for _, p := range []string{"uuid_generate_", "pg_advisory", "pg_try_advisory", "pg_sleep",
		"txid_", "pg_current_xact_id", "pg_current_wal", "pg_cancel_", "pg_terminate_",
		"pg_stat_reset", "lo_", "dblink", "pg_logical_", "pg_replication_", "pg_export_snapshot",
		"pg_last_", "pg_promote", "pg_wal_", "pg_create_", "pg_drop_", "pg_read_", "pg_ls_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// isTableFreeWord reports words that may stand before a parenthesis without
// being a call of a function that reads tables: keywords, type names with a
// modifier, and built-in functions that compute from their arguments alone.
// A function missing here only makes its queries' results drop on every
// write.
func isTableFreeWord(w string) bool {
	switch w {
	// Keywords.
	case "select", "from", "where", "in", "exists", "any", "some", "all", "values", "as", "on",
		"using", "over", "filter", "within", "row", "array", "and", "or", "not", "when", "then",
		"else", "case", "by", "is", "returning", "limit", "offset", "with", "materialized",
		"join", "lateral", "distinct", "like", "ilike", "similar", "escape", "between", "union",
		"intersect", "except", "group", "order", "having", "window", "partition", "range", "rows",
		"groups", "tablesample", "bernoulli", "system", "repeatable", "fetch", "first", "next",
		"only", "ties", "nulls", "last", "asc", "desc", "grouping", "sets", "cube", "rollup",
		"ordinality", "recursive", "search", "cycle", "set", "to", "at", "zone", "collate",
		// Types with modifiers.
		"varchar", "char", "character", "varying", "numeric", "decimal", "timestamp", "timestamptz",
		"time", "timetz", "interval", "bit", "varbit", "float", "double", "precision",
		// Conditional expressions and casts.
		"cast", "coalesce", "nullif", "greatest", "least", "extract", "overlay", "position",
		"substring", "trim", "treat", "xmlelement", "xmlforest", "xmlparse", "normalize",
		// Aggregates and window functions.
		"count", "sum", "avg", "min", "max", "array_agg", "string_agg", "json_agg", "jsonb_agg",
		"json_object_agg", "jsonb_object_agg", "bool_and", "bool_or", "every", "bit_and",
		"bit_or", "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp",
		"percentile_cont", "percentile_disc", "mode", "row_number", "rank", "dense_rank",
		"percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value", "last_value",
		"nth_value", "corr", "covar_pop", "covar_samp", "regr_slope", "regr_intercept",
		// Strings.
		"lower", "upper", "initcap", "length", "char_length", "character_length", "octet_length",
		"bit_length", "substr", "btrim", "ltrim", "rtrim", "replace", "concat", "concat_ws",
		"format", "strpos", "split_part", "left", "right", "lpad", "rpad", "repeat", "reverse",
		"translate", "starts_with", "ascii", "chr", "md5", "sha224", "sha256", "sha384", "sha512",
		"encode", "decode", "quote_ident", "quote_literal", "quote_nullable", "regexp_replace",
		"regexp_match", "regexp_matches", "regexp_split_to_array", "regexp_split_to_table",
		"regexp_like", "regexp_count", "regexp_instr", "regexp_substr", "to_hex", "string_to_array",
		"array_to_string", "convert_from", "convert_to", "unistr",
		// Numbers.
		"abs", "ceil", "ceiling", "floor", "round", "trunc", "mod", "power", "pow", "sqrt",
		"cbrt", "exp", "ln", "log", "log10", "sign", "div", "pi", "degrees", "radians", "sin",
		"cos", "tan", "asin", "acos", "atan", "atan2", "width_bucket", "gcd", "lcm", "scale",
		"to_char", "to_number", "to_date", "to_timestamp",
		// Dates, given their arguments.
		"date_part", "date_trunc", "date_bin", "make_date", "make_time", "make_timestamp",
		"make_timestamptz", "make_interval", "justify_days", "justify_hours", "justify_interval",
		"isfinite",
		// JSON and arrays.
		"to_json", "to_jsonb", "row_to_json", "array_to_json", "json_build_object",
		"jsonb_build_object", "json_build_array", "jsonb_build_array", "json_object",
		"jsonb_object", "json_array_elements", "jsonb_array_elements", "json_array_elements_text",
		"jsonb_array_elements_text", "json_each", "jsonb_each", "json_each_text", "jsonb_each_text",
		"json_extract_path", "jsonb_extract_path", "json_extract_path_text",
		"jsonb_extract_path_text", "json_object_keys", "jsonb_object_keys", "json_typeof",
		"jsonb_typeof", "json_array_length", "jsonb_array_length", "jsonb_set", "jsonb_insert",
		"jsonb_strip_nulls", "json_strip_nulls", "jsonb_pretty", "jsonb_path_query",
		"jsonb_path_exists", "jsonb_path_match", "jsonb_path_query_array",
		"jsonb_path_query_first", "json_populate_record", "jsonb_populate_record",
		"json_to_record", "jsonb_to_record", "json_to_recordset", "jsonb_to_recordset",
		"array_length", "array_position", "array_positions", "array_append", "array_prepend",
		"array_cat", "array_remove", "array_replace", "array_dims", "array_lower", "array_upper",
		"array_ndims", "cardinality", "unnest", "generate_series", "generate_subscripts",
		// Text search, given its arguments.
		"to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery",
		"websearch_to_tsquery", "ts_rank", "ts_rank_cd", "ts_headline", "setweight",
		// Identity and misc.
		"current_schema", "current_user", "session_user", "current_database", "version",
		"pg_typeof", "num_nulls", "num_nonnulls", "uuid", "bool", "int", "int2", "int4", "int8",
		"integer", "bigint", "smallint", "real", "text", "bytea", "date", "json", "jsonb":
		return true
	}
	return false
}
