// Package config owns Remora's injection configuration: the embedded default
// values and mesh config, Istio-compatible values and mesh config from files
// or a ConfigMap's data, the typed settings injection reads, the command-line
// overrides, and the hash that identifies the effective configuration. A
// Config is built once (at start-up or on a reload) and is immutable
// afterwards, so the admission path never reads files or parses templates.
package config
