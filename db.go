package agentd

import "context"

// DB is a SQL database with `$1`-style parameters. Query results are read
// whole into Rows: agents gather small, bounded context, and a materialized
// result is what a query cache can keep.
type DB interface {
	Querier
	// Tx runs fn in a transaction, committed if fn returns nil and rolled
	// back otherwise.
	Tx(ctx context.Context, fn func(ctx context.Context, tx Querier) error) error
	// Dialect names the SQL dialect: "sqlite" or "postgres".
	Dialect() string
	// Close releases the database.
	Close() error
}

// Querier runs statements; both a DB and a transaction are Queriers.
type Querier interface {
	Exec(ctx context.Context, query string, args ...any) (ExecResult, error)
	Query(ctx context.Context, query string, args ...any) (*Rows, error)
}

// ExecResult is the outcome of a statement that returns no rows.
type ExecResult struct {
	RowsAffected int64
}

// Rows is a whole query result. Values hold int64, float64, string, []byte,
// bool, time.Time or nil, whatever the driver gives for the column.
type Rows struct {
	Columns []string
	Values  [][]any
}

// Maps returns each row as a map from column name to value.
func (r *Rows) Maps() []map[string]any {
	out := make([]map[string]any, len(r.Values))
	for i, row := range r.Values {
		m := make(map[string]any, len(r.Columns))
		for j, c := range r.Columns {
			m[c] = row[j]
		}
		out[i] = m
	}
	return out
}

type noCacheKey struct{}

// WithoutQueryCache marks ctx so that queries made with it bypass a DB
// backend's query cache (for reads that must see the latest write).
func WithoutQueryCache(ctx context.Context) context.Context {
	return context.WithValue(ctx, noCacheKey{}, true)
}

// QueryCacheDisabled reports whether ctx was marked by WithoutQueryCache.
func QueryCacheDisabled(ctx context.Context) bool {
	v, _ := ctx.Value(noCacheKey{}).(bool)
	return v
}
