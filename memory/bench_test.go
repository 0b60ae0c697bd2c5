package memory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/memory"
)

// historySizes are the histories the benchmarks load and store, in
// exchanges (two messages each, about 200 bytes per message).
func historySizes() []int { return []int{10, 100, 1000} }

func history(turns int) []memory.Entry {
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	msg := strings.Repeat("my order has not arrived yet ", 7)
	h := make([]memory.Entry, 0, 2*turns)
	for i := range turns {
		h = append(h,
			memory.Entry{Role: agentd.RoleUser, Content: fmt.Sprintf("[%d] %s", i, msg), At: at},
			memory.Entry{Role: agentd.RoleAssistant, Content: fmt.Sprintf("You said: [%d] %s", i, msg), At: at})
	}
	return h
}

// BenchmarkLoad measures reading a conversation from bolt and decoding it.
func BenchmarkLoad(b *testing.B) {
	for _, turns := range historySizes() {
		b.Run(fmt.Sprint("turns=", turns), func(b *testing.B) {
			s, _ := openStore(b, memory.Options{})
			ctx := context.Background()
			c, _ := s.Load(ctx, "u1")
			c.Messages = history(turns)
			if err := s.Save(ctx, c); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Load(ctx, "u1"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSave measures encoding a conversation and writing it to bolt
// with compare-and-swap, a durable (fsynced) transaction each.
func BenchmarkSave(b *testing.B) {
	for _, turns := range historySizes() {
		b.Run(fmt.Sprint("turns=", turns), func(b *testing.B) {
			s, _ := openStore(b, memory.Options{})
			ctx := context.Background()
			c, _ := s.Load(ctx, "u1")
			c.Messages = history(turns)
			value, _ := json.Marshal(c)
			b.SetBytes(int64(len(value)))
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Save(ctx, c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecode measures decoding a stored conversation alone: Load's
// share that is not the KV's.
func BenchmarkDecode(b *testing.B) {
	for _, turns := range historySizes() {
		b.Run(fmt.Sprint("turns=", turns), func(b *testing.B) {
			value, err := json.Marshal(&memory.Conversation{Version: memory.FormatVersion, UserID: "u1", Messages: history(turns)})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(value)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := memory.Decode(value); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
