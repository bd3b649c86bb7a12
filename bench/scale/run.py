"""Scale benchmark: the real agent daemon probing N simulated PACS endpoints on loopback.

    .venv/bin/python -m bench.scale.run --targets 1000 --minutes 10     # main run, ~13 min
    .venv/bin/python -m bench.scale.run --growth                        # 10/100/1000/3000, ~14 min
        [--counts 10,100,1000,3000] [--minutes 2.5] [--out DIR] [--no-wait] [--no-compare]

Every target has dicom_echo + dicom_find + api_ping every 30 s (timeout 5 s). The simulated
endpoints (`bench/scale/sim.py`, asyncio, cached replies) run in their own processes; the agent
runs as `python -m agent run --config <generated yaml> --listen 127.0.0.1:0` in its own process.
The orchestrator (this process) samples the agent's /proc every 10 s, times GET /health every
2.5 s and GET /metrics (gzip, as Prometheus asks for it) every 5 s, and reads the agent's counters
at the start and end of the steady-state window. The main run then sweeps the same targets with
DCMTK `echoscu`, a naive pynetdicom thread pool and the agent's own echo code in the same pool.

Writes DIR/main-N.json or DIR/growth.json, DIR/report-*.md (tables for BENCHMARKS.md) and, for
--growth, the plot `benchmarks-scale-growth.png` next to BENCHMARKS.md (matplotlib is installed
into the running venv if missing, pinned to MATPLOTLIB_PIN).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import math
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.scheduler import jitter_fraction

ROOT = Path(__file__).resolve().parents[2]
MATPLOTLIB_PIN = "matplotlib==3.11.2"
PROBES = ("dicom_echo", "dicom_find", "api_ping")
INTERVAL = 30.0
PROBE_TIMEOUT_MS = 5000
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# The targets
TARGET_EXECUTED = 0.999
TARGET_LATENESS_P99 = 0.250
TARGET_CPU = 0.50  # of one core
TARGET_RSS_MB = 200.0
TARGET_METRICS_P99 = 0.250
TARGET_HEALTH_P99 = 0.050
# the self-probe's median (the statistic PacsAgentSelfProbeOverheadHigh uses) within idle + 3 ms
TARGET_SELF_PROBE_EXTRA = 0.003

LATENESS_RE = re.compile(
    rb'^pacs_scheduler_start_lateness_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M
)
SELF_PROBE_RE = re.compile(rb"^pacs_agent_self_probe_overhead_seconds (\S+)$", re.M)
RUNS_RE = re.compile(
    rb'^pacs_probe_runs_total\{target="([^"]+)",probe="([^"]+)",result="([^"]+)"\} (\S+)$', re.M
)
MISSED_RE = re.compile(rb"^pacs_scheduler_missed_runs_total\{[^}]*\} (\S+)$", re.M)
SUCCESS_RE = re.compile(rb"^probe_success\{[^}]*\} (\S+)$", re.M)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- machine -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{mem_kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": os.cpu_count(), "cpu_model": model, "memory": mem,
        "python": platform.python_version(), "kernel": platform.release(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_quiet(limit: float = 1.5, max_wait: float = 600.0) -> dict[str, Any]:
    """Poll the 1-minute load average until it is ≤ limit, at most max_wait seconds."""
    t0 = time.monotonic()
    first = loadavg()
    while os.getloadavg()[0] > limit and time.monotonic() - t0 < max_wait:
        log(f"load average {os.getloadavg()[0]:.2f} > {limit}: waiting "
            f"({time.monotonic() - t0:.0f}/{max_wait:.0f} s)")
        time.sleep(15)
    return {"before_wait": first, "waited_s": round(time.monotonic() - t0), "after_wait": loadavg(),
            "quiet": os.getloadavg()[0] <= limit}


# -- /proc ---------------------------------------------------------------------------------------


def proc_tree(pid: int) -> list[int]:
    """The process and its children (an agent run with --workers N is N + 1 processes)."""
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                kids.append(int(d))
    return [pid, *kids]


def proc_cpu(pid: int) -> float:
    """utime + stime of a process and its children (all their threads), seconds."""
    total = 0
    for p in proc_tree(pid):
        text = Path(f"/proc/{p}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def proc_user_cpu(pid: int) -> float:
    total = 0
    for p in proc_tree(pid):
        text = Path(f"/proc/{p}/stat").read_text()
        total += int(text[text.rindex(")") + 2 :].split()[11])
    return total / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    pages = sum(int(Path(f"/proc/{p}/statm").read_text().split()[1]) for p in proc_tree(pid))
    return pages * PAGE / 1e6


def proc_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


# -- processes -----------------------------------------------------------------------------------


class Sim:
    """The simulator processes (each: several DICOM ports and one HTTP port)."""

    def __init__(self, procs: int = 2, dicom_ports: int = 4) -> None:
        self.procs: list[subprocess.Popen] = []
        self.dicom: list[int] = []
        self.http: list[int] = []
        for _ in range(procs):
            p = subprocess.Popen(
                [sys.executable, "-m", "bench.scale.sim", "--dicom-ports", str(dicom_ports),
                 "--http-ports", "1", "--stats"],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            self.procs.append(p)
        for p in self.procs:
            line = _readline_bounded(p, 30)
            info = json.loads(line)
            self.dicom += info["dicom"]
            self.http += info["http"]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu(self) -> float:
        return sum(proc_cpu(p) for p in self.pids)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def _readline_bounded(p: subprocess.Popen, timeout: float) -> str:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not out or not out[0]:
        raise RuntimeError("simulator did not start")
    return out[0]


def target_rows(n: int, sim: Sim) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        rows.append({
            "id": f"site-{i:04d}",
            "port": sim.dicom[i % len(sim.dicom)],
            "aet": f"PACS{i:04d}",
            "http": sim.http[i % len(sim.http)],
        })
    return rows


def write_config(path: Path, rows: list[dict[str, Any]], self_probe_ms: int = 5000) -> None:
    """The agent's config in the integration guide's format (YAML)."""
    lines = ["targets:"]
    for r in rows:
        lines += [
            f"  - id: {r['id']}",
            f"    name: Simulated PACS {r['aet']}",
            "    vendor: Sectra AB",
            "    config:",
            "      host: 127.0.0.1",
            f"      port: {r['port']}",
            "      callingAET: PACS_HEALTH",
            f"      calledAET: {r['aet']}",
            f"      timeout: {PROBE_TIMEOUT_MS}",
            "    secttraConfig:",
            f"      apiEndpoint: http://127.0.0.1:{r['http']}",
            "    healthCheck:",
            f"      interval: {int(INTERVAL * 1000)}",
            f"      timeout: {PROBE_TIMEOUT_MS}",
        ]
    lines += ["agent:", "  selfProbe:", f"    interval: {self_probe_ms}"]
    path.write_text("\n".join(lines) + "\n")


AGENT_PREFIX: list[str] = ["-m", "agent"]  # --switch-interval swaps in a wrapper
AGENT_ARGS: list[str] = []  # --agent-args, e.g. "--workers 2"


class Agent:
    def __init__(self, config: Path, logfile: Path) -> None:
        self.logfile = logfile
        self._log = open(logfile, "w")  # noqa: SIM115 - closed in stop()
        self.spawned = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, *AGENT_PREFIX, "run", "--config", str(config),
             "--listen", "127.0.0.1:0", *AGENT_ARGS],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        self.port = self._wait_port(60)
        self.ready_at = self._wait_ready(30)

    def _wait_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"Metrics: http://[^:]+:(\d+)/metrics", self.logfile.read_text())
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {self.logfile.read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("agent did not print its listen address")

    def _wait_ready(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if get(self.port, "/-/ready", timeout=2).status == 200:
                    return time.time()
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("agent not ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def log_summary(self) -> dict[str, int]:
        text = self.logfile.read_text(errors="replace")
        return {
            "lines": text.count("\n"),
            "errors": len(re.findall(r" ERROR ", text)),
            "warnings": len(re.findall(r" WARNING ", text)),
            "tracebacks": text.count("Traceback"),
        }


# -- HTTP ----------------------------------------------------------------------------------------


@dataclass
class Got:
    status: int
    seconds: float
    body: bytes
    wire_bytes: int
    sent_at: float  # wall clock when the request was sent


def get(port: int, path: str, *, gzip_ok: bool = False, timeout: float = 30) -> Got:
    """One GET on a fresh connection, timed from connect to the last body byte."""
    headers = {"Accept-Encoding": "gzip"} if gzip_ok else {}
    sent = time.time()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        rsp = conn.getresponse()
        raw = rsp.read()
        seconds = time.perf_counter() - t0
        body = gzip.decompress(raw) if rsp.getheader("Content-Encoding") == "gzip" else raw
        return Got(rsp.status, seconds, body, len(raw), sent)
    finally:
        conn.close()


# -- metrics -------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    at: float  # wall clock of the request
    runs: dict[tuple[str, str], float]
    missed: float
    lateness: dict[float, float]  # le → cumulative count
    self_probe: float | None
    failing: int
    cpu: float  # agent CPU seconds right after the scrape
    cpu_user: float
    lines: int


def parse_metrics(body: bytes, at: float, cpu: float, cpu_user: float) -> Snapshot:
    runs: dict[tuple[str, str], float] = {}
    for t, p, _, v in RUNS_RE.findall(body):
        key = (t.decode(), p.decode())
        runs[key] = runs.get(key, 0.0) + float(v)
    lat = {
        math.inf if le == b"+Inf" else float(le): float(v) for le, v in LATENESS_RE.findall(body)
    }
    sp = SELF_PROBE_RE.search(body)
    return Snapshot(
        at=at, runs=runs, missed=sum(float(v) for v in MISSED_RE.findall(body)), lateness=lat,
        self_probe=float(sp.group(1)) if sp else None,
        failing=sum(1 for v in SUCCESS_RE.findall(body) if float(v) == 0.0),
        cpu=cpu, cpu_user=cpu_user, lines=body.count(b"\n"),
    )


def self_probe_value(body: bytes) -> float | None:
    m = SELF_PROBE_RE.search(body, max(0, len(body) - 20000))
    return float(m.group(1)) if m else None


def histogram_quantile(q: float, cum: dict[float, float]) -> tuple[float, float]:
    """(Prometheus-style interpolated quantile, the upper bound of its bucket)."""
    les = sorted(cum)
    total = cum[les[-1]] if les else 0.0
    if total <= 0:
        return 0.0, 0.0
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le in les:
        c = cum[le]
        if c >= rank:
            if math.isinf(le):
                return prev_le, le
            frac = (rank - prev_c) / (c - prev_c) if c > prev_c else 1.0
            return prev_le + (le - prev_le) * frac, le
        prev_le, prev_c = le, c
    return les[-1], les[-1]


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def parse_ts(s: str) -> float:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


# -- one measured agent run ----------------------------------------------------------------------


@dataclass
class RunResult:
    targets: int
    jobs: int
    minutes: float
    warmup_s: float
    started: str = ""
    window_s: float = 0.0
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)
    executed: float = 0.0
    expected: float = 0.0
    expected_nominal: float = 0.0
    executed_ratio: float = 0.0
    edge_jobs: int = 0
    jobs_short: int = 0
    missed: float = 0.0
    lateness_count: float = 0.0
    lateness_p50: float = 0.0
    lateness_p99: float = 0.0
    lateness_p99_bucket: float = 0.0
    lateness_le_250ms: float = 0.0
    lateness_max_bucket: float = 0.0
    lateness_lastrun_p50_ms: float = 0.0
    lateness_lastrun_p99_ms: float = 0.0
    lateness_lastrun_max_ms: float = 0.0
    runs_seen_in_health: int = 0
    cpu_avg: float = 0.0
    cpu_whole_run: float = 0.0
    cpu_ms_per_probe: float = 0.0
    cpu_user_share: float = 0.0  # of the agent's CPU, the rest is kernel (sockets)
    cpu_series: list[tuple[float, float]] = field(default_factory=list)  # (t, cpu share)
    sim_cpu_avg: float = 0.0
    rss_series: list[tuple[float, float]] = field(default_factory=list)  # (t, MB)
    rss_end_mb: float = 0.0
    rss_max_mb: float = 0.0
    rss_slope_mb_per_h: float = 0.0
    rss_slope_from_s: float = 0.0
    threads_end: int = 0
    metrics_ms: list[float] = field(default_factory=list)
    metrics_p50_ms: float = 0.0
    metrics_p99_ms: float = 0.0
    metrics_max_ms: float = 0.0
    metrics_bytes: int = 0
    metrics_gzip_bytes: int = 0
    metrics_lines: int = 0
    metrics_plain_ms: list[float] = field(default_factory=list)
    health_ms: list[float] = field(default_factory=list)
    health_p50_ms: float = 0.0
    health_p99_ms: float = 0.0
    health_max_ms: float = 0.0
    health_bytes: int = 0
    self_probe_loaded: list[float] = field(default_factory=list)
    self_probe_p50_ms: float = 0.0
    self_probe_p95_ms: float = 0.0
    self_probe_max_ms: float = 0.0
    failing_probes_end: int = 0
    agent_log: dict[str, int] = field(default_factory=dict)
    sim_stats: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)


class Measurement:
    """Drives one agent process for `minutes` and collects every figure."""

    def __init__(self, agent: Agent, sim: Sim, rows: list[dict], minutes: float, warmup: float,
                 health_every: float = 2.5, metrics_every: float = 5.0) -> None:
        self.agent, self.sim, self.rows = agent, sim, rows
        self.minutes, self.warmup = minutes, warmup
        self.health_every, self.metrics_every = health_every, metrics_every
        self.jobs = [(r["id"], p) for r in rows for p in PROBES]
        self.frac = {j: jitter_fraction(f"{j[0]}|{j[1]}") for j in self.jobs}
        self.res = RunResult(len(rows), len(self.jobs), minutes, warmup)
        self.last_runs: dict[tuple[str, str], float] = {}
        self.run_starts: list[tuple[tuple[str, str], float]] = []  # every run seen in /health

    def _sample_proc(self, stop: threading.Event) -> None:
        pid, t0 = self.agent.pid, self.agent.spawned
        prev_t, prev_c = time.time(), proc_cpu(pid)
        while not stop.wait(10):
            try:
                now, c = time.time(), proc_cpu(pid)
                self.res.rss_series.append((round(now - t0, 1), round(proc_rss_mb(pid), 2)))
                share = (c - prev_c) / (now - prev_t)
                self.res.cpu_series.append((round(now - t0, 1), round(share, 4)))
                prev_t, prev_c = now, c
            except OSError:
                return

    def _health(self, in_window: bool) -> None:
        g = get(self.agent.port, "/health")
        self.res.health_bytes = len(g.body)
        if in_window:
            self.res.health_ms.append(g.seconds * 1000)
        doc = json.loads(g.body)
        for t in doc["targets"]:
            for c in t["checks"]:
                ts = c.get("lastRun")
                if not ts:
                    continue
                job = (t["id"], c["name"])
                v = parse_ts(ts)
                if self.last_runs.get(job) != v:
                    self.last_runs[job] = v
                    self.run_starts.append((job, v))

    def _full(self) -> Snapshot:
        g = get(self.agent.port, "/metrics")
        self.res.metrics_plain_ms.append(g.seconds * 1000)
        pid = self.agent.pid
        return parse_metrics(g.body, g.sent_at + g.seconds / 2, proc_cpu(pid), proc_user_cpu(pid))

    def run(self) -> RunResult:
        res, agent = self.res, self.agent
        stop = threading.Event()
        sampler = threading.Thread(target=self._sample_proc, args=(stop,), daemon=True)
        sampler.start()
        start = agent.spawned
        end = start + self.minutes * 60
        t_window = agent.ready_at + self.warmup
        cpu0_whole = proc_cpu(agent.pid)
        sim_cpu0 = self.sim.cpu()
        first: Snapshot | None = None
        tick = 0
        next_tick = time.time()
        while True:
            now = time.time()
            if now >= end:
                break
            if first is None and now >= t_window:
                first = self._full()
                sim_cpu0 = self.sim.cpu()
                log(f"  steady window starts ({len(first.runs)} jobs reported)")
            in_window = first is not None
            try:
                self._health(in_window)
                if tick % round(self.metrics_every / self.health_every) == 0:
                    g = get(agent.port, "/metrics", gzip_ok=True)
                    if in_window:
                        res.metrics_ms.append(g.seconds * 1000)
                        v = self_probe_value(g.body)
                        if v is not None:
                            res.self_probe_loaded.append(v)
                    res.metrics_bytes, res.metrics_gzip_bytes = len(g.body), g.wire_bytes
            except OSError as e:
                log(f"  scrape failed: {e!r}")
            tick += 1
            if tick % 24 == 0:
                log(f"  t={now - start:5.0f} s  rss={proc_rss_mb(agent.pid):6.1f} MB  "
                    f"/metrics p99 so far {pct(res.metrics_ms, 0.99):.0f} ms  "
                    f"/health p99 {pct(res.health_ms, 0.99):.0f} ms")
            next_tick += self.health_every
            time.sleep(max(0.0, min(next_tick, end) - time.time()))
        last = self._full()
        sim_cpu1 = self.sim.cpu()
        cpu1_whole = proc_cpu(agent.pid)
        stop.set()
        sampler.join(15)
        res.threads_end = proc_threads(agent.pid)
        res.rss_end_mb = proc_rss_mb(agent.pid)
        assert first is not None, "the run is shorter than its warm-up"
        self._summarise(first, last, cpu1_whole - cpu0_whole, time.time() - start,
                        sim_cpu1 - sim_cpu0)
        return res

    def _summarise(self, a: Snapshot, b: Snapshot, cpu_whole: float, whole_s: float,
                   sim_cpu: float) -> None:
        res = self.res
        res.window_s = b.at - a.at
        # executed vs schedule. The agent's scheduler puts job j's runs at base + f_j*30 + k*30
        # (f_j = jitter_fraction); base is the agent's set_plans() time, recovered from the run
        # start times seen in /health (the earliest offset; lateness is ≥ 0).
        offs = []
        for job, t in self.run_starts:
            offs.append((t - self.frac[job] * INTERVAL - self.agent.spawned) % INTERVAL)
        offs.sort()
        base = self.agent.spawned + offs[max(0, int(len(offs) * 0.001))]
        delta = 0.02  # a run's counter moves ~ms after its slot (lateness + probe duration)
        executed = expected = 0.0
        edge = short = 0
        for job in self.jobs:
            first = base + self.frac[job] * INTERVAL
            lo, hi = a.at - delta, b.at - delta

            def n_by(t: float, first: float = first) -> int:
                return 0 if t < first else math.floor((t - first) / INTERVAL) + 1

            exp = n_by(hi) - n_by(lo)
            got = b.runs.get(job, 0.0) - a.runs.get(job, 0.0)
            near = any(
                abs(((t - first) + INTERVAL / 2) % INTERVAL - INTERVAL / 2) < 1.0 for t in (lo, hi)
            )
            edge += near
            if got < exp - (1 if near else 0):
                short += 1
            executed += got
            expected += exp
        res.executed, res.expected = executed, expected
        res.expected_nominal = round(len(self.jobs) * res.window_s / INTERVAL, 1)
        res.executed_ratio = executed / expected if expected else 0.0
        res.edge_jobs, res.jobs_short = edge, short
        res.missed = b.missed - a.missed
        # lateness histogram over the window
        cum = {le: b.lateness.get(le, 0.0) - a.lateness.get(le, 0.0) for le in b.lateness}
        res.lateness_count = cum.get(math.inf, 0.0)
        res.lateness_p50, _ = histogram_quantile(0.5, cum)
        res.lateness_p99, res.lateness_p99_bucket = histogram_quantile(0.99, cum)
        res.lateness_le_250ms = cum.get(0.25, 0.0) / res.lateness_count if res.lateness_count else 0
        # the smallest bucket holding every observation: an upper bound of the maximum
        res.lateness_max_bucket = (
            min([le for le in cum if cum[le] >= res.lateness_count] or [0.0])
            if res.lateness_count else 0.0
        )
        # start lateness as seen in /health lastRun (ms resolution), relative to the base above
        lats = []
        for job, t in self.run_starts:
            if a.at <= t <= b.at:
                k = round((t - base - self.frac[job] * INTERVAL) / INTERVAL)
                lats.append((t - (base + self.frac[job] * INTERVAL + k * INTERVAL)) * 1000)
        res.runs_seen_in_health = len(lats)
        if lats:
            res.lateness_lastrun_p50_ms = round(pct(lats, 0.5), 1)
            res.lateness_lastrun_p99_ms = round(pct(lats, 0.99), 1)
            res.lateness_lastrun_max_ms = round(max(lats), 1)
        # CPU
        res.cpu_avg = (b.cpu - a.cpu) / res.window_s
        res.cpu_whole_run = cpu_whole / whole_s
        res.cpu_ms_per_probe = (b.cpu - a.cpu) / executed * 1000 if executed else 0.0
        res.cpu_user_share = (b.cpu_user - a.cpu_user) / (b.cpu - a.cpu) if b.cpu > a.cpu else 0
        res.sim_cpu_avg = sim_cpu / res.window_s
        # RSS: slope over the second half of the run (the latency window, 5 min, is full by then)
        pts = [(t, m) for t, m in res.rss_series if t >= max(self.warmup, self.minutes * 30)]
        res.rss_slope_from_s = pts[0][0] if pts else 0.0
        if len(pts) >= 3:
            mt = statistics.fmean(t for t, _ in pts)
            mm = statistics.fmean(m for _, m in pts)
            den = sum((t - mt) ** 2 for t, _ in pts)
            res.rss_slope_mb_per_h = sum((t - mt) * (m - mm) for t, m in pts) / den * 3600
        res.rss_max_mb = max((m for _, m in res.rss_series), default=res.rss_end_mb)
        # scrape times
        res.metrics_p50_ms, res.metrics_p99_ms = pct(res.metrics_ms, 0.5), pct(res.metrics_ms, 0.99)
        res.metrics_max_ms = max(res.metrics_ms, default=0.0)
        res.metrics_lines = b.lines
        res.health_p50_ms, res.health_p99_ms = pct(res.health_ms, 0.5), pct(res.health_ms, 0.99)
        res.health_max_ms = max(res.health_ms, default=0.0)
        sp = [v * 1000 for v in res.self_probe_loaded]
        if sp:
            res.self_probe_p50_ms, res.self_probe_p95_ms = pct(sp, 0.5), pct(sp, 0.95)
            res.self_probe_max_ms = max(sp)
        res.failing_probes_end = b.failing


def judge(res: RunResult, idle_p50_ms: float | None) -> dict[str, bool]:
    checks = {
        "executed >= 99.9 %": res.executed_ratio >= TARGET_EXECUTED,
        "no missed runs": res.missed == 0,
        "lateness p99 <= 250 ms": res.lateness_p99_bucket <= TARGET_LATENESS_P99,
        "CPU <= 50 % of a core": res.cpu_avg <= TARGET_CPU,
        "RSS <= 200 MB": res.rss_max_mb <= TARGET_RSS_MB,
        "/metrics p99 <= 250 ms": res.metrics_p99_ms <= TARGET_METRICS_P99 * 1000,
        "/health p99 <= 50 ms": res.health_p99_ms <= TARGET_HEALTH_P99 * 1000,
    }
    if idle_p50_ms is not None and res.self_probe_loaded:
        checks["self-probe p50 <= idle p50 + 3 ms"] = (
            res.self_probe_p50_ms <= idle_p50_ms + TARGET_SELF_PROBE_EXTRA * 1000
        )
    return checks


def measure(sim: Sim, rows: list[dict], minutes: float, warmup: float, out: Path,
            tag: str) -> RunResult:
    cfg = out / f"config-{tag}.yaml"
    write_config(cfg, rows)
    load_before = loadavg()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    agent = Agent(cfg, out / f"agent-{tag}.log")
    try:
        log(f"agent pid {agent.pid} on :{agent.port}, {len(rows)} targets, {minutes} min")
        res = Measurement(agent, sim, rows, minutes, warmup).run()
    finally:
        agent.stop()
    res.load_before, res.load_after, res.started = load_before, loadavg(), started
    res.agent_log = agent.log_summary()
    return res


def idle_self_probe(sim: Sim, out: Path, seconds: float = 30.0) -> dict[str, float]:
    """The self-probe gauge of an agent with one target: its idle value."""
    rows = target_rows(1, sim)
    cfg = out / "config-idle.yaml"
    write_config(cfg, rows, self_probe_ms=1000)
    agent = Agent(cfg, out / "agent-idle.log")
    vals: list[float] = []
    try:
        time.sleep(2)
        deadline = time.time() + seconds
        while time.time() < deadline:
            v = self_probe_value(get(agent.port, "/metrics").body)
            if v is not None:
                vals.append(v * 1000)
            time.sleep(1.0)
    finally:
        agent.stop()
    return {"samples": len(vals), "p50_ms": round(pct(vals, 0.5), 3),
            "p95_ms": round(pct(vals, 0.95), 3), "max_ms": round(max(vals, default=0), 3)}


# -- comparisons ---------------------------------------------------------------------------------


def compare(sim: Sim, rows: list[dict], out: Path, echoscu_parallel: int, pool_workers: int
            ) -> list[dict[str, Any]]:
    targets = [["127.0.0.1", r["port"], r["aet"]] for r in rows]
    tf = out / "targets.json"
    tf.write_text(json.dumps(targets))
    results = []
    # DCMTK echoscu, one process per target, `echoscu_parallel` at a time
    log(f"comparison: echoscu x {len(targets)}, {echoscu_parallel} at a time")
    load0 = loadavg()

    def one(t: list) -> tuple[int, float]:
        p = subprocess.Popen(
            ["echoscu", "-aet", "BENCH", "-aec", t[2], "-to", "10", t[0], str(t[1])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        return p.returncode, ru.ru_utime + ru.ru_stime

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=echoscu_parallel) as pool:
        outs = list(pool.map(one, targets))
    results.append({
        "client": f"DCMTK echoscu loop ({echoscu_parallel} processes at a time)",
        "sweep_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(sum(c for _, c in outs), 2),
        "ok": sum(1 for rc, _ in outs if rc == 0), "failed": sum(1 for rc, _ in outs if rc != 0),
        "load_before": load0, "load_after": loadavg(),
    })
    for client in ("pynetdicom", "agent-code"):
        log(f"comparison: {client} thread pool ({pool_workers} workers) x {len(targets)}")
        load0 = loadavg()
        p = subprocess.run(
            [sys.executable, "-m", "bench.scale.naive", client, "--targets", str(tf),
             "--workers", str(pool_workers)],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )
        if p.returncode != 0:
            raise RuntimeError(f"{client} sweep failed: {p.stderr[-2000:]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["client"] = {
            "pynetdicom": f"naive pynetdicom thread pool ({pool_workers} workers)",
            "agent-code": f"agent's echo code in the same pool ({pool_workers} workers)",
        }[client]
        r["load_before"], r["load_after"] = load0, loadavg()
        results.append(r)
    return results


# -- report --------------------------------------------------------------------------------------


def _ok(b: bool) -> str:
    return "yes" if b else "**NO**"


def main_report(doc: dict[str, Any]) -> str:
    r = doc["run"]
    idle = doc["idle_self_probe"]
    m = doc["machine"]
    lines = [
        f"Machine: {m['nproc']} × {m['cpu_model']}, {m['memory']}, Python {m['python']}, "
        f"Linux {m['kernel']}; {m['date']}. Shared machine: load average (1/5/15 min) "
        f"{doc['load']['before_wait']} when the bench started"
        + (f", waited {doc['load']['waited_s']} s for it to drop to {doc['load']['after_wait']}"
           if doc["load"]["waited_s"] else "")
        + f"; {r['load_before']} when the agent started, {r['load_after']} when it stopped.",
        "",
        f"Workload: {r['targets']} targets × (dicom_echo + dicom_find + api_ping) every 30 s = "
        f"{r['jobs']} jobs, {r['jobs'] / INTERVAL:.0f} probes/s; {r['minutes']} min run, "
        f"steady-state window {r['window_s']:.0f} s after {r['warmup_s']:.0f} s warm-up.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| executed ≥ 99.9 % of scheduled | {r['executed']:.0f} of {r['expected']:.0f} = "
        f"{100 * r['executed_ratio']:.3f} % (nominal rate: {r['expected_nominal']:.0f}); "
        f"jobs short of their schedule: {r['jobs_short']} | "
        f"{_ok(r['checks']['executed >= 99.9 %'])} |",
        f"| no missed/skipped runs | pacs_scheduler_missed_runs_total +{r['missed']:.0f} | "
        f"{_ok(r['checks']['no missed runs'])} |",
        f"| start lateness p99 ≤ 250 ms | histogram: p50 {1000 * r['lateness_p50']:.2f} ms, "
        f"p99 {1000 * r['lateness_p99']:.1f} ms (bucket ≤ {1000 * r['lateness_p99_bucket']:g} ms), "
        f"{100 * r['lateness_le_250ms']:.3f} % ≤ 250 ms, max bucket ≤ "
        f"{1000 * r['lateness_max_bucket']:g} ms; from /health lastRun (1 ms resolution): "
        f"p50 {r['lateness_lastrun_p50_ms']} ms, p99 {r['lateness_lastrun_p99_ms']} ms, "
        f"max {r['lateness_lastrun_max_ms']} ms | "
        f"{_ok(r['checks']['lateness p99 <= 250 ms'])} |",
        f"| agent CPU ≤ 50 % of one core | {100 * r['cpu_avg']:.1f} % in the window "
        f"({100 * r['cpu_whole_run']:.1f} % over the whole run incl. start-up; "
        f"{100 * r['cpu_user_share']:.0f} % of it user, the rest kernel; "
        f"{r['cpu_ms_per_probe']:.2f} ms CPU per probe run incl. scrapes); simulator "
        f"{100 * r['sim_cpu_avg']:.1f} % (not counted) | "
        f"{_ok(r['checks']['CPU <= 50 % of a core'])} |",
        f"| RSS ≤ 200 MB after 10 min, not growing | {r['rss_end_mb']:.1f} MB at the end, max "
        f"{r['rss_max_mb']:.1f} MB; slope {r['rss_slope_mb_per_h']:+.1f} MB/h from "
        f"t = {r['rss_slope_from_s']:.0f} s | {_ok(r['checks']['RSS <= 200 MB'])} |",
        f"| /metrics ≤ 250 ms p99 under load | p50 {r['metrics_p50_ms']:.0f} ms, p99 "
        f"{r['metrics_p99_ms']:.0f} ms, max {r['metrics_max_ms']:.0f} ms over "
        f"{len(r['metrics_ms'])} gzip scrapes ({r['metrics_lines']} lines, "
        f"{r['metrics_bytes'] / 1e6:.1f} MB, {r['metrics_gzip_bytes'] / 1e6:.2f} MB gzipped) | "
        f"{_ok(r['checks']['/metrics p99 <= 250 ms'])} |",
        f"| /health ≤ 50 ms | p50 {r['health_p50_ms']:.1f} ms, p99 {r['health_p99_ms']:.1f} ms, "
        f"max {r['health_max_ms']:.0f} ms over {len(r['health_ms'])} GETs "
        f"({r['health_bytes'] / 1e6:.2f} MB) | {_ok(r['checks']['/health p99 <= 50 ms'])} |",
    ]
    if "self-probe p50 <= idle p50 + 3 ms" in r["checks"]:
        lines.append(
            f"| self-probe overhead ≈ idle + a few ms (median ≤ idle + 3 ms) | idle (1 target): "
            f"p50 {idle['p50_ms']:.2f} ms, "
            f"p95 {idle['p95_ms']:.2f} ms; loaded: p50 {r['self_probe_p50_ms']:.2f} ms, p95 "
            f"{r['self_probe_p95_ms']:.2f} ms, max {r['self_probe_max_ms']:.2f} ms "
            f"({len(r['self_probe_loaded'])} samples) | "
            f"{_ok(r['checks']['self-probe p50 <= idle p50 + 3 ms'])} |"
        )
    lines += [
        "",
        f"Probes failing at the end: {r['failing_probes_end']}; agent log: {r['agent_log']}; "
        f"agent threads at the end: {r['threads_end']}.",
    ]
    if doc.get("compare"):
        lines += [
            "",
            f"Same {r['targets']} targets, same simulator, one C-ECHO each, after the agent run:",
            "",
            "| client | sweep of all targets | CPU | CPU per echo | failed |",
            "|---|---|---|---|---|",
        ]
        for c in doc["compare"]:
            n = c["ok"] + c["failed"]
            lines.append(
                f"| {c['client']} | {c['sweep_s']:.1f} s | {c['cpu_s']:.1f} s | "
                f"{1000 * c['cpu_s'] / n:.1f} ms | {c['failed']} |"
            )
        lines.append(
            f"| the agent daemon (echo + find + api_ping, spread over each 30 s cycle) | "
            f"{r['jobs']} probes every 30 s | {100 * r['cpu_avg']:.1f} % of a core | "
            f"{r['cpu_ms_per_probe']:.1f} ms per probe (any type, incl. /metrics and /health "
            f"scrapes) | {r['failing_probes_end']} |"
        )
    return "\n".join(lines) + "\n"


def growth_report(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"Machine: {m['nproc']} × {m['cpu_model']}, {m['memory']}, Python {m['python']}; "
        f"{m['date']}. Each count: a fresh agent, {doc['warmup_s']:.0f} s warm-up, then "
        f"{doc['minutes']} min measured (RSS is therefore before the 5-min latency window fills; "
        f"see the 10-min main run for steady-state memory). Idle self-probe (1 target): "
        f"p50 {doc['idle_self_probe']['p50_ms']:.2f} ms, "
        f"p95 {doc['idle_self_probe']['p95_ms']:.2f} ms.",
        "",
        "| targets | probes/s | executed | missed | lateness p99 | agent CPU | sim CPU | RSS end "
        "| /metrics p50 / p99 | /metrics size | /health p50 / p99 | self-probe p50 / p95 "
        "| load before → after | all targets met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["runs"]:
        failed = [k for k, v in r["checks"].items() if not v]
        lines.append(
            f"| {r['targets']} | {r['jobs'] / INTERVAL:.1f} | {100 * r['executed_ratio']:.2f} % "
            f"| {r['missed']:.0f} | ≤ {1000 * r['lateness_p99_bucket']:g} ms "
            f"({r['lateness_lastrun_p99_ms']} ms) | {100 * r['cpu_avg']:.1f} % | "
            f"{100 * r['sim_cpu_avg']:.1f} % | {r['rss_end_mb']:.0f} MB | "
            f"{r['metrics_p50_ms']:.0f} / {r['metrics_p99_ms']:.0f} ms | "
            f"{r['metrics_lines']} lines, {r['metrics_bytes'] / 1e6:.1f} MB | "
            f"{r['health_p50_ms']:.1f} / {r['health_p99_ms']:.1f} ms | "
            f"{r['self_probe_p50_ms']:.2f} / {r['self_probe_p95_ms']:.2f} ms | "
            f"{r['load_before'][0]} → {r['load_after'][0]} | "
            + ("yes" if not failed else "**no**: " + ", ".join(failed)) + " |"
        )
    best = [r["targets"] for r in doc["runs"] if all(r["checks"].values())]
    lines += ["", f"Largest measured count meeting every target: {max(best) if best else 'none'}."]
    return "\n".join(lines) + "\n"


def ensure_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        log(f"installing {MATPLOTLIB_PIN} into {sys.prefix}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", MATPLOTLIB_PIN],
                       check=True, timeout=600)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_growth(doc: dict[str, Any], path: Path) -> None:
    plt = ensure_matplotlib()
    runs = doc["runs"]
    n = [r["targets"] for r in runs]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    ax = axes[0]
    ax.plot(n, [100 * r["cpu_avg"] for r in runs], "o-", label="agent")
    ax.plot(n, [100 * r["sim_cpu_avg"] for r in runs], "s--", label="simulator (not counted)")
    ax.axhline(100 * TARGET_CPU, color="red", lw=0.8, ls=":", label="target 50 %")
    ax.set_title("CPU (% of one core)")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(n, [r["rss_end_mb"] for r in runs], "o-")
    ax.axhline(TARGET_RSS_MB, color="red", lw=0.8, ls=":", label="target 200 MB")
    ax.set_title("RSS at the end (MB)")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(n, [r["metrics_p99_ms"] for r in runs], "o-", label="/metrics p99 (gzip)")
    ax.plot(n, [r["health_p99_ms"] for r in runs], "s-", label="/health p99")
    ax.axhline(TARGET_METRICS_P99 * 1000, color="red", lw=0.8, ls=":", label="/metrics target")
    ax.axhline(TARGET_HEALTH_P99 * 1000, color="orange", lw=0.8, ls=":", label="/health target")
    ax.set_title("scrape time (ms)")
    ax.legend(fontsize=8)
    for i, ax in enumerate(axes):
        ax.set_xscale("log")
        if i != 1:  # RSS: linear, it has a large fixed part
            ax.set_yscale("log")
        ax.set_xlabel("targets (3 probes each, every 30 s)")
        ax.grid(True, which="both", alpha=0.3)
    m = doc["machine"]
    dates = sorted(r.get("started") or m["date"] for r in runs)
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} – {dates[-1]}"
    fig.suptitle(f"pacs-health-agent scale: {m['nproc']} × {m['cpu_model']}, Python {m['python']}"
                 f" ({when})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- entry points --------------------------------------------------------------------------------


def _dump(doc: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")


def run_main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"machine": machine()}
    doc["load"] = (
        {"before_wait": loadavg(), "waited_s": 0, "after_wait": loadavg(), "quiet": None}
        if args.no_wait else wait_for_quiet(max_wait=args.max_wait)
    )
    t_start = time.monotonic()
    sim = Sim(procs=args.sim_procs)
    try:
        log("idle self-probe (agent with 1 target, 30 s)")
        doc["idle_self_probe"] = idle_self_probe(sim, out)
        rows = target_rows(args.targets, sim)
        res = measure(sim, rows, args.minutes, args.warmup, out, f"main-{args.targets}")
        res.checks = judge(res, doc["idle_self_probe"]["p50_ms"])
        doc["run"] = asdict(res)
        if not args.no_compare:
            doc["compare"] = compare(sim, rows, out, args.echoscu_parallel, args.pool_workers)
    finally:
        sim.stop()
    doc["bench_minutes"] = round((time.monotonic() - t_start) / 60, 1)
    _dump(doc, out / f"main-{args.targets}.json")
    report = main_report(doc)
    (out / f"report-main-{args.targets}.md").write_text(report)
    print(report)
    log(f"done in {doc['bench_minutes']} min; results in {out}")
    return 0 if all(res.checks.values()) else 1


def run_growth(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = [int(c) for c in args.counts.split(",")]
    doc: dict[str, Any] = {"machine": machine(), "minutes": args.minutes,
                           "warmup_s": args.warmup, "runs": []}
    previous = out / "growth.json"
    if args.append and previous.exists():  # add counts to an earlier series (same settings)
        doc = json.loads(previous.read_text())
        doc["runs"] = [r for r in doc["runs"] if r["targets"] not in counts]
    doc.setdefault("load_waits", []).append(
        {"before_wait": loadavg(), "waited_s": 0} if args.no_wait
        else wait_for_quiet(max_wait=args.max_wait)
    )
    sim = Sim(procs=args.sim_procs)
    try:
        if "idle_self_probe" not in doc:
            doc["idle_self_probe"] = idle_self_probe(sim, out, seconds=20)
        for n in counts:
            rows = target_rows(n, sim)
            res = measure(sim, rows, args.minutes + args.warmup / 60, args.warmup, out,
                          f"growth-{n}")
            res.checks = judge(res, doc["idle_self_probe"]["p50_ms"])
            # the growth runs are shorter than the RSS criterion's 10 minutes
            doc["runs"].append(asdict(res))
            doc["runs"].sort(key=lambda r: r["targets"])
            _dump(doc, out / "growth.json")
            log(f"  {n} targets: CPU {100 * res.cpu_avg:.1f} %, RSS {res.rss_end_mb:.0f} MB, "
                f"/metrics p99 {res.metrics_p99_ms:.0f} ms, checks {res.checks}")
    finally:
        sim.stop()
    _dump(doc, out / "growth.json")
    report = growth_report(doc)
    (out / "report-growth.md").write_text(report)
    print(report)
    plot_growth(doc, Path(args.plot))
    log(f"plot: {args.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="pacs-health-agent scale benchmark")
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=None,
                    help="main run length (default 10) or measured minutes per count (default 2.5)")
    ap.add_argument("--warmup", type=float, default=45.0, help="seconds before the window")
    ap.add_argument("--growth", action="store_true", help="the 10/100/1000/3000 series")
    ap.add_argument("--counts", default="10,100,1000,3000")
    ap.add_argument("--replot", action="store_true", help="redo report and plot of growth.json")
    ap.add_argument("--append", action="store_true",
                    help="--growth: add these counts to the existing growth.json")
    ap.add_argument("--out", default=str(ROOT / "bench" / "scale" / "results"))
    ap.add_argument("--plot", default=str(ROOT / "benchmarks-scale-growth.png"))
    ap.add_argument("--sim-procs", type=int, default=2)
    ap.add_argument("--echoscu-parallel", type=int, default=4)
    ap.add_argument("--pool-workers", type=int, default=16)
    ap.add_argument("--no-compare", action="store_true")
    ap.add_argument("--agent-args", default="", help='extra `agent run` arguments ("--workers 2")')
    ap.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    ap.add_argument("--max-wait", type=float, default=600.0)
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="experiment: run the agent with sys.setswitchinterval(S)")
    args = ap.parse_args(argv)
    # one process unless asked: the figures of record (BENCHMARKS.md) are one process's
    AGENT_ARGS[:] = ["--workers", "1", *shlex.split(args.agent_args)]
    if args.switch_interval is not None:
        AGENT_PREFIX[:] = [
            "-c", f"import sys, runpy; sys.setswitchinterval({args.switch_interval}); "
            "sys.argv[0] = 'agent'; runpy.run_module('agent', run_name='__main__')",
        ]
    if args.minutes is None:
        args.minutes = 2.5 if args.growth else 10.0
    if args.replot:  # report and plot again from growth.json, no runs
        doc = json.loads((Path(args.out) / "growth.json").read_text())
        (Path(args.out) / "report-growth.md").write_text(growth_report(doc))
        plot_growth(doc, Path(args.plot))
        print(growth_report(doc))
        return 0
    return run_growth(args) if args.growth else run_main(args)


if __name__ == "__main__":
    sys.exit(main())
