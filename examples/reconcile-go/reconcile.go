package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/agentd/agentd"
	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/config"
)

// matchesSchema is the shape Claude answers in: one categorization per
// transaction. Env.Structured asks for it as a forced tool call, validates
// it and repairs it once, like a declared task agent's output.
const matchesSchema = `{
  "type": "object",
  "required": ["matches"],
  "additionalProperties": false,
  "properties": {
    "matches": {
      "type": "array",
      "items": {
        "type": "object",
        "required": ["transactionId", "category", "confidence"],
        "additionalProperties": false,
        "properties": {
          "transactionId": {"type": "string"},
          "category": {"enum": ["software", "rent", "travel", "meals", "revenue", "unknown"]},
          "confidence": {"type": "number", "minimum": 0, "maximum": 1}
        }
      }
    }
  }
}`

// batchSize bounds one request: the whole batch goes to Claude in one call
// (no N+1), and is written back in one transaction.
const batchSize = 10

// minConfidence is the bar a match must clear to be applied; the rest stay
// unreconciled for a person.
const minConfidence = 0.9

// Register adds the reconcile agent to app.
func Register(app *config.App) error {
	schema, err := agent.CompileSchema("matches.json", []byte(matchesSchema))
	if err != nil {
		return err
	}
	return app.Handle("reconcile", func(ctx context.Context, env *agent.Env, _ json.RawMessage) (any, error) {
		return reconcile(ctx, env, schema)
	}, agent.Limits{MaxSteps: 2})
}

type match struct {
	TransactionID string  `json:"transactionId"`
	Category      string  `json:"category"`
	Confidence    float64 `json:"confidence"`
}

func reconcile(ctx context.Context, env *agent.Env, schema *agent.Schema) (any, error) {
	rows, err := env.DB.Query(ctx, `SELECT id, amount, date, description FROM transactions WHERE reconciled = 0 ORDER BY date LIMIT $1`, int64(batchSize))
	if err != nil {
		return nil, err
	}
	if len(rows.Values) == 0 {
		return map[string]any{"reconciled": 0, "pending": 0}, nil
	}
	var list strings.Builder
	pending := map[string]bool{}
	for _, r := range rows.Maps() {
		fmt.Fprintf(&list, "- %v: %v on %v (%v)\n", r["id"], r["amount"], r["date"], r["description"])
		pending[fmt.Sprint(r["id"])] = true
	}
	out, _, err := env.Structured(ctx, agentd.ModelRequest{
		System: agentd.SystemText("You are a bookkeeping agent. Categorize each transaction as software, rent, travel, meals, revenue or unknown, " +
			"with your confidence from 0 to 1. Use unknown with a low confidence when the description does not tell."),
		Messages:  []agentd.Message{{Role: agentd.RoleUser, Content: []agentd.Block{agentd.TextBlock("Transactions:\n" + list.String())}}},
		MaxTokens: 2048,
	}, schema)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(out)
	var answer struct {
		Matches []match `json:"matches"`
	}
	if err := json.Unmarshal(b, &answer); err != nil {
		return nil, agentd.E(agentd.KindInternal, "reconcile", err)
	}
	applied := 0
	err = env.DB.Tx(ctx, func(ctx context.Context, tx agentd.Querier) error {
		for _, m := range answer.Matches {
			// Only transactions of this batch, only once each, only confident.
			if !pending[m.TransactionID] || m.Confidence < minConfidence {
				continue
			}
			delete(pending, m.TransactionID)
			res, err := tx.Exec(ctx, `UPDATE transactions SET reconciled = 1, category = $1, confidence = $2 WHERE id = $3 AND reconciled = 0`,
				m.Category, m.Confidence, m.TransactionID)
			if err != nil {
				return err
			}
			applied += int(res.RowsAffected)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	env.Logger.Info("reconciled", "applied", applied, "left", len(pending))
	return map[string]any{"reconciled": applied, "pending": len(pending)}, nil
}
