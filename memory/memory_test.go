package memory

import (
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
		name      string
		in        string
		wantTurns int
		wantKind  agentd.Kind
	}{
		{"current format", `{"version":1,"userId":"u1","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}`, 2, ""},
		{"workers recipe array", `[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]`, 2, ""},
		{"unversioned object", `{"messages":[{"role":"user","content":"hi"}]}`, 1, ""},
		{"newer format", `{"version":2,"messages":[]}`, 0, agentd.KindInternal},
		{"garbage", `{"version":`, 0, agentd.KindInternal},
		{"garbage array", `[1,2`, 0, agentd.KindInternal},
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
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"version":1,"messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`[{"role":"user","content":"hi"}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err == nil && c.Version != FormatVersion {
			t.Fatalf("decoded version %d", c.Version)
		}
		if err == nil {
			_ = Prune(c.Messages, 3)
		}
	})
}
