package bolt

import (
	"context"

	bbolt "go.etcd.io/bbolt"
)

// SetSweepBatch shrinks the sweep batch so tests cover sweeping in several
// transactions without writing thousands of keys. Call it before the store is
// shared: the sweeper reads the field.
func SetSweepBatch(s *KV, n int) { s.sweepBatch = n }

// RawCount counts the records in the file, expired ones included, to see
// what a sweep physically removed.
func RawCount(ctx context.Context, s *KV) (int, error) {
	n := 0
	err := s.view(ctx, "test.count", func(b *bbolt.Bucket) error {
		n = b.Stats().KeyN
		return nil
	})
	return n, err
}
