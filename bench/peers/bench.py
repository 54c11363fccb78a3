#!/usr/bin/env python3
"""Rollcall against its peers on this machine, measured in the same run on the same targets.

Modes (run through bench/peers/run.sh, which builds and installs what is missing):
  poller N [INTERVAL_S]     the poller and Prometheus polling the same N simulated servers
  poller-pg N [INTERVAL_S]  the poller on SQLite, then on a private PostgreSQL, same servers
  cluster N [INTERVAL_S]    three poller nodes on one private PostgreSQL sharing N servers
  attendant                 one attendant against node_exporter, CPU and RSS per request

How the poller mode measures (all figures from outside the measured process):
  * `rollcall simulate` serves N virtual attendants (server i at 127.1.0.0+i) pinned to
    core 1. Each peer runs in turn pinned to core 0, so both get the same core and the same
    simulator, and neither disturbs the other: first Prometheus, then the poller.
  * idle RSS: the peer with no targets; then the N targets; warm-up; then a fixed window.
  * CPU: utime+stime from /proc/PID/stat over the window. Polls: counted by the simulator
    per User-Agent (not what the peer says of itself). Lateness: the simulator's gaps
    between consecutive requests to one server, |gap - interval|, p50/p99.
  * failed polls: Prometheus `up == 0` samples in the window; the poller's
    rollcall_polls_total{outcome="unreachable"} delta over the window.
  * the poller persists as in production: SQLite (state, per-poll rows, compilations).

PostgreSQL (poller-pg, cluster): a cluster of its own in the work dir (initdb, loopback,
fsync on and the rest of initdb's defaults), pinned to the measured core with the poller.
Its CPU and bytes written are those of every process of that cluster over the window:
the live ones, plus the children its postmaster reaped meanwhile (the kernel adds those
to the postmaster's cutime/cstime and /proc/PID/io).
"""

import json
import os
import pwd
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLLCALL = os.environ.get("ROLLCALL", os.path.join(ROOT, "target", "release", "rollcall"))
PROMETHEUS = os.environ.get("PROMETHEUS", "prometheus")
NODE_EXPORTER = os.environ.get("NODE_EXPORTER", "prometheus-node-exporter")
SIM_PORT = int(os.environ.get("SIM_PORT", "17460"))
PEER_PORT = int(os.environ.get("PEER_PORT", "17490"))
PG_PORT = int(os.environ.get("PG_PORT", "17498"))
NODES = ("a", "b", "c")
WINDOW = float(os.environ.get("WINDOW", "60"))
WARMUP = float(os.environ.get("WARMUP", "30"))
MEASURED_CORE = os.environ.get("MEASURED_CORE", "0")
HELPER_CORE = os.environ.get("HELPER_CORE", "1")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
KNOBS = os.environ.get("KNOBS", "--deficient 0.02 --flapping 0.01 --slow 0.01 --slow-delay 200ms").split()


def log(*a):
    print("#", *a, file=sys.stderr, flush=True)


def http(url, data=None, timeout=30):
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def wait_http(url, deadline_s=120, proc=None):
    t0 = time.time()
    while time.time() - t0 < deadline_s:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process for {url} exited with {proc.returncode}")
        try:
            http(url, timeout=2)
            return time.time() - t0
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"{url} not ready after {deadline_s} s")


def stat_fields(pid):
    """/proc/PID/stat after the command name: [0] state, [1] ppid, [11] utime, [12] stime,
    [13] cutime, [14] cstime (reaped children's), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_s(pid):
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICK


def io_bytes(pid):
    """Bytes the process wrote and read through system calls (files and sockets alike)."""
    out = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, v = line.split(":")
            out[k] = int(v)
    return out.get("wchar", 0), out.get("rchar", 0)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pss_kb(pid):
    """Proportional set size: shared pages (PostgreSQL's shared buffers) split among the
    processes that map them, so a sum over processes counts them once."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def start(cmd, core, log_path, user=None):
    out = open(log_path, "w")
    as_user = {"user": user, "group": user, "extra_groups": []} if user else {}
    return subprocess.Popen(["taskset", "-c", core] + cmd, stdout=out, stderr=subprocess.STDOUT, **as_user)


def stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def sim_stats(interval_ms):
    return json.loads(http(f"http://127.0.0.1:{SIM_PORT}/stats?interval_ms={interval_ms}"))


def client(stats, prefix):
    for c in stats["clients"]:
        if c["agent"].startswith(prefix):
            return c
    return {"requests": 0, "lateness_ms": {"p50": None, "p99": None}, "unanswered": 0}


def du(path):
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(d, f))
            except OSError:
                pass
    return total


def measure(name, pid, n, interval, agent, failed_fn, db=None):
    """Warm-up, then one window: CPU, RSS and the simulator's counts for this peer; with
    `db` (a PgCluster), the database's CPU, bytes written and memory over the same window."""
    log(f"{name}: warm-up {WARMUP:.0f} s")
    time.sleep(WARMUP)
    f0 = failed_fn()
    http(f"http://127.0.0.1:{SIM_PORT}/stats/reset", data=b"")
    c0 = cpu_s(pid)
    w0, _ = io_bytes(pid)
    d0 = db.usage() if db else None
    t0 = time.time()
    log(f"{name}: measuring {WINDOW:.0f} s")
    # System calls and context switches of the window, counted by the kernel for both
    # peers alike (perf stat on two software events costs far less than strace).
    counts = subprocess.Popen(["perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter,context-switches", "-p",
                               str(pid), "--", "sleep", str(WINDOW)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    p0 = phases() if name == "poller" else None
    perf = None
    if os.environ.get("PERF") and name == "poller":
        # A CPU profile of the window (perf report -i PERF): where the poller's time goes.
        # PERF_CALLGRAPH=dwarf unwinds through code built without frame pointers (costly: keep WINDOW short).
        perf = subprocess.Popen(["perf", "record", "-q", "--call-graph", os.environ.get("PERF_CALLGRAPH", "fp"), "-F",
                                 "499", "-o", os.environ["PERF"], "-p", str(pid), "--", "sleep", str(WINDOW)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(WINDOW)
    if perf:
        perf.wait()
    kernel = {}
    for line in counts.communicate()[1].splitlines():
        f = line.split(",")
        if len(f) > 2 and f[0].strip().isdigit():
            kernel[f[2]] = int(f[0])
    p1 = phases() if name == "poller" else None
    c1 = cpu_s(pid)
    w1, _ = io_bytes(pid)
    d1 = db.usage() if db else None
    window = time.time() - t0
    st = client(sim_stats(int(interval * 1000)), agent)
    f1 = failed_fn()
    polls = st["requests"]
    per_1000 = lambda v: v / (polls / 1000) if polls and v is not None else None
    if d0 and d1:
        db_part = {"db_cpu_per_1000": per_1000(d1[0] - d0[0]), "db_written_per_poll": (d1[1] - d0[1]) / polls if polls
                   else None, "db_pss_kb": d1[2]}
    else:
        db_part = {}
    return db_part | {
        "syscalls_per_1000": per_1000(kernel.get("raw_syscalls:sys_enter")),
        "switches_per_1000": per_1000(kernel.get("context-switches")),
        "phases_us": ({k: (p1[k] - p0.get(k, 0.0)) * 1e6 / polls for k in p1} if p0 is not None and p1 and polls
                      else None),
        "polls": polls,
        "polls_per_s": polls / window,
        "cpu_s": c1 - c0,
        "cpu_per_1000": (c1 - c0) / (polls / 1000) if polls else float("nan"),
        "rss_kb": rss_kb(pid),
        "written_per_poll": (w1 - w0) / polls if polls else None,
        "p50": st["lateness_ms"]["p50"],
        "p99": st["lateness_ms"]["p99"],
        "failed": None if f0 is None or f1 is None else f1 - f0,
        "window": window,
    }


def prom_query(port, q):
    url = f"http://127.0.0.1:{port}/api/v1/query?query=" + urllib.request.quote(q)
    r = json.loads(http(url, timeout=120))
    res = r["data"]["result"]
    return float(res[0]["value"][1]) if res else 0.0


def run_prometheus(tmp, n, interval):
    targets = os.path.join(tmp, "sd.json")
    with open(targets, "w") as f:
        f.write("[]")
    timeout = min(interval * 0.8, 10)
    cfg = os.path.join(tmp, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write(
            f"global:\n  scrape_interval: {int(interval * 1000)}ms\n  scrape_timeout: {int(timeout * 1000)}ms\n"
            f"scrape_configs:\n  - job_name: sim\n    file_sd_configs:\n      - files: ['{targets}']\n"
            f"        refresh_interval: 5s\n"
        )
    data = os.path.join(tmp, "prom-data")
    port = PEER_PORT
    p = start(
        [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        MEASURED_CORE, os.path.join(tmp, "prometheus.log"))
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", proc=p)
        time.sleep(5)
        idle = rss_kb(p.pid)
        shutil.copy(os.path.join(tmp, "targets", "prometheus-targets.json"), targets)
        # Failed scrapes so far: samples of `up` that are 0, summed over every target.
        def failed():
            try:
                return prom_query(port, "sum(count_over_time(up[1h])) - sum(sum_over_time(up[1h]))")
            except Exception as e:
                log("prometheus query failed:", e)
                return None
        m = measure("prometheus", p.pid, n, interval, "Prometheus/", failed)
        m["idle_rss_kb"] = idle
        head = json.loads(http(f"http://127.0.0.1:{port}/api/v1/status/tsdb"))["data"]["headStats"]
        m["stored"] = (f"TSDB head {head['numSeries']} series in memory, {du(data) / 1e6:.1f} MB on disk "
                       f"(WAL; blocks are cut every 2 h)")
    finally:
        stop(p)
    return m


def max_concurrent_polls(n):
    """4,096, unless the open-file limit cannot keep a connection to each of the N servers
    on both sides (the poller keeps all but 1,024 files for idle connections, the simulator
    all but 2,048): then 512 per poller, so that the connections opened afresh at each poll
    fit in those reserves. With 4,096 at 100,000 servers under a 20,000-file limit, both
    the poller's connects and the simulator's accepts failed with "too many open files"."""
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # both raise their soft limit to it
    return 4096 if n <= files - 2048 else 512


def poller_config(database, interval, servers_toml, port=PEER_PORT, extra="", n=0):
    timeout = min(interval * 0.8, 10)
    return (
        f'listen = "127.0.0.1:{port}"\ndatabase = "{database}"\n{extra}timeout = "{int(timeout * 1000)}ms"\n'
        f'max_concurrent_polls = {max_concurrent_polls(n)}\n'
        f'[[level]]\nname = "normal"\ninterval = "{int(interval * 1000)}ms"\n'
        + servers_toml
    )


def growth(poll_b, comp_b):
    """Bytes per server per day from the measured row sizes, at a 15 min / 2 min mix."""
    # 90 % of a day at normal (96 polls/day), 10 % at critical (720/day); a compilation
    # stored on each change of substance, assumed 4 a day.
    polls_day = 0.9 * 96 + 0.1 * 720
    day = polls_day * poll_b + 4 * comp_b
    return (f"{poll_b:.0f} B per poll row, {comp_b:.0f} B per stored compilation -> "
            f"{day:.0f} B per server per day at a 15 min / 2 min mix "
            f"(90 % / 10 % of the day, {polls_day:.0f} polls) with 4 changes a day; "
            f"bounded by [retention] (30 days: {30 * day / 1e6:.2f} MB per server)")


class SqliteStore:
    """The poller's default store: a SQLite file in the work dir, inside the poller's process."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.tag = "sqlite"

    def url(self, name):
        return "sqlite://" + os.path.join(self.tmp, name + ".db")

    def describe(self, name, m):
        """Sets m["stored"] and m["growth"] from what the run left in database `name`."""
        db = os.path.join(self.tmp, name + ".db")
        size = sum(os.path.getsize(db + s) for s in ("", "-wal", "-shm") if os.path.exists(db + s))
        con = sqlite3.connect(db)
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("servers", "polls")}
        try:
            counts["latest"] = con.execute("SELECT count(*) FROM latest_compilations").fetchone()[0]
        except sqlite3.Error:
            counts["latest"] = None
        try:
            counts["compilations"] = con.execute("SELECT count(*) FROM compilations").fetchone()[0]
        except sqlite3.Error:
            counts["compilations"] = None
        try:
            sizes = dict(con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
        except sqlite3.Error:
            sizes = {}
        con.close()
        poll_b = ((sizes.get("polls", 0) + sizes.get("polls_by_server", 0) + sizes.get("poll_heads", 0))
                  / max(counts["polls"], 1))
        comp_b = ((sizes.get("compilations", 0) + sizes.get("compilations_by_server", 0)) / counts["compilations"]
                  if counts["compilations"] else 0)
        m["growth"] = growth(poll_b, comp_b)
        comp = (f"{counts['compilations']} compilation rows (stored when changed)"
                if counts["compilations"] is not None else "latest compilation per server only")
        latest = (f"{counts['latest']} latest compilations (written at the clean stop; the newest history row is the latest after a crash)"
                  if counts["latest"] is not None else "the latest compilation on each server row")
        m["stored"] = (f"SQLite {size / 1e6:.1f} MB: {counts['servers']} server rows (state), {latest}, "
                       f"{counts['polls']} poll rows, {comp}")


def pg_bin():
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    root = "/usr/lib/postgresql"
    versions = sorted(int(v) for v in (os.listdir(root) if os.path.isdir(root) else [])
                      if v.isdigit() and os.path.exists(os.path.join(root, v, "bin", "postgres")))
    if not versions:
        raise SystemExit(f"no PostgreSQL under {root}: apt-get install postgresql (run.sh does it as root)")
    return os.path.join(root, str(versions[-1]), "bin")


class PgCluster:
    """A private PostgreSQL cluster under the work dir: initdb, the server on loopback port
    PG_PORT, fsync on and initdb's other defaults (no durability traded for speed), pinned
    to the measured core; run as the postgres user when the bench runs as root, since
    PostgreSQL refuses root. Stopped with a fast shutdown."""

    def __init__(self, tmp):
        self.bin = pg_bin()
        self.dir = os.path.join(tmp, "pg")
        os.makedirs(self.dir)
        self.user = None
        if os.getuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise SystemExit("no system user postgres: apt-get install postgresql")
            os.chmod(tmp, 0o755)  # mkdtemp's 0700 would keep the postgres user out
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.user = "postgres"
        data = os.path.join(self.dir, "data")
        as_user = {"user": self.user, "group": self.user, "extra_groups": []} if self.user else {}
        init = subprocess.run([os.path.join(self.bin, "initdb"), "-D", data, "-U", "rollcall", "--auth=trust", "-E",
                               "UTF8", "--locale=C"], cwd=self.dir, capture_output=True, text=True, **as_user)
        if init.returncode != 0:
            raise SystemExit(f"initdb failed: {init.stderr.strip()}")
        self.port = PG_PORT
        self.log_path = os.path.join(tmp, "postgres.log")
        self.proc = start([os.path.join(self.bin, "postgres"), "-D", data, "-h", "127.0.0.1", "-p", str(self.port),
                           "-k", self.dir, "-c", "log_min_messages=warning"], MEASURED_CORE, self.log_path, self.user)
        t0 = time.time()
        while subprocess.run([os.path.join(self.bin, "pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                              str(self.port)]).returncode != 0:
            if self.proc.poll() is not None or time.time() - t0 > 60:
                self.stop()
                with open(self.log_path) as f:
                    raise SystemExit(f"PostgreSQL did not start on port {self.port}:\n{f.read()[-2000:]}")
            time.sleep(0.1)
        with open(os.path.join(data, "PG_VERSION")) as f:
            self.version = f.read().strip()
        log(f"PostgreSQL {self.version} on 127.0.0.1:{self.port}, data in {data}")

    def url(self, db):
        return f"postgres://rollcall@127.0.0.1:{self.port}/{db}"

    def psql(self, db, sql):
        out = subprocess.run([os.path.join(self.bin, "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d",
                              self.url(db), "-c", sql], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"psql {sql!r}: {out.stderr.strip()}")
        return out.stdout.strip()

    def create_database(self, db):
        self.psql("postgres", f'CREATE DATABASE "{db}"')
        return self.url(db)

    def pids(self):
        """The postmaster and its children (backends, writers, WAL writer, autovacuum...)."""
        pm = self.proc.pid
        kids = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    if int(stat_fields(d)[1]) == pm:
                        kids.append(int(d))
                except (OSError, IndexError, ValueError):
                    pass
        return [pm] + kids

    def usage(self):
        """(CPU-s, bytes written by system calls, PSS kB) of the whole cluster so far: every
        live process, plus the children the postmaster has reaped (counted by the kernel in
        the postmaster's cutime/cstime and /proc/PID/io)."""
        cpu = wchar = pss = 0
        for pid in self.pids():
            try:
                f = stat_fields(pid)
                ticks = int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if pid == self.proc.pid else 0)
                w, _ = io_bytes(pid)
                pss += pss_kb(pid)
            except OSError:
                continue  # ended meanwhile: its share is in the postmaster's from now on
            cpu += ticks / TICK
            wchar += w
        return cpu, wchar, pss

    def stop(self):
        stop(self.proc, signal.SIGINT)  # fast shutdown


class PostgresStore:
    """The poller on a database of a PgCluster (the cluster's CPU is measured beside it)."""

    def __init__(self, pg):
        self.pg = pg
        self.tag = "pg"

    def url(self, name):
        return self.pg.create_database(name)

    def describe(self, name, m):
        one = lambda sql: int(self.pg.psql(name, sql) or 0)
        size = one("SELECT pg_database_size(current_database())")
        counts = {t: one(f"SELECT count(*) FROM {t}") for t in ("servers", "polls", "latest_compilations",
                                                                "compilations")}
        # Heap, indexes and TOAST of each table.
        poll_b = one("SELECT pg_total_relation_size('polls')") / max(counts["polls"], 1)
        comp_b = (one("SELECT pg_total_relation_size('compilations')") / counts["compilations"]
                  if counts["compilations"] else 0)
        m["growth"] = growth(poll_b, comp_b)
        m["stored"] = (f"PostgreSQL {size / 1e6:.1f} MB (database): {counts['servers']} server rows (state), "
                       f"{counts['latest_compilations']} latest compilations, {counts['polls']} poll rows, "
                       f"{counts['compilations']} compilation rows")


def poller_metric(text, prefix):
    """The values of the lines of `/metrics` text starting with `prefix`, by their labels."""
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            labels, _, value = line.rpartition(" ")
            out[labels[len(prefix):]] = float(value)
    return out


def phases():
    """The poller's own time per phase so far (s): rollcall_poll_phase_seconds_total."""
    try:
        text = http(f"http://127.0.0.1:{PEER_PORT}/metrics", timeout=60).decode()
    except Exception as e:
        log("poller /metrics failed:", e)
        return None
    got = poller_metric(text, "rollcall_poll_phase_seconds_total")
    return {k.split('"')[1]: v for k, v in got.items() if '"' in k}


def poller_failed(port=PEER_PORT):
    try:
        text = http(f"http://127.0.0.1:{port}/metrics", timeout=60).decode()
    except Exception as e:
        log("poller /metrics failed:", e)
        return None
    for line in text.splitlines():
        if line.startswith('rollcall_polls_total{outcome="unreachable"}'):
            return float(line.split()[-1])
    return 0.0


def run_poller(tmp, n, interval, store, db=None):
    """The poller on `store` (SqliteStore or PostgresStore): idle RSS, the N servers'
    window, what it stored, and start-up on the full database. `db`: a PgCluster to
    measure beside the poller."""
    cfg = os.path.join(tmp, f"poller-{store.tag}.toml")
    with open(cfg, "w") as f:
        f.write(poller_config(store.url("idle"), interval, ""))
    p = start([ROLLCALL, "poller", "--config", cfg], MEASURED_CORE, os.path.join(tmp, f"poller-{store.tag}-idle.log"))
    try:
        wait_http(f"http://127.0.0.1:{PEER_PORT}/api/v1/servers", proc=p)
        time.sleep(3)
        idle = rss_kb(p.pid)
    finally:
        stop(p)
    with open(os.path.join(tmp, "targets", "servers.toml")) as f:
        servers = f.read()
    with open(cfg, "w") as f:
        f.write(poller_config(store.url("rollcall"), interval, servers, n=n))
    spawned = time.time()
    p = start([ROLLCALL, "poller", "--config", cfg], MEASURED_CORE, os.path.join(tmp, f"poller-{store.tag}.log"))
    try:
        first_start = wait_http(f"http://127.0.0.1:{PEER_PORT}/api/v1/servers", proc=p)
        # The warm-up starts once the poller holds its servers, so that it covers the
        # first polls' spread on PostgreSQL too.
        wait_shared(PEER_PORT, n, 1)
        held = time.time() - spawned
        m = measure("poller", p.pid, n, interval, "rollcall-poller/", poller_failed, db)
        m["idle_rss_kb"] = idle
    finally:
        stop(p)
    store.describe("rollcall", m)
    # Start-up with N servers already in the database: spawn to API answering.
    p = start([ROLLCALL, "poller", "--config", cfg], MEASURED_CORE,
              os.path.join(tmp, f"poller-{store.tag}-restart.log"))
    try:
        m["restart_s"] = wait_http(f"http://127.0.0.1:{PEER_PORT}/api/v1/servers", proc=p)
    finally:
        stop(p)
    m["first_start_s"] = first_start
    m["held_s"] = held
    return m


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def side_by_side(rows, left, right, label_w, col_w):
    """One line per (label, key, format) row: both runs' values and right/left. Keys
    ending in _kb are shown in MB."""
    for label, key, spec in rows:
        a, b = left.get(key), right.get(key)
        if key.endswith("_kb"):
            a, b, spec = (None if a is None else a / 1024), (None if b is None else b / 1024), ".1f"
        ratio = f"{b / a:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else "-"
        print(f"{label:{label_w}} {fmt(a, spec):>{col_w}} {fmt(b, spec):>{col_w}} {ratio:>{col_w}}")


def report(n, interval, prom, roll):
    print(f"\n== Rollcall poller vs Prometheus: N = {n} servers, interval {interval:g} s, "
          f"window {WINDOW:.0f} s after {WARMUP:.0f} s warm-up, each peer pinned to core {MEASURED_CORE} ==")
    rows = [
        ("polls/s achieved", "polls_per_s", ".0f"),
        ("CPU-seconds per 1,000 polls", "cpu_per_1000", ".4f"),
        ("RSS idle (MB)", "idle_rss_kb", None),
        ("RSS with N targets (MB)", "rss_kb", None),
        ("(RSS - idle RSS)/N (KB)", "per_server", ".2f"),
        ("interval lateness p50 (ms)", "p50", ""),
        ("interval lateness p99 (ms)", "p99", ""),
        ("failed polls in window", "failed", ".0f"),
        ("bytes written per poll (write calls)", "written_per_poll", ".0f"),
        ("system calls per 1,000 polls", "syscalls_per_1000", ".0f"),
        ("context switches per 1,000 polls", "switches_per_1000", ".0f"),
    ]
    if prom is None:
        prom = {"stored": "(not run: ONLY=rollcall)"}
    for m in (prom, roll):
        m["per_server"] = (m["rss_kb"] - m["idle_rss_kb"]) / n if "rss_kb" in m else None
    print(f"{'':38} {'Prometheus':>14} {'Rollcall':>14} {'Rollcall/Prom':>14}")
    side_by_side(rows, prom, roll, 38, 14)
    if roll.get("phases_us"):
        ph = roll["phases_us"]
        total = roll["cpu_per_1000"] * 1000
        named = sum(ph.values())
        parts = ", ".join(f"{k} {v:.1f}" for k, v in ph.items())
        print(f"Rollcall per poll (µs, its own counters): {parts}; the rest (runtime, timers, sockets, "
              f"kernel) {total - named:.1f}; CPU in all {total:.1f}")
    print(f"Prometheus stored: {prom['stored']}")
    print(f"Rollcall stored:   {roll['stored']}")
    print(f"Rollcall growth:   {roll['growth']}")
    print(f"Rollcall start-up: {roll['first_start_s']:.2f} s with an empty database, "
          f"{roll['restart_s']:.2f} s with {n} servers in SQLite (spawn to API answering)")


def start_simulator(tmp, n):
    """`rollcall simulate` with N servers on the helper core; its target lists in tmp/targets."""
    sim = start([ROLLCALL, "simulate", "--servers", str(n), "--listen", f"0.0.0.0:{SIM_PORT}", "--targets-dir",
                 os.path.join(tmp, "targets")] + KNOBS, HELPER_CORE, os.path.join(tmp, "simulator.log"))
    try:
        wait_http(f"http://127.0.0.1:{SIM_PORT}/stats", proc=sim)
    except BaseException:
        stop(sim)
        raise
    return sim


def ports_free(ports):
    """Stops the bench when one of its ports is taken: another run would answer in its
    place (its simulator's counts, its poller's API) and both runs' figures would be wrong."""
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
            except OSError as e:
                raise SystemExit(f"port {port} is taken ({e.strerror}): is another benchmark running? "
                                 f"(`ss -ltnp 'sport = :{port}'`)")


def work_dir(prefix):
    ports_free([SIM_PORT, PG_PORT] + [PEER_PORT + k for k in range(len(NODES))])
    tmp = tempfile.mkdtemp(prefix=prefix)
    log("work dir", tmp, "| load:", open("/proc/loadavg").read().strip())
    return tmp


def mode_poller(n, interval):
    tmp = work_dir("rollcall-bench-")
    sim = start_simulator(tmp, n)
    try:
        # ONLY=rollcall skips the peer: for iterating on the poller, never for published figures.
        prom = None if os.environ.get("ONLY") == "rollcall" else run_prometheus(tmp, n, interval)
        roll = run_poller(tmp, n, interval, SqliteStore(tmp))
    finally:
        stop(sim)
    report(n, interval, prom, roll)
    if os.environ.get("KEEP") != "1":
        shutil.rmtree(tmp, ignore_errors=True)


def report_stores(n, interval, lite, pg):
    print(f"\n== Rollcall poller on SQLite and on PostgreSQL {pg['pg_version']}: N = {n} servers, "
          f"interval {interval:g} s, window {WINDOW:.0f} s after {WARMUP:.0f} s warm-up, poller and PostgreSQL "
          f"pinned to core {MEASURED_CORE} ==")
    for m in (lite, pg):
        m["per_server"] = (m["rss_kb"] - m["idle_rss_kb"]) / n
        m["all_cpu_per_1000"] = m["cpu_per_1000"] + (m.get("db_cpu_per_1000") or 0)
    rows = [
        ("polls/s achieved", "polls_per_s", ".0f"),
        ("CPU-s per 1,000 polls: poller", "cpu_per_1000", ".4f"),
        ("CPU-s per 1,000 polls: PostgreSQL", "db_cpu_per_1000", ".4f"),
        ("CPU-s per 1,000 polls: both", "all_cpu_per_1000", ".4f"),
        ("poller RSS idle (MB)", "idle_rss_kb", None),
        ("poller RSS with N servers (MB)", "rss_kb", None),
        ("(RSS - idle RSS)/N (KB)", "per_server", ".2f"),
        ("PostgreSQL PSS, all processes (MB)", "db_pss_kb", None),
        ("interval lateness p50 (ms)", "p50", ""),
        ("interval lateness p99 (ms)", "p99", ""),
        ("failed polls in window", "failed", ".0f"),
        ("bytes written per poll: poller", "written_per_poll", ".0f"),
        ("bytes written per poll: PostgreSQL", "db_written_per_poll", ".0f"),
        ("system calls per 1,000 polls (poller)", "syscalls_per_1000", ".0f"),
        ("context switches / 1,000 polls (poller)", "switches_per_1000", ".0f"),
    ]
    print(f"{'':40} {'SQLite':>12} {'PostgreSQL':>12} {'PG/SQLite':>12}")
    side_by_side(rows, lite, pg, 40, 12)
    print("(bytes written are write calls, files and sockets: on PostgreSQL the poller's are mostly what it sends "
          "to the database; PostgreSQL's its WAL, data files and replies)")
    for m in (lite, pg):
        print(f"{'Stored:':9} {m['stored']}")
    for m, label in ((lite, "SQLite"), (pg, "PostgreSQL")):
        print(f"Growth ({label}): {m['growth']}")
    print(f"Start-up: SQLite {lite['first_start_s']:.2f} s empty, {lite['restart_s']:.2f} s with {n} servers; "
          f"PostgreSQL {pg['first_start_s']:.2f} s empty, {pg['restart_s']:.2f} s with {n} servers "
          f"(spawn to API answering); on PostgreSQL every server held {pg['held_s']:.1f} s after spawn "
          f"(a node's first round only heartbeats; it takes servers at its second, 2 s later)")


def mode_poller_pg(n, interval):
    """The poller on SQLite, then on PostgreSQL, on the same simulator in the same run."""
    tmp = work_dir("rollcall-bench-pg-")
    sim = start_simulator(tmp, n)
    pg = None
    try:
        lite = run_poller(tmp, n, interval, SqliteStore(tmp))
        pg = PgCluster(tmp)
        on_pg = run_poller(tmp, n, interval, PostgresStore(pg), pg)
        on_pg["pg_version"] = pg.version
    finally:
        if pg:
            pg.stop()
        stop(sim)
    report_stores(n, interval, lite, on_pg)
    if os.environ.get("KEEP") != "1":
        shutil.rmtree(tmp, ignore_errors=True)


def sim_per_server():
    """Per server since the last reset, all poller nodes together (one User-Agent):
    (requests, shortest gap in ms or None)."""
    got = json.loads(http(f"http://127.0.0.1:{SIM_PORT}/stats/servers", timeout=60))
    for c in got["clients"]:
        if c["agent"].startswith("rollcall-poller/"):
            return c["requests"], c["shortest_gap_ms"]
    return [0] * got["servers"], [None] * got["servers"]


def owners(pg, db):
    """Server index -> the node holding its lease, from the leases table (the nodes' own
    views follow it a round later)."""
    out = {}
    for line in pg.psql(db, "SELECT server, node FROM leases WHERE expires_at > now()").splitlines():
        server, node = line.split("|")
        # The simulator names server i sim-0000i (crates/simulator: VirtualFleet::name).
        out[int(server.rsplit("-", 1)[1])] = node
    return out


def cluster_doc(port):
    return json.loads(http(f"http://127.0.0.1:{port}/api/v1/cluster", timeout=60))


def wait_shared(port, n, live, deadline_s=300):
    """Until `live` nodes are live and hold all N servers between them, as node `port`'s
    GET /api/v1/cluster shows it. A poller on SQLite is its own one node holding every
    server; one on PostgreSQL holds nothing until its second round (failover_after / 3
    after start), since its first only heartbeats."""
    t0 = time.time()
    while True:
        try:
            doc = cluster_doc(port)
            nodes = doc["nodes"]
            if sum(1 for x in nodes if x["live"]) == live and sum(x["servers"] for x in nodes) == n:
                return
        except Exception as e:
            doc = e
        if time.time() - t0 > deadline_s:
            raise SystemExit(f"{live} node(s) did not hold the {n} servers within {deadline_s} s; last: {doc}")
        time.sleep(0.2)


def failover(nodes, victim, n, interval, held):
    """kill -9 of `victim`; seconds until each of its servers is asked again (first, last),
    watched at the simulator every 0.5 s."""
    mine = [i for i, node in held.items() if node == victim]
    fa = cluster_doc(PEER_PORT)["failover_after_s"]
    log(f"cluster: kill -9 of node {victim}, holding {len(mine)} servers; failover_after {fa:g} s")
    http(f"http://127.0.0.1:{SIM_PORT}/stats/reset", data=b"")
    nodes[victim].kill()
    t0 = time.time()
    nodes[victim].wait()
    first, waiting = None, set(mine)
    # The bound the design gives (docs/cluster.md): failover_after + a round + an interval.
    deadline = t0 + fa + fa / 3 + interval + 30
    while waiting and time.time() < deadline:
        time.sleep(0.5)
        requests, _ = sim_per_server()
        now = time.time() - t0
        asked = {i for i in waiting if requests[i] > 0}
        if asked and first is None:
            first = now
        waiting -= asked
    return {"servers": len(mine), "failover_after": fa, "first": first,
            "last": None if waiting else time.time() - t0, "never": len(waiting)}


def mode_cluster(n, interval):
    """Three poller nodes on one private PostgreSQL sharing N servers (SPEC section 12)."""
    tmp = work_dir("rollcall-bench-cluster-")
    sim = start_simulator(tmp, n)
    pg, nodes = None, {}
    try:
        pg = PgCluster(tmp)
        url = pg.create_database("fleet")
        with open(os.path.join(tmp, "targets", "servers.toml")) as f:
            servers = f.read()
        ports = {node: PEER_PORT + k for k, node in enumerate(NODES)}
        for node in NODES:
            cfg = os.path.join(tmp, f"poller-{node}.toml")
            with open(cfg, "w") as f:
                f.write(poller_config(url, interval, servers, ports[node], f'node = "{node}"\n', n))
            nodes[node] = start([ROLLCALL, "poller", "--config", cfg], MEASURED_CORE,
                                os.path.join(tmp, f"poller-{node}.log"))
        for node in NODES:
            wait_http(f"http://127.0.0.1:{ports[node]}/api/v1/servers", proc=nodes[node])
        t0 = time.time()
        wait_shared(PEER_PORT, n, len(NODES))
        log(f"cluster: all {n} servers held after {time.time() - t0:.0f} s; warm-up {WARMUP:.0f} s")
        time.sleep(WARMUP)
        held0 = owners(pg, "fleet")
        f0 = {node: poller_failed(ports[node]) for node in NODES}
        http(f"http://127.0.0.1:{SIM_PORT}/stats/reset", data=b"")
        c0 = {node: cpu_s(p.pid) for node, p in nodes.items()}
        d0 = pg.usage()
        t0 = time.time()
        log(f"cluster: measuring {WINDOW:.0f} s")
        time.sleep(WINDOW)
        c1 = {node: cpu_s(p.pid) for node, p in nodes.items()}
        d1 = pg.usage()
        window = time.time() - t0
        lateness = client(sim_stats(int(interval * 1000)), "rollcall-poller/")["lateness_ms"]
        requests, gaps = sim_per_server()
        rss = {node: rss_kb(p.pid) for node, p in nodes.items()}
        f1 = {node: poller_failed(ports[node]) for node in NODES}
        held1 = owners(pg, "fleet")
        doc = cluster_doc(PEER_PORT)
        r = {"window": window, "lateness": lateness, "nodes": {}, "doc": doc,
             "moved": sum(1 for i in range(n) if held0.get(i) != held1.get(i)),
             "unasked": sum(1 for k in requests if k == 0),
             # Two nodes polling one server ask it at two slots of each interval: one of
             # the two gaps is at most half the interval. One node's gaps stray from the
             # interval by its lateness only.
             "twice": sum(1 for g in gaps if g is not None and g < 0.75 * interval * 1000)}
        for node in NODES:
            polls = sum(requests[i] for i, owner in held1.items() if owner == node and held0.get(i) == node)
            r["nodes"][node] = {"polls": polls, "cpu": c1[node] - c0[node], "rss_kb": rss[node],
                                "failed": None if f0[node] is None or f1[node] is None else f1[node] - f0[node],
                                "held": sum(1 for owner in held1.values() if owner == node)}
        r["db_cpu"], r["db_written"], r["db_pss_kb"] = d1[0] - d0[0], d1[1] - d0[1], d1[2]
        r["pg_version"] = pg.version
        if os.environ.get("FAILOVER") == "1":
            r["failover"] = failover(nodes, NODES[-1], n, interval, held1)
    finally:
        for p in nodes.values():
            stop(p)
        if pg:
            pg.stop()
        stop(sim)
    report_cluster(n, interval, r)
    if os.environ.get("KEEP") != "1":
        shutil.rmtree(tmp, ignore_errors=True)


def report_cluster(n, interval, r):
    print(f"\n== Rollcall cluster: {len(NODES)} poller nodes on one PostgreSQL {r['pg_version']}, N = {n} servers, "
          f"interval {interval:g} s, window {r['window']:.0f} s after {WARMUP:.0f} s warm-up, nodes and PostgreSQL "
          f"pinned to core {MEASURED_CORE} ==")
    print(f"{'node':8} {'servers held':>13} {'polls/s':>9} {'CPU-s / 1,000 polls':>20} {'RSS (MB)':>9} "
          f"{'failed polls':>13}")
    total_polls = total_cpu = 0
    for node, m in r["nodes"].items():
        total_polls += m["polls"]
        total_cpu += m["cpu"]
        per_1000 = m["cpu"] / (m["polls"] / 1000) if m["polls"] else None
        print(f"{node:8} {m['held']:>13} {m['polls'] / r['window']:>9.0f} {fmt(per_1000, '.4f'):>20} "
              f"{m['rss_kb'] / 1024:>9.1f} {fmt(m['failed'], '.0f'):>13}")
    per_1000 = lambda v: v / (total_polls / 1000) if total_polls else None
    held = [m["held"] for m in r["nodes"].values()]
    print(f"{'all':8} {sum(held):>13} {total_polls / r['window']:>9.0f} {fmt(per_1000(total_cpu), '.4f'):>20}")
    print(f"PostgreSQL: {fmt(per_1000(r['db_cpu']), '.4f')} CPU-s per 1,000 polls of all nodes, "
          f"{fmt(r['db_written'] / total_polls if total_polls else None, '.0f')} bytes written per poll "
          f"(write calls), {r['db_pss_kb'] / 1024:.1f} MB PSS (all processes)")
    print(f"spread: servers held max/min {fmt(max(held) / min(held) if min(held) else None, '.3f')} "
          f"({max(held)} / {min(held)}); interval lateness p50 / p99 (ms, all nodes): "
          f"{fmt(r['lateness']['p50'], '')} / {fmt(r['lateness']['p99'], '')}")
    print(f"servers polled by two nodes in the window (asked twice within 3/4 of an interval): {r['twice']}; "
          f"servers not asked: {r['unasked']}; servers that changed node: {r['moved']}")
    f = r.get("failover")
    if f:
        last = (f"every one asked again {f['last']:.1f} s after the kill" if f["never"] == 0
                else f"{f['never']} never asked again")
        print(f"failover: kill -9 of node {NODES[-1]} holding {f['servers']} servers (failover_after "
              f"{f['failover_after']:g} s): the first asked again after {fmt(f['first'], '.1f')} s, {last} "
              f"(watched every 0.5 s)")


def load(url, rate, seconds):
    """Keep-alive GETs at a fixed rate from the helper core; returns the count done."""
    code = (
        "import http.client,time,sys,urllib.parse\n"
        "u=urllib.parse.urlparse(sys.argv[1]);r=float(sys.argv[2]);d=float(sys.argv[3])\n"
        "c=http.client.HTTPConnection(u.hostname,u.port);n=0;t0=time.time()\n"
        "while time.time()-t0<d:\n"
        " c.request('GET',u.path,headers={'User-Agent':'bench'});b=c.getresponse().read();n+=1\n"
        " s=t0+n/r-time.time()\n"
        " if s>0: time.sleep(s)\n"
        "print(n)\n"
    )
    out = subprocess.run(["taskset", "-c", HELPER_CORE, sys.executable, "-c", code, url, str(rate), str(seconds)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def serve_and_load(name, cmd, url, rate, seconds, tmp):
    p = start(cmd, MEASURED_CORE, os.path.join(tmp, f"{name}.log"))
    try:
        wait_http(url, proc=p)
        load(url, 20, 5)  # warm-up: caches, first samples
        c0 = cpu_s(p.pid)
        n = load(url, rate, seconds)
        c1 = cpu_s(p.pid)
        return {"rss_kb": rss_kb(p.pid), "cpu_ms": (c1 - c0) * 1000 / n, "requests": n,
                "bytes": len(http(url))}
    finally:
        stop(p)


def mode_attendant():
    tmp = work_dir("rollcall-bench-att-")
    rate, seconds = float(os.environ.get("RATE", "100")), float(os.environ.get("SECONDS", "30"))
    closed = PEER_PORT + 9  # nothing listens here: tcp checks are refused at once
    services = "".join(f'\n[[service]]\nname = "svc-{k}"\ncheck = "tcp"\naddress = "127.0.0.1:{closed}"\n'
                       f'timeout = "1s"\n' for k in range(10))
    results = {}
    # rollcall-attendant is what a monitored server runs; `rollcall attendant` is the same
    # code inside the one binary that also holds the poller.
    slim = os.path.join(os.path.dirname(ROLLCALL), "rollcall-attendant")
    runs = (("rollcall-attendant", [slim], ""), ("rollcall-attendant, 10 tcp", [slim], services),
            ("rollcall attendant", [ROLLCALL, "attendant"], ""),
            ("rollcall attendant, 10 tcp", [ROLLCALL, "attendant"], services))
    for label, cmd, extra in runs:
        cfg = os.path.join(tmp, "attendant.toml")
        with open(cfg, "w") as f:
            f.write(f'name = "bench"\nlisten = "127.0.0.1:{PEER_PORT}"\ninsecure = true\nclock = "virtual"\n{extra}')
        results[label] = serve_and_load("attendant", cmd + ["--config", cfg],
                                        f"http://127.0.0.1:{PEER_PORT}/v1/compilation", rate, seconds, tmp)
    results["node_exporter"] = serve_and_load(
        "node_exporter", [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{PEER_PORT + 1}"],
        f"http://127.0.0.1:{PEER_PORT + 1}/metrics", rate, seconds, tmp)
    ne = results["node_exporter"]
    print(f"\n== Attendant vs node_exporter: {rate:g} requests/s for {seconds:g} s, keep-alive, "
          f"server pinned to core {MEASURED_CORE} ==")
    print(f"{'':28} {'RSS (MB)':>10} {'CPU ms/req':>11} {'reply bytes':>12} {'RSS ratio':>10} {'CPU ratio':>10}")
    for label, r in results.items():
        print(f"{label:28} {r['rss_kb'] / 1024:>10.1f} {r['cpu_ms']:>11.3f} {r['bytes']:>12} "
              f"{r['rss_kb'] / ne['rss_kb']:>10.2f} {r['cpu_ms'] / ne['cpu_ms']:>10.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "attendant":
        mode_attendant()
    elif len(sys.argv) >= 3 and sys.argv[1] == "poller":
        n = int(sys.argv[2])
        interval = float(sys.argv[3]) if len(sys.argv) > 3 else (1.0 if n <= 5000 else 10.0)
        mode_poller(n, interval)
    elif len(sys.argv) >= 3 and sys.argv[1] in ("poller-pg", "cluster"):
        n = int(sys.argv[2])
        interval = float(sys.argv[3]) if len(sys.argv) > 3 else (1.0 if n <= 5000 else 10.0)
        (mode_poller_pg if sys.argv[1] == "poller-pg" else mode_cluster)(n, interval)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
