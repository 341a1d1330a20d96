#!/usr/bin/env bash
# Rates systemd/gatehouse.service with systemd-analyze's offline security
# check and fails if the exposure score is above 1.5 ("OK" or better).
# Needs systemd-analyze (Debian package `systemd`); .ci/run installs it.
set -euo pipefail
cd "$(dirname "$0")/.."

limit=1.5
unit=systemd/gatehouse.service
report=$(systemd-analyze security --offline=yes --no-pager "$unit" 2>&1) || {
    echo "$report"
    echo "systemd-analyze failed on $unit" >&2
    exit 1
}
score=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if [ -z "$score" ]; then
    echo "$report"
    echo "could not read the exposure score" >&2
    exit 1
fi
printf '%s\n' "$report" | grep -E '^✗' || true
echo "exposure score of $unit: $score (limit $limit)"
if ! awk -v s="$score" -v l="$limit" 'BEGIN { exit !(s <= l) }'; then
    echo "FAIL: $unit scores $score, above $limit" >&2
    exit 1
fi
