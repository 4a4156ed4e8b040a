#!/usr/bin/env bash
# Runs one test suite of `make test` and records its outcome, so that no
# suite is skipped silently.
#
#   hack/suite.sh NAME COMMAND [ARGS...]
#
# COMMAND's output passes through unchanged (go test's closing lines
# included). Tests that stop for want of a prerequisite record the reason in
# $REMORA_SKIP_LOG (internal/testenv.SkipOrFail); this script points it at
# $REMORA_SUITE_DIR/NAME.skips and writes NAME.result. `make test` sets
# REMORA_SUITE_DIR and runs hack/suite-summary.sh at the end; a suite run on
# its own (make test-netns) prints its own summary.
set -uo pipefail

if [ $# -lt 2 ]; then
	echo "usage: $0 NAME COMMAND [ARGS...]" >&2
	exit 2
fi
name=$1
shift
cd "$(dirname "$0")/.."

dir=${REMORA_SUITE_DIR:-}
own=""
if [ -z "$dir" ]; then
	dir=$(mktemp -d)
	own=$dir
fi
mkdir -p "$dir"
: >"$dir/$name.skips"
start=$(date +%s)
REMORA_SKIP_LOG="$dir/$name.skips" "$@"
rc=$?
secs=$(($(date +%s) - start))
if [ "$rc" -eq 0 ]; then
	echo "passed in ${secs}s" >"$dir/$name.result"
else
	echo "FAILED (exit $rc) after ${secs}s" >"$dir/$name.result"
fi
if [ -n "$own" ]; then
	hack/suite-summary.sh "$own" "$name" || rc=1
	rm -rf "$own"
fi
exit "$rc"
