package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/agentd/agentd"
)

// naive is the chat agent of the Workers guide, step for step: KV get of
// conversation:{userId}, JSON parse, append the user's message, call the
// model with the whole history, append the answer, KV put. Nothing orders
// two turns of one user, so concurrent turns read the same history and the
// last put wins: that is the recipe's flaw the run shows.
//
// Two things are added for measuring only: Server-Timing with the model
// call's time, as agentd sends it, and the model's usage in the answer, to
// count tokens. The guide's missing error handling becomes error answers.
type naive struct {
	kv       agentd.KV
	model    *http.Client
	modelURL string
	system   string
	// pruneTurns, when set, keeps only the last that many exchanges — the
	// guide's suggested extension, which the cost scenario uses.
	pruneTurns int
}

// naiveMessage is the guide's stored message: {role, content}.
type naiveMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func (n *naive) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var in struct {
		UserID  string `json:"userId"`
		Message string `json:"message"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		naiveError(w, http.StatusBadRequest, "invalid", err)
		return
	}

	// Retrieve conversation history from KV.
	historyKey := "conversation:" + in.UserID
	var history []naiveMessage
	switch raw, err := n.kv.Get(ctx, historyKey); {
	case err == nil:
		if err := json.Unmarshal(raw.Value, &history); err != nil {
			naiveError(w, http.StatusInternalServerError, "internal", err)
			return
		}
	case agentd.KindOf(err) != agentd.KindNotFound:
		naiveError(w, http.StatusServiceUnavailable, "storage_unavailable", err)
		return
	}

	// Append the user's message and call the model.
	history = append(history, naiveMessage{Role: "user", Content: in.Message})
	body, err := json.Marshal(map[string]any{
		"model":      "claude-sonnet-4-6",
		"max_tokens": 1024,
		"messages":   history,
		"system":     n.system,
	})
	if err != nil {
		naiveError(w, http.StatusInternalServerError, "internal", err)
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.modelURL+"/v1/messages", bytes.NewReader(body))
	if err != nil {
		naiveError(w, http.StatusInternalServerError, "internal", err)
		return
	}
	req.Header.Set("x-api-key", "sk-bench")
	req.Header.Set("anthropic-version", "2023-06-01")
	req.Header.Set("content-type", "application/json")
	start := time.Now()
	resp, err := n.model.Do(req)
	if err != nil {
		naiveError(w, http.StatusServiceUnavailable, "model_unavailable", err)
		return
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	modelTime := time.Since(start)
	var answer struct {
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
		Usage json.RawMessage `json:"usage"`
	}
	if err == nil {
		err = json.Unmarshal(raw, &answer)
	}
	if err != nil || resp.StatusCode != http.StatusOK || len(answer.Content) == 0 {
		naiveError(w, http.StatusBadGateway, "model_error", fmt.Errorf("model answered %d: %v", resp.StatusCode, err))
		return
	}
	assistantMessage := answer.Content[0].Text

	// Store the updated history.
	history = append(history, naiveMessage{Role: "assistant", Content: assistantMessage})
	if n := 2 * n.pruneTurns; n > 0 && len(history) > n {
		history = history[len(history)-n:]
	}
	value, err := json.Marshal(history)
	if err == nil {
		err = n.kv.Put(ctx, historyKey, value, agentd.KVPutOptions{ExpirationTTL: 30 * 24 * time.Hour})
	}
	if err != nil {
		naiveError(w, http.StatusServiceUnavailable, "storage_unavailable", err)
		return
	}

	w.Header().Set("Server-Timing", fmt.Sprintf("model;dur=%.3f", ms(modelTime)))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"message": assistantMessage, "usage": answer.Usage})
}

// naiveError answers in agentd's error shape, so the run counts errors of
// both alike.
func naiveError(w http.ResponseWriter, status int, typ string, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"type": typ, "message": err.Error()}})
}

// stored reads how many messages the recipe kept for a user.
func (n *naive) stored(ctx context.Context, userID string) (int, error) {
	raw, err := n.kv.Get(ctx, "conversation:"+userID)
	if agentd.KindOf(err) == agentd.KindNotFound {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var history []naiveMessage
	if err := json.Unmarshal(raw.Value, &history); err != nil {
		return 0, err
	}
	return len(history), nil
}
