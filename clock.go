package agentd

import "time"

// Clock is the source of time for expiry, TTLs and latency. Production code
// uses SystemClock; tests inject a clock they control so expiry is tested
// without sleeping.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns the current time.
func (SystemClock) Now() time.Time { return time.Now() }
