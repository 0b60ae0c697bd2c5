package coord

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/agentd/agentd"
)

func TestLocalSerializesOneKey(t *testing.T) {
	l := NewLocal()
	const workers = 50
	var (
		wg      sync.WaitGroup
		inside  int // guarded by the lease itself
		maxSeen int
		counter int
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lease, err := l.Lock(context.Background(), "conv")
			if err != nil {
				t.Error(err)
				return
			}
			inside++
			maxSeen = max(maxSeen, inside)
			counter++
			inside--
			lease.Unlock()
		}()
	}
	wg.Wait()
	if counter != workers || maxSeen != 1 {
		t.Fatalf("counter=%d maxInside=%d, want %d and 1", counter, maxSeen, workers)
	}
	if n := l.held(); n != 0 {
		t.Fatalf("%d keys still tracked after every lease was released", n)
	}
}

func TestLocalKeysAreIndependent(t *testing.T) {
	l := NewLocal()
	a, err := l.Lock(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Unlock()
	// b must be granted while a is held; a blocked Lock would hang the test,
	// so bound it with a context that is already past its use.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := l.Lock(ctx, "b")
	if err != nil {
		t.Fatalf("lock on another key blocked: %v", err)
	}
	if b.Token() <= a.Token() {
		t.Fatalf("tokens not increasing: a=%d b=%d", a.Token(), b.Token())
	}
	b.Unlock()
}

func TestLocalLockGivesUpWithContext(t *testing.T) {
	l := NewLocal()
	held, err := l.Lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Lock(ctx, "k"); agentd.KindOf(err) != agentd.KindTimeout || !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock on a held key with a done context = %v, want timeout wrapping context.Canceled", err)
	}
	held.Unlock()
	held.Unlock() // a second Unlock is a no-op, not a second release
	if n := l.held(); n != 0 {
		t.Fatalf("%d keys still tracked", n)
	}
	again, err := l.Lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if again.Token() <= held.Token() {
		t.Fatalf("token did not increase: %d then %d", held.Token(), again.Token())
	}
	again.Unlock()
}
