#!/usr/bin/env bash
# The comparison tool end to end on one short workload: a table with a hakmem column and
# ratios, results.md and the last line naming the output directory; bad usage exits 2.
set -uo pipefail
compare="$1"
out="${TEST_TMPDIR:-$(mktemp -d)}/compare"
failures=0
log=$("$compare" --quick --only xthread --out "$out" 2>&1)
rc=$?
[ $rc -eq 0 ] || { echo "FAIL compare exited $rc: $log"; failures=$((failures + 1)); }
grep -q "^| xthread | " <<<"$log" || { echo "FAIL no xthread row: $log"; failures=$((failures + 1)); }
grep -q "^| workload | hakmem | system" <<<"$log" || { echo "FAIL no hakmem column"; failures=$((failures + 1)); }
grep -Eq "^\|   vs system \| [0-9.]+x" <<<"$log" || { echo "FAIL no ratios"; failures=$((failures + 1)); }
grep -Eq "^\|   RSS after free \| [0-9.]+ MB" <<<"$log" || { echo "FAIL no RSS after free"; failures=$((failures + 1)); }
[ -s "$out/results.md" ] || { echo "FAIL no results.md"; failures=$((failures + 1)); }
grep -q "^xthread,hakmem,0," "$out/runs.csv" || { echo "FAIL no hakmem run in runs.csv"; failures=$((failures + 1)); }
[ "$(echo "$log" | tail -1)" = "results written to $out" ] || { echo "FAIL last line"; failures=$((failures + 1)); }
# A single-threaded workload runs on one CPU, named in the header (machines of 2+ CPUs).
if [ "$(nproc)" -ge 2 ]; then
  "$compare" --quick --only random_mixed --cpu 0 --out "$out.pinned" >/dev/null 2>&1
  head -1 "$out.pinned/results.md" | grep -q "single-threaded workloads on CPU 0$" ||
    { echo "FAIL the pinned CPU is not in the header: $(head -1 "$out.pinned/results.md")"; failures=$((failures + 1)); }
  "$compare" --quick --only xthread --cpu none --out "$out.unpinned" >/dev/null 2>&1
  head -1 "$out.unpinned/results.md" | grep -q "single-threaded" &&
    { echo "FAIL --cpu none still names a CPU"; failures=$((failures + 1)); }
fi
# --hardening adds hakmem without the hardening's fast-path checks and ratios to it.
log=$("$compare" --quick --only xthread --hardening --out "$out.hardening" 2>&1)
grep -q "^| workload | hakmem | hakmem-noharden | system" <<<"$log" ||
  { echo "FAIL no hakmem-noharden column: $log"; failures=$((failures + 1)); }
grep -Eq "^\|   vs noharden \| [0-9.]+x \| 1.00x \|" <<<"$log" ||
  { echo "FAIL no ratios to the unhardened build"; failures=$((failures + 1)); }
grep -q "vs noharden" "$out/results.md" &&
  { echo "FAIL a run without --hardening has its row"; failures=$((failures + 1)); }
"$compare" --cpu 99999 >/dev/null 2>&1
[ $? -eq 2 ] || { echo "FAIL --cpu of a CPU not there did not exit 2"; failures=$((failures + 1)); }
"$compare" --runs 0 >/dev/null 2>&1
[ $? -eq 2 ] || { echo "FAIL --runs 0 did not exit 2"; failures=$((failures + 1)); }
"$compare" --no-such-flag >/dev/null 2>&1
[ $? -eq 2 ] || { echo "FAIL a bad flag did not exit 2"; failures=$((failures + 1)); }
"$compare" --only nothing >/dev/null 2>&1
[ $? -eq 2 ] || { echo "FAIL --only matching nothing did not exit 2"; failures=$((failures + 1)); }
echo "$((16 - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
