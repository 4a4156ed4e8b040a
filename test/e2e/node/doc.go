// Package node runs a one-node Kubernetes cluster with real pods on the test
// machine, for the e2e tests that need pods to actually run: the injected
// istio-init container programming iptables in a real pod network namespace,
// a native sidecar gating the application on its readiness, probes, hooks and
// Jobs going through the kubelet.
//
// Start brings up, under one directory of its own:
//   - the test images, built from this module and written as OCI tarballs
//     with internal/ociimage (no registry): the init image with our
//     injector and the host's iptables, the stand-in proxy
//     (test/images/pilot-agent), the test application (test/images/testapp)
//     and the pod sandbox (test/images/pause);
//   - containerd (Debian's 1.6, or 2.x) with its own config, root, state and
//     socket, the images imported into its k8s.io namespace;
//   - a bridge that exists only on this machine, with the node IP, and the
//     CNI bridge plugin: pods get an address on it, no default route, no
//     masquerading, and the host's ip_forward stays 0, so traffic never
//     leaves the machine;
//   - etcd and kube-apiserver (controller-runtime's envtest, binaries from
//     bin/k8s or KUBEBUILDER_ASSETS), kube-controller-manager and
//     kube-scheduler;
//   - the kubelet, registered under the node IP, kept off the host (no QoS
//     cgroups, no eviction, no image GC, no iptables chains, kernel tunables
//     untouched).
//
// It returns when the node is Ready and the images are imported. The Cluster
// exposes a kubeconfig, a REST config, a controller-runtime client and the
// envtest environment, so a test can register a MutatingWebhookConfiguration
// and run `injector serve` against the API server, then create pods.
//
// Stop tears everything down and removes every mount, network namespace,
// bridge, cgroup and host path the node made, even after a failed start; a
// run killed before it could stop is cleaned up by the next Start. Only one
// node runs on a machine at a time (a lock serialises them).
//
// The tests need root, containerd, runc, the CNI plugins and iptables
// (apt-get install containerd runc containernetworking-plugins iptables); see
// Check and Require, and docs/testing-real-pods.md.
package node
