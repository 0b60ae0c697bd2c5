package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// childAttr makes the kernel kill agentd if the bench process dies first,
// so an interrupted run leaves no server behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// rss is a sample of a process's resident memory, in KiB.
type rss struct {
	RSS  int64 // VmRSS: what the process holds in RAM now
	HWM  int64 // VmHWM: the peak of RSS since start or the last resetPeak
	Anon int64 // RssAnon: heap and stacks, without the mapped files (bolt's mmap)
}

// readMemory reads /proc/PID/status.
func readMemory(pid int) (rss, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return rss{}, err
	}
	var m rss
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.HWM
		case "RssAnon":
			dst = &m.Anon
		default:
			continue
		}
		f := strings.Fields(value) // "12345 kB"
		if len(f) > 0 {
			*dst, _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	return m, sc.Err()
}

// resetPeak resets VmHWM to the current RSS, so the peak of one step is not
// an earlier one's. It is best effort: without it the sampled peak remains.
func resetPeak(pid int) {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// raiseNOFILE raises this process's open file limit to its hard limit and
// returns the limit now in force. Children started afterwards inherit it.
func raiseNOFILE() (soft, hard uint64, err error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, 0, err
		}
	}
	return l.Cur, l.Max, nil
}

// childNOFILE reads a process's open file limit from /proc/PID/limits
// (agentd, a Go program, raises its own soft limit to the hard one).
func childNOFILE(pid int) (soft, hard uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		if !strings.HasPrefix(line, "Max open files") {
			continue
		}
		f := strings.Fields(strings.TrimPrefix(line, "Max open files"))
		if len(f) < 2 {
			break
		}
		soft, err1 := strconv.ParseUint(f[0], 10, 64)
		hard, err2 := strconv.ParseUint(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			break
		}
		return soft, hard, nil
	}
	return 0, 0, fmt.Errorf("no open file limit in /proc/%d/limits", pid)
}

// pacer waits for due times more precisely than time.Sleep, whose wake-ups
// come on the runtime's millisecond timer grain: late sends would count as
// latency of the system under test. It holds an OS thread, with the kernel's
// timer slack cut to 1 ns, and sleeps in nanosleep.
type pacer struct{}

func newPacer() pacer {
	runtime.LockOSThread()
	// PR_SET_TIMERSLACK (29): best effort; the default slack is 50 µs.
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, 29, 1, 0)
	return pacer{}
}

func (pacer) wait(d time.Duration) {
	if d <= 0 {
		return
	}
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}

// release gives the thread back to the runtime. The slack stays 1 ns on it,
// which costs nothing.
func (pacer) release() { runtime.UnlockOSThread() }

// cpuTime is the CPU time a process has used, user and system, at the
// 10 ms grain of /proc (USER_HZ is 100 on Linux).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; the fields after it do not.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times", pid)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
