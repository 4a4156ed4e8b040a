package configwatch

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Values of the result label of reloadTotal.
const (
	resultSuccess = "success"
	resultFailure = "failure"
)

var (
	// reloadTotal counts configuration loads: a success each time a new,
	// valid configuration is published; a failure each time a configuration
	// is rejected (also by the periodic re-check of a still-broken one).
	reloadTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "remora_config_reload_total",
		Help: "Configuration loads by result: success when a new valid configuration was published, failure when one was rejected.",
	}, []string{"result"})

	// lastSuccess is when the configuration in effect was published.
	lastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "remora_config_last_reload_success_timestamp_seconds",
		Help: "Unix time at which the configuration in effect was loaded.",
	})

	// configInfo has one series, for the hash of the configuration in effect.
	configInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "remora_config_info",
		Help: "The configuration in effect: always 1, labelled with its hash.",
	}, []string{"hash"})
)

func init() {
	metrics.Registry.MustRegister(reloadTotal, lastSuccess, configInfo)
	// Expose both series from the start, so that rate() and alerts work
	// before the first failure.
	reloadTotal.WithLabelValues(resultSuccess)
	reloadTotal.WithLabelValues(resultFailure)
}
