package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/config"
	"github.com/agentd/agentd/model/anthropictest"
	"github.com/agentd/agentd/server"
	"github.com/agentd/agentd/telemetry"
)

func TestReconcileOverHTTP(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"agentd.toml", "seed.sql"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.LoadEmbedded(dir)
	if err != nil {
		t.Fatal(err)
	}
	fake, url := anthropictest.NewServer(t)
	env := map[string]string{"ANTHROPIC_API_KEY": "sk-test", "ANTHROPIC_BASE_URL": url}
	app, err := config.Open(context.Background(), cfg, config.Options{Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close(context.Background()) })
	if err := Register(app); err != nil {
		t.Fatal(err)
	}
	if err := Register(app); err == nil {
		t.Error("registering the same agent twice succeeded")
	}
	srv := httptest.NewServer(server.New(app.ServerConfig(nil)))
	t.Cleanup(srv.Close)

	fake.Enqueue(anthropictest.ToolUse(agent.RespondTool, map[string]any{"matches": []map[string]any{
		{"transactionId": "TX-001", "category": "software", "confidence": 0.97},
		{"transactionId": "TX-002", "category": "rent", "confidence": 0.99},
		{"transactionId": "TX-006", "category": "unknown", "confidence": 0.2},
		{"transactionId": "TX-999", "category": "rent", "confidence": 0.99}, // not in the batch: ignored
	}}))
	post := func() map[string]any {
		resp, err := http.Post(srv.URL+"/agents/reconcile", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST: %d %s", resp.StatusCode, b)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if got := post(); got["reconciled"] != float64(2) || got["pending"] != float64(6) {
		t.Fatalf("first batch: %v", got)
	}
	reqs := fake.Requests()
	if len(reqs) != 1 || reqs[0].ToolChoice == nil || reqs[0].ToolChoice.Name != agent.RespondTool {
		t.Fatalf("%d model calls, want one structured call for the whole batch", len(reqs))
	}
	rows, err := app.DB.Query(context.Background(), `SELECT id, category FROM transactions WHERE reconciled = 1 ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows.Values) != 2 || rows.Values[0][0] != "TX-001" || rows.Values[1][1] != "rent" {
		t.Errorf("reconciled rows %v", rows.Values)
	}
	// The call was audited like any agent's.
	if err := app.Auditor.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	report, err := app.Auditor.Usage(context.Background(), telemetryFilter())
	if err != nil {
		t.Fatal(err)
	}
	if report.Total.Calls != 1 || report.Total.CostNanoUSD == 0 {
		t.Errorf("usage %+v", report.Total)
	}
}

func telemetryFilter() telemetry.UsageFilter { return telemetry.UsageFilter{Agent: "reconcile"} }
