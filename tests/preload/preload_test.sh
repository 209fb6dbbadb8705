#!/usr/bin/env bash
# Real programs from Debian run with LD_PRELOAD of libhakmem.so (the variant under test)
# and must print exactly what they print on the system allocator, with the same exit
# status; HAKMEM_STATS=1 must show that hakmem served the program's own allocations (its
# own process's Tiny or Pool counters, not a wrapping shell's), and a program that is not
# installed is a failure, not a pass. Usage: preload_test.sh path/to/libhakmem_<variant>.so
set -uo pipefail

lib="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
work="${TEST_TMPDIR:-$(mktemp -d)}/preload"
mkdir -p "$work/tmp"
cd "$work" || exit 1
# Sandboxed tests of other variants run at the same time with the same pids: keep every
# temporary file of the programs (python's test runner names its directory by pid) here.
export HOME="$work" LC_ALL=C TMPDIR="$work/tmp"
failures=0
passes=0

# run NAME PROGRAM COMMAND...: same stdout and exit code with and without hakmem, and
# the process named PROGRAM (its /proc comm) allocated through hakmem. Its statistics
# go to stderr, or to NAME.err when the command sends the program's stderr there.
run() {
  local name="$1" program="$2"
  shift 2
  "$@" >"$name.sys.out" 2>"$name.sys.err"
  local sys_rc=$?
  LD_PRELOAD="$lib" "$@" >"$name.hak.out" 2>"$name.hak.err"
  local hak_rc=$?
  if [ "$sys_rc" != "$hak_rc" ] || ! cmp -s "$name.sys.out" "$name.hak.out"; then
    echo "FAIL $name: exit $sys_rc vs $hak_rc with hakmem"
    diff "$name.sys.out" "$name.hak.out" | head -20
    tail -5 "$name.hak.err"
    failures=$((failures + 1))
    return
  fi
  rm -f "$name.err"
  HAKMEM_STATS=1 LD_PRELOAD="$lib" "$@" >/dev/null 2>"$name.stats"
  [ -f "$name.err" ] && cat "$name.err" >>"$name.stats"
  # The block of the program's own process: tiny or pool refills happen only when it
  # allocates (a process that never does shows 0).
  if ! awk -v prog="$program" '
      /^hakmem stats of pid [0-9]+ / { mine = ($6 == prog); next }
      mine && /^  (tiny|pool) refills [1-9]/ { served = 1 }
      END { exit !served }' "$name.stats"; then
    echo "FAIL $name: HAKMEM_STATS=1 shows no allocation by $program through hakmem"
    grep "^hakmem stats" "$name.stats" | head -5
    failures=$((failures + 1))
    return
  fi
  echo "ok   $name ($(wc -c <"$name.hak.out") bytes of output, exit $hak_rc)"
  passes=$((passes + 1))
}

# Every program the runs below need: a missing one fails the test.
for program in /usr/bin/python3 /usr/bin/sqlite3 /usr/bin/perl /usr/bin/sort /usr/bin/gcc \
  /usr/bin/git; do
  if [ ! -x "$program" ]; then
    echo "FAIL $program is not installed (tools/bootstrap.sh installs it)"
    failures=$((failures + 1))
  fi
done

# python3 on malloc, running some of its own regression tests.
# Timing lines differ between runs and are left out of the comparison.
PY_TESTS="test_list test_dict test_set test_unicode test_json test_re test_bisect test_heapq"
run python python3 /bin/bash -o pipefail -c "PYTHONMALLOC=malloc /usr/bin/python3 -m test -q \
  $PY_TESTS 2>python.err | grep -v -E 'load avg|duration'"

# sqlite3 building and querying a table of 200,000 rows.
cat >sql.txt <<'SQL'
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, blob BLOB);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
INSERT INTO t SELECT i, printf('name-%08d', (i * 7919) % 200000), (i % 977) / 7.0,
                     zeroblob(i % 300) FROM n;
CREATE INDEX t_name ON t(name);
SELECT count(*), sum(length(blob)), round(avg(score), 4) FROM t;
SELECT name FROM t WHERE name LIKE 'name-0001%' ORDER BY name LIMIT 5;
SELECT score, count(*) FROM t GROUP BY score ORDER BY count(*) DESC, score LIMIT 3;
SQL
run sqlite sqlite3 /bin/sh -c 'rm -f db.sqlite && exec /usr/bin/sqlite3 db.sqlite ".read sql.txt"'

# perl: hashes, strings, sorting, regexes.
run perl perl /usr/bin/perl -e '
  my %h; for my $i (1..200000) { $h{"k$i"} = "v" x ($i % 50); }
  my @k = sort { length($h{$a}) <=> length($h{$b}) || $a cmp $b } keys %h;
  my $s = join(",", @k[0..20]); my @m = ($s =~ /k(\d+)/g);
  print scalar(@k), " ", $s, " ", scalar(@m), "\n";'

# coreutils sort on 300,000 lines.
/usr/bin/perl -e 'srand(42); print int(rand(1e9)), " line ", $_, "\n" for 1..300000' >lines.txt
run sort sort /usr/bin/sort -n lines.txt

# gcc compiling a file (cc1, as and ld all run on hakmem).
cat >prog.c <<'C'
#include <stdio.h>
#include <stdlib.h>
struct node { int v; struct node *next; };
int main(void) {
  struct node *head = NULL;
  for (int i = 0; i < 1000; i++) {
    struct node *n = malloc(sizeof *n);
    n->v = i; n->next = head; head = n;
  }
  long sum = 0;
  while (head) { struct node *n = head; sum += n->v; head = n->next; free(n); }
  printf("%ld\n", sum);
  return 0;
}
C
run gcc cc1 /usr/bin/gcc -O2 -Wall -o prog prog.c
run prog prog ./prog

# git on a repository with history.
git init -q repo && cd repo && git config user.email t@example.com && git config user.name t
for i in $(seq 1 40); do
  seq "$i" 500 >"file$((i % 7)).txt"
  git add -A && git commit -qm "change $i" --date="2026-01-01T00:00:$((i % 60))"
done
cd "$work"
run git-log git /usr/bin/git -C repo log --stat --format="%s" -n 15
run git-diff git /usr/bin/git -C repo diff HEAD~30 HEAD --stat
run git-gc git /usr/bin/git -C repo fsck --full --no-progress

# Under a 2 GiB address-space limit hakmem reserves less and keeps working.
run ulimit-v python3 /bin/bash -c 'ulimit -v 2097152; exec /usr/bin/python3 -c "
x = [bytes(i % 700) for i in range(200000)]
print(len(x), sum(map(len, x)))"'

echo "$passes passed, $failures failed"
[ "$failures" -eq 0 ]
