"""CPU per probe run, by probe, in one thread against the scale benchmark's simulator.

The scale run measures everything together (scheduling, probes, recording, exposition) under
load; this isolates the probe itself, so a change to one probe's code path shows in its own
figure within seconds:

    .venv/bin/python -m bench.scale.per_run --runs 2000
    .venv/bin/python -m bench.scale.per_run --runs 500 --profile dicom_echo   # cProfile top 25

CPU is this process's (time.process_time); the simulator runs as its own process. Each probe
runs against 50 targets in turn (distinct AE titles), after 100 warm-up runs.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from agent.config.loader import load_config
from agent.runner import run_probe
from agent.targets import build_plan
from bench.scale.processes import Sim, target_rows, write_config
from bench.scale.settings import PROBES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--targets", type=int, default=50)
    ap.add_argument("--profile", choices=PROBES)
    args = ap.parse_args(argv)
    sim = Sim(procs=1, dicom_ports=2)
    try:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "agent.yaml"
            write_config(path, target_rows(args.targets, sim))
            plans = [build_plan(ep) for ep in load_config(path).model.targets]
        for name in PROBES if args.profile is None else (args.profile,):
            for i in range(100):
                run_probe(plans[i % len(plans)], name)
            prof = cProfile.Profile() if args.profile else None
            failed = 0
            c0, w0 = time.process_time(), time.perf_counter()
            if prof:
                prof.enable()
            for i in range(args.runs):
                failed += not run_probe(plans[i % len(plans)], name).ok
            if prof:
                prof.disable()
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            print(f"{name:12s} CPU {1000 * cpu / args.runs:.3f} ms/run  "
                  f"wall {1000 * wall / args.runs:.3f} ms/run  failed {failed}", flush=True)
            if prof:
                pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
