package golden

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	tests := []struct {
		name, want, got, diff string
	}{
		{"equal", "a\nb\n", "a\nb\n", ""},
		{"changed line", "a\nb\nc\n", "a\nB\nc\n", "@@ -1 +1 @@\n a\n-b\n+B\n c\n"},
		{"added at the end", "a\n", "a\nb\n", "@@ -1 +1 @@\n a\n+b\n"},
		{"far apart changes make two hunks",
			"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n", "x\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\ny\n",
			"@@ -1 +1 @@\n-1\n+x\n 2\n 3\n 4\n@@ -9 +9 @@\n 9\n 10\n 11\n-12\n+y\n"},
		{"missing final newline", "a\n", "a", "@@ -1 +1 @@\n-a\n+a\n\\ no newline at end\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Diff(tt.want, tt.got); got != tt.diff {
				t.Errorf("Diff:\n%s\nwant:\n%s", got, tt.diff)
			}
		})
	}
}

// TestAssertReportsTheDiff: a stale golden file fails the test with the
// diff, and a matching one passes.
func TestAssertReportsTheDiff(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.golden")
	if err := os.WriteFile(path, []byte("a\nb\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{TB: t}
	Assert(rec, path, []byte("a\nb\n"))
	if rec.failed {
		t.Errorf("equal output failed: %s", rec.msg)
	}
	Assert(rec, path, []byte("a\nc\n"))
	if !rec.failed || !contains(rec.msg, "-b\n+c\n") {
		t.Errorf("stale golden: failed=%v, message %q, want the diff", rec.failed, rec.msg)
	}
}

type recorder struct {
	testing.TB
	failed bool
	msg    string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.failed = true
	r.msg = sprintf(format, args...)
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
