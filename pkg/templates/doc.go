// Package templates owns Remora's injection templates: the embedded default
// templates (Istio's sidecar, gateway and proxyless gRPC templates), the
// functions templates may call, and their parsing and rendering. The
// configuration that selects and feeds them (values, mesh config, settings,
// hash) is package config; what a template sees is inject.TemplateData.
package templates
