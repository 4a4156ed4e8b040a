package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/remora-mesh/remora/pkg/inject"
)

var (
	// injectionsTotal counts admissions by result and reason. Both label
	// sets are fixed (the Result* constants; inject.Reason and this
	// package's Reason* constants), so the cardinality is bounded.
	injectionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "remora_injections_total",
		Help: "Pod admissions by result (injected, skipped, denied, error) and reason.",
	}, []string{"result", "reason"})

	// injectionDuration is the handler's own time per admission: decoding,
	// the namespace lookup, injection and the patch. controller-runtime's
	// controller_runtime_webhook_latency_seconds adds the HTTP layer.
	injectionDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "remora_injection_duration_seconds",
		Help:    "Time the injection handler spent per admission.",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
	})

	// workloadEventsTotal counts the notices of the workload Events
	// (events.go) by Event reason (a fixed set) and what became of them.
	workloadEventsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "remora_workload_events_total",
		Help: "Events on the workload of a pod the webhook refused or skipped against its request, by reason and result: " +
			"recorded, rate-limited (the workload had one of that reason within the interval), dropped (the bounded queue " +
			"was full), no-object (a pod without owner or name).",
	}, []string{"reason", "result"})
)

func init() {
	metrics.Registry.MustRegister(injectionsTotal, injectionDuration, workloadEventsTotal)
	// Pre-create the common series so that dashboards and alerts see zeros
	// rather than missing series.
	injectionsTotal.WithLabelValues(ResultInjected, string(inject.ReasonInjected))
	injectionsTotal.WithLabelValues(ResultDenied, string(inject.ReasonInvalidAnnotations))
	injectionsTotal.WithLabelValues(ResultError, string(ReasonInternal))
	for _, reason := range eventReasons {
		for _, result := range []string{eventRecorded, eventRateLimited, eventDropped, eventNoObject} {
			workloadEventsTotal.WithLabelValues(reason, result)
		}
	}
}
