//go:build !linux

package bench

import (
	"errors"
	"syscall"
	"time"
)

// On systems without /proc the run still measures latency, throughput,
// correctness and cost; memory and file limits read as unknown.

var errNoProc = errors.New("needs Linux's /proc")

func childAttr() *syscall.SysProcAttr { return nil }

type rss struct{ RSS, HWM, Anon int64 }

func readMemory(int) (rss, error) { return rss{}, errNoProc }

func resetPeak(int) {}

func raiseNOFILE() (uint64, uint64, error) { return 0, 0, errNoProc }

func childNOFILE(int) (uint64, uint64, error) { return 0, 0, errNoProc }

type pacer struct{}

func newPacer() pacer { return pacer{} }

func (pacer) wait(d time.Duration) { time.Sleep(d) }

func (pacer) release() {}

func cpuTime(int) (time.Duration, error) { return 0, errNoProc }

func selfCPU() time.Duration { return 0 }
