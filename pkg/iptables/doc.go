// Package iptables is Remora's traffic-capture program, the engine behind
// `injector istio-iptables`, the command the injected istio-init container runs.
//
// It accepts Istio's istio-iptables flags with the same meaning (see Options),
// turns them into a validated Config, builds one iptables-restore input per
// address family (Build, Ruleset.Render) and applies it atomically with
// iptables-restore / ip6tables-restore (Applier).
//
// The rules live in chains whose names start with "ISTIO_", the names Istio
// uses, so the usual debugging recipes (iptables-save -t nat) read the same.
// Those chains are owned: each run flushes them through their ":CHAIN - [0:0]"
// declaration, keeps exactly one copy of each jump from a built-in chain,
// removes jumps and chains a previous run left behind and never touches rules
// that do not jump to an owned chain. Re-running therefore converges to the same
// rules, and a rule-set that iptables rejects changes nothing.
//
// Building is pure: Build and Ruleset.Render take values and return text, so the
// rules are unit- and golden-tested without privileges. Only Applier and
// ValidateCapture touch the network namespace.
package iptables
