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

This module is the command line and the two run sequences; the work is in the modules beside
it: settings (workload, targets), host (machine, load, /proc), processes (simulator and agent
processes, the agent's config), scrape (timed GETs, /metrics parsing), stats, measure (one
measured run, judged), compare (the comparison sweeps), report (tables, plot).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.scale.compare import compare
from bench.scale.host import loadavg, machine, wait_for_quiet
from bench.scale.installed import extras_present, installed_python
from bench.scale.measure import idle_self_probe, judge, measure
from bench.scale.processes import AGENT_ARGS, AGENT_PREFIX, AGENT_PYTHON, Sim, target_rows
from bench.scale.report import growth_report, main_report, plot_growth
from bench.scale.settings import ROOT, log


def _dump(doc: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")


def agent_env() -> dict[str, Any]:
    """Which interpreter ran the agent, and the undeclared packages it could import."""
    python = Path(AGENT_PYTHON[0]) if AGENT_PYTHON else Path(sys.executable)
    return {"installed": bool(AGENT_PYTHON), "python": str(python),
            "undeclared_present": extras_present(python)}


def run_main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"machine": machine(), "agent_env": agent_env()}
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
    doc: dict[str, Any] = {"machine": machine(), "agent_env": agent_env(),
                           "minutes": args.minutes, "warmup_s": args.warmup, "runs": []}
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
    ap.add_argument("--installed", action="store_true",
                    help="run the agent from a venv holding `pip install .` only, as users "
                    "install it (bench/scale/installed.py), instead of this venv")
    ap.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    ap.add_argument("--max-wait", type=float, default=600.0)
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="experiment: run the agent with sys.setswitchinterval(S) (S other "
                         "than Python's default 0.005, which agent run replaces with 1 ms)")
    args = ap.parse_args(argv)
    # one process unless asked: the figures of record (BENCHMARKS.md) are one process's
    AGENT_ARGS[:] = ["--workers", "1", *shlex.split(args.agent_args)]
    if args.switch_interval is not None:
        AGENT_PREFIX[:] = [
            "-c", f"import sys, runpy; sys.setswitchinterval({args.switch_interval}); "
            "sys.argv[0] = 'agent'; runpy.run_module('agent', run_name='__main__')",
        ]
    if args.installed:
        AGENT_PYTHON[:] = [str(installed_python())]
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
