// Package chart holds the tests of the Helm chart in charts/remora: lint, rendering with typed
// assertions, the values schema, the documentation of every value, and the rendered objects applied
// to a real API server. It has no non-test code.
package chart
