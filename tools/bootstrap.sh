#!/usr/bin/env bash
# Installs everything hakmem's build, tests and benchmarks need on Debian 12, from
# Debian's packages only. Idempotent: when all is present it only checks and exits.
set -euo pipefail

PACKAGES=(
  # Bazel 4.2.3 and the mock repositories the offline WORKSPACE points at.
  bazel-bootstrap bazel-bootstrap-source default-jdk-headless
  # Compilers and test libraries (GoogleTest is built from source).
  gcc g++ googletest libbenchmark-dev libabsl-dev
  # Peer allocators for the comparison suite.
  libmimalloc2.0 libjemalloc2 libtcmalloc-minimal4
  # Real programs the preload tests run.
  python3 libpython3.11-testsuite sqlite3 perl git coreutils make redis-server redis-tools
  # libFuzzer builds (--config=fuzz).
  clang-14 libclang-rt-14-dev
  # Measurement tools.
  strace valgrind binutils gnuplot-nox procps time bc
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || { echo "bootstrap: apt-get update failed" >&2; exit 1; }
  if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/hakmem-bootstrap.log 2>&1; then
    echo "bootstrap: could not install: ${missing[*]} (see /tmp/hakmem-bootstrap.log)" >&2
    tail -5 /tmp/hakmem-bootstrap.log >&2
    exit 1
  fi
fi

for tool in bazel gcc g++; do
  command -v "$tool" >/dev/null || { echo "bootstrap: $tool is still missing" >&2; exit 1; }
done
[ -d /usr/src/bazel-bootstrap/mock_repos/rules_cc ] || {
  echo "bootstrap: /usr/src/bazel-bootstrap/mock_repos is missing (bazel-bootstrap-source)" >&2
  exit 1
}
echo "bootstrap: all ${#PACKAGES[@]} packages present"
