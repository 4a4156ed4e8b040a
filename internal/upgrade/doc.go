// Package upgrade keeps injected pods up to date with the injector's current
// configuration.
//
// A pod injected by Remora records the configuration it was injected with in
// the remora.io/injection-hash annotation. When the configuration changes
// (a new proxy image, new values, new templates), running pods keep the old
// sidecar until they are recreated. This package finds them and, where the
// cluster's owners allowed it, rolls their workloads:
//
//   - Evaluate is the pure classification shared by the controller and the
//     injector status command: from a Snapshot of the cluster (pods,
//     namespaces, ReplicaSets, Jobs, Deployments, StatefulSets, DaemonSets)
//     and the current configuration it builds a Report with, per workload,
//     how many injected pods are outdated, what changed (image or config),
//     and whether the workload is up to date, needs a restart, is restarting
//     or is injected but no longer selected for injection.
//   - Setup adds the controller to a manager. Only the leader acts. It reports
//     outdated pods as Prometheus gauges and Events, and rolling-restarts
//     opted-in Deployments, StatefulSets and DaemonSets the way
//     kubectl rollout restart does, at most MaxConcurrentRestarts at a time,
//     only inside the maintenance window, and never twice for the same
//     configuration hash. Bare pods and Job pods are only reported.
//
// Everything the controller needs to know to stay safe (which workloads it
// restarted, for which hash, whether their rollout finished) is read back
// from the cluster, so a new leader carries on where the old one stopped.
package upgrade
