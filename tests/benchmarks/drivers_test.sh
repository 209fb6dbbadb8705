#!/usr/bin/env bash
# Every workload driver runs on the hakmem variant under test with short arguments,
# checks its own data (xthread, xbatch, realloc_grow, large_replace) and prints its result line; a bad argument
# gives the usage and exit code 2.
# Usage: drivers_test.sh LIBHAKMEM DRIVER...
set -uo pipefail
lib="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
shift
declare -A short=(
  [larson]="1 8 1024 200 2000 1 2" [random_mixed]="200000 1024 1 256"
  [mid_large_mt]="2 20000 64 1" [pool_tls]="2 20000 64 1" [xthread]="2 50000 1"
  [xbatch]="2 200 256 64"
  [cache_thrash]="2 5000 10 8" [realloc_grow]="20 262144 1" [pair_loop]="64 1000"
  [burst_idle]="3 16 100 1" [large_replace]="2 200 4 64 1024 1 1"
)
failures=0
passes=0
for driver in "$@"; do
  name=$(basename "$driver")
  out=$(LD_PRELOAD="$lib" "$driver" ${short[$name]} 2>&1)
  rc=$?
  if [ "$name" = pair_loop ]; then
    [ $rc -eq 0 ]
  else
    [ $rc -eq 0 ] && echo "$out" | grep -Eq "^$name: [0-9]+ ops in [0-9.]+ s = [0-9]+ ops/s$"
  fi
  if [ $? -eq 0 ]; then passes=$((passes + 1)); echo "ok   $name"; else
    failures=$((failures + 1)); echo "FAIL $name (exit $rc): $out"; fi
  "$driver" not-a-number >/dev/null 2>&1
  rc=$?
  if [ $rc -eq 2 ]; then passes=$((passes + 1)); else
    failures=$((failures + 1)); echo "FAIL $name: a bad argument gave exit $rc, not 2"; fi
done
echo "$passes passed, $failures failed"
[ "$failures" -eq 0 ]
