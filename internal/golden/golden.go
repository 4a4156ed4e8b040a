// Package golden compares a test's output with a golden file and, on a
// mismatch, prints a readable line diff; `go test -update` rewrites the
// golden files from the current output instead, for review in the commit's
// diff.
package golden

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files from the current output (review the diff before committing)")

// Updating reports whether the test runs with -update.
func Updating() bool { return *update }

// Assert compares got with the golden file at path: with -update it writes
// got there; otherwise a missing or different file fails t with a diff
// (-want +got).
func Assert(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path) //nolint:gosec // G304: the test's own golden file
	if err != nil {
		t.Fatalf("%v (run go test -update to create it, and review it)", err)
	}
	if string(want) != string(got) {
		t.Errorf("%s is stale (-want +got; run go test -update and review the diff):\n%s", path, Diff(string(want), string(got)))
	}
}

// CheckStale fails t for every file matching pattern that is not in used
// (a golden file left over from a removed case), or removes it with -update.
func CheckStale(t testing.TB, pattern string, used []string) {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if slices.Contains(used, f) {
			continue
		}
		if *update {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
			continue
		}
		t.Errorf("%s belongs to no case (run go test -update to remove it)", f)
	}
}

// context is how many unchanged lines Diff shows around a change.
const context = 3

// Diff returns a unified line diff of want and got ("-" lines only in want,
// "+" lines only in got), with a few lines of context and "@@ -L +L @@"
// headers giving the 1-based line numbers; "" when they are equal.
func Diff(want, got string) string {
	if want == got {
		return ""
	}
	a, b := lines(want), lines(got)
	ops := lineOps(a, b)
	var out strings.Builder
	for i := 0; i < len(ops); {
		if ops[i].kind == ' ' {
			i++
			continue
		}
		// A hunk: from context lines before this change to context lines
		// after the last change that is at most 2*context lines further.
		start := max(0, i-context)
		end := i
		for j := i; j < len(ops); j++ {
			if ops[j].kind != ' ' {
				end = j
			} else if j-end > 2*context {
				break
			}
		}
		end = min(len(ops), end+context+1)
		fmt.Fprintf(&out, "@@ -%d +%d @@\n", ops[start].a+1, ops[start].b+1)
		for _, op := range ops[start:end] {
			line := op.line
			if !strings.HasSuffix(line, "\n") {
				line += "\n\\ no newline at end\n"
			}
			out.WriteString(string(op.kind) + line)
		}
		i = end
	}
	return out.String()
}

// lines splits s after each newline; the last line may lack one.
func lines(s string) []string {
	l := strings.SplitAfter(s, "\n")
	if l[len(l)-1] == "" {
		l = l[:len(l)-1]
	}
	return l
}

type lineOp struct {
	kind rune // ' ', '-' or '+'
	line string
	a, b int // line indexes in want and got where the op stands
}

// lineOps is the edit script of a longest common subsequence of lines.
func lineOps(a, b []string) []lineOp {
	// lcs[i][j] is the LCS length of a[i:] and b[j:].
	lcs := make([][]int32, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int32, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var ops []lineOp
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			ops = append(ops, lineOp{' ', a[i], i, j})
			i++
			j++
		case i < len(a) && (j == len(b) || lcs[i+1][j] >= lcs[i][j+1]):
			ops = append(ops, lineOp{'-', a[i], i, j})
			i++
		default:
			ops = append(ops, lineOp{'+', b[j], i, j})
			j++
		}
	}
	return ops
}
