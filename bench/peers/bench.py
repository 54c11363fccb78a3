#!/usr/bin/env python3
"""Rollcall against its peers on this machine, measured in the same run on the same targets.

Modes (run through bench/peers/run.sh, which builds and installs what is missing):
  poller N [INTERVAL_S]   the poller and Prometheus polling the same N simulated servers
  attendant               one attendant against node_exporter, CPU and RSS per request

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
"""

import json
import os
import shutil
import signal
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


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
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


def start(cmd, core, log_path):
    out = open(log_path, "w")
    return subprocess.Popen(["taskset", "-c", core] + cmd, stdout=out, stderr=subprocess.STDOUT)


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
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


def measure(name, pid, n, interval, agent, failed_fn):
    """Warm-up, then one window: CPU, RSS and the simulator's counts for this peer."""
    log(f"{name}: warm-up {WARMUP:.0f} s")
    time.sleep(WARMUP)
    f0 = failed_fn()
    http(f"http://127.0.0.1:{SIM_PORT}/stats/reset", data=b"")
    c0 = cpu_s(pid)
    w0, _ = io_bytes(pid)
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
    window = time.time() - t0
    st = client(sim_stats(int(interval * 1000)), agent)
    f1 = failed_fn()
    polls = st["requests"]
    per_1000 = lambda v: v / (polls / 1000) if polls and v is not None else None
    return {
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


def poller_config(tmp, db, interval, servers_toml):
    timeout = min(interval * 0.8, 10)
    return (
        f'listen = "127.0.0.1:{PEER_PORT}"\ndatabase = "sqlite://{db}"\ntimeout = "{int(timeout * 1000)}ms"\n'
        f'max_concurrent_polls = 4096\n[[level]]\nname = "normal"\ninterval = "{int(interval * 1000)}ms"\n'
        + servers_toml
    )


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


def poller_failed():
    try:
        text = http(f"http://127.0.0.1:{PEER_PORT}/metrics", timeout=60).decode()
    except Exception as e:
        log("poller /metrics failed:", e)
        return None
    for line in text.splitlines():
        if line.startswith('rollcall_polls_total{outcome="unreachable"}'):
            return float(line.split()[-1])
    return 0.0


def run_poller(tmp, n, interval):
    cfg = os.path.join(tmp, "poller.toml")
    idle_db = os.path.join(tmp, "idle.db")
    with open(cfg, "w") as f:
        f.write(poller_config(tmp, idle_db, interval, ""))
    p = start([ROLLCALL, "poller", "--config", cfg], MEASURED_CORE, os.path.join(tmp, "poller-idle.log"))
    try:
        wait_http(f"http://127.0.0.1:{PEER_PORT}/api/v1/servers", proc=p)
        time.sleep(3)
        idle = rss_kb(p.pid)
    finally:
        stop(p)
    db = os.path.join(tmp, "rollcall.db")
    with open(os.path.join(tmp, "targets", "servers.toml")) as f:
        servers = f.read()
    with open(cfg, "w") as f:
        f.write(poller_config(tmp, db, interval, servers))
    p = start([ROLLCALL, "poller", "--config", cfg], MEASURED_CORE, os.path.join(tmp, "poller.log"))
    try:
        first_start = wait_http(f"http://127.0.0.1:{PEER_PORT}/api/v1/servers", proc=p)
        m = measure("poller", p.pid, n, interval, "rollcall-poller/", poller_failed)
        m["idle_rss_kb"] = idle
    finally:
        stop(p)
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
    poll_b = (sizes.get("polls", 0) + sizes.get("polls_by_server", 0) + sizes.get("poll_heads", 0)) / max(counts["polls"], 1)
    comp_b = ((sizes.get("compilations", 0) + sizes.get("compilations_by_server", 0)) / counts["compilations"]
              if counts["compilations"] else 0)
    # 15 min / 2 min mix: 90 % of a day at normal (96 polls/day), 10 % at critical (720/day);
    # a compilation stored on each change of substance, assumed 4 a day.
    polls_day = 0.9 * 96 + 0.1 * 720
    m["growth"] = (f"{poll_b:.0f} B per poll row, {comp_b:.0f} B per stored compilation -> "
                   f"{polls_day * poll_b + 4 * comp_b:.0f} B per server per day at a 15 min / 2 min mix "
                   f"(90 % / 10 % of the day, {polls_day:.0f} polls) with 4 changes a day; "
                   f"bounded by [retention] (30 days: {30 * (polls_day * poll_b + 4 * comp_b) / 1e6:.2f} MB per server)")
    # Start-up with N servers already in SQLite: spawn to API answering.
    p = start([ROLLCALL, "poller", "--config", cfg], MEASURED_CORE, os.path.join(tmp, "poller-restart.log"))
    try:
        m["restart_s"] = wait_http(f"http://127.0.0.1:{PEER_PORT}/api/v1/servers", proc=p)
    finally:
        stop(p)
    m["first_start_s"] = first_start
    comp = (f"{counts['compilations']} compilation rows (stored when changed)" if counts["compilations"] is not None
            else "latest compilation per server only")
    latest = (f"{counts['latest']} latest compilations (written on change and at shutdown)"
              if counts["latest"] is not None else "the latest compilation on each server row")
    m["stored"] = (f"SQLite {size / 1e6:.1f} MB: {counts['servers']} server rows (state), {latest}, "
                   f"{counts['polls']} poll rows, {comp}")
    return m


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


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
        prom = {"stored": "(not run: ONLY=rollcall)", "idle_rss_kb": 1, "rss_kb": 1}
    for m in (prom, roll):
        m["per_server"] = (m["rss_kb"] - m["idle_rss_kb"]) / n
    print(f"{'':32} {'Prometheus':>14} {'Rollcall':>14} {'Rollcall/Prom':>14}")
    for label, key, spec in rows:
        a, b = prom.get(key), roll.get(key)
        if key.endswith("rss_kb"):
            a, b, spec = a / 1024, b / 1024, ".1f"
        ratio = f"{b / a:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else "-"
        print(f"{label:32} {fmt(a, spec):>14} {fmt(b, spec):>14} {ratio:>14}")
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


def mode_poller(n, interval):
    tmp = tempfile.mkdtemp(prefix="rollcall-bench-")
    log("work dir", tmp, "| load:", open("/proc/loadavg").read().strip())
    sim = start([ROLLCALL, "simulate", "--servers", str(n), "--listen", f"0.0.0.0:{SIM_PORT}", "--targets-dir",
                 os.path.join(tmp, "targets")] + KNOBS, HELPER_CORE, os.path.join(tmp, "simulator.log"))
    try:
        wait_http(f"http://127.0.0.1:{SIM_PORT}/stats", proc=sim)
        # ONLY=rollcall skips the peer: for iterating on the poller, never for published figures.
        prom = None if os.environ.get("ONLY") == "rollcall" else run_prometheus(tmp, n, interval)
        roll = run_poller(tmp, n, interval)
    finally:
        stop(sim)
    report(n, interval, prom, roll)
    if os.environ.get("KEEP") != "1":
        shutil.rmtree(tmp, ignore_errors=True)


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
    tmp = tempfile.mkdtemp(prefix="rollcall-bench-att-")
    rate, seconds = float(os.environ.get("RATE", "100")), float(os.environ.get("SECONDS", "30"))
    log("work dir", tmp, "| load:", open("/proc/loadavg").read().strip())
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
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
