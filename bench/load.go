package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// sample is one request of a scenario. Durations that were not reported are
// -1.
type sample struct {
	lag     time.Duration // sent − due: the generator's own lateness
	e2e     time.Duration // answered − due
	model   time.Duration // Server-Timing model: the model call as the server timed it
	handler time.Duration // Server-Timing total: agentd's handler, model included
	fake    time.Duration // the fake's own time for this request, when known
	id      string        // the bench id the request's message starts with
	err     string        // the error's type; "" when the request succeeded
	usage   usage
}

func (s *sample) ok() bool { return s.err == "" }

// usage is the token usage an answer reports. agentd's has no split of
// cache writes by TTL: its writes count as 5-minute ones.
type usage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	CacheCreation            *struct {
		Ephemeral5m int64 `json:"ephemeral_5m_input_tokens"`
		Ephemeral1h int64 `json:"ephemeral_1h_input_tokens"`
	} `json:"cache_creation"`
}

// billed is the input-token equivalent the call is billed: cache writes
// cost 1.25× (5 minutes) or 2× (1 hour) an input token, cache reads 0.1×.
func (u usage) billed() float64 {
	w5, w1h := u.CacheCreationInputTokens, int64(0)
	if u.CacheCreation != nil {
		w5, w1h = u.CacheCreation.Ephemeral5m, u.CacheCreation.Ephemeral1h
	}
	return float64(u.InputTokens) + 1.25*float64(w5) + 2*float64(w1h) + 0.1*float64(u.CacheReadInputTokens)
}

// target is where a scenario's requests go, and how each is made.
type target struct {
	client *http.Client
	url    string
	// body returns request i's body and the bench id its message carries.
	body    func(i int) ([]byte, string)
	header  http.Header   // sent with every request, besides Content-Type
	timeout time.Duration // bounds one request
}

// openLoop sends n requests at a fixed rate: request i is due at
// t0 + i/rate and is sent then, whether or not earlier ones were answered,
// and its latency counts from its due time. If maxInFlight requests are
// waiting when one is due, the target is not keeping up (or the run is at
// its file descriptor limit): the generator stops there, and the requests
// not sent count as errors, so an overloaded scenario ends within a bounded
// time. It returns the samples, in order, and the most requests that were
// in flight at once.
func openLoop(ctx context.Context, rate float64, n, maxInFlight int, t target) ([]sample, int) {
	samples := make([]sample, n)
	var inFlight, peak atomic.Int64
	var wg sync.WaitGroup
	p := newPacer()
	defer p.release()
	interval := float64(time.Second) / rate
	t0 := time.Now().Add(2 * time.Millisecond)
	for i := range n {
		due := t0.Add(time.Duration(float64(i) * interval))
		if wait := time.Until(due); wait > 0 {
			// Let the requests just started run before sleeping: the
			// pacer sleeps in a system call, holding this goroutine's P,
			// and on a busy machine they would wait in its run queue until
			// the runtime takes the P back.
			runtime.Gosched()
			p.wait(time.Until(due))
		}
		reason := ""
		switch {
		case ctx.Err() != nil:
			reason = "not sent: run cancelled"
		case inFlight.Load() >= int64(maxInFlight):
			reason = fmt.Sprintf("not sent: %d requests already in flight", maxInFlight)
		}
		if reason != "" {
			for j := i; j < n; j++ {
				samples[j] = sample{err: reason, model: -1, handler: -1, fake: -1}
			}
			break
		}
		if now := inFlight.Add(1); now > peak.Load() {
			peak.Store(now) // only this goroutine raises peak
		}
		wg.Go(func() {
			defer inFlight.Add(-1)
			s := &samples[i]
			body, id := t.body(i)
			s.lag = time.Since(due)
			t.do(ctx, body, s)
			s.e2e = time.Since(due)
			s.id = id
		})
	}
	wg.Wait()
	return samples, int(peak.Load())
}

// do sends one chat turn (or, for the floor, one Messages call) and reads
// the answer's timing and usage into s.
func (t target) do(ctx context.Context, body []byte, s *sample) {
	s.model, s.handler, s.fake = -1, -1, -1
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		s.err = "bad request: " + err.Error()
		return
	}
	for k, v := range t.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.client.Do(req)
	if err != nil {
		s.err = transportError(err)
		return
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		s.err = transportError(err)
		return
	}
	var answer struct {
		Usage usage `json:"usage"`
		Error *struct {
			Type string `json:"type"`
		} `json:"error"`
	}
	_ = json.Unmarshal(raw, &answer)
	if resp.StatusCode != http.StatusOK {
		typ := "?"
		if answer.Error != nil {
			typ = answer.Error.Type
		}
		s.err = fmt.Sprintf("HTTP %d %s", resp.StatusCode, typ)
		return
	}
	s.usage = answer.Usage
	s.model, s.handler = serverTiming(resp.Header.Get("Server-Timing"))
	if s.model < 0 {
		s.err = "answer without Server-Timing model;dur"
	}
}

// serverTiming reads "model;dur=12.3, total;dur=12.9" (milliseconds).
func serverTiming(h string) (model, total time.Duration) {
	model, total = -1, -1
	for part := range strings.SplitSeq(h, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		for p := range strings.SplitSeq(params, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if !ok || k != "dur" {
				continue
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			d := time.Duration(f * float64(time.Millisecond))
			switch name {
			case "model":
				model = d
			case "total":
				total = d
			}
		}
	}
	return model, total
}

// transportError names a failure to get an answer by its kind, without the
// addresses and ports that would make every failure a type of its own.
func transportError(err error) string {
	var errno syscall.Errno
	var nerr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "client timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.As(err, &errno):
		return "transport: " + errno.Error()
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "transport: connection closed"
	case errors.As(err, &nerr) && nerr.Timeout():
		return "transport: timeout"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return "transport: " + msg
}
