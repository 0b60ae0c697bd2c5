package memory

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	"github.com/agentd/agentd"
)

// FormatVersion is the version of the stored conversation format written by
// this agentd. Version 2 added the summary of compacted history and the
// source of a message; version 1 and the Workers recipe's array read as
// version 2 without them.
const FormatVersion = 2

// DefaultTTL is how long an untouched conversation is kept.
const DefaultTTL = 30 * 24 * time.Hour

// Entry is one message of a stored conversation.
type Entry struct {
	Role    agentd.Role `json:"role"`
	Content string      `json:"content"`
	At      time.Time   `json:"at,omitzero"`
	// Source says who wrote an assistant message when it was not the model
	// (e.g. "canned"), so that audits and evaluations can tell them apart;
	// empty means the model.
	Source string `json:"source,omitempty"`
}

// Conversation is the stored history of one user with one agent.
type Conversation struct {
	Version   int       `json:"version"`
	UserID    string    `json:"userId"`
	Messages  []Entry   `json:"messages"`
	UpdatedAt time.Time `json:"updatedAt,omitzero"`

	// Summary is the model's summary of the messages compacted out of
	// Messages (see Compact); empty until the first compaction.
	Summary string `json:"summary,omitempty"`
	// CompactedMessages counts the messages folded into Summary over the
	// conversation's life, and CompactedAt is when that last happened: the
	// bookkeeping an operator needs to tell a short conversation from a
	// compacted one.
	CompactedMessages int       `json:"compactedMessages,omitempty"`
	CompactedAt       time.Time `json:"compactedAt,omitzero"`

	// kvVersion is the KV version this conversation was read at; 0 when it
	// did not exist. Save writes only if the key is still at this version.
	kvVersion uint64
}

// Turns is the number of stored messages.
func (c *Conversation) Turns() int { return len(c.Messages) }

// Options configure a Store.
type Options struct {
	// Namespace separates the conversations of agents that share a KV. Empty
	// keeps the key of the Workers recipe, conversation:{userId}, so data
	// written by it is read as is.
	Namespace string
	// TTL is how long a conversation lives after its last write; 0 means
	// DefaultTTL, negative means forever.
	TTL   time.Duration
	Clock agentd.Clock
}

// Store loads and saves conversations in a KV.
type Store struct {
	kv    agentd.KV
	opts  Options
	clock agentd.Clock
}

// New returns a Store over kv.
func New(kv agentd.KV, opts Options) *Store {
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	clock := opts.Clock
	if clock == nil {
		clock = agentd.SystemClock{}
	}
	return &Store{kv: kv, opts: opts, clock: clock}
}

// Key is the KV key of a user's conversation.
func (s *Store) Key(userID string) string {
	if s.opts.Namespace == "" {
		return "conversation:" + userID
	}
	return "conversation:" + s.opts.Namespace + ":" + userID
}

// Load returns the user's conversation, empty if there is none.
func (s *Store) Load(ctx context.Context, userID string) (*Conversation, error) {
	entry, err := s.kv.Get(ctx, s.Key(userID))
	switch {
	case agentd.KindOf(err) == agentd.KindNotFound:
		return &Conversation{Version: FormatVersion, UserID: userID}, nil
	case err != nil:
		return nil, agentd.E("", "memory.load", err)
	}
	c, err := Decode(entry.Value)
	if err != nil {
		return nil, err
	}
	if c.UserID == "" {
		c.UserID = userID
	}
	c.kvVersion = entry.Version
	return c, nil
}

// Save writes the conversation if nobody else wrote it since it was loaded;
// otherwise it fails with KindConflict and writes nothing. On success the
// conversation may be saved again.
func (s *Store) Save(ctx context.Context, c *Conversation) error {
	c.Version = FormatVersion
	c.UpdatedAt = s.clock.Now().UTC()
	value, err := json.Marshal(c)
	if err != nil {
		return agentd.E(agentd.KindInternal, "memory.save", err)
	}
	var opts agentd.KVPutOptions
	if s.opts.TTL > 0 {
		opts.ExpirationTTL = s.opts.TTL
	}
	v, err := s.kv.CompareAndSwap(ctx, s.Key(c.UserID), c.kvVersion, value, opts)
	if err != nil {
		return agentd.E("", "memory.save", err)
	}
	c.kvVersion = v
	return nil
}

// Delete forgets the user's conversation.
func (s *Store) Delete(ctx context.Context, userID string) error {
	if err := s.kv.Delete(ctx, s.Key(userID)); err != nil {
		return agentd.E("", "memory.delete", err)
	}
	return nil
}

// Decode reads a stored conversation. It accepts the current format, every
// older version (a version 1 conversation is a version 2 one without summary
// or sources) and the Workers recipe's plain array of {role, content}
// messages, so conversations written by that recipe carry over; a format
// newer than this agentd's is an error rather than a silent misreading.
func Decode(value []byte) (*Conversation, error) {
	const op = "memory.decode"
	value = bytes.TrimSpace(value)
	if len(value) > 0 && value[0] == '[' {
		var msgs []Entry
		if err := json.Unmarshal(value, &msgs); err != nil {
			return nil, &agentd.Error{Kind: agentd.KindInternal, Op: op, Message: "stored conversation is not valid JSON", Err: err}
		}
		return &Conversation{Version: FormatVersion, Messages: msgs}, nil
	}
	var c Conversation
	if err := json.Unmarshal(value, &c); err != nil {
		return nil, &agentd.Error{Kind: agentd.KindInternal, Op: op, Message: "stored conversation is not valid JSON", Err: err}
	}
	if c.Version > FormatVersion {
		return nil, agentd.Errorf(agentd.KindInternal, op, "stored conversation has format version %d; this agentd reads up to %d", c.Version, FormatVersion)
	}
	c.Version = FormatVersion
	return &c, nil
}

// Prune keeps the last maxTurns exchanges of msgs (an exchange is a user
// message and the assistant's answer). It never splits an exchange and never
// returns a history that starts with an assistant message. maxTurns <= 0
// keeps everything. It returns a slice of msgs.
func Prune(msgs []Entry, maxTurns int) []Entry {
	if maxTurns > 0 {
		// Count exchanges from the end. An exchange starts at a user message
		// that follows an assistant message (or opens the history), so
		// consecutive user messages stay with the answer they got.
		exchanges := 0
		for i := len(msgs) - 1; i >= 0; i-- {
			if msgs[i].Role != agentd.RoleUser || (i > 0 && msgs[i-1].Role == agentd.RoleUser) {
				continue
			}
			exchanges++
			if exchanges == maxTurns {
				msgs = msgs[i:]
				break
			}
		}
	}
	for len(msgs) > 0 && msgs[0].Role != agentd.RoleUser {
		msgs = msgs[1:]
	}
	return msgs
}
