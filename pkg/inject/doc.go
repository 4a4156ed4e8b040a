// Package inject is Remora's injection engine: a pure function from a pod,
// its namespace's labels and a loaded configuration to the injected pod and
// a report that says what was done and why. It performs no I/O; the CLI, the
// admission webhook and the tests all call Inject.
package inject
