package inject

import (
	"encoding/json"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/remora-mesh/remora/pkg/config"
)

const (
	promScrape = "prometheus.io/scrape"
	promPort   = "prometheus.io/port"
	promPath   = "prometheus.io/path"
)

// scrapeTarget is one entry of prometheus.istio.io/scrape-targets: an
// app port and path the agent scrapes and merges.
type scrapeTarget struct {
	Port string `json:"port"`
	Path string `json:"path"`
}

// promAnnotations is ISTIO_PROMETHEUS_ANNOTATIONS: where the agent scrapes
// the app.
type promAnnotations struct {
	Scrape  string         `json:"scrape,omitempty"`
	Path    string         `json:"path,omitempty"`
	Port    string         `json:"port,omitempty"`
	Targets []scrapeTarget `json:"targets,omitempty"`
}

// mergePrometheus points Prometheus at the agent, which merges the app's
// metrics (from ISTIO_PROMETHEUS_ANNOTATIONS) with Envoy's, as Istio does.
// With scrape targets (several app ports), the first one also fills port
// and path, and the targets annotation is taken off the pod: the agent now
// owns it.
func mergePrometheus(out, orig *corev1.Pod, cfg *config.Config, statusPort int32, targets []scrapeTarget) {
	if cfg.Mesh.EnablePrometheusMerge != nil && !*cfg.Mesh.EnablePrometheusMerge {
		return
	}
	if v, ok := out.Annotations[AnnotationMergeMetrics]; ok && v == "false" {
		return
	}
	if orig.Annotations[promScrape] == "false" || orig.Annotations["prometheus.io.scrape"] == "false" {
		return
	}
	app := promAnnotations{
		Scrape: orig.Annotations[promScrape], Path: orig.Annotations[promPath], Port: orig.Annotations[promPort],
	}
	if len(targets) > 0 {
		app.Targets = targets
		app.Port, app.Path = targets[0].Port, targets[0].Path
		delete(out.Annotations, AnnotationScrapeTargets)
	}
	proxy := findProxy(out)
	if proxy != nil && (app.Scrape != "" || app.Path != "" || app.Port != "" || len(app.Targets) > 0) {
		b, _ := json.Marshal(app) // strings only: cannot fail
		proxy.Env = append(proxy.Env, corev1.EnvVar{Name: "ISTIO_PROMETHEUS_ANNOTATIONS", Value: string(b)})
	}
	out.Annotations[promScrape] = "true"
	out.Annotations[promPort] = strconv.Itoa(int(statusPort))
	out.Annotations[promPath] = "/stats/prometheus"
}
