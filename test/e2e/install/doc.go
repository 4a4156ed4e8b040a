// Package install is the user's install journey, end to end, on the one-node
// cluster of test/e2e/node: cert-manager (its own controllers and CA
// injector, built from the Go module proxy by hack/certmanager) running as
// host processes against the node's API server, the injector image built
// here and imported into the node's containerd, and `helm install` of
// charts/remora, whose pods then serve the webhook. The API server reaches
// them through the chart's Service: --enable-aggregator-routing resolves a
// webhook Service to its EndpointSlice, which the controller manager fills
// with the ready injector pods' addresses on the node's bridge.
//
// The journey (TestInstallJourney, one subtest per step, in order):
//
//  1. install with cert-manager: Certificate Ready, caBundle injected, two
//     replicas Ready, PDB; install to first injected pod measured;
//  2. a namespace labelled istio-injection=enabled, examples/ applied
//     (images swapped for the local test images): pods Running with the
//     sidecar, the CronJob's Job completes, an opted-out pod is not
//     injected, a malformed annotation is refused with its name;
//  3. helm upgrade to a new proxy tag: the leader restarts the opted-in
//     Deployment onto the new image; `injector status` reports the rest;
//  4. the leader evicted (the PDB refuses the second eviction) while a pod is
//     created every 200 ms: the other replica leads within the lease
//     duration, and no admission fails;
//  5. the serving certificate renewed through cert-manager (the Issuing
//     condition, as `cmctl renew` sets it): both replicas serve it without a
//     restart, no admission fails;
//  7. helm uninstall: the webhook, RBAC and certificates are gone, the chart's
//     post-delete hook deletes the Lease and certificate Secrets made at run
//     time, a new pod is not injected, and nothing of ours is left but the
//     empty release namespace (helm never deletes one);
//  6. the self-managed mode (certManager.enabled=false) through steps 1, 2
//     and 7.
//
// Step 7 runs before step 6 because both modes install the same release.
//
// cert-manager's own webhook is not run: nothing validates or defaults
// cert-manager resources at admission (the CRDs' OpenAPI schemas still
// apply), so a malformed Certificate would be accepted and fail later in
// the controller instead of being refused at `helm install`. The chart's
// resources are valid, so the journey does not depend on it.
//
// Run it with `make test-e2e-install` (root; builds bin/k8s, bin/helm and
// bin/cert-manager first). It skips unless REMORA_NODE_E2E=1 or CI=true;
// with CI=true a missing prerequisite fails it.
package install
