package coord

import (
	"math"
	"testing"
	"time"
)

func TestFits(t *testing.T) {
	const maxInt = math.MaxInt64
	tests := []struct {
		spent, reserved, amount, limit int64
		want                           bool
	}{
		{0, 0, 0, 0, true},
		{0, 0, 1, 0, false},
		{400, 500, 100, 1000, true},
		{400, 500, 101, 1000, false},
		{1001, 0, 0, 1000, false}, // overspent by a large Settle
		{0, 1001, 0, 1000, false},
		// Sums past int64 must not wrap around into admission.
		{maxInt - 1, 0, 5, maxInt, false},
		{1, maxInt, 1, maxInt, false},
		{maxInt, maxInt, maxInt, maxInt, false},
		{0, 0, maxInt, maxInt, true},
	}
	for _, tt := range tests {
		if got := fits(tt.spent, tt.reserved, tt.amount, tt.limit); got != tt.want {
			t.Errorf("fits(spent %d, reserved %d, amount %d, limit %d) = %v, want %v",
				tt.spent, tt.reserved, tt.amount, tt.limit, got, tt.want)
		}
	}
	if got := addSat(maxInt-1, 5); got != maxInt {
		t.Errorf("addSat past MaxInt64 = %d, want MaxInt64", got)
	}
}

func TestDayWindow(t *testing.T) {
	tokyo := time.FixedZone("JST", 9*3600)
	tests := []struct {
		now  time.Time
		name string
		end  time.Time
	}{
		{time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC), "2026-12-04", time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)},
		{time.Date(2026, 12, 4, 23, 59, 59, 999999999, time.UTC), "2026-12-04", time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)},
		{time.Date(2026, 12, 31, 12, 0, 0, 0, time.UTC), "2026-12-31", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		{time.Date(2028, 2, 28, 12, 0, 0, 0, time.UTC), "2028-02-28", time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC)},
		// 08:00 on the 5th in Tokyo is still the 4th in UTC.
		{time.Date(2026, 12, 5, 8, 0, 0, 0, tokyo), "2026-12-04", time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		name, end := dayWindow(tt.now)
		if name != tt.name || !end.Equal(tt.end) || end.Location() != time.UTC {
			t.Errorf("dayWindow(%v) = %s, %v; want %s, %v UTC", tt.now, name, end, tt.name, tt.end)
		}
	}
}
