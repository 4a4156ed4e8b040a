package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/remora-mesh/remora/pkg/version"
)

func TestVersionCommand(t *testing.T) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"version"})
	if err := root.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("version: %v", err)
	}
	if !strings.Contains(out.String(), version.Version) {
		t.Fatalf("version output %q does not contain %q", out.String(), version.Version)
	}
}

// TestSubcommands pins the command tree: newRootCmd's list is the only place
// a subcommand is added.
func TestSubcommands(t *testing.T) {
	var got []string
	for _, c := range newRootCmd().Commands() {
		got = append(got, c.Name())
	}
	want := []string{"cleanup", "explain", "inject", "istio-iptables", "serve", "status", "uninject", "version"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("subcommands %v, want %v", got, want)
	}
}
