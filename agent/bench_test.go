package agent_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/coord"
	"github.com/agentd/agentd/memory"
	"github.com/agentd/agentd/model/anthropic"
	"github.com/agentd/agentd/model/anthropictest"
	"github.com/agentd/agentd/store/bolt"
)

// BenchmarkTurn measures a whole chat turn over an embedded bolt KV (fsync
// included) with a history of N exchanges, against three models, so the
// cost of each layer shows by difference:
//
//   - stub: an agentd.Model that answers at once: the lock, history load,
//     prune, the request build and history save;
//   - sdk: the Claude client over a transport that answers a canned
//     message: adds the SDK's request encoding and answer decoding;
//   - fake: the client over anthropictest's in-memory fake, which also
//     validates and counts the request as the API would.
func BenchmarkTurn(b *testing.B) {
	for _, model := range []string{"stub", "sdk", "fake"} {
		for _, turns := range []int{20, 100} {
			b.Run(fmt.Sprintf("model=%s/history=%d", model, turns), func(b *testing.B) {
				c := benchChat(b, model, turns)
				ctx := context.Background()
				msg := strings.Repeat("my order has not arrived yet ", 7) // about 200 bytes
				for range turns {                                         // fill the history
					if _, err := c.Turn(ctx, "u1", msg); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := c.Turn(ctx, "u1", msg); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func benchChat(b *testing.B, model string, turns int) *agent.Chat {
	cfg := agent.ChatConfig{Name: "chat", Model: "claude-sonnet-4-6", System: "You are a helpful support agent.", MaxTurns: turns}
	if model == "fake" {
		return newChat(b, anthropictest.New(), cfg)
	}
	kv, err := bolt.Open(filepath.Join(b.TempDir(), "kv.db"), bolt.WithSweepInterval(0))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = kv.Close() })
	var m agentd.Model = stubModel{}
	if model == "sdk" {
		if m, err = anthropic.New(anthropic.Config{APIKey: "test", BaseURL: "http://fake.invalid", HTTPClient: &http.Client{Transport: cannedTransport{}}, MaxRetries: -1}); err != nil {
			b.Fatal(err)
		}
	}
	return agent.NewChat(cfg, agent.ChatDeps{Model: m, Memory: memory.New(kv, memory.Options{}), Locks: coord.NewLocal()})
}

// stubModel answers every request at once with a fixed text.
type stubModel struct{}

func (stubModel) Generate(context.Context, agentd.ModelRequest) (agentd.ModelResponse, error) {
	return agentd.ModelResponse{Model: "stub", Content: []agentd.Block{agentd.TextBlock(cannedText)}}, nil
}

const cannedText = "Thanks, I am checking your order now."

// cannedTransport reads the request and answers a fixed Message, so the
// SDK's work is measured without a server's.
type cannedTransport struct{}

func (cannedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	body := `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[{"type":"text","text":"` + cannedText +
		`"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2000,"output_tokens":10,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}`
	return &http.Response{
		StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": {"application/json"}, "Request-Id": {"req_1"}},
		Body:    io.NopCloser(strings.NewReader(body)),
		Request: req, ContentLength: int64(len(body)),
	}, nil
}
