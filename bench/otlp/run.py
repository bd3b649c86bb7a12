"""OTLP cost at N targets: CPU per export, CPU per run and RSS, with and without OTLP.

Each case runs in its own process (`--case`): the agent's exporters (PrometheusExporter always,
the OTLP exporter when on) fed by the real LatencyRecorder with N targets x dicom_echo,
dicom_find, api_ping and their phases, as the pipeline feeds them. A steady state of `--rounds`
runs per probe is recorded first, then `--exports` exports are taken (one round of runs between
two exports) against a real gRPC MetricsService in another process (its CPU is not counted).
CPU is this process's CPU time (all threads, gRPC's included): robust to the shared machine's
load. RSS is /proc/self/statm after the last export; peak is ru_maxrss.

    .venv/bin/python -m bench.otlp.run --targets 1000 [--exports 5] [--rounds 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from concurrent import futures
from typing import Any

PROBES = {
    "dicom_echo": ("connect", "associate", "dimse", "release"),
    "dicom_find": ("connect", "associate", "dimse", "first_match", "release"),
    "api_ping": ("connect", "first_byte", "transfer"),
}
RUN_EVERY = 30.0  # s: each probe's interval in bench/scale


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- the receiver (its own process) ---------------------------------------------------------------


def receiver() -> None:
    import grpc
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceResponse,
    )
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import (
        MetricsServiceServicer,
        add_MetricsServiceServicer_to_server,
    )

    class Servicer(MetricsServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
            return ExportMetricsServiceResponse()  # parsed by grpc: a real receiver's work

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         options=[("grpc.max_receive_message_length", 64 * 2**20)])
    add_MetricsServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop(None)


# -- one case --------------------------------------------------------------------------------------


def case(
    targets: int, otlp: str | None, rounds: int, exports: int, seed: int, tuned: bool
) -> dict[str, Any]:
    from agent.evaluator import CheckView, Evaluation, HealthState
    from agent.observation import Observation, TargetInfo
    from agent.prometheus_exporter import PrometheusExporter
    from agent.recorder import LatencyRecorder, Recorded
    from probes.base import ProbeResult

    if tuned:  # the malloc settings `agent run` makes (one arena, fixed mmap threshold)
        from agent.tuning import tune_daemon_process

        tune_daemon_process()
    rng = random.Random(seed)
    rss0 = rss_mb()
    exporters: list[Any] = [PrometheusExporter()]
    ex: Any = None
    if otlp:
        from agent.config.schema import OTLPConfig
        from agent.otlp import OTLPExporter, resolve_settings

        # the exporter's own timer never fires within the run: exports are taken on this thread
        s = resolve_settings(OTLPConfig(endpoint=otlp, interval=3_600_000, timeout=30_000), {})
        assert s is not None
        ex = OTLPExporter(s)
        exporters.append(ex)
    rec = LatencyRecorder()
    ids = [f"pacs-{i:04d}" for i in range(targets)]
    H = HealthState.HEALTHY
    for t in ids:
        info = TargetInfo(t, t, tuple(PROBES), degraded_latency=1.0,
                          cert_warning_seconds=30 * 86400)
        for e in exporters:
            e.add_target(info)
    now = ProbeResult.now()

    def one_round() -> None:
        for t in ids:
            for p, phases in PROBES.items():
                ok = rng.random() > 0.01
                ph = {n: rng.lognormvariate(-6.5, 0.6) for n in phases}
                d = sum(ph.values())
                r = ProbeResult(t, p, ok, None, "", ph if ok else {}, d, now)
                if ok:
                    q = rec.record(t, p, d)
                else:
                    q = rec.quantiles(t, p)
                ev = Evaluation(CheckView(p, last=r), None, H, H, H)
                obs = Observation(r, Recorded(q, 0), ev)
                for e in exporters:
                    e.observe(obs)

    for _ in range(rounds):
        one_round()
    import gc
    gc.collect()
    rss_state = rss_mb()
    c0 = time.process_time()
    one_round()
    round_cpu = time.process_time() - c0
    export_cpu: list[float] = []
    export_wall: list[float] = []
    for _ in range(exports):
        if ex is not None:
            c0, w0 = time.process_time(), time.monotonic()
            ex.force_flush()
            export_cpu.append(time.process_time() - c0)
            export_wall.append(time.monotonic() - w0)
            assert ex.exporter.failures == 0, "an export failed"
        one_round()
    gc.collect()
    out = {
        "targets": targets, "otlp": bool(otlp), "rounds": rounds,
        "rss_start_mb": round(rss0, 1), "rss_state_mb": round(rss_state, 1),
        "rss_end_mb": round(rss_mb(), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "round_cpu_s": round(round_cpu, 3), "runs_per_round": targets * len(PROBES),
        "export_cpu_s": [round(x, 3) for x in export_cpu],
        "export_wall_s": [round(x, 3) for x in export_wall],
    }
    if ex is not None:
        out["requests"] = ex.exporter.requests
        ex.shutdown()
    return out


def run_case(args: argparse.Namespace, endpoint: str | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.otlp.run", "--case", "--targets", str(args.targets),
           "--rounds", str(args.rounds), "--exports", str(args.exports)]
    if endpoint:
        cmd += ["--endpoint", endpoint]
    if args.untuned:
        cmd.append("--untuned")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def share(r: dict[str, Any], interval: float) -> float:
    """Share of one core: the median export's CPU per interval + a round of runs per 30 s."""
    exp = sorted(r["export_cpu_s"])[len(r["export_cpu_s"]) // 2] if r["export_cpu_s"] else 0.0
    return exp / interval + r["round_cpu_s"] / RUN_EVERY


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10, help="runs per probe before measuring")
    ap.add_argument("--exports", type=int, default=5)
    ap.add_argument("--untuned", action="store_true",
                    help="without the daemon's malloc settings (agent/tuning.py), for a before")
    ap.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    if args.receiver:
        receiver()
        return
    if args.case:
        print(json.dumps(case(args.targets, args.endpoint, args.rounds, args.exports, 7,
                              not args.untuned)))
        return
    load0 = os.getloadavg()
    rx = subprocess.Popen([sys.executable, "-m", "bench.otlp.run", "--receiver"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout is not None
        port = int(rx.stdout.readline())
        off = run_case(args, None)
        on = run_case(args, f"http://127.0.0.1:{port}")
    finally:
        assert rx.stdin is not None
        rx.stdin.close()
        rx.wait(10)
    res = {"off": off, "on": on, "tuned": not args.untuned, "load_before": load0,
           "load_after": os.getloadavg(), "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    for interval in (60.0, 30.0):
        res[f"extra_core_share_at_{int(interval)}s"] = round(
            share(on, interval) - share(off, interval), 4)
    res["extra_rss_mb"] = round(on["rss_end_mb"] - off["rss_end_mb"], 1)
    res["extra_peak_rss_mb"] = round(on["peak_rss_mb"] - off["peak_rss_mb"], 1)
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
