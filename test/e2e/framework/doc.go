// Package framework is Remora's end-to-end harness: a real control plane
// (etcd and kube-apiserver through controller-runtime's envtest, plus
// kube-controller-manager so that workloads create pods), the injector built
// from source and run as a separate process with certificates made here, and
// the MutatingWebhookConfiguration the Helm chart installs, pointed at it.
// The e2e tests, the chart tests, test/scale and the local-cluster command
// use it; what every suite shares (paths, the process runner, pod helpers)
// is in internal/testenv.
package framework
