package upgrade

import (
	"fmt"
	"strings"
	"time"
)

// Window is a daily maintenance window in UTC, such as 02:00-04:00. A window
// whose end is before its start spans midnight (22:00-02:00).
type Window struct {
	// Start and End are offsets from midnight UTC; Start is included, End
	// is not.
	Start, End time.Duration
}

// ParseWindow parses "HH:MM-HH:MM" (UTC), such as "02:00-04:00" or
// "22:30-01:00". Start and end must differ.
func ParseWindow(s string) (*Window, error) {
	from, to, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return nil, fmt.Errorf("maintenance window %q: want HH:MM-HH:MM (UTC), such as 02:00-04:00", s)
	}
	start, err := parseClock(from)
	if err != nil {
		return nil, fmt.Errorf("maintenance window %q: start: %w", s, err)
	}
	end, err := parseClock(to)
	if err != nil {
		return nil, fmt.Errorf("maintenance window %q: end: %w", s, err)
	}
	if start == end {
		return nil, fmt.Errorf("maintenance window %q: start and end are the same time; omit the window to allow restarts at any time", s)
	}
	return &Window{Start: start, End: end}, nil
}

func parseClock(s string) (time.Duration, error) {
	t, err := time.Parse("15:04", strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a time of day HH:MM", s)
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
}

// Contains reports whether t is inside the window. A nil window contains
// every time.
func (w *Window) Contains(t time.Time) bool {
	if w == nil {
		return true
	}
	d := sinceMidnight(t)
	if w.Start < w.End {
		return d >= w.Start && d < w.End
	}
	return d >= w.Start || d < w.End
}

// Next returns how long from t until the window opens: 0 inside it.
func (w *Window) Next(t time.Time) time.Duration {
	if w.Contains(t) {
		return 0
	}
	wait := w.Start - sinceMidnight(t)
	if wait < 0 {
		wait += 24 * time.Hour
	}
	return wait
}

// String returns the window as ParseWindow reads it.
func (w *Window) String() string {
	if w == nil {
		return "always"
	}
	clock := func(d time.Duration) string {
		return fmt.Sprintf("%02d:%02d", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return clock(w.Start) + "-" + clock(w.End)
}

func sinceMidnight(t time.Time) time.Duration {
	t = t.UTC()
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute +
		time.Duration(t.Second())*time.Second + time.Duration(t.Nanosecond())
}
