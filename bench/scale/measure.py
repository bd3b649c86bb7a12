"""One measured agent run: drive an agent for a few minutes, sample it, and summarise every
figure (RunResult), then judge them against the targets."""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.scheduler import jitter_fraction
from bench.scale.host import loadavg, proc_cpu, proc_rss_mb, proc_threads, proc_user_cpu
from bench.scale.processes import Agent, Sim, target_rows, write_config
from bench.scale.scrape import Snapshot, get, parse_metrics, self_probe_value
from bench.scale.settings import (
    INTERVAL,
    PROBES,
    TARGET_CPU,
    TARGET_EXECUTED,
    TARGET_HEALTH_P99,
    TARGET_LATENESS_P99,
    TARGET_METRICS_P99,
    TARGET_RSS_MB,
    TARGET_SELF_PROBE_EXTRA,
    log,
)
from bench.scale.stats import histogram_quantile, parse_ts, pct


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
        if end - t_window < INTERVAL:
            # --minutes counts from the agent's start, warm-up included: a window shorter than
            # one probe interval does not see every job run and its rates are not comparable
            log(f"  warning: the steady window is {end - t_window:.0f} s, shorter than one probe "
                f"interval ({INTERVAL:.0f} s): raise --minutes or lower --warmup")
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
