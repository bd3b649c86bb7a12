"""Memory per target: RSS and Python heap of the agent's service at N targets.

Each N runs in its own process (`--case N`): the bench simulator (bench/scale/sim.py) on
loopback, a config of N targets in the scale bench's format (dicom_echo + dicom_find + api_ping
each), the real AgentService with its plans installed (scheduler jobs, pipeline, /metrics,
/health), then `--runs` real runs of every probe of every target pushed through the service's
own job function (probe → recorder → evaluator → exporters) by a small thread pool, each round
in the next latency sub-window (5 rounds: the 5-minute window of a 30 s probe, full), and one
/metrics and /health render. The scheduler's timer and the HTTP server are not started: what is
measured is the state the agent keeps per target, not its threads.

RSS (/proc/self/statm) is read after a gc.collect(); per target = (RSS at the larger N − RSS at
the smaller N) / (difference in N), so fixed costs (interpreter, imports) cancel. With
`--trace` a second process per N runs the same with tracemalloc on and the difference between
the two Ns is grouped by file:line (or by file with `--by file`).

    .venv/bin/python -m bench.scale.memory [--counts 1000,3000] [--runs 5] [--trace] [--top 25]
        [--no-compact]   # the config loaded as check-config loads it, not as the daemon does
        [--installed]    # the runtime dependencies only, as `pip install .` (installed.py)

Another checkout (e.g. main, for a before/after): run this file from there,
`cd OTHER && PYTHONPATH=$PWD .venv/bin/python /path/to/bench/scale/memory.py --trace`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.scale.installed import installed_python
from bench.scale.settings import PROBES, ROOT


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def case(n: int, runs: int, trace: bool, by: str, compact: bool = True) -> dict[str, Any]:
    import tracemalloc

    from agent.config import load_config
    from agent.http_body import body_len
    from agent.redaction import Redactor
    from agent.service import AgentService
    from agent.shard import Shard
    from agent.tuning import release_free_heap, tune_daemon_process
    from bench.scale.processes import Sim, target_rows, write_config

    tune_daemon_process()  # as `agent run` does (mmap threshold for the scrape buffers)
    sim = Sim()
    try:
        with tempfile.TemporaryDirectory() as d:
            cfg = Path(d) / "agent.yaml"
            write_config(cfg, target_rows(n, sim))
            gc.collect()
            rss0 = rss_bytes()
            if trace:
                tracemalloc.start(1)
            loaded = load_config(str(cfg), compact=compact)  # as the daemon loads it
            svc = AgentService(loaded, shard=Shard(0, 1), redactor=Redactor(),
                               listen="127.0.0.1:0", config_path=str(cfg))
            del loaded  # as `agent run` drops it: the service keeps what it needs
            svc._install(svc._initial)  # what start() does, minus the timer and HTTP threads
            plans = svc.plans
            # each round of runs lands in the next latency sub-window, as runs 60 s apart would
            # (a 30 s probe fills each of the 5 sub-windows of its 5-minute window in steady
            # state): the recorder's state is then the steady state's, not one sub-window's
            rounds = [0]
            base = time.monotonic()
            svc.recorder._clock = lambda: base + rounds[0] * svc.recorder.slot_seconds
            t0 = time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                for _ in range(runs):
                    list(pool.map(lambda job: svc._run_job(*job),
                                  [(p, probe) for p in plans for probe in PROBES]))
                    rounds[0] += 1
            run_s = time.monotonic() - t0
            metrics = body_len(svc._metrics())
            health = body_len(svc._health()[1])
            gc.collect()
            rss = rss_bytes()
            t_trim = time.perf_counter()
            release_free_heap()  # what glibc holds free, as opposed to what is in use
            trim_s = time.perf_counter() - t_trim
            rss_trimmed = rss_bytes()
            out: dict[str, Any] = {"n": n, "runs": runs, "rss": rss, "rss0": rss0,
                                   "rss_trimmed": rss_trimmed, "trim_s": trim_s,
                                   "run_s": run_s, "metrics_bytes": metrics,
                                   "health_bytes": health}
            if trace:
                snap = tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(False, tracemalloc.__file__)])
                stats = snap.statistics("filename" if by == "file" else "lineno")
                out["heap"] = sum(s.size for s in stats)
                out["top"] = {_key(s): s.size for s in stats if s.size > 4096}
            svc.server.server_close()
            return out
    finally:
        sim.stop()


def _key(stat: Any) -> str:
    fr = stat.traceback[0]
    name = fr.filename
    for prefix in (str(ROOT) + "/", sys.prefix + "/lib/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return f"{name}:{fr.lineno}"


def run_case(n: int, args: argparse.Namespace, trace: bool) -> dict[str, Any]:
    # by path, so that the harness can measure another checkout (cwd and PYTHONPATH = its root)
    cmd = [args.python, __file__, "--case", str(n), "--runs", str(args.runs),
           "--by", args.by] + (["--trace"] if trace else []) + (
           ["--no-compact"] if args.no_compact else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="1000,3000")
    ap.add_argument("--runs", type=int, default=5, help="runs of every probe of every target")
    ap.add_argument("--trace", action="store_true", help="also a tracemalloc pass per count")
    ap.add_argument("--by", choices=("line", "file"), default="line")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-compact", action="store_true",
                    help="load the config without compaction (agent.config.loader), for a before")
    ap.add_argument("--installed", action="store_true",
                    help="measure with the runtime dependencies only (bench/scale/installed.py)")
    ap.add_argument("--case", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(case(args.case, args.runs, args.trace, args.by, not args.no_compact)))
        return 0
    # the installed venv's packages, this checkout's code (PYTHONPATH): the same code as installed
    args.python = str(installed_python()) if args.installed else sys.executable
    lo, hi = (int(x) for x in args.counts.split(","))
    res: dict[str, Any] = {"load": os.getloadavg(), "python": args.python, "rss": {},
                           "trace": {}}
    for n in (lo, hi):
        res["rss"][n] = run_case(n, args, False)
    dn = hi - lo
    a, b = res["rss"][lo], res["rss"][hi]
    print(f"load average {res['load'][0]:.2f}; {args.runs} runs per job")
    for r in (a, b):
        print(f"N={r['n']}: RSS {r['rss'] / 2**20:.1f} MiB (before config {r['rss0'] / 2**20:.1f}),"
              f" /metrics {r['metrics_bytes'] / 1e6:.1f} MB, /health {r['health_bytes'] / 1e6:.2f}"
              f" MB, runs {r['run_s']:.0f} s")
    print(f"RSS per target: {(b['rss'] - a['rss']) / dn / 1024:.1f} KiB")
    if args.trace:
        ta, tb = (run_case(n, args, True) for n in (lo, hi))
        res["trace"] = {lo: ta, hi: tb}
        print(f"Python heap per target (tracemalloc): {(tb['heap'] - ta['heap']) / dn / 1024:.1f}"
              " KiB")
        keys = set(ta["top"]) | set(tb["top"])
        diff = sorted(((tb["top"].get(k, 0) - ta["top"].get(k, 0)) / dn, k) for k in keys)
        for per, k in reversed(diff[-args.top:]):
            print(f"  {per:8.0f} B/target  {k}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
