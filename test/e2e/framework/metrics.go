package framework

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Sample is one line of the Prometheus text exposition format.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// ParseMetrics parses the Prometheus text exposition format (the subset
// client_golang writes: no timestamps, no exemplars).
func ParseMetrics(text string) ([]Sample, error) {
	var out []Sample
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s := Sample{Labels: map[string]string{}}
		var rest string
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("line %d: unbalanced braces: %q", n+1, line)
			}
			s.Name = line[:i]
			if err := parseLabels(line[i+1:j], s.Labels); err != nil {
				return nil, fmt.Errorf("line %d: %w", n+1, err)
			}
			rest = strings.TrimSpace(line[j+1:])
		} else {
			name, value, ok := strings.Cut(line, " ")
			if !ok {
				return nil, fmt.Errorf("line %d: no value: %q", n+1, line)
			}
			s.Name, rest = name, value
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n+1, err)
		}
		s.Value = v
		out = append(out, s)
	}
	return out, nil
}

func parseLabels(s string, into map[string]string) error {
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return fmt.Errorf("bad labels %q", s)
		}
		key := strings.TrimSpace(s[:eq])
		var val strings.Builder
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(s[i])
				}
				continue
			}
			val.WriteByte(s[i])
		}
		if i >= len(s) {
			return fmt.Errorf("unterminated label value in %q", s)
		}
		into[key] = val.String()
		s = strings.TrimPrefix(strings.TrimSpace(s[i+1:]), ",")
	}
	return nil
}

// Sum adds the values of the samples named name whose labels include
// labels.
func Sum(samples []Sample, name string, labels map[string]string) float64 {
	var sum float64
	for _, s := range samples {
		if s.Name == name && matches(s.Labels, labels) {
			sum += s.Value
		}
	}
	return sum
}

func matches(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// Histogram is a Prometheus histogram's cumulative buckets.
type Histogram struct {
	// Bounds are the upper bounds, ascending, the last +Inf.
	Bounds []float64
	// Counts are the cumulative counts per bound.
	Counts []float64
	// Sum and Count are the histogram's _sum and _count.
	Sum, Count float64
}

// HistogramOf collects histogram name from samples, summing series that
// differ in other labels.
func HistogramOf(samples []Sample, name string) (Histogram, error) {
	byBound := map[float64]float64{}
	var h Histogram
	for _, s := range samples {
		switch s.Name {
		case name + "_bucket":
			le, err := strconv.ParseFloat(s.Labels["le"], 64)
			if err != nil {
				return h, fmt.Errorf("bucket bound %q: %w", s.Labels["le"], err)
			}
			byBound[le] += s.Value
		case name + "_sum":
			h.Sum += s.Value
		case name + "_count":
			h.Count += s.Value
		}
	}
	if len(byBound) == 0 {
		return h, fmt.Errorf("no histogram %s", name)
	}
	for b := range byBound {
		h.Bounds = append(h.Bounds, b)
	}
	sort.Float64s(h.Bounds)
	for _, b := range h.Bounds {
		h.Counts = append(h.Counts, byBound[b])
	}
	return h, nil
}

// Quantile estimates the q-quantile like PromQL's histogram_quantile:
// linear interpolation inside the bucket that holds it.
func (h Histogram) Quantile(q float64) float64 {
	if len(h.Counts) == 0 || h.Counts[len(h.Counts)-1] == 0 {
		return math.NaN()
	}
	total := h.Counts[len(h.Counts)-1]
	rank := q * total
	for i, c := range h.Counts {
		if c < rank {
			continue
		}
		if math.IsInf(h.Bounds[i], 1) {
			if i == 0 {
				return math.NaN()
			}
			return h.Bounds[i-1] // the highest finite bound, as PromQL does
		}
		lower, below := 0.0, 0.0
		if i > 0 {
			lower, below = h.Bounds[i-1], h.Counts[i-1]
		}
		if c == below {
			return h.Bounds[i]
		}
		return lower + (h.Bounds[i]-lower)*(rank-below)/(c-below)
	}
	return h.Bounds[len(h.Bounds)-1]
}

// Add returns the sum of two snapshots with the same buckets, such as the
// histograms of two processes that served one after the other.
func (h Histogram) Add(other Histogram) Histogram {
	if len(h.Counts) == 0 {
		return other
	}
	out := Histogram{Bounds: h.Bounds, Sum: h.Sum + other.Sum, Count: h.Count + other.Count}
	for i, c := range h.Counts {
		if i < len(other.Counts) {
			c += other.Counts[i]
		}
		out.Counts = append(out.Counts, c)
	}
	return out
}
