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
