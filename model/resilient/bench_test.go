package resilient_test

import (
	"testing"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/model/anthropictest"
	"github.com/agentd/agentd/model/resilient"
)

// BenchmarkHealthyCall measures what the layer adds to a call that succeeds
// at once: the bare client and the client wrapped in a resilient.Model, each
// over the in-memory fake, with a CallTrace as agentd attaches one.
func BenchmarkHealthyCall(b *testing.B) {
	fake := anthropictest.New(anthropictest.WithMaxRequests(1))
	bare := anthropicClient(b, fake)
	for _, bc := range []struct {
		name  string
		model agentd.Model
	}{
		{"bare", bare},
		{"resilient", resilient.New(bare, resilient.Config{})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := request("claude-sonnet-4-5", "hello")
			b.ReportAllocs()
			for b.Loop() {
				ctx := agentd.WithCallTrace(b.Context(), &agentd.CallTrace{})
				if _, err := bc.model.Generate(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
