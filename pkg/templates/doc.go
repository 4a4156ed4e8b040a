// Package templates owns Remora's injection configuration: the embedded
// default templates, Istio-compatible values and mesh config, and their
// parsing and validation. A Config is built once (at start-up or on a reload)
// and is immutable afterwards, so the admission path never reads files or
// parses templates.
package templates
