#!/usr/bin/env bash
# The comparison's real programs end to end, short (--quick): redis-server started and
# stopped under every allocator, sqlite3 and CPython; rows with figures, the per-command
# table, the memory chart, and no server left behind. Then a server that cannot start is
# reported as such in its cells (not as a zero) and fails the run. Needs redis-server,
# sqlite3 and python3 (tools/bootstrap.sh); tagged "redis" so it can be filtered out.
set -uo pipefail
compare="$1"
out="${TEST_TMPDIR:-$(mktemp -d)}/programs"
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
before=$(pgrep -c -x redis-server)
log=$("$compare" --quick --only "redis 100B,sqlite,cpython" --out "$out" 2>&1)
rc=$?
[ $rc -eq 0 ] || fail "compare exited $rc: $(echo "$log" | tail -20)"
for row in "redis 100B" sqlite cpython; do
  grep -Eq "^\| $row \| [0-9.]+[KMG]? \| [0-9.]+[KMG]? \|" <<<"$log" ||
    fail "no figures in the $row row: $(echo "$log" | grep "^| $row")"
done
grep -Eq "^\|   RSS after free \| [0-9.]+ MB" <<<"$log" || fail "no RSS after FLUSHALL"
grep -Eq "^\| redis 100B ZADD \| [0-9.]+[KMG]? \|" <<<"$log" || fail "no per-command table"
[ -s "$out/chart_memory.png" ] || [ -z "$(command -v gnuplot)" ] || fail "no memory chart"
[ "$(pgrep -c -x redis-server)" = "$before" ] || fail "a redis-server was left running"

log=$(COMPARE_REDIS_SERVER=/bin/false "$compare" --quick --only "redis 100B" --out "$out.2" 2>&1)
rc=$?
[ $rc -eq 1 ] || fail "a server that cannot start gave exit $rc, not 1"
grep -q "^| redis 100B | server did not start (exit 1) |" <<<"$log" ||
  fail "the failed start is not in the row: $(echo "$log" | grep "^| redis 100B")"
grep -q "compare: redis 100B on hakmem: server did not start" <<<"$log" ||
  fail "the failed start is not named on stderr"
echo "$((8 - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
