package main

import (
	"testing"
	"time"
)

func TestParseEvaluation(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		ok   bool
		want evaluation
	}{
		{
			name: "zap production line, epoch seconds",
			line: `{"level":"info","ts":1764745200.5,"logger":"upgrade","msg":"Evaluating injected pods against the configuration","hash":"abc","previousHash":"","revision":"default","pods":20000,"outdated":0,"unselected":0}`,
			ok:   true,
			want: evaluation{at: time.Unix(1764745200, 5e8), hash: "abc", pods: 20000},
		},
		{
			name: "RFC 3339 time",
			line: `{"ts":"2026-12-03T07:00:00.25Z","msg":"Evaluating injected pods against the configuration","hash":"def","pods":3,"outdated":3}`,
			ok:   true,
			want: evaluation{at: time.Date(2026, 12, 3, 7, 0, 0, 25e7, time.UTC), hash: "def", pods: 3, outdated: 3},
		},
		{
			name: "whole seconds: dated by the reading",
			line: `{"ts":"2026-12-03T07:00:00Z","msg":"Evaluating injected pods against the configuration","hash":"x","pods":1,"outdated":0}`,
			ok:   true,
			want: evaluation{hash: "x", pods: 1},
		},
		{name: "another message", line: `{"ts":1,"msg":"Evaluated","pods":3}`},
		{name: "not JSON", line: `2026-12-03T07:00:00Z INFO Evaluating injected pods against the configuration`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseEvaluation([]byte(tc.line))
			if ok != tc.ok {
				t.Fatalf("ok %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if tc.want.at.IsZero() {
				if time.Since(got.at) > time.Minute {
					t.Errorf("dated %v, want the time of reading", got.at)
				}
				tc.want.at = got.at
			}
			if !got.at.Equal(tc.want.at) || got.hash != tc.want.hash || got.pods != tc.want.pods || got.outdated != tc.want.outdated {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestKeyedValue(t *testing.T) {
	v1 := []byte("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
	v2 := []byte("low 0\nhigh 0\nmax 14\noom 1\noom_kill 1\noom_group_kill 0\n")
	for _, tc := range []struct {
		name string
		in   []byte
		want int64
	}{
		{"cgroup v1 memory.oom_control", v1, 2},
		{"cgroup v2 memory.events", v2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := keyedValue(tc.in, "oom_kill")
			if err != nil || got != tc.want {
				t.Errorf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
	if _, err := keyedValue([]byte("oom_kill_disable 0\n"), "oom_kill"); err == nil {
		t.Error("a kernel without oom_kill: want an error, not 0")
	}
}

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(lat, tc.p); got != tc.want {
			t.Errorf("p%v: got %v, want %v", tc.p*100, got, tc.want)
		}
	}
	if got := percentile([]time.Duration{7}, 0.99); got != 7 {
		t.Errorf("one value: got %v", got)
	}
}
