package postgres

import (
	"slices"
	"strings"
	"testing"
)

func TestLex(t *testing.T) {
	cases := []struct {
		sql  string
		want []token
	}{
		{`SELECT a FROM "My Table" WHERE b = $1`, []token{
			{tokWord, "select"}, {tokWord, "a"}, {tokWord, "from"}, {tokIdent, "My Table"},
			{tokWord, "where"}, {tokWord, "b"}, {tokPunct, "="}, {tokParam, "$1"},
		}},
		{`-- now()
		/* outer /* nested now() */ still comment */ select 'it''s now()', E'a\'b', $$now()$$, $f$x$f$`, []token{
			{tokWord, "select"}, {tokString, "it's now()"}, {tokPunct, ","}, {tokString, "a'b"}, {tokPunct, ","},
			{tokString, "now()"}, {tokPunct, ","}, {tokString, "x"},
		}},
		{`"a""b" U&"d\0061t" 1.5e-3 .5 x$1`, []token{
			{tokIdent, `a"b`}, {tokIdent, `d\0061t`}, {tokNumber, "1.5e-3"}, {tokNumber, ".5"}, {tokWord, "x$1"},
		}},
		{`'unterminated`, []token{{tokString, "unterminated"}}},
		{`/* unterminated`, []token{}},
		{`$tag$ never closed`, []token{{tokString, " never closed"}}},
	}
	for _, c := range cases {
		got := lex(c.sql)
		if !slices.Equal(got, c.want) {
			t.Errorf("lex(%q) =\n%v\nwant\n%v", c.sql, got, c.want)
		}
	}
}

func TestAnalyzeReadCacheable(t *testing.T) {
	cases := []struct {
		sql       string
		cacheable bool
		tables    []string // when cacheable
		anyTable  bool
	}{
		// Reads.
		{`SELECT id, name FROM items WHERE id = $1`, true, []string{"items"}, false},
		{`  -- leading comment
		/* and another */ ( SELECT 1 )`, true, nil, false},
		{`select * from public.items i join "Other" o on o.id = i.id`, true, []string{"items", "Other"}, false},
		{`SELECT * FROM a, b AS bb, ONLY c, LATERAL (SELECT * FROM d) x`, true, []string{"a", "b", "c", "d"}, false},
		{`SELECT * FROM (a JOIN b USING (id)) LEFT JOIN c ON true`, true, []string{"a", "b", "c"}, false},
		{`SELECT * FROM items WHERE id = ANY($1) ORDER BY id LIMIT 10`, true, []string{"items"}, false},
		{`SELECT count(*), lower(name) FROM items GROUP BY 2`, true, []string{"items"}, false},
		{`SELECT extract(epoch FROM at) FROM events`, true, []string{"events"}, false},
		{`SELECT * FROM t WHERE a IS DISTINCT FROM $1`, true, []string{"t"}, false},
		{`SELECT * FROM unnest($1::bigint[]) AS u(id) JOIN items USING (id)`, true, []string{"items"}, false},
		{`WITH recent AS (SELECT * FROM events) SELECT * FROM recent`, true, []string{"events", "recent"}, false},
		{`VALUES (1, 'a'), (2, 'b')`, true, nil, false},
		{`TABLE items`, true, []string{"items"}, false},
		{`SELECT * FROM a UNION TABLE s.b`, true, []string{"a", "b"}, false},
		{`SHOW search_path`, true, nil, false},
		{`SELECT 1;`, true, nil, false},
		{`SELECT 'now' AS word, 'insert into x' AS text FROM t`, false, nil, false}, // 'now' is a time literal
		{`SELECT 'insert into x; now()' AS text FROM t`, true, []string{"t"}, false},
		{`SELECT "now" FROM t`, true, []string{"t"}, false}, // a column named now
		{`SELECT description FROM t WHERE status = 'now showing'`, false, nil, false},
		// Reads of unknown tables: user functions, function-like CTEs.
		{`SELECT my_func($1)`, true, nil, true},
		{`SELECT * FROM my_set_func($1) AS f`, true, nil, true},
		{`SELECT * FROM s.my_func() f JOIN items ON true`, true, []string{"items"}, true},
		{`SELECT * FROM t TABLESAMPLE bernoulli (10) WHERE x`, true, []string{"t"}, false},
		{`SELECT * FROM t, 42`, true, []string{"t"}, true},
		{`SELECT substring(name FROM 2 FOR 3) FROM t`, true, []string{"t"}, false},

		// Writes and locks.
		{`INSERT INTO items (id) VALUES (1)`, false, nil, false},
		{`UPDATE items SET a = 1`, false, nil, false},
		{`DELETE FROM items`, false, nil, false},
		{`MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE`, false, nil, false},
		{`WITH d AS (DELETE FROM items RETURNING *) SELECT * FROM d`, false, nil, false},
		{`WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x`, false, nil, false},
		{`SELECT * FROM items FOR UPDATE`, false, nil, false},
		{`SELECT * FROM items FOR NO KEY UPDATE`, false, nil, false},
		{`SELECT * FROM items FOR SHARE`, false, nil, false},
		{`SELECT * FROM items for key share skip locked`, false, nil, false},
		{`SELECT * INTO new_table FROM items`, false, nil, false},
		{`CREATE TABLE t (a int)`, false, nil, false},
		{`EXPLAIN ANALYZE SELECT 1`, false, nil, false},
		{`SELECT 1; DELETE FROM items`, false, nil, false},
		{`SET search_path = x`, false, nil, false},
		{``, false, nil, false},
		{`-- nothing`, false, nil, false},

		// Volatile functions and the clock.
		{`SELECT now()`, false, nil, false},
		{`SELECT NOW ( )`, false, nil, false},
		{`SELECT pg_catalog.now()`, false, nil, false},
		{`SELECT "now"()`, false, nil, false},
		{`SELECT * FROM t WHERE at > CURRENT_TIMESTAMP - interval '1 day'`, false, nil, false},
		{`SELECT current_date`, false, nil, false},
		{`SELECT localtimestamp`, false, nil, false},
		{`SELECT random()`, false, nil, false},
		{`SELECT nextval('s')`, false, nil, false},
		{`SELECT currval('s'), lastval()`, false, nil, false},
		{`SELECT setval('s', 1)`, false, nil, false},
		{`SELECT clock_timestamp()`, false, nil, false},
		{`SELECT statement_timestamp(), transaction_timestamp()`, false, nil, false},
		{`SELECT timeofday()`, false, nil, false},
		{`SELECT gen_random_uuid()`, false, nil, false},
		{`SELECT uuid_generate_v4()`, false, nil, false},
		{`SELECT pg_advisory_lock(1)`, false, nil, false},
		{`SELECT pg_try_advisory_xact_lock(1)`, false, nil, false},
		{`SELECT txid_current()`, false, nil, false},
		{`SELECT pg_sleep(1)`, false, nil, false},
		{`SELECT 'now'::timestamptz`, false, nil, false},
		{`SELECT 'TODAY'::date`, false, nil, false},
		{`SELECT * FROM t WHERE at < $$tomorrow$$::date`, false, nil, false},
		{`SELECT age(at) FROM t`, false, nil, false},
	}
	for _, c := range cases {
		got := analyzeRead(c.sql)
		if got.cacheable != c.cacheable {
			t.Errorf("analyzeRead(%q).cacheable = %v (%s), want %v", c.sql, got.cacheable, got.reason, c.cacheable)
			continue
		}
		if !c.cacheable {
			if got.reason == "" {
				t.Errorf("analyzeRead(%q): no reason given", c.sql)
			}
			continue
		}
		slices.Sort(got.tables)
		want := slices.Clone(c.tables)
		slices.Sort(want)
		if !slices.Equal(got.tables, want) {
			t.Errorf("analyzeRead(%q).tables = %q, want %q", c.sql, got.tables, want)
		}
		if got.anyTable != c.anyTable {
			t.Errorf("analyzeRead(%q).anyTable = %v, want %v", c.sql, got.anyTable, c.anyTable)
		}
	}
}

func TestAnalyzeWrite(t *testing.T) {
	cases := []struct {
		sql    string
		tables []string
		all    bool
	}{
		{`SELECT * FROM items`, nil, false},
		{`SELECT lower(name), count(*) FROM items GROUP BY 1`, nil, false},
		{`SELECT pg_advisory_xact_lock($1)`, nil, false},
		{`SELECT v, now(), nextval('s') FROM kv`, nil, false},
		{`SELECT * FROM unnest($1::int[]) AS u(id)`, nil, false},
		{`SELECT place_order($1)`, nil, true},
		{`SELECT s.place_order($1)`, nil, true},
		{`WITH x AS (SELECT f()) SELECT * FROM x`, nil, true},
		{`VALUES (1)`, nil, false},
		{`SHOW x`, nil, false},
		{`WITH x AS (SELECT 1) SELECT * FROM x`, nil, false},
		{``, nil, false},
		{`INSERT INTO items (id) VALUES ($1)`, []string{"items"}, false},
		{`insert into "Public"."Items" values (1)`, []string{"Items"}, false},
		{`INSERT INTO s.items AS i (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET n = i.n + 1`, []string{"items"}, false},
		{`INSERT INTO a SELECT * FROM b FOR UPDATE`, []string{"a"}, false},
		{`UPDATE ONLY items SET a = 1 FROM other WHERE other.id = items.id`, []string{"items"}, false},
		{`DELETE FROM items USING other WHERE other.id = items.id RETURNING *`, []string{"items"}, false},
		{`MERGE INTO target t USING src s ON t.id = s.id
		  WHEN MATCHED THEN UPDATE SET v = s.v
		  WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v)
		  WHEN MATCHED AND s.gone THEN DELETE`, []string{"target"}, false},
		{`TRUNCATE a, ONLY s.b, "C"`, []string{"a", "b", "C"}, false},
		{`TRUNCATE TABLE a`, []string{"a"}, false},
		{`WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d`, []string{"a", "b"}, false},
		{`WITH u AS (UPDATE a SET x = 1 RETURNING *) SELECT * FROM u`, []string{"a"}, false},
		{`ALTER TABLE items ADD COLUMN x int`, []string{"items"}, false},
		{`ALTER TABLE IF EXISTS ONLY s.items RENAME TO other`, []string{"items"}, false},
		{`DROP TABLE items`, []string{"items"}, false},
		{`DROP TABLE IF EXISTS a, s.b`, []string{"a", "b"}, false},
		{`CREATE TABLE t (a int)`, []string{"t"}, false},
		{`CREATE TEMP TABLE IF NOT EXISTS t AS SELECT 1`, []string{"t"}, false},
		{`CREATE OR REPLACE VIEW v AS SELECT * FROM t`, []string{"v"}, false},
		{`CREATE UNIQUE INDEX i ON t (a)`, nil, false},
		{`CREATE INDEX i ON t (a)`, nil, false},
		{`REFRESH MATERIALIZED VIEW CONCURRENTLY mv`, []string{"mv"}, false},
		{`COPY items FROM STDIN`, []string{"items"}, false},
		{`COPY (SELECT 1) TO STDOUT`, nil, true}, // no target named: conservative
		{`INSERT INTO a VALUES (1); UPDATE b SET x = 1`, []string{"a", "b"}, false},
		{`INSERT INTO a VALUES (1); INSERT INTO a VALUES (2)`, []string{"a"}, false},

		// Unknown effects: everything.
		{`DROP TABLE a CASCADE`, nil, true},
		{`ALTER TABLE a DROP COLUMN b CASCADE`, nil, true},
		{`DROP VIEW v`, nil, true},
		{`ALTER VIEW v RENAME TO w`, nil, true},
		{`CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql`, nil, true},
		{`DO $$ BEGIN DELETE FROM items; END $$`, nil, true},
		{`CALL proc()`, nil, true},
		{`SET search_path = other`, nil, true},
		{`EXPLAIN ANALYZE DELETE FROM items`, nil, true},
		{`INSERT INTO`, nil, true},
		{`UPDATE`, nil, true},
		{`MERGE t USING s ON true`, nil, true},
		{`'just a string'`, nil, true},
		{`SELECT 1; VACUUM`, nil, true},
	}
	for _, c := range cases {
		got := analyzeWrite(c.sql)
		if got.all != c.all {
			t.Errorf("analyzeWrite(%q).all = %v, want %v (tables %q)", c.sql, got.all, c.all, got.tables)
			continue
		}
		if c.all {
			continue
		}
		g := slices.Clone(got.tables)
		slices.Sort(g)
		want := slices.Clone(c.tables)
		slices.Sort(want)
		if !slices.Equal(g, want) {
			t.Errorf("analyzeWrite(%q).tables = %q, want %q", c.sql, g, want)
		}
	}
}

// Every statement the read analysis calls cacheable must write nothing by
// the write analysis, and the write analysis of a write must name something.
func checkConsistent(t *testing.T, sql string) {
	r := analyzeRead(sql)
	w := analyzeWrite(sql)
	if r.cacheable && !r.anyTable && !w.empty() {
		t.Errorf("%q is cacheable but writes %+v", sql, w)
	}
	if r.cacheable && len(statements(lex(sql))) != 1 {
		t.Errorf("%q is cacheable but is not one statement", sql)
	}
	for _, tb := range r.tables {
		if tb == "" {
			t.Errorf("%q: empty table name read", sql)
		}
	}
	for _, tb := range w.tables {
		if tb == "" {
			t.Errorf("%q: empty table name written", sql)
		}
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		`SELECT id FROM items WHERE id = $1`,
		`WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d`,
		`SELECT * FROM (a JOIN (b JOIN c ON true) ON true), LATERAL f(x) AS g(y)`,
		`SELECT 'a''b', E'\\'', $x$ $$ $x$, "q""q", U&"x", /* /* */ */ -- c`,
		`TRUNCATE ONLY a, b *`,
		`SELECT * FROM t TABLESAMPLE system (1) REPEATABLE (2)`,
		`((((`, `))))`, `$`, `$$`, `$1`, `e'`, `u&'`, `FROM`, `JOIN`, `TABLE`, `INSERT INTO`,
		`SELECT extract(x FROM`, "SELECT \xff\xfe FROM \x80",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		checkConsistent(t, sql)
		cacheKey(sql, []any{sql, 1, nil})
		// Prefixes exercise unterminated constructs.
		if len(sql) > 0 {
			checkConsistent(t, sql[:len(sql)/2])
		}
		// A write of a DML statement to a known table is never
		// missed, whatever follows it.
		if w := analyzeWrite("INSERT INTO fuzz_t VALUES (1); " + strings.ReplaceAll(sql, "\x00", "")); !w.all && !slices.Contains(w.tables, "fuzz_t") {
			t.Errorf("write to fuzz_t lost after %q: %+v", sql, w)
		}
	})
}
