"""Series, /metrics size, render time and exporter memory for N targets x 3 probes, with the
default metric set and with agent.metrics.classicHistogram, measured in the same run.

    .venv/bin/python -m bench.series.run --targets 1000

Only the Prometheus exporter runs (no probes, no HTTP): each target gets dicom_echo, dicom_find
and api_ping results with the phases they report against the simulator, a failure each and then
`--rounds` successes, the way a running agent feeds it.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import platform
import statistics
import time
import tracemalloc

from agent.prometheus_exporter import PrometheusExporter
from probes.base import Facts, ProbeResult, Reason
from tests.helpers.observe import info, observation

PHASES = {
    "dicom_echo": ("connect", "associate", "dimse", "release"),
    "dicom_find": ("connect", "associate", "first_match", "dimse", "release"),
    "api_ping": ("connect", "first_byte", "transfer"),
}
QUANTILES = {0.5: 0.012, 0.95: 0.031, 0.99: 0.048}


def build(
    n: int, rounds: int, classic: bool, traced: bool
) -> tuple[PrometheusExporter, float, int]:
    """The fed exporter, CPU seconds per observe(), and with `traced` the bytes it holds
    (tracemalloc, which slows every allocation: the CPU figure comes from an untraced build)."""
    gc.collect()
    if traced:
        tracemalloc.start()
    ex = PrometheusExporter(classic_histogram=classic)
    observed, cpu = 0, 0.0
    now = ProbeResult.now()
    for i in range(n):
        ex.add_target(info(f"pacs-{i:05d}", list(PHASES)))
    for r in range(rounds + 1):
        for i in range(n):
            t = f"pacs-{i:05d}"
            for p, phases in PHASES.items():
                if r == 0:  # one failure each: its reason (and DICOM status) series exist
                    res = ProbeResult(t, p, False, Reason.TIMEOUT, "timeout", {}, 5.0, now,
                                      facts=Facts(dicom_status=None))
                else:
                    d = 0.004 * (1 + (i + r) % 7)
                    res = ProbeResult(t, p, True, None, "ok", dict.fromkeys(phases, d / 4), d,
                                      now)
                obs = observation(res, QUANTILES)
                c0 = time.process_time()
                ex.observe(obs)
                cpu += time.process_time() - c0
                observed += 1
    held = 0
    if traced:
        held, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return ex, cpu / observed, held


def measure(n: int, rounds: int, renders: int, classic: bool) -> dict[str, float]:
    _, _, held = build(n, rounds, classic, traced=True)
    ex, observe_cpu, _ = build(n, rounds, classic, traced=False)
    text = ex.render()
    times = []
    for _ in range(renders):
        t0 = time.perf_counter()
        ex.render()
        times.append(time.perf_counter() - t0)
    lines = [ln for ln in text.split(b"\n") if ln and not ln.startswith(b"#")]
    per_probe = [ln for ln in lines if b'probe="' in ln]
    return {
        "series": len(lines),
        "per probe": len(per_probe) / (n * len(PHASES)),
        "bytes": len(text),
        "gzip": len(gzip.compress(text, 6)),
        "render p50 ms": statistics.median(times) * 1000,
        "observe() CPU µs": observe_cpu * 1e6,
        "exporter holds MB": held / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20, help="successful results per probe")
    ap.add_argument("--renders", type=int, default=21)
    a = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"{a.targets} targets x {len(PHASES)} probes, {a.rounds} rounds")
    res = {c: measure(a.targets, a.rounds, a.renders, c) for c in (False, True)}
    print("| | default | classicHistogram |\n|---|---|---|")
    for k in res[False]:
        fmt = "{:,.0f}" if k in ("series", "bytes", "gzip") else "{:.1f}"
        print(f"| {k} | {fmt.format(res[False][k])} | {fmt.format(res[True][k])} |")
    for c in (False, True):
        print(f"ingestion at a 30 s scrape interval ({'classic' if c else 'default'}): "
              f"{res[c]['series'] / 30:,.0f} samples/s")


if __name__ == "__main__":
    main()
