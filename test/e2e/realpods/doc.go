// Package realpods runs Remora's admission webhook against a one-node
// cluster with a real kubelet (test/e2e/node) and checks that the pods it
// injects actually work: traffic capture and its exclusions, the proxy
// holding the application until it is ready (native and classic sidecars),
// Jobs and a CronJob's Job completing, rewritten probes, the companion
// controller's rolling restart after a proxy image change, opted-out pods,
// and the start latency injection adds.
//
// The package holds only tests. They skip unless REMORA_NODE_E2E=1 (as root)
// or CI=true, exactly like the node package, and start one node, one
// `injector serve` and one webhook configuration for all of them (TestMain).
// See docs/testing-real-pods.md.
package realpods
