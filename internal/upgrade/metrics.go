package upgrade

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Results of remora_restarts_total.
const (
	resultStarted  = "started"
	resultFinished = "finished"
	resultFailed   = "failed"
)

var (
	outdatedPods = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "remora_outdated_pods",
		Help: "Injected pods whose sidecar was injected with an older configuration than the current one, or that exclude a " +
			"Service whose addresses changed since, by namespace (only namespaces that have some).",
	}, []string{"namespace"})
	unselectedPods = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "remora_unselected_injected_pods",
		Help: "Injected pods whose namespace or pod no longer selects injection, by namespace (only namespaces that have some).",
	}, []string{"namespace"})
	staleServicePods = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "remora_stale_excluded_service_pods",
		Help: "Injected pods that exclude a Service from the capture by name (traffic.remora.io/excludeOutboundServices) " +
			"which has an address they do not exclude, because it changed since they were injected, by namespace (only namespaces " +
			"that have some). They are also counted in remora_outdated_pods.",
	}, []string{"namespace"})
	injectedPods = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "remora_upgrade_injected_pods",
		Help: "Injected pods of this revision considered by the last evaluation (neither finished nor terminating).",
	})
	evaluationSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "remora_upgrade_evaluation_duration_seconds",
		Help:    "Time of one evaluation of every injected pod against the configuration (the cache is already in memory).",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	eventsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "remora_events_total",
		Help: "Events the upgrade controller wrote (sent), could not write (failed), or dropped because its bounded queue " +
			"was full or it was shutting down (dropped).",
	}, []string{"result"})
	restartsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "remora_restarts_total",
		Help: "Rolling restarts of workloads with outdated sidecars: started, finished (rollout complete) " +
			"or failed (progress deadline exceeded).",
	}, []string{"result"})
)

func init() {
	metrics.Registry.MustRegister(outdatedPods, unselectedPods, staleServicePods, restartsTotal, injectedPods, evaluationSeconds, eventsTotal)
	for _, r := range []string{resultStarted, resultFinished, resultFailed} {
		restartsTotal.WithLabelValues(r)
	}
	for _, r := range []string{eventSent, eventFailed, eventDropped} {
		eventsTotal.WithLabelValues(r)
	}
}

// gaugeSet sets a per-namespace gauge to the non-zero values and deletes the
// series of namespaces that had one before and have none now, so that the
// gauge's cardinality follows the namespaces with pods to report.
type gaugeSet struct {
	gauge *prometheus.GaugeVec
	set   map[string]bool
}

func (g *gaugeSet) update(values map[string]int) {
	next := make(map[string]bool, len(values))
	for ns, v := range values {
		if v == 0 {
			continue
		}
		g.gauge.WithLabelValues(ns).Set(float64(v))
		next[ns] = true
	}
	for ns := range g.set {
		if !next[ns] {
			g.gauge.DeleteLabelValues(ns)
		}
	}
	g.set = next
}
