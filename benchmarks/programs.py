"""Real programs for the comparison: redis-server under redis-benchmark, the sqlite3 shell
and CPython, each run with one allocator preloaded.

Each runner returns a Run: the operations it counts and their rate, the program's peak
RSS (and, for redis, RSS after FLUSHALL and a decay interval), the text whose equality
across allocators proves the program computed the same thing, and an error string when
anything went wrong (a missing program, a server that did not start, a crash), never a
zero rate. For hakmem the caller sets HAKMEM_STATS=1, and `served_by_hakmem` checks that
the program's own process (not a wrapping shell) allocated through it.
"""

import collections
import csv
import io
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

Run = collections.namedtuple(
    "Run", "ops rate peak_kib after_kib output stderr error extras")

REDIS_COMMANDS = ["SET", "GET", "LPUSH", "LPOP", "SADD", "HSET", "ZADD"]
STATS_HEADER = re.compile(r"^hakmem stats of pid (\d+) (\S+) ")


def failed(error, stderr=""):
    return Run(None, None, None, None, None, stderr, error, {})


def served_by_hakmem(stats_text, program):
    """Whether the HAKMEM_STATS block of a process named `program` shows Tiny or Pool
    refills: they happen only when the process itself allocates through hakmem."""
    mine = False
    for line in stats_text.splitlines():
        m = STATS_HEADER.match(line)
        if m:
            mine = m.group(2) == program
        elif mine and re.match(r"^  (tiny|pool) refills [1-9]", line):
            return True
    return False


def spawn(cmd, lib, env_extra, timeout, stdin_text=None, cwd=None):
    """Runs cmd with `lib` preloaded (None: the system allocator) under GNU time; returns
    (exit status or None, stdout, stderr, peak RSS KiB, seconds, error)."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.update(env_extra or {})
    preload = ["env", "LD_PRELOAD=" + lib] if lib else []
    with tempfile.NamedTemporaryFile(mode="r") as rss_file, \
            tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err:
        stdin.write((stdin_text or "").encode())
        stdin.seek(0)
        timer = ["/usr/bin/time", "-f", "%M", "-o", rss_file.name]
        start = time.monotonic()
        proc = subprocess.Popen(timer + preload + cmd, stdin=stdin, stdout=out, stderr=err,
                                env=env, cwd=cwd, start_new_session=True)
        # Polled every millisecond: Popen.wait(timeout) sleeps up to 50 ms at a time,
        # which quantised the short runs' times.
        status = None
        while status is None:
            pid, st = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                status = st
            elif time.monotonic() - start > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                os.waitpid(proc.pid, 0)
                return None, "", "", None, None, "timeout"
            else:
                time.sleep(0.001)
        seconds = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        rss = rss_file.read().strip().splitlines()
    peak = int(rss[-1]) if rss and rss[-1].isdigit() else None
    if "Command terminated by signal" in stderr:
        return proc.returncode, stdout, stderr, peak, seconds, \
            "crash (signal " + stderr.split("signal")[-1].strip() + ")"
    if proc.returncode != 0:
        return proc.returncode, stdout, stderr, peak, seconds, "exit %d" % proc.returncode
    return 0, stdout, stderr, peak, seconds, None


def need(path):
    return None if os.access(path, os.X_OK) else "%s not installed" % path


# ---- sqlite3 ----

SQLITE = "/usr/bin/sqlite3"


def sqlite_script(rows):
    """Builds, indexes, aggregates and sorts `rows` rows in an in-memory database."""
    return """
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, score REAL, note TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)
INSERT INTO t SELECT i, printf('name-%%08d', (i * 7919) %% %d), i %% 97, (i %% 977) / 7.0,
                     printf('%%0*d', i %% 120, i) FROM n;
CREATE INDEX t_name ON t(name);
CREATE INDEX t_grp_score ON t(grp, score);
SELECT count(*), sum(length(note)), round(avg(score), 4) FROM t;
SELECT grp, count(*), round(sum(score), 2), max(name) FROM t GROUP BY grp ORDER BY grp LIMIT 10;
SELECT name, score FROM t ORDER BY score DESC, name LIMIT 10;
SELECT count(DISTINCT name) FROM t;
CREATE TABLE u AS SELECT name, group_concat(id) AS ids FROM t GROUP BY name;
SELECT count(*), sum(length(ids)) FROM u;
SELECT a.name FROM t a JOIN u b ON a.name = b.name WHERE a.id %% 5000 = 1 ORDER BY a.name;
""" % (rows, rows)


def run_sqlite(args, lib, env, timeout):
    rows = int(args)
    error = need(SQLITE)
    if error:
        return failed(error)
    status, out, err, peak, seconds, error = spawn(
        [SQLITE, ":memory:"], lib, env, timeout, stdin_text=sqlite_script(rows))
    if error:
        return failed(error, err)
    return Run(rows, rows / seconds, peak, None, out, err, None, {})


# ---- CPython ----

PYTHON = "/usr/bin/python3"

PY_SCRIPT = r'''
import json, sys
scale = int(sys.argv[1])
ops = 0
# dicts of small objects, rebuilt and filtered
d = {}
for i in range(60000 * scale):
    d["k%d" % i] = (i, str(i), [i] * (i % 5))
    ops += 1
kept = {k: v for k, v in d.items() if v[0] % 3 == 0}
ops += len(d)
print("dict", len(kept), sum(v[0] for v in kept.values()) % 1000003)
# lists of small objects, sorted
class P:
    __slots__ = ("x", "y")
    def __init__(self, x, y):
        self.x, self.y = x, y
ps = [P((i * 7919) % 100003, i) for i in range(80000 * scale)]
ps.sort(key=lambda p: (p.x, p.y))
ops += len(ps)
print("list", ps[0].x, ps[-1].x, sum(p.y for p in ps[:1000]))
# JSON round trips
doc = [{"id": i, "tags": ["t%d" % (i % 13), "u%d" % (i % 7)], "v": i / 3} for i in range(20000 * scale)]
for _ in range(3):
    doc = json.loads(json.dumps(doc))
    ops += len(doc)
print("json", len(doc), round(sum(x["v"] for x in doc), 3))
# string building
parts = []
for i in range(100000 * scale):
    parts.append("%d:%s;" % (i, "x" * (i % 17)))
    ops += 1
s = "".join(parts)
print("str", len(s), s.count("x") % 1000003)
print("ops", ops)
'''


def run_cpython(args, lib, env, timeout):
    scale = int(args)
    error = need(PYTHON)
    if error:
        return failed(error)
    env = dict(env or {}, PYTHONMALLOC="malloc", PYTHONHASHSEED="0")
    with tempfile.NamedTemporaryFile("w", suffix=".py") as script:
        script.write(PY_SCRIPT)
        script.flush()
        status, out, err, peak, seconds, error = spawn(
            [PYTHON, script.name, str(scale)], lib, env, timeout)
    if error:
        return failed(error, err)
    m = re.search(r"^ops (\d+)$", out, re.M)
    if not m:
        return failed("no ops line", err)
    ops = int(m.group(1))
    return Run(ops, ops / seconds, peak, None, out, err, None, {})


# ---- redis ----

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
REDIS_BENCHMARK = "/usr/bin/redis-benchmark"


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_redis_csv(text):
    """redis-benchmark --csv output -> {command: requests per second}."""
    rates = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 2 and row[0] != "test":
            try:
                rates[row[0].split()[0]] = float(row[1])
            except ValueError:
                pass
    return rates


def aggregate_rate(rates, requests):
    """Requests per second over all commands run one after another."""
    seconds = sum(requests / r for r in rates.values() if r > 0)
    return len(rates) * requests / seconds if seconds else None


def redis_check_commands(value_size):
    """A fixed load and the queries whose replies must be the same on every allocator."""
    value = "v" * value_size
    cmds = []
    for i in range(2000):
        cmds.append("SET key:%d %d%s" % (i, i, value[:max(0, value_size - 8)]))
        cmds.append("RPUSH list %d" % i)
        cmds.append("SADD set m%d" % (i % 500))
        cmds.append("HSET hash f%d %d" % (i, i * 3))
        cmds.append("ZADD zset %d z%d" % ((i * 7919) % 2003, i))
    cmds += ["DBSIZE", "STRLEN key:1999", "GET key:7", "LRANGE list 100 110", "LLEN list",
             "SCARD set", "SISMEMBER set m499", "HMGET hash f1 f500 f1999", "HLEN hash",
             "ZRANGE zset 0 9 WITHSCORES", "ZCARD zset", "ZSCORE zset z1000"]
    return "\n".join(cmds) + "\n"


def rss_of(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cli(port, args, timeout=30, stdin_text=None):
    return subprocess.run([REDIS_CLI, "-p", str(port)] + args, input=stdin_text,
                          capture_output=True, text=True, timeout=timeout)


def run_redis(args, lib, env, timeout, server=None, decay_s=2.0):
    """args: VALUE_SIZE REQUESTS. Starts the server with `lib` preloaded on a free
    loopback port, runs redis-benchmark (on the system allocator) over the main
    commands, reads the server's peak RSS, checks a fixed load's replies, flushes,
    waits a decay interval and reads RSS again; stops the server whatever happens."""
    value_size, requests = (int(x) for x in args.split())
    server = server or os.environ.get("COMPARE_REDIS_SERVER", REDIS_SERVER)
    for path in (server, REDIS_CLI, REDIS_BENCHMARK):
        error = need(path)
        if error:
            return failed(error)
    port = free_port()
    penv = dict(os.environ)
    penv.pop("LD_PRELOAD", None)
    penv.update(env or {})
    if lib:
        penv["LD_PRELOAD"] = lib
    err_file = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=err_file, env=penv, start_new_session=True)

    def server_stderr():
        err_file.seek(0)
        return err_file.read().decode(errors="replace")

    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                return failed("server did not start (exit %d)" % proc.returncode,
                              server_stderr())
            try:
                if cli(port, ["ping"], timeout=2).stdout.strip() == "PONG":
                    break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                return failed("server did not answer", server_stderr())
            time.sleep(0.05)
        bench = subprocess.run(
            [REDIS_BENCHMARK, "-p", str(port), "-q", "--csv", "-t",
             ",".join(c.lower() for c in REDIS_COMMANDS), "-d", str(value_size), "-n",
             str(requests), "-r", "100000", "-P", "16"],
            capture_output=True, text=True, timeout=timeout)
        rates = parse_redis_csv(bench.stdout)
        if proc.poll() is not None:
            return failed("server died (exit %d)" % proc.returncode, server_stderr())
        if bench.returncode != 0 or sorted(rates) != sorted(REDIS_COMMANDS):
            return failed("redis-benchmark failed: " + (bench.stderr or bench.stdout)[-200:],
                          server_stderr())
        peak = rss_of(proc.pid, "VmHWM")
        cli(port, ["flushall"])
        check = cli(port, [], stdin_text=redis_check_commands(value_size), timeout=60)
        cli(port, ["flushall"])
        time.sleep(decay_s)
        after = rss_of(proc.pid, "VmRSS")
    except subprocess.TimeoutExpired:
        return failed("timeout", server_stderr())
    finally:
        if proc.poll() is None:
            try:
                cli(port, ["shutdown", "nosave"], timeout=5)
            except subprocess.TimeoutExpired:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    stderr = server_stderr()
    err_file.close()
    rate = aggregate_rate(rates, requests)
    extras = {"redis " + c: rates[c] for c in REDIS_COMMANDS}
    return Run(len(rates) * requests, rate, peak, after, check.stdout, stderr, None, extras)


# name -> (runner, the process whose HAKMEM_STATS block must show it was served)
RUNNERS = {
    "redis": (run_redis, "redis-server"),
    "sqlite": (run_sqlite, "sqlite3"),
    "cpython": (run_cpython, "python3"),
}
