#!/usr/bin/env python3
"""hakmem side by side with the allocators a user would otherwise pick.

Runs every workload driver, and real programs (redis-server, sqlite3, CPython; see
programs.py), under each allocator found on the machine (through
LD_PRELOAD: hakmem's release libhakmem.so, the system allocator, mimalloc, jemalloc,
tcmalloc), interleaved in rounds (every allocator once per round, the order rotating from
round to round) so that machine noise hits everyone alike, and prints one table of
medians: ops/s, ratio to mimalloc and to the system allocator, peak RSS and memory system
calls per million operations. A ratio is the median of the ratios within each round: on
a shared machine whose speed changes for seconds at a time, the runs of one round see the
same machine, while the medians of all runs can come from different ones. Writes the
table as Markdown, a bar chart and every run (runs.csv) to an output directory named on
the last line. A real program whose output differs from its output on the system
allocator, that is missing, fails to start, or (on hakmem) did not allocate through
hakmem, is reported in its cell and makes the exit status 1.
"""

import argparse
import csv
import datetime
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import programs

LIBDIR = "/usr/lib/x86_64-linux-gnu"
PEERS = [
    ("system", None),
    ("mimalloc", LIBDIR + "/libmimalloc.so.2"),
    ("jemalloc", LIBDIR + "/libjemalloc.so.2"),
    ("tcmalloc", LIBDIR + "/libtcmalloc_minimal.so.4"),
]

# The column of hakmem without the hardening's fast-path checks (--hardening).
UNHARDENED = "hakmem-noharden"

# name, driver, full arguments, --quick arguments
WORKLOADS = [
    ("larson 1T", "larson", "2 8 1024 1000 10000 1 1", "1 8 1024 1000 10000 1 1"),
    ("larson 2T", "larson", "2 8 1024 1000 10000 1 2", "1 8 1024 1000 10000 1 2"),
    ("random_mixed", "random_mixed", "20000000 1024 1 1024", "3000000 1024 1 1024"),
    ("mid_large_mt 1T", "mid_large_mt", "1 4000000 256 1", "1 500000 256 1"),
    ("mid_large_mt 2T", "mid_large_mt", "2 4000000 256 1", "2 500000 256 1"),
    ("pool_tls 1T", "pool_tls", "1 4000000 256 1", "1 500000 256 1"),
    ("pool_tls 2T", "pool_tls", "2 4000000 256 1", "2 500000 256 1"),
    ("xthread", "xthread", "1 4000000 1", "1 500000 1"),
    # Cross-thread frees handed over in batches of 64-byte blocks (xmalloc-test's pattern):
    # the producer allocates a batch, the consumer frees it whole.
    ("xbatch 4096", "xbatch", "1 2000 4096 64", "1 200 4096 64"),
    ("xbatch 256", "xbatch", "1 40000 256 64", "1 4000 256 64"),
    ("cache_thrash", "cache_thrash", "2 1000000 100 8", "2 100000 100 8"),
    ("realloc_grow", "realloc_grow", "1000 1048576 1", "150 1048576 1"),
    # Big buffers replaced at random: one thread of 20 buffers of 5-25 MiB, each cleared
    # with memset (mimalloc-bench's malloc-large), and two threads of 8 blocks of
    # 64 KiB-1 MiB each with every page touched.
    ("large 5-25M", "large_replace", "1 1000 20 5120 25600 2 1", "1 100 20 5120 25600 2 1"),
    ("large 2T", "large_replace", "2 100000 8 64 1024 0 1", "2 10000 8 64 1024 0 1"),
    # 400 MiB burst freed, then 2 s of fast-path calls (mode 0) or of nothing while the
    # thread that allocated it all stays alive and another freed it (mode 3): the "RSS
    # after free" row is what the process holds at the end of the quiet phase.
    ("burst idle", "burst_idle", "0 400 2000 1", "0 64 500 1"),
    ("burst freed remotely", "burst_idle", "3 400 2000 1", "3 64 500 1"),
    # Real programs (programs.py): redis-server under redis-benchmark (VALUE_SIZE
    # REQUESTS per command; ops/s is requests/s over all commands, per command below the
    # table; RSS after free is after FLUSHALL and 2 s), the sqlite3 shell on ROWS rows,
    # CPython on allocation-heavy scripts at SCALE.
    ("redis 100B", "program:redis", "100 200000", "100 20000"),
    ("redis 20KB", "program:redis", "20480 50000", "20480 5000"),
    ("sqlite", "program:sqlite", "300000", "30000"),
    ("cpython", "program:cpython", "4", "1"),
]

# Workloads of one thread, run pinned to one CPU (--cpu) for every allocator: on a
# virtual machine the CPUs need not be equally fast. On the 2-core VM of 2026-11-27 the
# same single-threaded run took 1.5x longer on CPU 0 than on CPU 1, for every allocator,
# so unpinned runs drew a 1.5x ratio from where the scheduler put them. Workloads of two
# threads or more use every CPU alike; burst idle stays unpinned as hakmem's purge thread
# works beside the program there.
SINGLE_THREADED = {"larson 1T", "random_mixed", "mid_large_mt 1T", "pool_tls 1T",
                   "realloc_grow", "large 5-25M", "sqlite", "cpython"}

RESULT = re.compile(r"(\d+) ops in ([\d.]+) s = ([\d.]+) ops/s")
SYSCALLS = re.compile(r"memory system calls .* total=(\d+)")
AFTER_FREE = re.compile(r"^rss_after_free_kib: (\d+)$", re.M)
MEMORY_SYSCALLS = {"mmap", "munmap", "mremap", "madvise", "mprotect", "brk"}


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="compare", description="Run every driver on hakmem and each peer allocator.")
    p.add_argument("--runs", type=int, default=5, help="runs per driver and allocator (median)")
    p.add_argument("--quick", action="store_true", help="one run with short arguments (< 2 min)")
    p.add_argument("--out", help="output directory (default: a new one under /tmp)")
    p.add_argument("--syscalls", action="store_true",
                   help="count the peers' memory system calls with strace -c (one extra run)")
    p.add_argument("--only", help="comma-separated workload names to run (default: all)")
    p.add_argument("--timeout", type=float, default=120, help="seconds before a run is killed")
    p.add_argument("--hardening", action="store_true",
                   help="also run hakmem built without the hardening's fast-path checks "
                        "(the noharden variant) and print every allocator's ratio to it")
    p.add_argument("--cpu", default="last",
                   help="CPU the single-threaded workloads run on: a number, 'last' (the "
                        "default: the highest this process may use) or 'none' (unpinned)")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        sys.exit(2 if e.code else 0)
    if args.runs < 1:
        p.print_usage(sys.stderr)
        print("compare: --runs must be at least 1", file=sys.stderr)
        sys.exit(2)
    if args.quick:
        args.runs = 1
    allowed = os.sched_getaffinity(0)
    if args.cpu == "none" or len(allowed) < 2:
        args.cpu = None
    elif args.cpu == "last":
        args.cpu = max(allowed)
    elif args.cpu.isdigit() and int(args.cpu) in allowed:
        args.cpu = int(args.cpu)
    else:
        p.print_usage(sys.stderr)
        print("compare: --cpu must be one of %s, 'last' or 'none'" % sorted(allowed),
              file=sys.stderr)
        sys.exit(2)
    return args


def find_runfile(path):
    """The file as Bazel laid it out for `bazel run`, or next to this script."""
    for base in (os.environ.get("RUNFILES_DIR", ""), os.getcwd(),
                 os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")):
        for candidate in (os.path.join(base, "hakmem", path), os.path.join(base, path)):
            if os.path.exists(candidate):
                return os.path.abspath(candidate)
    return None


def allocators(hardening=False):
    found, missing = [], []
    for name, variant in [("hakmem", "release")] + ([(UNHARDENED, "noharden")] if hardening
                                                     else []):
        lib = find_runfile("allocator/libhakmem_%s.so" % variant)
        if lib is None:
            sys.exit("compare: libhakmem_%s.so is missing from the runfiles" % variant)
        found.append((name, lib))
    for name, lib in PEERS:
        if lib is None or os.path.exists(lib):
            found.append((name, lib))
        else:
            missing.append((name, lib))
    return found, missing


def run_once(binary, args, lib, timeout, env_extra=None, wrapper=None):
    """Runs one driver; returns (ops, ops/s, peak RSS KiB, RSS after free KiB or None,
    stderr, error or None).

    Peak RSS comes from GNU time, a small process that forks the driver: a child forked
    from this Python process would report Python's own resident size as its peak. Only
    the driver gets LD_PRELOAD (through env), not time itself."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.update(env_extra or {})
    preload = ["env", "LD_PRELOAD=" + lib] if lib else []
    rss_file = tempfile.NamedTemporaryFile(mode="r")
    timer = (["/usr/bin/time", "-f", "%M", "-o", rss_file.name]
             if os.path.exists("/usr/bin/time") else [])
    cmd = timer + (wrapper or []) + preload + [binary] + args.split()
    with rss_file, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        status, rusage = None, None
        while status is None:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, rusage = st, ru
            elif time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                return None, None, None, None, "", "timeout"
            else:
                time.sleep(0.01)
        proc.returncode = 0  # reaped above
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        rss_text = rss_file.read().strip().splitlines()
    peak = int(rss_text[-1]) if rss_text and rss_text[-1].isdigit() else rusage.ru_maxrss
    if "Command terminated by signal" in stderr:
        return None, None, None, None, stderr, "crash (" + stderr.split("signal")[-1].strip() + ")"
    if os.WIFSIGNALED(status):
        return None, None, None, None, stderr, "crash (%s)" % signal.Signals(os.WTERMSIG(status)).name
    if os.WEXITSTATUS(status) != 0:
        return None, None, None, None, stderr, "exit %d" % os.WEXITSTATUS(status)
    m = RESULT.search(stdout)
    if not m:
        return None, None, None, None, stderr, "no result"
    after = AFTER_FREE.search(stdout)
    return (int(m.group(1)), float(m.group(3)), peak, int(after.group(1)) if after else None,
            stderr, None)


def strace_syscalls(binary, args, lib, timeout):
    """Memory system calls of one run of a peer, counted by strace -c."""
    if not shutil.which("strace"):
        return None
    with tempfile.NamedTemporaryFile(mode="r") as report:
        ops, _, _, _, _, error = run_once(binary, args, lib, timeout * 4,
                                       wrapper=["strace", "-f", "-c", "-o", report.name, "--"])
        if error or not ops:
            return None
        total = 0
        for line in report.read().splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[-1] in MEMORY_SYSCALLS:
                total += int(fields[3])
        return total * 1e6 / ops


def paired_ratio(rates, base_rates):
    """Median over the rounds both allocators completed of rates[r] / base_rates[r];
    rates are dicts round -> ops/s. None when no round has both."""
    ratios = [rates[r] / base_rates[r] for r in rates if r in base_rates and base_rates[r] > 0]
    return statistics.median(ratios) if ratios else None


def human(v):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if v >= scale:
            return "%.2f%s" % (v / scale, unit)
    return "%.0f" % v


def main(argv):
    args = parse_args(argv)
    allocs, missing = allocators(args.hardening)
    for name, lib in missing:
        print("compare: skipping %s: %s not found" % (name, lib), flush=True)
    workloads = WORKLOADS
    if args.only:
        wanted = set(args.only.split(","))
        workloads = [w for w in WORKLOADS
                     if w[0] in wanted or w[1] in wanted or w[1].split(":")[-1] in wanted]
        if not workloads:
            print("compare: --only matches no workload; names: " +
                  ", ".join(w[0] for w in WORKLOADS), file=sys.stderr)
            return 2
    out_dir = args.out or tempfile.mkdtemp(prefix="hakmem-compare-")
    if args.out and not os.path.isabs(out_dir):
        out_dir = os.path.join(os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd()), out_dir)
    os.makedirs(out_dir, exist_ok=True)

    results = {}  # (workload, allocator) -> dict
    raw = open(os.path.join(out_dir, "runs.csv"), "w", newline="")  # every run, for a second look
    rows_csv = csv.writer(raw, lineterminator="\n")
    rows_csv.writerow(["workload", "allocator", "round", "ops_per_s", "peak_rss_kib",
                       "rss_after_free_kib"])
    total_runs = len(workloads) * len(allocs) * args.runs
    done, started = 0, time.monotonic()
    program_failures = []
    for wname, driver, full, quick in workloads:
        program = driver[len("program:"):] if driver.startswith("program:") else None
        binary = None if program else find_runfile("benchmarks/" + driver)
        dargs = quick if args.quick else full
        # The runs inherit this process's CPU set; it is restored for the next workload.
        all_cpus = os.sched_getaffinity(0)
        if args.cpu is not None and wname in SINGLE_THREADED:
            os.sched_setaffinity(0, {args.cpu})
        for r in range(args.runs):
            # Interleaved: every allocator once per round, starting one further each round.
            for aname, lib in allocs[r % len(allocs):] + allocs[:r % len(allocs)]:
                done += 1
                elapsed = time.monotonic() - started
                left = elapsed / (done - 1) * (total_runs - done + 1) if done > 1 else 0
                print("[%3d/%d] %-16s on %-8s run %d/%d  (about %ds left)" %
                      (done, total_runs, wname, aname, r + 1, args.runs, left), flush=True)
                env = {"HAKMEM_STATS": "1"} if aname.startswith("hakmem") else None
                cell = results.setdefault((wname, aname), {"rates": {}, "rss": [], "after": [],
                                                           "sys": [], "outputs": [],
                                                           "extras": {}})
                if program:
                    ops, rate, rss, after, stderr, error = run_program(
                        program, dargs, aname, lib, args.timeout, env, cell)
                else:
                    ops, rate, rss, after, stderr, error = run_once(binary, dargs, lib,
                                                                    args.timeout, env)
                if error:
                    cell["error"] = error
                    print("         %s on %s: %s" % (wname, aname, error), flush=True)
                    continue
                cell["rates"][r] = rate
                rows_csv.writerow([wname, aname, r, "%.0f" % rate, rss,
                                   "" if after is None else after])
                raw.flush()
                cell["rss"].append(rss)
                if after is not None:
                    cell["after"].append(after)
                m = SYSCALLS.search(stderr)
                if m:
                    cell["sys"].append(int(m.group(1)) * 1e6 / ops)
        os.sched_setaffinity(0, all_cpus)
        if program:
            program_failures += check_outputs(wname, [a for a, _ in allocs], results)
        if args.syscalls and not program:
            for aname, lib in allocs:
                if not aname.startswith("hakmem"):
                    print("         strace -c: %s on %s" % (wname, aname), flush=True)
                    v = strace_syscalls(binary, dargs, lib, args.timeout)
                    if v is not None:
                        results[(wname, aname)]["sys"] = [v]

    raw.close()
    names = [a for a, _ in allocs]
    lines = ["| workload | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    bases = [("vs mimalloc", "mimalloc"), ("vs system", "system")]
    if args.hardening:
        bases.append(("vs noharden", UNHARDENED))  # hakmem's figure is the hardening's cost
    rows = {"ops/s (median)": []}
    rows.update((key, []) for key, _ in bases)
    rows.update((key, []) for key in ("time", "peak RSS", "RSS after free",
                                      "mem syscalls / M ops"))
    table = []
    for wname, driver, *_ in workloads:
        med, vs_mimalloc = {}, {}
        for a in names:
            c = results.get((wname, a), {})
            med[a] = statistics.median(c["rates"].values()) if c.get("rates") else None
        cells = {k: [] for k in rows}
        for a in names:
            c = results.get((wname, a), {})
            if med[a] is None:
                for k in cells:
                    cells[k].append(c.get("error", "n/a") if k == "ops/s (median)" else "-")
                continue
            cells["ops/s (median)"].append(human(med[a]))
            seconds = c.get("extras", {}).get("seconds")
            cells["time"].append("%.2f s" % statistics.median(seconds) if seconds else "-")
            for key, base in bases:
                other = results.get((wname, base), {}).get("rates")
                ratio = paired_ratio(c["rates"], other) if other else None
                cells[key].append("%.2fx" % ratio if ratio is not None else "-")
                if base == "mimalloc":
                    vs_mimalloc[a] = ratio
            cells["peak RSS"].append("%.1f MB" % (statistics.median(c["rss"]) / 1024))
            cells["RSS after free"].append(
                "%.1f MB" % (statistics.median(c["after"]) / 1024) if c["after"] else "-")
            cells["mem syscalls / M ops"].append(
                "%.0f" % statistics.median(c["sys"]) if c["sys"] else "-")
        for k in rows:
            if k == "time" and not driver.startswith("program:"):
                continue  # the drivers' time is fixed by their arguments
            label = wname if k == "ops/s (median)" else "  " + k
            lines.append("| %s | %s |" % (label, " | ".join(cells[k])))
        table.append((wname, vs_mimalloc))

    header = ("hakmem comparison, %s, %s, %d cores, %s, median of %d run(s), "
              "ratios within each round%s%s" %
              (datetime.date.today().isoformat(), platform.machine(), os.cpu_count(),
               platform.platform(terse=True), args.runs, ", quick" if args.quick else "",
               "" if args.cpu is None else
               ", single-threaded workloads on CPU %d" % args.cpu))
    markdown = "\n".join(["# " + header, ""] + lines + per_command_table(workloads, names,
                                                                        results)) + "\n"
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown)
    print()
    print(markdown)
    chart = write_chart(out_dir, table, names)
    if chart:
        print("chart: " + chart)
    memory_table = [(w, {a: statistics.median(results[(w, a)]["rss"])
                         for a in names if results.get((w, a), {}).get("rss")})
                    for w, *_ in workloads]
    chart = write_chart(out_dir, memory_table, names, memory=True)
    if chart:
        print("memory chart: " + chart)
    for failure in program_failures:
        print("compare: " + failure, file=sys.stderr)
    print("results written to " + out_dir)
    return 1 if program_failures else 0


def run_program(program, dargs, aname, lib, timeout, env, cell):
    """One run of a real program; the same tuple as run_once. Its output goes to the
    cell (compared across allocators later) and so do its extra figures (redis's
    per-command rates). On hakmem the program's own process must show Tiny or Pool
    refills in its HAKMEM_STATS block."""
    runner, process = programs.RUNNERS[program]
    res = runner(dargs, lib, env, timeout)
    if res.error:
        return None, None, None, None, res.stderr, res.error
    if aname.startswith("hakmem") and not programs.served_by_hakmem(res.stderr, process):
        return None, None, None, None, res.stderr, "%s not served by hakmem" % process
    cell["outputs"].append(res.output)
    cell["extras"].setdefault("seconds", []).append(res.ops / res.rate)
    for key, value in res.extras.items():
        cell["extras"].setdefault(key, []).append(value)
    return res.ops, res.rate, res.peak_kib, res.after_kib, res.stderr, None


def check_outputs(wname, names, results):
    """Every allocator's output of a real program must be the system allocator's; a
    mismatch, or a cell that failed, is a failure of the whole run. Returns them."""
    failures = []
    reference = results.get((wname, "system"), {}).get("outputs")
    for a in names:
        c = results.get((wname, a), {})
        if c.get("error"):
            failures.append("%s on %s: %s" % (wname, a, c["error"]))
        elif reference and any(out != reference[0] for out in c.get("outputs", [])):
            c["error"] = "output differs from system's"
            c["rates"] = {}
            failures.append("%s on %s: output differs from the system allocator's" % (wname, a))
    return failures


def per_command_table(workloads, names, results):
    """redis requests/s per command (medians), below the main table."""
    rows = []
    for wname, driver, *_ in workloads:
        if driver != "program:redis":
            continue
        for command in programs.REDIS_COMMANDS:
            key = "redis " + command
            cells = []
            for a in names:
                values = results.get((wname, a), {}).get("extras", {}).get(key)
                ok = values and results[(wname, a)].get("rates")
                cells.append(human(statistics.median(values)) if ok else "-")
            rows.append("| %s %s | %s |" % (wname, command, " | ".join(cells)))
    if not rows:
        return []
    return (["", "redis requests/s per command (median):", "",
             "| command | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)] + rows)


def write_chart(out_dir, table, names, memory=False):
    """Bars of throughput relative to mimalloc per workload (the table's ratios), or with
    memory=True of peak RSS relative to mimalloc's (table values are KiB)."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        print("compare: gnuplot not found, no chart (tools/bootstrap.sh installs it)")
        return None
    base = "mimalloc"
    if base not in names:
        print("compare: mimalloc not found, no chart (tools/bootstrap.sh installs it)")
        return None
    stem = "chart_memory" if memory else "chart"
    data = os.path.join(out_dir, stem + ".dat")
    with open(data, "w") as f:
        f.write("workload " + " ".join(names) + "\n")
        for wname, values in table:
            if memory:
                base_kib = values.get(base)
                values = {a: v / base_kib for a, v in values.items()} if base_kib else {}
            vals = ["%.3f" % values[a] if values.get(a) else "0" for a in names]
            f.write('"%s" %s\n' % (wname, " ".join(vals)))
    script = os.path.join(out_dir, stem + ".gp")
    png = os.path.join(out_dir, stem + ".png")
    title = ("Peak RSS relative to %s (lower is better)" if memory else
             "Throughput relative to %s (higher is better)") % base
    with open(script, "w") as f:
        f.write("""set terminal pngcairo size 1200,520 font ",10" noenhanced
set output "%s"
set title "%s"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set boxwidth 0.9
set yrange [0:*]
set grid ytics
set key top left
set xtics rotate by -25
plot for [i=2:%d] "%s" using i:xtic(1) title columnheader(i)
""" % (png, title, len(names) + 1, data))
    r = subprocess.run([gnuplot, script], capture_output=True, text=True)
    if r.returncode != 0:
        print("compare: gnuplot failed: " + r.stderr.strip()[:200])
        return None
    return png


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
