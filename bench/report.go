package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a run measured. Its JSON form is for comparing runs.
type Report struct {
	Date     time.Time `json:"date"`
	Command  string    `json:"command"`
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	Limits   Limits    `json:"limits"`
	Project  string    `json:"project"` // where the project was made
	// AgentdStartRSSKiB is agentd's resident memory once serving.
	AgentdStartRSSKiB int64 `json:"agentd_start_rss_kib,omitempty"`

	Latency     []Scenario  `json:"latency"`
	Throughput  Throughput  `json:"throughput"`
	Capacity    Capacity    `json:"capacity"`
	Correctness Correctness `json:"correctness"`
	Cost        Cost        `json:"cost"`
	Targets     []Target    `json:"targets"`
}

// Machine is where a run ran.
type Machine struct {
	CPUs      int     `json:"cpus"`
	CPU       string  `json:"cpu,omitempty"`
	MemoryGiB float64 `json:"memory_gib,omitempty"`
	GoVersion string  `json:"go_version"`
	OS        string  `json:"os"`
	Arch      string  `json:"arch"`
	Kernel    string  `json:"kernel,omitempty"`
}

// Settings are the run's configuration, as reported.
type Settings struct {
	ModelLatencies     []string  `json:"model_latencies"`
	Rate               float64   `json:"rate"`
	Warmup             string    `json:"warmup"`
	Duration           string    `json:"duration"`
	ThroughputRates    []float64 `json:"throughput_rates"`
	ThroughputLatency  string    `json:"throughput_latency"`
	AddedLimit         string    `json:"added_limit"`
	Capacity           []int     `json:"capacity"`
	CapacityLatency    string    `json:"capacity_latency"`
	Conversations      int       `json:"conversations"`
	Messages           int       `json:"messages"`
	CorrectnessLatency string    `json:"correctness_latency"`
	CostConversations  int       `json:"cost_conversations"`
	CostTurns          int       `json:"cost_turns"`
	HistoryTurns       int       `json:"history_turns"`
	MessageBytes       int       `json:"message_bytes"`
	Stores             string    `json:"stores"`
	Smoke              bool      `json:"smoke"`
}

// Limits are the open file limits the run had.
type Limits struct {
	BenchNOFILE  uint64 `json:"bench_nofile"`
	NOFILEHard   uint64 `json:"nofile_hard"`
	AgentdNOFILE uint64 `json:"agentd_nofile"`
}

// Scenario is one open-loop scenario: requests to one target at one rate
// and model latency. Durations are in milliseconds, of the requests that
// succeeded after the warm-up.
type Scenario struct {
	Target         string         `json:"target"` // floor, agentd or naive
	ModelLatencyMs float64        `json:"model_latency_ms"`
	Rate           float64        `json:"rate"`
	Conversations  int            `json:"conversations,omitempty"`
	Requests       int            `json:"requests"`
	OK             int            `json:"ok"`
	Errors         map[string]int `json:"errors,omitempty"`
	PeakInFlight   int            `json:"peak_in_flight"`
	// Added is end to end minus the model's time as the server reported it
	// (Server-Timing model;dur): what the target adds to the model.
	Added    Percentiles `json:"added"`
	EndToEnd Percentiles `json:"end_to_end"`
	// InHandler is agentd's handler time minus the model's (Server-Timing
	// total − model): lock, history load and store, prompt build, audit.
	InHandler *Percentiles `json:"in_handler,omitempty"`
	// ModelClient is the model time agentd reported minus the fake's own:
	// the SDK, HTTP/2 and TLS, which Added does not count.
	ModelClient *Percentiles `json:"model_client,omitempty"`
	// Lag is how late the generator sent requests; it is part of every
	// latency above, the floor's included.
	Lag           Percentiles `json:"generator_lag"`
	BilledPerTurn float64     `json:"billed_input_tokens_per_turn"`
	// CPU time per request, warm-up included: agentd's (agentd scenarios),
	// and this process's (generator, client, fake model, naive recipe).
	AgentdCPUPerTurnMs float64 `json:"agentd_cpu_per_turn_ms,omitempty"`
	BenchCPUPerTurnMs  float64 `json:"bench_cpu_per_turn_ms"`
	Curve              []Point `json:"added_curve"`
}

// Throughput is agentd at rising rates.
type Throughput struct {
	ModelLatencyMs float64    `json:"model_latency_ms"`
	LimitMs        float64    `json:"limit_ms"`
	Steps          []Scenario `json:"steps"`
	// MaxRate is the highest rate whose p99 added latency stayed under
	// LimitMs without errors; 0 if none did.
	MaxRate float64 `json:"max_rate"`
}

// Capacity is how many waiting turns a node holds.
type Capacity struct {
	ModelLatencyMs float64        `json:"model_latency_ms"`
	Steps          []CapacityStep `json:"steps"`
	MaxHeld        int            `json:"max_held"` // the most in flight at once in a step without errors
}

// CapacityStep is one fresh agentd given Target turns at once.
type CapacityStep struct {
	Target         int            `json:"target"`
	CappedByNOFILE bool           `json:"capped_by_nofile,omitempty"`
	Requests       int            `json:"requests"`
	OK             int            `json:"ok"`
	Errors         int            `json:"errors"`
	ErrorTypes     map[string]int `json:"error_types,omitempty"`
	PeakInFlight   int            `json:"peak_in_flight"`
	// PeakAtModel is the most turns waiting for the model at once; the
	// rest of those in flight were queued in agentd, before or after.
	PeakAtModel int   `json:"peak_at_model"`
	IdleRSSKiB  int64 `json:"idle_rss_kib"`
	PeakRSSKiB  int64 `json:"peak_rss_kib"`
	IdleAnonKiB int64 `json:"idle_anon_kib"`
	PeakAnonKiB int64 `json:"peak_anon_kib"`
	// RSSPerInFlightKiB is (peak RSS − idle RSS) / peak in flight;
	// AnonPerInFlightKiB the same without file-backed pages (bolt's mmap).
	RSSPerInFlightKiB  float64     `json:"rss_per_in_flight_kib"`
	AnonPerInFlightKiB float64     `json:"anon_per_in_flight_kib"`
	EndToEnd           Percentiles `json:"end_to_end"`
	Added              Percentiles `json:"added"`
}

// Correctness compares stored turns with answered ones.
type Correctness struct {
	Conversations  int     `json:"conversations"`
	MessagesEach   int     `json:"messages_each"`
	ModelLatencyMs float64 `json:"model_latency_ms"`
	Agentd         Ledger  `json:"agentd"`
	Naive          Ledger  `json:"naive"`
}

// Ledger is one target's account of the correctness scenario.
type Ledger struct {
	Requests    int            `json:"requests"`
	Succeeded   int            `json:"succeeded"`
	StoredTurns int            `json:"stored_turns"`
	LostTurns   int            `json:"lost_turns"` // answered, but not in the stored history
	Errors      map[string]int `json:"errors,omitempty"`
}

// Cost is billed tokens per conversation.
type Cost struct {
	Conversations   int              `json:"conversations"`
	Turns           int              `json:"turns"`
	Agentd          ConversationCost `json:"agentd"`
	Naive           ConversationCost `json:"naive"`
	NaiveOverAgentd float64          `json:"naive_over_agentd"`
}

// ConversationCost is the mean tokens of one conversation. Billed is in
// input-token equivalents: input + 1.25 × 5-minute cache writes + 2 × 1-hour
// cache writes + 0.1 × cache reads.
type ConversationCost struct {
	Billed     float64        `json:"billed"`
	Input      float64        `json:"input"`
	CacheWrite float64        `json:"cache_write"`
	CacheRead  float64        `json:"cache_read"`
	Output     float64        `json:"output"`
	Errors     map[string]int `json:"errors,omitempty"`
}

// Target is a goal of the issue that asked for this harness, and whether
// the run met it.
type Target struct {
	Goal string `json:"goal"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

func newReport(cfg Config) *Report {
	durs := func(ds []time.Duration) []string {
		out := make([]string, len(ds))
		for i, d := range ds {
			out[i] = d.String()
		}
		return out
	}
	stores := "embedded (bolt, files, sqlite)"
	if cfg.KVURL != "" || cfg.BlobURL != "" || cfg.DBURL != "" {
		stores = fmt.Sprintf("kv %q, blob %q, db %q (empty: embedded)", cfg.KVURL, cfg.BlobURL, cfg.DBURL)
	}
	return &Report{
		Date:    time.Now().UTC().Truncate(time.Second),
		Command: cfg.Command,
		Machine: machine(),
		Settings: Settings{
			ModelLatencies: durs(cfg.ModelLatencies), Rate: cfg.Rate,
			Warmup: cfg.Warmup.String(), Duration: cfg.Duration.String(),
			ThroughputRates: cfg.ThroughputRates, ThroughputLatency: cfg.ThroughputLatency.String(), AddedLimit: cfg.AddedLimit.String(),
			Capacity: cfg.Capacity, CapacityLatency: cfg.CapacityLatency.String(),
			Conversations: cfg.Conversations, Messages: cfg.Messages, CorrectnessLatency: cfg.CorrectnessLatency.String(),
			CostConversations: cfg.CostConversations, CostTurns: cfg.CostTurns,
			HistoryTurns: cfg.HistoryTurns, MessageBytes: cfg.MessageBytes,
			Stores: stores, Smoke: cfg.Smoke,
		},
	}
}

// summarizeScenario summarizes samples of one scenario.
func summarizeScenario(kind string, latency time.Duration, rate float64, samples []sample) Scenario {
	s := Scenario{Target: kind, ModelLatencyMs: ms(latency), Rate: rate, Requests: len(samples), Errors: map[string]int{}}
	var billed float64
	for i := range samples {
		if samples[i].ok() {
			s.OK++
			billed += samples[i].usage.billed()
		} else {
			s.Errors[samples[i].err]++
		}
	}
	if s.OK > 0 {
		s.BilledPerTurn = billed / float64(s.OK)
	}
	added := durations(samples, func(x *sample) (time.Duration, bool) { return x.e2e - x.model, x.ok() })
	s.Added = summarize(added)
	s.Curve = curve(added)
	s.EndToEnd = summarize(durations(samples, func(x *sample) (time.Duration, bool) { return x.e2e, x.ok() }))
	s.Lag = summarize(durations(samples, func(x *sample) (time.Duration, bool) {
		return x.lag, !strings.HasPrefix(x.err, "not sent")
	}))
	optional := func(f func(*sample) (time.Duration, bool)) *Percentiles {
		if p := summarize(durations(samples, f)); p.N > 0 {
			return &p
		}
		return nil
	}
	s.InHandler = optional(func(x *sample) (time.Duration, bool) { return x.handler - x.model, x.ok() && x.handler >= 0 })
	s.ModelClient = optional(func(x *sample) (time.Duration, bool) {
		return x.model - x.fake, x.ok() && x.fake >= 0 && kind != kindFloor
	})
	return s
}

// targetRate is the rate of the latency targets.
const targetRate = 1000

// evaluate checks the run against the targets.
func (rep *Report) evaluate(cfg Config) {
	// The latency targets are read from the agentd scenarios at the target
	// rate, of the latency table or the throughput steps.
	var atRate []Scenario
	for _, s := range append(slices.Clone(rep.Latency), rep.Throughput.Steps...) {
		if s.Target == kindAgentd && s.Rate == targetRate {
			atRate = append(atRate, s)
		}
	}
	for _, s := range atRate {
		at := fmt.Sprintf("at %d/s, model %s", targetRate, modelLabel(s.ModelLatencyMs))
		failed := ""
		if s.OK < s.Requests {
			failed = fmt.Sprintf(" (%d of %d requests failed or were not sent)", s.Requests-s.OK, s.Requests)
		}
		rep.Targets = append(rep.Targets,
			Target{Goal: "p50 added ≤ 0.3 ms " + at, Got: fmt.Sprintf("%.3f ms%s", s.Added.P50, failed), Met: s.OK == s.Requests && s.Added.P50 <= 0.3},
			Target{Goal: "p99 added ≤ 2 ms " + at, Got: fmt.Sprintf("%.3f ms%s", s.Added.P99, failed), Met: s.OK == s.Requests && s.Added.P99 <= 2})
	}
	if len(atRate) == 0 {
		got := "not measured: no agentd scenario ran at that rate"
		if n := len(rep.Throughput.Steps); n > 0 && rep.Throughput.Steps[n-1].Rate < targetRate {
			last := rep.Throughput.Steps[n-1]
			got = fmt.Sprintf("not reached: agentd fell behind at %.0f/s (%d of %d requests failed or were not sent)", last.Rate, last.Requests-last.OK, last.Requests)
		}
		rep.Targets = append(rep.Targets, Target{Goal: fmt.Sprintf("p50 added ≤ 0.3 ms and p99 ≤ 2 ms at %d/s", targetRate), Got: got})
	}
	if n := len(rep.Capacity.Steps); n > 0 {
		last := rep.Capacity.Steps[n-1]
		rep.Targets = append(rep.Targets,
			Target{
				Goal: fmt.Sprintf("%d in-flight conversations, model %s, zero errors", last.Target, cfg.CapacityLatency),
				Got:  fmt.Sprintf("%d in flight, %d errors", last.PeakInFlight, last.Errors),
				Met:  last.Errors == 0 && last.PeakInFlight >= last.Target && !last.CappedByNOFILE,
			},
			Target{
				Goal: fmt.Sprintf("≤ 50 KiB RSS per in-flight turn at %d", last.Target),
				Got:  fmt.Sprintf("%.1f KiB (%.1f KiB without mapped files)", last.RSSPerInFlightKiB, last.AnonPerInFlightKiB),
				Met:  last.PeakRSSKiB > 0 && last.RSSPerInFlightKiB <= 50,
			})
	}
	if co := rep.Cost; co.Agentd.Billed > 0 {
		rep.Targets = append(rep.Targets, Target{
			Goal: fmt.Sprintf("a %d-turn conversation over a %d-token context ≥ 5× cheaper than the naive loop (billed input)", co.Turns, handbookTokens),
			Got:  fmt.Sprintf("%.2f× (agentd %.0f, naive %.0f)", co.NaiveOverAgentd, co.Agentd.Billed, co.Naive.Billed),
			Met:  co.NaiveOverAgentd >= 5,
		})
	}
	c := rep.Correctness
	rep.Targets = append(rep.Targets, Target{
		Goal: "0 lost turns in agentd where the naive recipe loses some",
		Got:  fmt.Sprintf("agentd %d, naive %d", c.Agentd.LostTurns, c.Naive.LostTurns),
		Met:  c.Agentd.LostTurns == 0 && c.Naive.LostTurns > 0,
	})
}

// Failures are the reasons the run must exit non-zero: agentd lost a turn,
// or, in a smoke run, any agentd request failed.
func (rep *Report) Failures() []string {
	var out []string
	if n := rep.Correctness.Agentd.LostTurns; n > 0 {
		out = append(out, fmt.Sprintf("agentd lost %d turns", n))
	}
	if !rep.Settings.Smoke {
		return out
	}
	failed := func(what string, errs map[string]int) {
		if len(errs) > 0 {
			out = append(out, fmt.Sprintf("%s: agentd requests failed: %s", what, errorList(errs)))
		}
	}
	for _, s := range append(slices.Clone(rep.Latency), rep.Throughput.Steps...) {
		if s.Target == kindAgentd {
			failed(fmt.Sprintf("%.0f/s, model %.0f ms", s.Rate, s.ModelLatencyMs), s.Errors)
		}
	}
	failed("correctness", rep.Correctness.Agentd.Errors)
	failed("cost", rep.Cost.Agentd.Errors)
	for _, s := range rep.Capacity.Steps {
		failed(fmt.Sprintf("capacity %d", s.Target), s.ErrorTypes)
	}
	return out
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

func errorList(errs map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(errs)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, errs[k]))
	}
	return strings.Join(parts, ", ")
}

func modelLabel(msv float64) string {
	return time.Duration(msv * float64(time.Millisecond)).String()
}

func cpu(msv float64) string {
	if msv == 0 {
		return "–"
	}
	return fmt.Sprintf("%.3f", msv)
}

func pct(p *Percentiles) string {
	if p == nil {
		return "–"
	}
	return fmt.Sprintf("%.3f", p.P50)
}

// WriteTable writes the report for people.
func (rep *Report) WriteTable(w io.Writer) error {
	m := rep.Machine
	fmt.Fprintf(w, "agentd bench, %s: %d CPUs (%s), %.1f GiB, %s %s/%s, kernel %s\n",
		rep.Date.Format("2006-01-02 15:04 MST"), m.CPUs, m.CPU, m.MemoryGiB, m.GoVersion, m.OS, m.Arch, m.Kernel)
	fmt.Fprintf(w, "command: %s\nstores: %s; history %d turns; messages %d bytes; open files: bench %d, agentd %d (hard %d)\n\n",
		rep.Command, rep.Settings.Stores, rep.Settings.HistoryTurns, rep.Settings.MessageBytes,
		rep.Limits.BenchNOFILE, rep.Limits.AgentdNOFILE, rep.Limits.NOFILEHard)

	var errs []string
	noteErrors := func(what string, e map[string]int) {
		if len(e) > 0 {
			errs = append(errs, fmt.Sprintf("  %s: %s", what, errorList(e)))
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "Latency, ms (added = end to end − the model time the server reports; in handler, model client: p50; CPU: ms per request)\n")
	fmt.Fprintln(tw, "target\tmodel\trate\trequests\terrors\tadded p50\tp90\tp99\tp99.9\tmax\te2e p50\tin handler\tmodel client\tgen lag p99\tagentd CPU\tbench CPU\ttokens/turn\t")
	for _, s := range rep.Latency {
		fmt.Fprintf(tw, "%s\t%s\t%.0f/s\t%d\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%s\t%s\t%.3f\t%s\t%.3f\t%.0f\t\n",
			s.Target, modelLabel(s.ModelLatencyMs), s.Rate, s.Requests, s.Requests-s.OK,
			s.Added.P50, s.Added.P90, s.Added.P99, s.Added.P999, s.Added.Max, s.EndToEnd.P50,
			pct(s.InHandler), pct(s.ModelClient), s.Lag.P99, cpu(s.AgentdCPUPerTurnMs), s.BenchCPUPerTurnMs, s.BilledPerTurn)
		noteErrors(fmt.Sprintf("%s, model %s", s.Target, modelLabel(s.ModelLatencyMs)), s.Errors)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	tp := rep.Throughput
	fmt.Fprintf(w, "\nThroughput: agentd, model %s, until p99 added ≥ %.0f ms or an error\n", modelLabel(tp.ModelLatencyMs), tp.LimitMs)
	fmt.Fprintln(tw, "rate\trequests\terrors\tadded p50\tp99\tp99.9\tmax\tin flight\tgen lag p99\tagentd CPU\tbench CPU\t")
	for _, s := range tp.Steps {
		fmt.Fprintf(tw, "%.0f/s\t%d\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%.3f\t%s\t%.3f\t\n",
			s.Rate, s.Requests, s.Requests-s.OK, s.Added.P50, s.Added.P99, s.Added.P999, s.Added.Max, s.PeakInFlight, s.Lag.P99,
			cpu(s.AgentdCPUPerTurnMs), s.BenchCPUPerTurnMs)
		noteErrors(fmt.Sprintf("throughput %.0f/s", s.Rate), s.Errors)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "highest rate with p99 added < %.0f ms: %.0f/s\n", tp.LimitMs, tp.MaxRate)

	cp := rep.Capacity
	fmt.Fprintf(w, "\nCapacity: a fresh agentd per step, every turn in flight at once, model %s\n", modelLabel(cp.ModelLatencyMs))
	fmt.Fprintln(tw, "turns\tin flight\tat model\terrors\tidle RSS MiB\tpeak RSS MiB\tKiB/turn\tanon KiB/turn\te2e p50 ms\te2e p99 ms\tadded p99 ms\t")
	for _, s := range cp.Steps {
		capped := ""
		if s.CappedByNOFILE {
			capped = " (capped)"
		}
		fmt.Fprintf(tw, "%d%s\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\n",
			s.Target, capped, s.PeakInFlight, s.PeakAtModel, s.Errors, float64(s.IdleRSSKiB)/1024, float64(s.PeakRSSKiB)/1024,
			s.RSSPerInFlightKiB, s.AnonPerInFlightKiB, s.EndToEnd.P50, s.EndToEnd.P99, s.Added.P99)
		noteErrors(fmt.Sprintf("capacity %d", s.Target), s.ErrorTypes)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "held with zero errors: %d turns in flight\n", cp.MaxHeld)

	c := rep.Correctness
	fmt.Fprintf(w, "\nCorrectness: %d conversations × %d messages, each sent while the previous is with the model (%s)\n",
		c.Conversations, c.MessagesEach, modelLabel(c.ModelLatencyMs))
	fmt.Fprintln(tw, "target\trequests\tanswered\tstored turns\tlost turns\t")
	for _, l := range []struct {
		name string
		l    Ledger
	}{{kindAgentd, c.Agentd}, {kindNaive, c.Naive}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t\n", l.name, l.l.Requests, l.l.Succeeded, l.l.StoredTurns, l.l.LostTurns)
		noteErrors("correctness "+l.name, l.l.Errors)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	co := rep.Cost
	fmt.Fprintf(w, "\nCost per conversation of %d turns over a %d-token handbook (mean of %d; billed = input + 1.25×5m writes + 2×1h writes + 0.1×reads)\n", co.Turns, handbookTokens, co.Conversations)
	fmt.Fprintf(w, "  agentd: prompt caching and compaction (at %d tokens, keeping %d turns); naive: full history pruned to %d turns, no caching\n", costCompactAt, costKeepTurns, naivePruneTurns)
	fmt.Fprintln(tw, "target\tbilled\tinput\tcache write\tcache read\toutput\t")
	for _, l := range []struct {
		name string
		c    ConversationCost
	}{{kindAgentd, co.Agentd}, {kindNaive, co.Naive}} {
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t\n", l.name, l.c.Billed, l.c.Input, l.c.CacheWrite, l.c.CacheRead, l.c.Output)
		noteErrors("cost "+l.name, l.c.Errors)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "naive / agentd: %.2f×\n", co.NaiveOverAgentd)

	if len(errs) > 0 {
		fmt.Fprintf(w, "\nErrors by type\n%s\n", strings.Join(errs, "\n"))
	}
	fmt.Fprintln(w, "\nTargets")
	for _, t := range rep.Targets {
		mark := "MISSED"
		if t.Met {
			mark = "met"
		}
		fmt.Fprintf(w, "  %-6s  %s: %s\n", mark, t.Goal, t.Got)
	}
	return nil
}
