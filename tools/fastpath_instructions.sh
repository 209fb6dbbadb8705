#!/usr/bin/env bash
# Instructions per malloc+free pair, hakmem beside each peer, counted by callgrind:
# repeatable on noisy shared machines, unlike timings. For each allocator and size it runs
# benchmarks/pair_loop at two counts and divides the difference in instructions by the
# difference in pairs, which removes start-up.
# usage: tools/fastpath_instructions.sh [SIZE ...]   (default sizes: 16 64 512 8192 32768 1048576)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "fastpath: valgrind is missing (tools/bootstrap.sh)" >&2; exit 1; }
for s in "$@"; do
  [[ "$s" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SIZE ...]   (sizes in bytes)" >&2; exit 2; }
done
sizes=("${@:-16 64 512 8192 32768 1048576}")
# shellcheck disable=SC2206
sizes=(${sizes[*]})

bazel build --config=release -c opt //benchmarks:pair_loop //allocator:libhakmem_release.so >/dev/null 2>&1 ||
  { echo "fastpath: build failed" >&2; exit 1; }
loop=bazel-bin/benchmarks/pair_loop
libdir=/usr/lib/x86_64-linux-gnu
allocs=("hakmem=$PWD/bazel-bin/allocator/libhakmem_release.so" "system=")
for peer in "mimalloc=$libdir/libmimalloc.so.2" "jemalloc=$libdir/libjemalloc.so.2" \
            "tcmalloc=$libdir/libtcmalloc_minimal.so.4"; do
  if [ -e "${peer#*=}" ]; then allocs+=("$peer"); else echo "fastpath: skipping ${peer%%=*}: not found"; fi
done

instructions() {  # LIB SIZE COUNT
  local out
  out=$(mktemp)
  LD_PRELOAD="$1" valgrind --tool=callgrind --callgrind-out-file="$out" "$loop" "$2" "$3" 2>/dev/null
  awk '/^summary:/ {print $2}' "$out"
  rm -f "$out"
}

low=20000
high=120000
printf "%-10s" "size"
for a in "${allocs[@]}"; do printf "%12s" "${a%%=*}"; done
printf "\n"
for size in "${sizes[@]}"; do
  printf "%-10s" "$size"
  for a in "${allocs[@]}"; do
    lib="${a#*=}"
    i1=$(instructions "$lib" "$size" "$low")
    i2=$(instructions "$lib" "$size" "$high")
    printf "%12.1f" "$(echo "($i2 - $i1) / ($high - $low)" | bc -l)"
  done
  printf "\n"
done
echo "(instructions per malloc+free pair; valgrind --tool=callgrind, pairs $low vs $high)"
