package memory_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/memory"
	"github.com/agentd/agentd/store/bolt"
)

func openStore(t testing.TB, opts memory.Options) (*memory.Store, agentd.KV) {
	t.Helper()
	kv, err := bolt.Open(filepath.Join(t.TempDir(), "kv.db"), bolt.WithClock(opts.Clock), bolt.WithSweepInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kv.Close() })
	return memory.New(kv, opts), kv
}

func TestStoreRoundTripAndKey(t *testing.T) {
	ctx := context.Background()
	clock := clockwork.NewFakeClock()
	tests := []struct {
		namespace, wantKey string
	}{
		{"", "conversation:u1"},
		{"sales", "conversation:sales:u1"},
	}
	for _, tt := range tests {
		s, kv := openStore(t, memory.Options{Namespace: tt.namespace, TTL: time.Hour, Clock: clock})
		if got := s.Key("u1"); got != tt.wantKey {
			t.Fatalf("Key = %q, want %q", got, tt.wantKey)
		}
		c, err := s.Load(ctx, "u1")
		if err != nil || c.Turns() != 0 || c.UserID != "u1" {
			t.Fatalf("Load of a new user = %+v, %v", c, err)
		}
		c.Messages = append(c.Messages, memory.Entry{Role: agentd.RoleUser, Content: "hi"}, memory.Entry{Role: agentd.RoleAssistant, Content: "hello"})
		if err := s.Save(ctx, c); err != nil {
			t.Fatal(err)
		}
		entry, err := kv.Get(ctx, tt.wantKey)
		if err != nil {
			t.Fatalf("conversation not stored under %s: %v", tt.wantKey, err)
		}
		if want := clock.Now().Add(time.Hour); !entry.Expiration.Equal(want) {
			t.Fatalf("expiration %v, want %v (the TTL)", entry.Expiration, want)
		}
		back, err := memory.Decode(entry.Value)
		if err != nil || back.Version != memory.FormatVersion || back.Turns() != 2 || back.Messages[1].Content != "hello" {
			t.Fatalf("stored conversation = %+v, %v", back, err)
		}
	}
}

// Save refuses to overwrite a conversation written since it was loaded, so
// even an unserialized writer cannot silently drop a turn.
func TestSaveRefusesAStaleWriter(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t, memory.Options{Clock: clockwork.NewFakeClock()})
	a, _ := s.Load(ctx, "u1")
	b, _ := s.Load(ctx, "u1")
	a.Messages = append(a.Messages, memory.Entry{Role: agentd.RoleUser, Content: "from a"})
	if err := s.Save(ctx, a); err != nil {
		t.Fatal(err)
	}
	b.Messages = append(b.Messages, memory.Entry{Role: agentd.RoleUser, Content: "from b"})
	if err := s.Save(ctx, b); agentd.KindOf(err) != agentd.KindConflict {
		t.Fatalf("stale Save = %v, want a conflict", err)
	}
	c, _ := s.Load(ctx, "u1")
	if c.Turns() != 1 || c.Messages[0].Content != "from a" {
		t.Fatalf("after the refused write: %+v", c.Messages)
	}
	// The winner may save again: its version moved on with its write.
	a.Messages = append(a.Messages, memory.Entry{Role: agentd.RoleAssistant, Content: "answer"})
	if err := s.Save(ctx, a); err != nil {
		t.Fatalf("second Save by the same writer: %v", err)
	}
}

func TestDeleteForgets(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t, memory.Options{Clock: clockwork.NewFakeClock()})
	c, _ := s.Load(ctx, "u1")
	c.Messages = append(c.Messages, memory.Entry{Role: agentd.RoleUser, Content: "x"})
	if err := s.Save(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "u1"); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Load(ctx, "u1"); c.Turns() != 0 {
		t.Fatalf("after Delete: %d turns", c.Turns())
	}
	if err := s.Delete(ctx, "u1"); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}
