"""CPU per probe run spent around the probe: runner, result path, scheduler hand-off, scrapes.

`per_run` measures the probes against the simulator; this measures everything else, with the
probe replaced by one that returns at once (its phases filled as a real DICOM/HTTP run fills
them), so the figures are the agent's own work per run:

    .venv/bin/python -m bench.scale.around --targets 2000
    .venv/bin/python -m bench.scale.around --targets 2000 --profile    # cProfile of the run path

Sections (CPU of this process, time.process_time, per run or per scrape):
* `run path`: AgentService._run_job (runner + run log + recorder → evaluator → exporters), in one
  thread, after every job has had three results (steady state: all series exist);
* one line per pipeline stage over the same results (recorder, evaluator, each exporter);
* `scheduler`: the real ProbeScheduler dispatching no-op jobs that wait 2 ms (as a probe waits on
  its socket) at `--rate` runs/s, CPU per executed run with the timer and worker threads;
* `/metrics`: render, and render + gzip as the HTTP handler does, at `--targets` targets;
* GC: collections and time in the cyclic GC during the run path loop (gc.callbacks).

To measure another checkout with the same harness, run the file from that checkout's directory
with its code first on the path: `cd OTHER && PYTHONPATH=. .venv/bin/python PATH/around.py`.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent.config.loader import load_config
from agent.http_body import body_len, gzip_body, joined
from agent.logging_setup import setup_logging
from agent.redaction import Redactor
from agent.scheduler import ProbeScheduler
from agent.service import AgentService
from agent.shard import Shard
from bench.scale.processes import write_config
from bench.scale.settings import PROBES
from probes.base import Deadline, Facts, Phases, ProbeOutcome

# Phases as the real probes report them (names and count matter to the rendering cost)
PHASES = {
    "dicom_echo": ("connect", "associate", "dimse", "release"),
    "dicom_find": ("connect", "associate", "dimse", "first_match", "release"),
    "api_ping": ("connect", "first_byte", "transfer"),
}


class InstantProbe:
    """Stands in for a probe: fills its phases and returns, as a run against an instant PACS."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._phases = PHASES[name]
        self._facts = Facts(http_status=200) if name == "api_ping" else Facts()

    def run(self, deadline: Deadline, phases: Phases) -> ProbeOutcome:
        for i, ph in enumerate(self._phases):
            phases.add(ph, 0.0004 + 0.0001 * i)
        return ProbeOutcome("ok", facts=self._facts)


def make_service(n: int, d: Path) -> AgentService:
    path = d / "agent.yaml"
    rows = [
        {"id": f"site-{i:04d}", "port": 11112, "aet": f"PACS{i:04d}", "http": 8080}
        for i in range(n)
    ]
    write_config(path, rows)
    loaded = load_config(path)
    setup_logging("INFO", Redactor(set(loaded.secrets)))  # the daemon's default level
    svc = AgentService(loaded, shard=Shard(0, 1), redactor=Redactor(set(loaded.secrets)),
                       listen="127.0.0.1:0", config_path=str(path))
    for p in svc.plans:
        for name in list(p.probes):
            p.probes[name] = InstantProbe(name)  # type: ignore[assignment]
    svc._install(svc.plans)  # what start() does, without the scheduler and HTTP threads
    return svc


def cpu_per(fn: Any, n: int) -> float:
    c0 = time.process_time()
    fn()
    return (time.process_time() - c0) / n


def run_path(svc: AgentService, rounds: int, profile: bool) -> None:
    jobs = [(p, name) for p in svc.plans for name in p.probes]
    for _ in range(3):  # steady state: every series exists, every window has values
        for p, name in jobs:
            svc._run_job(p, name)
    gc_time = [0.0, 0]
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            gc_time[0] += time.perf_counter() - started.pop()
            gc_time[1] += 1

    gc.callbacks.append(on_gc)
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()

    def loop() -> None:
        for _ in range(rounds):
            for p, name in jobs:
                svc._run_job(p, name)

    n = rounds * len(jobs)
    per = cpu_per(loop, n)
    if prof:
        prof.disable()
    gc.callbacks.remove(on_gc)
    print(f"run path (runner + log + pipeline)   {per * 1e6:8.1f} µs/run   ({n} runs)")
    print(f"  cyclic GC during it: {gc_time[1]} collections, {gc_time[0] * 1e6 / n:.1f} µs/run")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


def stages(svc: AgentService, rounds: int) -> None:
    from agent.runner import run_probe

    jobs = [(p, name) for p in svc.plans for name in p.probes]
    results = [run_probe(p, name) for _ in range(rounds) for p, name in jobs]
    n = len(results)
    pl = svc.pipeline
    per = cpu_per(lambda: [run_probe(p, name) for _ in range(rounds) for p, name in jobs], n)
    print(f"  runner (run_probe, instant probe)  {per * 1e6:8.1f} µs/run")
    from agent.logging_setup import log_run

    per = cpu_per(lambda: [log_run(r) for r in results], n)
    print(f"  log_run                            {per * 1e6:8.1f} µs/run")
    recorded = []
    per = cpu_per(lambda: recorded.extend(pl.recorder.record_result(r) for r in results), n)
    print(f"  recorder                           {per * 1e6:8.1f} µs/run")
    evals = []

    def ev() -> None:
        for r, rec in zip(results, recorded, strict=True):
            evals.append(pl.evaluator.update(r, rec.quantiles.get(0.95)))

    per = cpu_per(ev, n)
    print(f"  evaluator                          {per * 1e6:8.1f} µs/run")
    from agent.observation import Observation

    obs = [Observation(r, rec, e) for r, rec, e in zip(results, recorded, evals, strict=True)]
    for e in pl.exporters:
        per = cpu_per(lambda e=e: [e.observe(o) for o in obs], n)
        print(f"  {type(e).__name__:34s} {per * 1e6:8.1f} µs/run")


def scheduler(svc: AgentService, rate: float, seconds: float, workers: int) -> None:
    plans = svc.plans
    done = [0]
    lock = threading.Lock()

    def job(plan: Any, probe: str) -> None:
        time.sleep(0.002)  # a probe waits on its socket, and another worker takes the GIL
        with lock:
            done[0] += 1

    by_id = {p.id: p for p in plans}
    interval = len(plans) * len(PROBES) / rate
    for p in plans:
        p.interval = interval
    s = ProbeScheduler(job, plan=by_id.get, on_missed=lambda t, p: None,
                       on_lateness=lambda x: None, max_workers=workers)
    s.set_plans(plans)
    s.start()
    time.sleep(interval + 1)  # every job has had its first run: steady state
    c0, n0 = time.process_time(), done[0]
    time.sleep(seconds)
    cpu, n = time.process_time() - c0, done[0] - n0
    s.shutdown()
    print(f"scheduler ({workers} workers, {rate:.0f}/s) {cpu * 1e6 / max(n, 1):8.1f} µs/run   "
          f"({n} runs, {n / seconds:.0f}/s)")


def scrapes(svc: AgentService, n: int) -> None:
    size = body_len(svc._metrics())
    per = cpu_per(lambda: [joined(svc._metrics()) for _ in range(n)], n)
    print(f"/metrics render                      {per * 1e3:8.1f} ms/scrape   "
          f"({size / 1e6:.1f} MB)")
    per = cpu_per(lambda: [gzip_body(svc._metrics()) for _ in range(n)], n)
    print(f"/metrics render + gzip               {per * 1e3:8.1f} ms/scrape")
    per = cpu_per(lambda: [svc._health() for _ in range(n)], n)
    print(f"/health render                       {per * 1e3:8.1f} ms/scrape")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3, help="results per job in the timed loop")
    ap.add_argument("--rate", type=float, default=500.0, help="scheduler section: runs/s")
    ap.add_argument("--seconds", type=float, default=10.0, help="scheduler section: duration")
    ap.add_argument("--workers", type=int, default=256, help="scheduler section: pool size")
    ap.add_argument("--scrapes", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile the run path (top 30)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        svc = make_service(args.targets, Path(d))
        try:
            run_path(svc, args.rounds, args.profile)
            stages(svc, 1)
            scrapes(svc, args.scrapes)
            if args.seconds > 0:
                scheduler(svc, args.rate, args.seconds, args.workers)
        finally:
            svc.server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
