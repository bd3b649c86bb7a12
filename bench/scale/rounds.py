"""CPU per probe run through the scheduler: worker threads, the probe loop, the loop in rounds.

The scale run measures the whole daemon; this isolates how runs are started and waited for.
Same probes, same simulator, same rate; only the way the scheduler runs them changes:

    .venv/bin/python -m bench.scale.rounds                      # 500 targets x 3 probes / 5 s
    .venv/bin/python -m bench.scale.rounds --modes loop,rounds --repeat 3

* threads: every run on a worker thread (ProbeScheduler without `cooperative`), as before
  the probe loop existed;
* loop: every run a greenlet on the scheduler's thread, each started at its own slot
  (rounds switched off);
* rounds: the loop as the daemon runs it, due runs started together BATCH_S apart.

Runs are run_probe only (no recording, no exporters); CPU is this process's
(time.process_time) over `--seconds`, after one interval of warm-up; the simulator runs as
its own process and is not counted.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import agent.scheduler as scheduler
from agent.config.loader import load_config
from agent.runner import run_probe
from agent.scheduler import ProbeScheduler
from agent.targets import TargetPlan, build_plan
from bench.scale.processes import Sim, target_rows, write_config

MODES = ("threads", "loop", "rounds")


def measure(mode: str, plans: list[TargetPlan], seconds: float) -> dict[str, Any]:
    by_id = {p.id: p for p in plans}
    done = [0, 0]

    def run(plan: TargetPlan, probe: str) -> None:
        r = run_probe(plan, probe)
        done[0] += 1
        done[1] += not r.ok

    min_rate = scheduler.BATCH_MIN_RATE
    scheduler.BATCH_MIN_RATE = float("inf") if mode != "rounds" else min_rate
    sched = ProbeScheduler(
        run, plan=by_id.get, on_missed=lambda t, p: None, on_lateness=lambda s: None,
        max_workers=64, cooperative=(lambda _: mode != "threads"),
    )
    try:
        sched.set_plans(plans)
    finally:
        scheduler.BATCH_MIN_RATE = min_rate
    sched.start()
    try:
        time.sleep(plans[0].interval + 1)  # every job has run once: threads exist, caches warm
        c0, n0, w0 = time.process_time(), done[0], time.monotonic()
        time.sleep(seconds)
        cpu, runs, wall = time.process_time() - c0, done[0] - n0, time.monotonic() - w0
    finally:
        sched.shutdown()
    return {
        "mode": mode, "runs_per_s": round(runs / wall, 1), "cpu_share": round(cpu / wall, 4),
        "cpu_ms_per_run": round(1000 * cpu / max(runs, 1), 3), "failed": done[1],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=500)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    sim = Sim(procs=1, dicom_ports=2)
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "agent.yaml"
            write_config(path, target_rows(args.targets, sim))
            plans = [build_plan(ep) for ep in load_config(path).model.targets]
        for p in plans:
            p.interval = args.interval
        for i in range(args.repeat):
            for mode in modes:  # alternating, so a change in the host's load hits every mode
                row = measure(mode, plans, args.seconds) | {"round": i}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        sim.stop()
    if args.out:
        args.out.write_text(json.dumps({"targets": args.targets, "interval": args.interval,
                                        "seconds": args.seconds, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
