package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Bounds of a child's life: a start that takes longer is broken, and a
// stop waits for agentd's own drain of requests in flight (30 s) and a
// little more before it kills.
const (
	startTimeout = 60 * time.Second
	stopTimeout  = 40 * time.Second
	tailLines    = 40
)

// child is agentd running `serve` as a child process.
type child struct {
	cmd  *exec.Cmd
	url  string // http://127.0.0.1:PORT
	pid  int
	done chan struct{} // closed when the child has exited
	err  error         // its exit, once done is closed

	mu   sync.Mutex
	tail []string // the last lines of its stderr, for errors
}

// childEnv is the environment of agentd: base without any setting that
// would point agentd elsewhere than this run says, plus the run's.
func childEnv(base []string, set map[string]string) []string {
	env := make([]string, 0, len(base)+len(set))
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "ANTHROPIC_"), strings.HasSuffix(name, "_URL") && strings.HasPrefix(name, "AGENTD_"),
			name == "AGENTD_LISTEN", name == "SSL_CERT_FILE", name == "SSL_CERT_DIR":
			continue
		}
		env = append(env, kv)
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	slices.Sort(env[len(env)-len(set):])
	return env
}

// startAgentd runs `COMMAND serve DIR --listen 127.0.0.1:0` and waits until
// it says where it listens (its "agentd serving" log line).
func startAgentd(ctx context.Context, command []string, dir string, env []string) (*child, error) {
	args := append(slices.Clone(command[1:]), "serve", dir, "--listen", "127.0.0.1:0")
	cmd := exec.Command(command[0], args...)
	cmd.Env = env
	cmd.SysProcAttr = childAttr()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting agentd: %w", err)
	}
	a := &child{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	addr := make(chan string, 1)
	read := make(chan struct{})
	go func() {
		defer close(read)
		a.readLog(stderr, addr)
	}()
	go func() {
		<-read // Wait must not run before the pipe is read to its end
		a.err = cmd.Wait()
		close(a.done)
	}()

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case bound := <-addr:
		a.url = "http://" + bound
		return a, nil
	case <-a.done:
		return nil, fmt.Errorf("agentd exited before serving (%v):\n%s", a.err, a.lastLines())
	case <-ctx.Done():
		a.stop()
		return nil, ctx.Err()
	case <-timer.C:
		a.stop()
		return nil, fmt.Errorf("agentd did not start serving within %s:\n%s", startTimeout, a.lastLines())
	}
}

// readLog keeps the last lines of agentd's stderr and sends the address of
// its "agentd serving" line (serve logs JSON).
func (a *child) readLog(r io.Reader, addr chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found := false
	for sc.Scan() {
		line := sc.Text()
		if !found {
			var ev struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &ev) == nil && ev.Msg == "agentd serving" && ev.Addr != "" {
				found = true
				addr <- ev.Addr
			}
		}
		a.mu.Lock()
		if len(a.tail) == tailLines {
			a.tail = slices.Delete(a.tail, 0, 1)
		}
		a.tail = append(a.tail, line)
		a.mu.Unlock()
	}
	// A line longer than the buffer ends the scan; drain the rest so agentd
	// never blocks on a full pipe.
	_, _ = io.Copy(io.Discard, r)
}

func (a *child) lastLines() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.tail, "\n")
}

// stop asks agentd to shut down (SIGTERM: it drains and closes its stores),
// kills it if it has not within stopTimeout, and returns how it exited.
func (a *child) stop() error {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-a.done:
	case <-timer.C:
		_ = a.cmd.Process.Kill()
		<-a.done
		return fmt.Errorf("agentd did not stop within %s and was killed:\n%s", stopTimeout, a.lastLines())
	}
	var exit *exec.ExitError
	if errors.As(a.err, &exit) {
		return fmt.Errorf("agentd exited with %v:\n%s", a.err, a.lastLines())
	}
	return a.err
}
