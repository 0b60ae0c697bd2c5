package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd/store/bolt"
)

// Config says what a run measures. Zero fields take Default's values,
// except the Agentd command, which is required.
type Config struct {
	// Agentd runs agentd: the executable and any leading arguments; the run
	// appends "serve DIR --listen 127.0.0.1:0".
	Agentd []string
	// Env is agentd's base environment (typically os.Environ()). Settings
	// that would point agentd elsewhere than the run (ANTHROPIC_*,
	// AGENTD_*_URL, AGENTD_LISTEN, SSL_CERT_*) are dropped from it.
	Env []string
	// Dir is where the temporary project is made ("": the system's
	// temporary directory). Its disk decides what a KV write's fsync costs.
	Dir  string
	Keep bool // keep the project afterwards

	// Store URLs for agentd (AGENTD_KV_URL, …); empty: the project's
	// embedded stores. The naive recipe always uses an embedded bolt KV.
	KVURL, BlobURL, DBURL string

	// The latency table: each model latency, at Rate, for the floor, agentd
	// and the naive recipe, Warmup then Duration each.
	ModelLatencies   []time.Duration
	Rate             float64
	Warmup, Duration time.Duration

	// Throughput: agentd at each rate in turn, at ThroughputLatency, until
	// a request fails or agentd falls behind; the highest rate whose p99
	// added latency stays under AddedLimit is the throughput. (An empty list
	// of latencies, rates or capacities skips that part.)
	ThroughputRates   []float64
	ThroughputLatency time.Duration
	AddedLimit        time.Duration

	// Capacity: for each count, a fresh agentd gets that many turns of
	// distinct users within half of CapacityLatency, so all are in flight.
	Capacity        []int
	CapacityLatency time.Duration

	// Correctness: Conversations users each get Messages messages, the next
	// one sent while the previous is still with the model (every half of
	// CorrectnessLatency).
	Conversations, Messages int
	CorrectnessLatency      time.Duration

	// Cost: CostConversations conversations of CostTurns turns each.
	CostConversations, CostTurns int

	HistoryTurns int // the history of a measured turn, in exchanges
	MessageBytes int // the size of each message

	// FullFake sends every model request through anthropictest's
	// validating fake; by default plain text requests are answered after one
	// decode, so the stand-in for the model costs this machine less CPU.
	FullFake bool

	// Smoke marks a smoke run: any failed agentd request fails it.
	Smoke bool
	// Command is the command line, for the report.
	Command string
	// Progress, when set, is told what the run is doing.
	Progress io.Writer
}

// Default is the full run: a few minutes.
func Default() Config {
	return Config{
		ModelLatencies:     []time.Duration{0, 200 * time.Millisecond, 2 * time.Second},
		Rate:               200,
		Warmup:             time.Second,
		Duration:           5 * time.Second,
		ThroughputRates:    []float64{100, 250, 500, 1000, 2000},
		ThroughputLatency:  200 * time.Millisecond,
		AddedLimit:         5 * time.Millisecond,
		Capacity:           []int{1250, 2500, 5000, 10000},
		CapacityLatency:    2 * time.Second,
		Conversations:      100,
		Messages:           8,
		CorrectnessLatency: 200 * time.Millisecond,
		CostConversations:  10,
		CostTurns:          30,
		HistoryTurns:       20,
		MessageBytes:       200,
	}
}

// Smoke is a run of a few seconds that exercises every part of a full one.
func Smoke() Config {
	return Config{
		ModelLatencies:     []time.Duration{0, 20 * time.Millisecond},
		Rate:               100,
		Warmup:             100 * time.Millisecond,
		Duration:           300 * time.Millisecond,
		ThroughputRates:    []float64{100, 200},
		ThroughputLatency:  20 * time.Millisecond,
		AddedLimit:         5 * time.Millisecond,
		Capacity:           []int{200},
		CapacityLatency:    400 * time.Millisecond,
		Conversations:      10,
		Messages:           4,
		CorrectnessLatency: 50 * time.Millisecond,
		CostConversations:  2,
		CostTurns:          22,
		HistoryTurns:       20,
		MessageBytes:       200,
		Smoke:              true,
	}
}

func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Agentd) == 0 || c.Agentd[0] == "" {
		bad("no agentd command to run")
	}
	if c.Rate <= 0 {
		bad("rate must be positive")
	}
	for _, r := range c.ThroughputRates {
		if r <= 0 {
			bad("throughput rates must be positive")
		}
	}
	for _, n := range c.Capacity {
		if n <= 0 {
			bad("capacity counts must be positive")
		}
	}
	for _, d := range append([]time.Duration{c.ThroughputLatency, c.CapacityLatency, c.CorrectnessLatency}, c.ModelLatencies...) {
		if d < 0 {
			bad("model latencies must not be negative")
		}
	}
	if c.CorrectnessLatency <= 0 {
		bad("the correctness latency must be positive: messages overlap within it")
	}
	if c.Duration <= 0 || c.Warmup < 0 {
		bad("duration must be positive and warmup not negative")
	}
	if c.HistoryTurns < 1 || c.HistoryTurns >= ledgerTurns {
		bad("history turns must be between 1 and %d", ledgerTurns-1)
	}
	if c.MessageBytes < 1 || c.Conversations < 1 || c.Messages < 1 || c.CostConversations < 1 || c.CostTurns < 1 {
		bad("message bytes, conversations, messages and cost counts must be at least 1")
	}
	return errors.Join(errs...)
}

// runner holds what the phases of a run share.
type runner struct {
	cfg    Config
	rep    *Report
	runID  string // makes the run's fresh conversations unique in a shared store
	dir    string // the project
	fill   string // message filler
	hist   []naiveMessage
	model  *model
	naive  *naive
	naiveS *httptest.Server
	client *http.Client // to agentd and the naive recipe
	floor  [2][]byte    // the floor's request body around the message text
	maxIn  int          // requests the generator may have in flight
	seq    int          // scenario counter, for bench ids
}

// Run runs the benchmark. It returns the report of what it measured, or an
// error if it could not measure (agentd did not start, a store could not
// be opened): a run that measures failures still returns its report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, rep: newReport(cfg), fill: filler(cfg.MessageBytes)}
	defer r.close()
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	if err := r.mainPhases(ctx); err != nil {
		return nil, err
	}
	if err := r.capacity(ctx); err != nil {
		return nil, err
	}
	r.rep.evaluate(cfg)
	return r.rep, nil
}

func (r *runner) logf(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "bench: "+format+"\n", args...)
	}
}

func (r *runner) setup(ctx context.Context) error {
	soft, hard, err := raiseNOFILE()
	r.rep.Limits.BenchNOFILE, r.rep.Limits.NOFILEHard = soft, hard
	r.maxIn = 1 << 20
	if err == nil {
		r.maxIn = int(soft) - fdReserve
	}

	var id [4]byte
	_, _ = rand.Read(id[:])
	r.runID = hex.EncodeToString(id[:])
	if r.cfg.Dir != "" {
		if err := os.MkdirAll(r.cfg.Dir, 0o700); err != nil {
			return err
		}
	}
	if r.dir, err = os.MkdirTemp(r.cfg.Dir, "agentd-bench-"); err != nil {
		return err
	}
	r.rep.Project = r.dir
	if err := writeProject(r.dir, r.cfg.HistoryTurns); err != nil {
		return err
	}
	if r.model, err = startModel(r.dir, r.cfg.FullFake); err != nil {
		return err
	}
	r.hist = history(r.cfg.HistoryTurns, r.fill)
	prefix, suffix, err := floorBody(r.hist)
	if err != nil {
		return err
	}
	r.floor = [2][]byte{prefix, suffix}

	users := r.agentdUsers()
	r.logf("project %s; writing %d conversations of %d turns for agentd", r.dir, users, r.cfg.HistoryTurns)
	if err := prewarm(ctx, r.dir, r.childGetenv, userIDs("u", 0, users), r.hist); err != nil {
		return fmt.Errorf("pre-warming agentd's conversations: %w", err)
	}

	kv, err := bolt.Open(filepath.Join(r.dir, "naive", "kv.db"))
	if err != nil {
		return err
	}
	r.naive = &naive{kv: kv, model: r.model.client(), modelURL: r.model.url(), system: systemPrompt}
	var naiveUsers []string
	for i, l := range r.cfg.ModelLatencies {
		naiveUsers = append(naiveUsers, userIDs(naivePrefix(i), 0, r.spread(r.cfg.Rate, l))...)
	}
	r.logf("writing %d conversations of %d turns for the naive recipe", len(naiveUsers), r.cfg.HistoryTurns)
	if err := prewarmNaive(ctx, kv, naiveUsers, r.hist); err != nil {
		return fmt.Errorf("pre-warming the naive recipe's conversations: %w", err)
	}
	r.naiveS = httptest.NewServer(r.naive)

	maxConns := r.maxIn
	r.client = &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: maxConns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}}
	return nil
}

// fdReserve is the file descriptors the generator leaves for everything
// but its connections to agentd (the fake's connections, files, stdio).
const fdReserve = 512

func (r *runner) close() {
	if r.client != nil {
		r.client.CloseIdleConnections()
	}
	if r.naiveS != nil {
		r.naiveS.Close()
	}
	if r.naive != nil {
		_ = r.naive.kv.Close()
	}
	if r.model != nil {
		r.model.close()
	}
	if r.dir != "" && !r.cfg.Keep {
		_ = os.RemoveAll(r.dir)
	}
}

// childGetenv is the store environment the run gives agentd, so the
// pre-warm opens the stores agentd will.
func (r *runner) childGetenv(k string) string {
	switch k {
	case "AGENTD_KV_URL":
		return r.cfg.KVURL
	case "AGENTD_BLOB_URL":
		return r.cfg.BlobURL
	case "AGENTD_DB_URL":
		return r.cfg.DBURL
	}
	return ""
}

func (r *runner) startAgentd(ctx context.Context) (*child, error) {
	set := map[string]string{
		"ANTHROPIC_API_KEY":  "sk-bench",
		"ANTHROPIC_BASE_URL": r.model.url(),
		"SSL_CERT_FILE":      r.model.certFile,
	}
	for _, k := range []string{"AGENTD_KV_URL", "AGENTD_BLOB_URL", "AGENTD_DB_URL"} {
		if v := r.childGetenv(k); v != "" {
			set[k] = v
		}
	}
	a, err := startAgentd(ctx, r.cfg.Agentd, r.dir, childEnv(r.cfg.Env, set))
	if err != nil {
		return nil, err
	}
	if soft, _, err := childNOFILE(a.pid); err == nil {
		r.rep.Limits.AgentdNOFILE = soft
	}
	return a, nil
}

// spread is how many conversations a scenario at rate and model latency
// cycles through, so that a conversation's next turn comes only after its
// last was answered (with half a second to spare): the scenarios measure
// turns, not waits for a conversation's previous turn.
func (r *runner) spread(rate float64, latency time.Duration) int {
	return max(1, int(math.Ceil(rate*(latency+500*time.Millisecond).Seconds())))
}

// agentdUsers is how many pre-warmed conversations agentd's scenarios use.
func (r *runner) agentdUsers() int {
	n := 1
	for _, l := range r.cfg.ModelLatencies {
		n = max(n, r.spread(r.cfg.Rate, l))
	}
	for _, rate := range r.cfg.ThroughputRates {
		n = max(n, r.spread(rate, r.cfg.ThroughputLatency))
	}
	for _, c := range r.cfg.Capacity {
		n = max(n, c)
	}
	return n
}

func naivePrefix(latencyIndex int) string { return "n" + strconv.Itoa(latencyIndex) + "-" }

func userIDs(prefix string, from, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%05d", prefix, from+i)
	}
	return ids
}

// Kinds of scenario.
const (
	kindFloor  = "floor"
	kindAgentd = "agentd"
	kindNaive  = "naive"
)

// turnTarget is a chat turn target: request i goes to users[i%len(users)].
func (r *runner) turnTarget(url string, users []string, latency time.Duration) target {
	r.seq++
	prefix := "s" + strconv.Itoa(r.seq) + "-"
	return target{
		client:  r.client,
		url:     url,
		timeout: latency + time.Minute,
		body: func(i int) ([]byte, string) {
			id := prefix + strconv.Itoa(i)
			return chatBody(users[i%len(users)], id, r.fill), id
		},
	}
}

func (r *runner) floorTarget(latency time.Duration) target {
	r.seq++
	prefix := "s" + strconv.Itoa(r.seq) + "-"
	h := http.Header{}
	h.Set("x-api-key", "sk-bench")
	h.Set("anthropic-version", "2023-06-01")
	return target{
		client:  r.model.client(),
		url:     r.model.url() + "/v1/messages",
		header:  h,
		timeout: latency + time.Minute,
		body: func(i int) ([]byte, string) {
			id := prefix + strconv.Itoa(i)
			b := make([]byte, 0, len(r.floor[0])+len(id)+len(r.fill)+len(r.floor[1])+3)
			b = append(append(b, r.floor[0]...), '[')
			b = append(append(b, id...), "] "...)
			b = append(append(b, r.fill...), r.floor[1]...)
			return b, id
		},
	}
}

// scenario runs one open-loop scenario and summarizes what followed the
// warm-up.
func (r *runner) scenario(ctx context.Context, kind string, t target, latency time.Duration, rate float64, users int, a *child) Scenario {
	r.model.setLatency(latency)
	warm := int(math.Ceil(rate * r.cfg.Warmup.Seconds()))
	n := warm + int(math.Ceil(rate*r.cfg.Duration.Seconds()))
	r.logf("%-6s model %-6s %6.0f/s: %d requests over %d conversations", kind, latency, rate, n, users)
	benchCPU, agentdCPU, agentdErr := selfCPU(), time.Duration(0), error(nil)
	if kind == kindAgentd {
		agentdCPU, agentdErr = cpuTime(a.pid)
	}
	// A backlog of two seconds of arrivals beyond the model's own wait is
	// overload: the scenario stops there instead of queueing for minutes.
	overload := int(rate*(latency+2*time.Second).Seconds()) + 64
	samples, peak := openLoop(ctx, rate, n, min(r.maxIn, overload), t)
	benchCPU = selfCPU() - benchCPU
	if kind == kindAgentd && agentdErr == nil {
		if now, err := cpuTime(a.pid); err == nil {
			agentdCPU = now - agentdCPU
		} else {
			agentdErr = err
		}
	}
	fakeTimes := r.model.takeTimes()
	for i := range samples {
		if d, ok := fakeTimes[samples[i].id]; ok {
			samples[i].fake = d
		}
	}
	s := summarizeScenario(kind, latency, rate, samples[warm:])
	s.Conversations, s.PeakInFlight = users, peak
	// CPU per request of the whole scenario, warm-up included.
	s.BenchCPUPerTurnMs = ms(benchCPU) / float64(n)
	if kind == kindAgentd && agentdErr == nil {
		s.AgentdCPUPerTurnMs = ms(agentdCPU) / float64(n)
	}
	if kind == kindAgentd {
		r.logf("       added p50 %.3f ms, p99 %.3f ms; %d errors", s.Added.P50, s.Added.P99, s.Requests-s.OK)
	}
	return s
}

func (r *runner) mainPhases(ctx context.Context) (err error) {
	a, err := r.startAgentd(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if stopErr := a.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	r.logf("agentd (pid %d) serving on %s", a.pid, a.url)
	if m, err := readMemory(a.pid); err == nil {
		r.rep.AgentdStartRSSKiB = m.RSS
	}
	agentdUsers := userIDs("u", 0, r.agentdUsers())

	for li, l := range r.cfg.ModelLatencies {
		p := r.spread(r.cfg.Rate, l)
		r.rep.Latency = append(r.rep.Latency, r.scenario(ctx, kindFloor, r.floorTarget(l), l, r.cfg.Rate, 0, a))
		t := r.turnTarget(a.url+"/agents/"+benchAgent, agentdUsers[:p], l)
		r.rep.Latency = append(r.rep.Latency, r.scenario(ctx, kindAgentd, t, l, r.cfg.Rate, p, a))
		t = r.turnTarget(r.naiveS.URL, userIDs(naivePrefix(li), 0, p), l)
		r.rep.Latency = append(r.rep.Latency, r.scenario(ctx, kindNaive, t, l, r.cfg.Rate, p, a))
		if err := ctx.Err(); err != nil {
			return err
		}
	}

	tp := &r.rep.Throughput
	tp.ModelLatencyMs, tp.LimitMs = ms(r.cfg.ThroughputLatency), ms(r.cfg.AddedLimit)
	bound := false // a step has reached the limit: MaxRate is settled
	for _, rate := range r.cfg.ThroughputRates {
		p := r.spread(rate, r.cfg.ThroughputLatency)
		t := r.turnTarget(a.url+"/agents/"+benchAgent, agentdUsers[:p], r.cfg.ThroughputLatency)
		s := r.scenario(ctx, kindAgentd, t, r.cfg.ThroughputLatency, rate, p, a)
		tp.Steps = append(tp.Steps, s)
		if s.OK < s.Requests {
			break // overloaded, or failing: higher rates say nothing more
		}
		if s.Added.P99 >= tp.LimitMs {
			bound = true
		}
		if !bound {
			tp.MaxRate = rate
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}

	if err := r.correctness(ctx, a); err != nil {
		return err
	}
	return r.cost(ctx, a)
}

// correctness sends overlapping messages to the same conversations of
// agentd's ledger agent and of the naive recipe, then compares what each
// stored with the turns it answered.
func (r *runner) correctness(ctx context.Context, a *child) error {
	c := &r.rep.Correctness
	c.Conversations, c.MessagesEach, c.ModelLatencyMs = r.cfg.Conversations, r.cfg.Messages, ms(r.cfg.CorrectnessLatency)
	users := userIDs("c-"+r.runID+"-", 0, r.cfg.Conversations)
	// Each user's next message comes half a model latency after the last:
	// two of its turns are always with the model at once.
	rate := float64(len(users)) / (r.cfg.CorrectnessLatency / 2).Seconds()
	n := len(users) * r.cfg.Messages
	r.model.setLatency(r.cfg.CorrectnessLatency)

	run := func(name, url string, stored func(context.Context, string) (int, error)) (Ledger, error) {
		r.logf("%-6s correctness: %d conversations × %d overlapping messages", name, len(users), r.cfg.Messages)
		t := r.turnTarget(url, users, r.cfg.CorrectnessLatency)
		samples, _ := openLoop(ctx, rate, n, r.maxIn, t)
		r.model.takeTimes()
		l := Ledger{Requests: n, Errors: map[string]int{}}
		ok := make([]int, len(users))
		for i, s := range samples {
			if s.ok() {
				ok[i%len(users)]++
				l.Succeeded++
			} else {
				l.Errors[s.err]++
			}
		}
		counts, err := parallel(ctx, users, stored)
		if err != nil {
			return l, err
		}
		for i, msgs := range counts {
			l.StoredTurns += msgs / 2
			l.LostTurns += max(0, ok[i]-msgs/2)
		}
		return l, nil
	}
	var err error
	if c.Agentd, err = run(kindAgentd, a.url+"/agents/"+ledgerAgent, func(ctx context.Context, u string) (int, error) {
		return r.storedTurns(ctx, a.url+"/agents/"+ledgerAgent+"/conversations/"+u)
	}); err != nil {
		return fmt.Errorf("reading agentd's conversations: %w", err)
	}
	if c.Naive, err = run(kindNaive, r.naiveS.URL, r.naive.stored); err != nil {
		return fmt.Errorf("reading the naive recipe's conversations: %w", err)
	}
	return nil
}

// storedTurns reads the messages agentd stored for a conversation.
func (r *runner) storedTurns(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var conv struct {
		Turns int `json:"turns"`
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&conv); err != nil {
		return 0, err
	}
	return conv.Turns, nil
}

// parallel calls f for each user, a few at a time, and returns the results
// in order.
func parallel(ctx context.Context, users []string, f func(context.Context, string) (int, error)) ([]int, error) {
	out := make([]int, len(users))
	errs := make([]error, len(users))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, u := range users {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i], errs[i] = f(ctx, u)
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// cost runs whole conversations, turn after turn, against agentd's bench
// agent and the naive recipe, and sums what each turn is billed.
func (r *runner) cost(ctx context.Context, a *child) error {
	c := &r.rep.Cost
	c.Conversations, c.Turns = r.cfg.CostConversations, r.cfg.CostTurns
	r.model.setLatency(0)
	run := func(name, url, prefix string) ConversationCost {
		r.logf("%-6s cost: %d conversations of %d turns", name, c.Conversations, c.Turns)
		users := userIDs(prefix+r.runID+"-", 0, c.Conversations)
		t := r.turnTarget(url, users, 0)
		totals := make([]usage, len(users))
		billed := make([]float64, len(users))
		errs := make([]map[string]int, len(users))
		var wg sync.WaitGroup
		for u := range users {
			wg.Go(func() {
				errs[u] = map[string]int{}
				for turn := range c.Turns {
					body, _ := t.body(turn*len(users) + u)
					var s sample
					t.do(ctx, body, &s)
					if !s.ok() {
						errs[u][s.err]++
						continue
					}
					billed[u] += s.usage.billed()
					totals[u].InputTokens += s.usage.InputTokens
					totals[u].OutputTokens += s.usage.OutputTokens
					totals[u].CacheCreationInputTokens += s.usage.CacheCreationInputTokens
					totals[u].CacheReadInputTokens += s.usage.CacheReadInputTokens
				}
			})
		}
		wg.Wait()
		r.model.takeTimes()
		cc := ConversationCost{Errors: map[string]int{}}
		k := float64(len(users))
		for u := range users {
			cc.Billed += billed[u] / k
			cc.Input += float64(totals[u].InputTokens) / k
			cc.Output += float64(totals[u].OutputTokens) / k
			cc.CacheWrite += float64(totals[u].CacheCreationInputTokens) / k
			cc.CacheRead += float64(totals[u].CacheReadInputTokens) / k
			for e, n := range errs[u] {
				cc.Errors[e] += n
			}
		}
		return cc
	}
	// The naive recipe of the comparison carries the same handbook, keeps
	// the last 10 turns as the guide suggests, and caches nothing.
	costNaive := &naive{kv: r.naive.kv, model: r.model.client(), modelURL: r.model.url(), system: handbook(), pruneTurns: naivePruneTurns}
	srv := httptest.NewServer(costNaive)
	defer srv.Close()
	c.Agentd = run(kindAgentd, a.url+"/agents/"+costAgent, "k-")
	c.Naive = run(kindNaive, srv.URL, "k-")
	if c.Agentd.Billed > 0 {
		c.NaiveOverAgentd = c.Naive.Billed / c.Agentd.Billed
	}
	return ctx.Err()
}

// capacity runs each capacity step on a fresh agentd, so each step's idle
// memory is a fresh node's.
func (r *runner) capacity(ctx context.Context) error {
	c := &r.rep.Capacity
	c.ModelLatencyMs = ms(r.cfg.CapacityLatency)
	for _, n := range r.cfg.Capacity {
		step, err := r.capacityStep(ctx, n)
		if err != nil {
			return err
		}
		c.Steps = append(c.Steps, step)
		if step.Errors == 0 && step.PeakInFlight > c.MaxHeld {
			c.MaxHeld = step.PeakInFlight
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) capacityStep(ctx context.Context, n int) (step CapacityStep, err error) {
	step.Target = n
	a, err := r.startAgentd(ctx)
	if err != nil {
		return step, err
	}
	defer func() {
		if stopErr := a.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
		// The next step's agentd is another server: these connections are
		// dead.
		r.client.CloseIdleConnections()
	}()
	// Each waiting turn holds a connection to agentd here and a stream (not
	// a connection) to the model there: the lower of both limits bounds n.
	limit := r.maxIn
	if r.rep.Limits.AgentdNOFILE > 0 {
		limit = min(limit, int(r.rep.Limits.AgentdNOFILE)-fdReserve)
	}
	if n > limit {
		r.logf("capacity %d is over the file descriptor limit: capped at %d", n, limit)
		n, step.CappedByNOFILE = limit, true
	}
	users := userIDs("u", 0, n)

	// Warm up with instant answers, so idle memory is a server that has
	// served (code paged in, pools and the model connection made).
	r.model.setLatency(0)
	warm := r.turnTarget(a.url+"/agents/"+benchAgent, users[:min(n, 64)], 0)
	openLoop(ctx, 500, 64, r.maxIn, warm)
	r.model.takeTimes()
	idle, memErr := readMemory(a.pid)
	step.IdleRSSKiB, step.IdleAnonKiB = idle.RSS, idle.Anon
	resetPeak(a.pid)

	r.model.setLatency(r.cfg.CapacityLatency)
	rate := float64(n) / (r.cfg.CapacityLatency / 2).Seconds()
	r.logf("capacity: %d turns of distinct conversations at %.0f/s, model %s", n, rate, r.cfg.CapacityLatency)
	stop := make(chan struct{})
	var peak rss
	var sampled sync.WaitGroup
	sampled.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if m, err := readMemory(a.pid); err == nil {
				peak.RSS, peak.Anon, peak.HWM = max(peak.RSS, m.RSS), max(peak.Anon, m.Anon), max(peak.HWM, m.HWM)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	t := r.turnTarget(a.url+"/agents/"+benchAgent, users, r.cfg.CapacityLatency)
	r.model.takePeak()
	samples, inFlight := openLoop(ctx, rate, n, r.maxIn, t)
	step.PeakAtModel = r.model.takePeak()
	close(stop)
	sampled.Wait()
	r.model.takeTimes()

	s := summarizeScenario(kindAgentd, r.cfg.CapacityLatency, rate, samples)
	step.Requests, step.OK, step.ErrorTypes, step.PeakInFlight = s.Requests, s.OK, s.Errors, inFlight
	step.Errors = s.Requests - s.OK
	step.EndToEnd, step.Added = s.EndToEnd, s.Added
	if memErr == nil && inFlight > 0 {
		step.PeakRSSKiB, step.PeakAnonKiB = max(peak.RSS, peak.HWM), peak.Anon
		step.RSSPerInFlightKiB = float64(step.PeakRSSKiB-step.IdleRSSKiB) / float64(inFlight)
		step.AnonPerInFlightKiB = float64(step.PeakAnonKiB-step.IdleAnonKiB) / float64(inFlight)
	}
	r.logf("       held %d in flight, %d errors; RSS %d → %d KiB: %.1f KiB per in-flight turn",
		inFlight, step.Errors, step.IdleRSSKiB, step.PeakRSSKiB, step.RSSPerInFlightKiB)
	return step, nil
}

// machine describes where the run ran.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kib, _ := strconv.ParseFloat(f[1], 64)
				m.MemoryGiB = math.Round(kib/(1<<20)*10) / 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				m.CPU = strings.TrimSpace(value)
				break
			}
		}
	}
	return m
}
