// Package e2e holds Remora's end-to-end tests: a real kube-apiserver, etcd
// and kube-controller-manager, the injector built from source and run as a
// separate process behind a real MutatingWebhookConfiguration, driven
// through the API server as a user would. See framework for the harness.
//
// The tests run when KUBEBUILDER_ASSETS names the control-plane binaries
// (make test-e2e sets it to bin/k8s) or when CI=true; otherwise they skip.
package e2e
