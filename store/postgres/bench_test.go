package postgres

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/agentd/agentd"
)

// The benchmarks compare a small indexed SELECT served by the cache with the
// same query sent to Postgres. They need AGENTD_TEST_POSTGRES_URL:
//
//	AGENTD_TEST_POSTGRES_URL=postgres://… go test -run X -bench . -count 5 ./store/postgres/

const benchQuery = `SELECT id, name, score FROM bench WHERE id = $1`

func openBench(b *testing.B) *DB {
	b.Helper()
	raw, _ := testSchema(b)
	db := openAt(b, raw)
	exec(b, db, `CREATE TABLE bench (id BIGINT PRIMARY KEY, name TEXT NOT NULL, score DOUBLE PRECISION NOT NULL)`)
	exec(b, db, `INSERT INTO bench (id, name, score) SELECT g, 'name-' || g, g * 1.5 FROM generate_series(1, 10000) AS g`)
	exec(b, db, `ANALYZE bench`)
	return db
}

func BenchmarkQueryCached(b *testing.B) {
	db := openBench(b)
	ctx := b.Context()
	if _, err := db.Query(ctx, benchQuery, 42); err != nil {
		b.Fatal(err)
	}
	before := db.Stats()
	b.ReportAllocs()
	for b.Loop() {
		rows, err := db.Query(ctx, benchQuery, 42)
		if err != nil || len(rows.Values) != 1 {
			b.Fatal(rows, err)
		}
	}
	after := db.Stats()
	if hits := after.CacheHits - before.CacheHits; hits != int64(b.N) {
		b.Fatalf("%d hits for %d queries", hits, b.N)
	}
	b.ReportMetric(float64(after.AcquireCount-before.AcquireCount)/float64(b.N), "roundtrips/op")
}

func BenchmarkQueryUncached(b *testing.B) {
	db := openBench(b)
	ctx := agentd.WithoutQueryCache(b.Context())
	b.ReportAllocs()
	before := db.Stats()
	for b.Loop() {
		rows, err := db.Query(ctx, benchQuery, 42)
		if err != nil || len(rows.Values) != 1 {
			b.Fatal(rows, err)
		}
	}
	after := db.Stats()
	b.ReportMetric(float64(after.AcquireCount-before.AcquireCount)/float64(b.N), "roundtrips/op")
}

// BenchmarkQueryCachedParallel shows the cache under contention: every
// goroutine reads the same few keys.
func BenchmarkQueryCachedParallel(b *testing.B) {
	db := openBench(b)
	ctx := b.Context()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := db.Query(ctx, benchQuery, i%16+1); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkQueryLatencyHitVsRoundTrip times each query of one run, cache
// hits and round trips to Postgres interleaved so both see the same
// machine, and reports their p50 and p99 and the ratio of the medians:
//
//	go test -run X -bench QueryLatency -benchtime 20000x ./store/postgres/
func BenchmarkQueryLatencyHitVsRoundTrip(b *testing.B) {
	db := openBench(b)
	cached, uncached := b.Context(), agentd.WithoutQueryCache(b.Context())
	if _, err := db.Query(cached, benchQuery, 42); err != nil {
		b.Fatal(err)
	}
	var hits, trips []time.Duration
	for b.Loop() {
		for _, ctx := range []context.Context{cached, uncached} {
			start := time.Now()
			rows, err := db.Query(ctx, benchQuery, 42)
			d := time.Since(start)
			if err != nil || len(rows.Values) != 1 {
				b.Fatal(rows, err)
			}
			if ctx == cached {
				hits = append(hits, d)
			} else {
				trips = append(trips, d)
			}
		}
	}
	pct := func(ds []time.Duration, q float64) float64 {
		slices.Sort(ds)
		return float64(ds[min(len(ds)-1, int(q*float64(len(ds))))].Nanoseconds())
	}
	b.ReportMetric(pct(hits, 0.50), "hit-p50-ns")
	b.ReportMetric(pct(hits, 0.99), "hit-p99-ns")
	b.ReportMetric(pct(trips, 0.50), "roundtrip-p50-ns")
	b.ReportMetric(pct(trips, 0.99), "roundtrip-p99-ns")
	b.ReportMetric(pct(trips, 0.50)/pct(hits, 0.50), "p50-ratio")
}
