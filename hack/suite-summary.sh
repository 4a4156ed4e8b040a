#!/usr/bin/env bash
# Prints which suites of `make test` ran, which failed and which were
# skipped in whole or in part, and why; fails when a suite failed or did not
# run, and with CI=true also when a test was skipped.
#
#   hack/suite-summary.sh DIR SUITE...
#
# DIR holds what hack/suite.sh recorded: SUITE.result ("passed in 12s",
# "FAILED ...") and SUITE.skips (one "TestName<TAB>reason" line per skipped
# test). A suite without a result did not run: a target it depends on failed.
set -uo pipefail

if [ $# -lt 2 ]; then
	echo "usage: $0 DIR SUITE..." >&2
	exit 2
fi
dir=$1
shift

ci=${CI:-}
status=0
ran=() skipped=() failed=() missing=()
echo
echo "==== make test: suites ===="
for s in "$@"; do
	result=""
	[ -f "$dir/$s.result" ] && result=$(cat "$dir/$s.result")
	nskips=0
	[ -s "$dir/$s.skips" ] && nskips=$(wc -l <"$dir/$s.skips")
	if [ -z "$result" ]; then
		printf '  %-18s NOT RUN: a target it depends on failed (see above)\n' "$s"
		missing+=("$s")
		status=1
		continue
	fi
	case "$result" in
	passed*)
		if [ "$nskips" -gt 0 ]; then
			printf '  %-18s SKIPPED %d test(s), %s\n' "$s" "$nskips" "$result"
			skipped+=("$s")
		else
			printf '  %-18s ran, %s\n' "$s" "$result"
			ran+=("$s")
		fi
		;;
	*)
		printf '  %-18s %s\n' "$s" "$result"
		failed+=("$s")
		status=1
		;;
	esac
	if [ "$nskips" -gt 0 ]; then
		# one line per reason, with the tests it stopped
		awk -F'\t' '{ n[$2]++; if (n[$2] <= 3) t[$2] = t[$2] (n[$2] > 1 ? ", " : "") $1 }
			END { for (r in n) printf "      skipped %d: %s [%s%s]\n", n[r], r, t[r], (n[r] > 3 ? ", ..." : "") }' "$dir/$s.skips"
	fi
done
echo "  ran: ${#ran[@]}, skipped in whole or part: ${#skipped[@]}, failed: ${#failed[@]}, not run: ${#missing[@]}"
if [ ${#skipped[@]} -gt 0 ]; then
	if [ "$ci" = "true" ]; then
		echo "  CI=true: a skipped test is a failure (${skipped[*]})"
		status=1
	else
		echo "  not CI: the skipped tests above did not run here; CI=true turns each into a failure"
	fi
fi
exit "$status"
