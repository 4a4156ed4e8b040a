package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSkipRecordsTheReason: a skipped test leaves one line, its name and the
// reason, in $REMORA_SKIP_LOG.
func TestSkipRecordsTheReason(t *testing.T) {
	log := filepath.Join(t.TempDir(), "skips")
	t.Setenv(EnvSkipLog, log)
	t.Setenv(EnvCI, "")
	t.Run("prerequisite", func(t *testing.T) { SkipOrFail(t, "needs %s", "root") })
	t.Run("not applicable", func(t *testing.T) { Skip(t, "static\nbinary") })
	got, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	want := "TestSkipRecordsTheReason/prerequisite\tneeds root\nTestSkipRecordsTheReason/not_applicable\tstatic binary\n"
	if string(got) != want {
		t.Errorf("skip log:\n%q\nwant\n%q", got, want)
	}
}

// TestSkipOrFailFailsInCI runs this test binary again with CI=true: the test
// that lacks a prerequisite must fail, not skip.
func TestSkipOrFailFailsInCI(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "1" {
		SkipOrFail(t, "needs root")
		return
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestSkipOrFailFailsInCI$", "-test.v")
	cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", EnvCI+"=true", EnvSkipLog+"=")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--- FAIL: TestSkipOrFailFailsInCI") ||
		!strings.Contains(string(out), "needs root (CI=true") {
		t.Errorf("with CI=true: err %v, output:\n%s\nwant the test to fail naming the prerequisite", err, out)
	}
}
