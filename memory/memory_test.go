package memory

import (
	"fmt"
	"slices"
	"testing"

	"github.com/agentd/agentd"
)

func entries(roles string) []Entry {
	out := make([]Entry, len(roles))
	for i, r := range roles {
		role := agentd.RoleUser
		if r == 'a' {
			role = agentd.RoleAssistant
		}
		out[i] = Entry{Role: role, Content: string(rune('0' + i%10))}
	}
	return out
}

func roles(msgs []Entry) string {
	b := make([]byte, len(msgs))
	for i, m := range msgs {
		b[i] = 'a'
		if m.Role == agentd.RoleUser {
			b[i] = 'u'
		}
	}
	return string(b)
}

func TestPrune(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		maxTurns int
		want     string
		wantLast string // content of the last kept message, to prove the newest are kept
	}{
		{"under the limit", "uaua", 3, "uaua", "3"},
		{"at the limit", "uauaua", 3, "uauaua", "5"},
		{"over the limit keeps the newest exchanges", "uauauaua", 2, "uaua", "7"},
		{"pending user message counts as an exchange", "uauau", 2, "uau", "4"},
		{"one turn", "uauaua", 1, "ua", "5"},
		{"zero keeps all", "uauaua", 0, "uauaua", "5"},
		{"never starts with assistant", "auaua", 0, "uaua", "4"},
		{"leading assistants dropped after pruning", "aauaua", 5, "uaua", "5"},
		{"consecutive user messages stay with their exchange", "uuaua", 2, "uuaua", "4"},
		{"empty", "", 3, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Prune(entries(tt.in), tt.maxTurns)
			if roles(got) != tt.want {
				t.Fatalf("Prune(%q, %d) = %q, want %q", tt.in, tt.maxTurns, roles(got), tt.want)
			}
			if tt.wantLast != "" && got[len(got)-1].Content != tt.wantLast {
				t.Fatalf("last kept message %q, want %q", got[len(got)-1].Content, tt.wantLast)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		wantTurns   int
		wantSummary string
		wantSource  string // of the last message
		wantKind    agentd.Kind
	}{
		{"version 2", `{"version":2,"userId":"u1","summary":"They met.","compactedMessages":6,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello","source":"canned"}]}`, 2, "They met.", "canned", ""},
		{"version 1", `{"version":1,"userId":"u1","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}`, 2, "", "", ""},
		{"workers recipe array", `[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]`, 2, "", "", ""},
		{"unversioned object", `{"messages":[{"role":"user","content":"hi"}]}`, 1, "", "", ""},
		{"newer format", `{"version":3,"messages":[]}`, 0, "", "", agentd.KindInternal},
		{"garbage", `{"version":`, 0, "", "", agentd.KindInternal},
		{"garbage array", `[1,2`, 0, "", "", agentd.KindInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Decode([]byte(tt.in))
			if agentd.KindOf(err) != tt.wantKind {
				t.Fatalf("Decode error = %v, want kind %q", err, tt.wantKind)
			}
			if err != nil {
				return
			}
			if c.Turns() != tt.wantTurns || c.Version != FormatVersion {
				t.Fatalf("Decode = %d turns version %d, want %d turns version %d", c.Turns(), c.Version, tt.wantTurns, FormatVersion)
			}
			if c.Summary != tt.wantSummary || c.Messages[len(c.Messages)-1].Source != tt.wantSource {
				t.Fatalf("Decode = summary %q, last source %q; want %q, %q", c.Summary, c.Messages[len(c.Messages)-1].Source, tt.wantSummary, tt.wantSource)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"version":1,"messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"version":2,"summary":"s","messages":[{"role":"user","content":"hi","source":"canned"}]}`))
	f.Add([]byte(`[{"role":"user","content":"hi"}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err == nil && c.Version != FormatVersion {
			t.Fatalf("decoded version %d", c.Version)
		}
		if err == nil {
			_ = Prune(c.Messages, 3)
			if n := (CompactPolicy{TriggerTokens: 1, KeepTurns: 1}).Plan(c); n > 0 && (n >= len(c.Messages) || c.Messages[n].Role != agentd.RoleUser) {
				t.Fatalf("Plan folds %d of %q", n, roles(c.Messages))
			}
		}
	})
}

// sized returns messages with the roles of roles ('u' or 'U' a user, 'a' or
// 'A' an answer), each of tokens estimated tokens, ten times that for the
// uppercase ones.
func sized(roles string, tokens int) []Entry {
	msgs := make([]Entry, len(roles))
	for i, r := range roles {
		n := tokens
		if r == 'U' || r == 'A' {
			n *= 10
		}
		role := agentd.RoleUser
		if r == 'a' || r == 'A' {
			role = agentd.RoleAssistant
		}
		msgs[i] = Entry{Role: role, Content: fmt.Sprintf("%-*d", 4*n, i)}
	}
	return msgs
}

func TestCompactPolicyPlan(t *testing.T) {
	tests := []struct {
		name     string
		policy   CompactPolicy
		in       string // see sized
		tokens   int
		wantFold int
	}{
		{"under the trigger", CompactPolicy{TriggerTokens: 1000, KeepTurns: 2}, "uauaua", 100, 0},
		{"at the trigger", CompactPolicy{TriggerTokens: 600, KeepTurns: 2}, "uauaua", 100, 0},
		{"over the trigger keeps KeepTurns exchanges", CompactPolicy{TriggerTokens: 2000, KeepTurns: 2}, "UAUAuauaua", 100, 6},
		{"defaults: over 8000 tokens, keep 4 exchanges", CompactPolicy{}, "uauauauauauauauauaua", 450, 12},
		{"negative trigger never compacts", CompactPolicy{TriggerTokens: -1}, "UAUAUAuaua", 10000, 0},
		{"one exchange: nothing to fold", CompactPolicy{TriggerTokens: 100, KeepTurns: 4}, "UA", 100, 0},
		{"consecutive user messages stay with their exchange", CompactPolicy{TriggerTokens: 2000, KeepTurns: 2}, "UAUAuuauua", 100, 4},
		{"a pending user message is an exchange", CompactPolicy{TriggerTokens: 2000, KeepTurns: 2}, "UAUAuau", 100, 4},
		{"leading assistant messages are folded", CompactPolicy{TriggerTokens: 1000, KeepTurns: 1}, "AUAua", 100, 3},
		{"kept exchanges fit in half the trigger", CompactPolicy{TriggerTokens: 1000, KeepTurns: 4}, "uauauauauaua", 200, 10},
		{"the latest exchange is kept however large", CompactPolicy{TriggerTokens: 1000, KeepTurns: 4}, "uauaua", 800, 4},
		{"no user message", CompactPolicy{TriggerTokens: 10, KeepTurns: 1}, "aaa", 100, 0},
		{"empty", CompactPolicy{TriggerTokens: 10}, "", 100, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conv := &Conversation{Messages: sized(tt.in, tt.tokens)}
			got := tt.policy.Plan(conv)
			if got != tt.wantFold {
				t.Fatalf("Plan(%q at %d tokens each) = %d, want %d", tt.in, tt.tokens, got, tt.wantFold)
			}
			if got > 0 && conv.Messages[got].Role != agentd.RoleUser {
				t.Fatalf("Plan leaves %q, which starts with an answer", roles(conv.Messages[got:]))
			}
		})
	}
	if (CompactPolicy{}).Plan(nil) != 0 {
		t.Fatal("Plan(nil) folds messages")
	}
}

func TestMessagesCarryTheSummaryFirst(t *testing.T) {
	history := []Entry{{Role: agentd.RoleUser, Content: "hi"}, {Role: agentd.RoleAssistant, Content: "hello"}, {Role: agentd.RoleUser, Content: "again"}}
	tests := []struct {
		name  string
		conv  *Conversation
		first []string // the text blocks of the first message
	}{
		{"no summary", &Conversation{}, []string{"hi"}},
		{"summary", &Conversation{Summary: "They met."}, []string{SummaryHeader + "They met.", "hi"}},
		{"no conversation", nil, []string{"hi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs := Messages(tt.conv, history)
			if len(msgs) != 3 || msgs[1].Role != agentd.RoleAssistant || msgs[2].Content[0].Text != "again" {
				t.Fatalf("messages %+v", msgs)
			}
			var got []string
			for _, b := range msgs[0].Content {
				if b.Type != agentd.BlockText || b.Cache != nil {
					t.Fatalf("block %+v, want plain text", b)
				}
				got = append(got, b.Text)
			}
			if !slices.Equal(got, tt.first) {
				t.Fatalf("first message %q, want %q", got, tt.first)
			}
		})
	}
}

func TestEstimateTokens(t *testing.T) {
	tests := []struct {
		contents []string
		want     int
	}{
		{nil, 0},
		{[]string{""}, 0},
		{[]string{"a"}, 1},
		{[]string{"abcd"}, 1},
		{[]string{"abcde"}, 2},
		{[]string{"héé!"}, 1}, // characters, not bytes
		{[]string{"abcde", "a"}, 3},
	}
	for _, tt := range tests {
		var msgs []Entry
		for _, c := range tt.contents {
			msgs = append(msgs, Entry{Role: agentd.RoleUser, Content: c})
		}
		if got := EstimateTokens(msgs); got != tt.want {
			t.Errorf("EstimateTokens(%q) = %d, want %d", tt.contents, got, tt.want)
		}
	}
}
