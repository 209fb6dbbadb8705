#!/usr/bin/env bash
# libhakmem.so as a user meets it: what it exports, HAKMEM_HELP, warnings for bad option
# values, and (trace variant only) the free-route log and route counters.
# Usage: library_test.sh path/to/libhakmem_<variant>.so <variant>
set -uo pipefail
lib="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
variant="$2"
failures=0
passes=0
check() {  # check NAME CONDITION-EXIT-CODE DETAIL
  if [ "$2" -eq 0 ]; then
    echo "ok   $1"
    passes=$((passes + 1))
  else
    echo "FAIL $1: $3"
    failures=$((failures + 1))
  fi
}

expected="aligned_alloc calloc free free_aligned_sized free_sized malloc malloc_stats malloc_trim
malloc_usable_size mallopt memalign posix_memalign pvalloc realloc reallocarray valloc"
exported=$(nm -D --defined-only --extern-only "$lib" | awk '{print $3}' | sort)
family=$(echo "$exported" | grep -v '^hak_' | tr '\n' ' ' | sed 's/ $//')
[ "$family" = "$(echo $expected)" ]
check "exports the malloc family" $? "got: $family"
others=$(echo "$exported" | grep -v '^hak_' | grep -v -x -F "$(echo "$expected" | tr ' ' '\n')")
[ -z "$others" ]
check "exports nothing else but hak_*" $? "$others"
echo "$exported" | grep -qx hak_malloc && echo "$exported" | grep -qx hak_stats_get
check "exports the hak_* API" $? "hak_malloc or hak_stats_get missing"
! ldd "$lib" | grep -q 'libstdc++'
check "depends on libc only" $? "$(ldd "$lib")"

help=$(HAKMEM_HELP=1 LD_PRELOAD="$lib" /bin/true 2>&1)
case "$variant" in
  debug) expected="debug-fail-fast" ;;
  *) expected="$variant" ;;
esac
echo "$help" | grep -q "HAKMEM_DECAY_MS" && echo "$help" | grep -q "^hakmem variant $expected ("
check "HAKMEM_HELP=1 prints the table and names the $expected variant" $? "$help"

warn=$(HAKMEM_DECAY_MS=soon LD_PRELOAD="$lib" /bin/true 2>&1)
[ "$warn" = "hakmem: HAKMEM_DECAY_MS=soon is not a number in 0..3600000; using the default 1000" ]
check "a bad value gives one warning line" $? "$warn"

routes=$(HAKMEM_FREE_ROUTE_TRACE=1 LD_PRELOAD="$lib" /usr/bin/perl -e '@a = map { "x" x $_ } 1..3000' 2>&1 | grep -c '^hakmem: free 0x[0-9a-f]* -> ')
stats=$(HAKMEM_STATS=1 LD_PRELOAD="$lib" /usr/bin/perl -e '@a = map { "x" x $_ } 1..3000' 2>&1)
if [ "$variant" = trace ]; then
  [ "$routes" -gt 100 ]
  check "trace: HAKMEM_FREE_ROUTE_TRACE=1 logs the route of each free" $? "$routes lines"
  echo "$stats" | grep -Eq "route tiny fast [1-9]" && echo "$stats" | grep -Eq "route tiny refill [1-9]"
  check "trace: HAKMEM_STATS=1 prints route counters" $? "$stats"
else
  [ "$routes" -eq 0 ]
  check "$variant: no route log" $? "$routes lines"
  ! echo "$stats" | grep -q "route "
  check "$variant: no route counters" $? "$stats"
fi
echo "$passes passed, $failures failed"
[ "$failures" -eq 0 ]
