#!/usr/bin/env bash
# Run Remora on a local control plane: etcd, kube-apiserver and
# kube-controller-manager from bin/k8s (make envtest-bins), the injector built
# from this checkout, its webhook registered, and examples/ applied into the
# istio-injection=enabled namespace "demo". Writes bin/local/kubeconfig and
# prints the kubectl commands to look at the injected pods. Ctrl-C stops it.
#
#   hack/local-cluster.sh [-dir bin/local] [-namespace demo] [-examples examples]
set -euo pipefail
cd "$(dirname "$0")/.."

export KUBEBUILDER_ASSETS="${KUBEBUILDER_ASSETS:-$PWD/bin/k8s}"
for bin in etcd kube-apiserver kube-controller-manager kubectl; do
  if [ ! -x "$KUBEBUILDER_ASSETS/$bin" ]; then
    echo "local-cluster: $KUBEBUILDER_ASSETS/$bin is missing; run 'make envtest-bins' (or set KUBEBUILDER_ASSETS)" >&2
    exit 1
  fi
done

# go run would leave the command's children behind on Ctrl-C: build, then exec.
mkdir -p bin/local
go build -o bin/local/localcluster ./test/e2e/cmd/localcluster
exec bin/local/localcluster "$@"
