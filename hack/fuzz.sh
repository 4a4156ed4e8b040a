#!/usr/bin/env bash
# Runs every Go native fuzz target of the module (func FuzzXxx in any
# package's tests) for SECONDS each, one after the other, and fails if any
# of them finds an input that breaks it.
#
#   hack/fuzz.sh [SECONDS]        # default 20
#
# Each target first replays its seed corpus (f.Add and testdata/fuzz/FuzzXxx)
# and then fuzzes for SECONDS. A finding is written by go test to the
# package's testdata/fuzz/FuzzXxx/<hash>; `go test -run FuzzXxx/<hash>
# ./pkg/...` replays it. Set FUZZ_MINIMIZE (default 5s) to bound how long a
# new interesting input is minimised: the admission path's inputs are large
# and go test's default of 60 s would spend the run minimising instead of
# fuzzing.
set -euo pipefail

secs="${1:-20}"
secs="${secs%s}" # "20s" works too
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
	echo "usage: $0 [SECONDS]  (a whole number of seconds per target, default 20)" >&2
	exit 2
fi
GO="${GO:-go}"
minimize="${FUZZ_MINIMIZE:-5s}"
cd "$(dirname "$0")/.."

# package import path and test files of every package of the module
targets=()
while read -r pkg dir files; do
	for f in $files; do
		while read -r name; do
			[ -n "$name" ] && targets+=("$pkg $name")
		done < <(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' "$dir/$f")
	done
done < <("$GO" list -f '{{.ImportPath}} {{.Dir}}{{range .TestGoFiles}} {{.}}{{end}}{{range .XTestGoFiles}} {{.}}{{end}}' ./...)

if [ "${#targets[@]}" -eq 0 ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${secs}s each (about $(( ${#targets[@]} * secs ))s of fuzzing, plus builds)"

failed=()
start=$(date +%s)
for t in "${targets[@]}"; do
	pkg="${t% *}"
	name="${t#* }"
	echo "--- fuzz: $name ($pkg) for ${secs}s"
	if ! "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "${secs}s" -fuzzminimizetime "$minimize" "$pkg"; then
		failed+=("$name ($pkg)")
	fi
done

echo "fuzz: ${#targets[@]} targets in $(( $(date +%s) - start ))s"
if [ "${#failed[@]}" -gt 0 ]; then
	printf 'fuzz: FINDING in %s\n' "${failed[@]}" >&2
	echo "fuzz: each failing input is in its package's testdata/fuzz/<target>/; fix the bug and keep the input as a seed" >&2
	exit 1
fi
echo "fuzz: no findings"
