package framework

import (
	"math"
	"testing"
)

const exposition = `# HELP remora_injection_duration_seconds Time the injection handler spent per admission.
# TYPE remora_injection_duration_seconds histogram
remora_injection_duration_seconds_bucket{le="0.001"} 10
remora_injection_duration_seconds_bucket{le="0.01"} 90
remora_injection_duration_seconds_bucket{le="0.1"} 100
remora_injection_duration_seconds_bucket{le="+Inf"} 100
remora_injection_duration_seconds_sum 0.5
remora_injection_duration_seconds_count 100
remora_injections_total{reason="injected",result="injected"} 7
remora_injections_total{reason="pod-opt-out",result="skipped"} 2
remora_config_info{hash="a\"b"} 1
go_goroutines 12
`

func TestParseMetricsAndQuantiles(t *testing.T) {
	samples, err := ParseMetrics(exposition)
	if err != nil {
		t.Fatal(err)
	}
	sums := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"remora_injections_total", nil, 9},
		{"remora_injections_total", map[string]string{"result": "injected"}, 7},
		{"remora_config_info", map[string]string{"hash": `a"b`}, 1},
		{"go_goroutines", nil, 12},
		{"missing", nil, 0},
	}
	for _, s := range sums {
		if got := Sum(samples, s.name, s.labels); got != s.want {
			t.Errorf("Sum(%s, %v) = %v, want %v", s.name, s.labels, got, s.want)
		}
	}
	h, err := HistogramOf(samples, "remora_injection_duration_seconds")
	if err != nil {
		t.Fatal(err)
	}
	quantiles := []struct{ q, want float64 }{
		{0.05, 0.0005},                  // inside the first bucket, from 0
		{0.5, 0.001 + 0.009*(50-10)/80}, // inside the second bucket
		{0.95, 0.01 + 0.09*(95-90)/10},  // inside the third bucket
		{1, 0.1},                        // the top of the last finite bucket
	}
	for _, q := range quantiles {
		if got := h.Quantile(q.q); math.Abs(got-q.want) > 1e-12 {
			t.Errorf("Quantile(%v) = %v, want %v", q.q, got, q.want)
		}
	}
	if sum := h.Add(h); sum.Count != 200 || sum.Counts[1] != 180 || sum.Quantile(0.5) != h.Quantile(0.5) {
		t.Errorf("Add: %+v", sum)
	}
	if _, err := HistogramOf(samples, "missing"); err == nil {
		t.Error("HistogramOf found a missing histogram")
	}
	if !math.IsNaN((Histogram{}).Quantile(0.5)) {
		t.Error("the quantile of an empty histogram is not NaN")
	}
}

func TestParseMetricsRejectsGarbage(t *testing.T) {
	for _, text := range []string{"name{le=\"1\" 3", "name", "name{a=b} 1", "name notanumber"} {
		if _, err := ParseMetrics(text); err == nil {
			t.Errorf("ParseMetrics(%q) succeeded", text)
		}
	}
}
