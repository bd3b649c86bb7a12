"""What gzip costs a /metrics scrape: the standard library's zlib against ISA-L (isal), on the
same rendered exposition, in the same run; and what a scrape allocates while it compresses.

    .venv/bin/python -m bench.series.gzip_cost --targets 5000

The exposition is the real PrometheusExporter's render of N targets x 3 probes, fed as
bench.series.run feeds it. Its values repeat more than a live agent's (it compresses ~20:1, a
live 5,000-target scrape ~11:1), so read the times as a comparison, not as a scrape's latency.
Each time is the best of --repeat compressions (CPU-bound, so the best is the least disturbed),
from the exporter's cached fragments (render_parts) to the gzip body, joining included. "Peak"
is tracemalloc's peak of the same call in a separate pass: the memory a scrape holds at once.
"""

from __future__ import annotations

import argparse
import gzip
import platform
import time
import tracemalloc
from collections.abc import Callable

from isal import igzip

import agent.http_body
from agent.http_body import gzip_body
from bench.series.run import build


def batched(parts: list[bytes], n: int = 16384) -> bytes:
    """agent.http_body's batch-by-batch path, as taken by a body over BATCH_PARTS parts."""
    saved, agent.http_body.BATCH_PARTS = agent.http_body.BATCH_PARTS, n
    try:
        return gzip_body(parts)
    finally:
        agent.http_body.BATCH_PARTS = saved


Parts = list[bytes]
CODECS: dict[str, Callable[[Parts], bytes]] = {
    "zlib level 1, joined first": lambda p: gzip.compress(b"".join(p), compresslevel=1),
    "zlib level 6 (gzip's default), joined first": lambda p: gzip.compress(
        b"".join(p), compresslevel=6
    ),
    "isal level 1, joined first": lambda p: igzip.compress(b"".join(p), compresslevel=1),
    "isal level 1 through agent.http_body (now: one call up to ~7,000 targets)": gzip_body,
    "isal level 1, batches of 16,384 parts (beyond)": batched,
}


def best_of(fn: Callable[[Parts], bytes], parts: Parts, repeat: int) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(parts)
        best = min(best, time.perf_counter() - t0)
        size = len(out)
    return best, size


def peak_of(fn: Callable[[Parts], bytes], parts: Parts) -> int:
    tracemalloc.start()
    try:
        fn(parts)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    ex, _, _ = build(a.targets, a.rounds, classic=False, traced=False)
    parts = ex.render_parts()
    body = b"".join(parts)
    print(
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"{a.targets} targets x 3 probes: /metrics {len(body) / 1e6:.1f} MB, best of {a.repeat}"
    )
    print("| codec | time | output | ratio | peak |\n|---|---|---|---|---|")
    for name, fn in CODECS.items():
        t, size = best_of(fn, parts, a.repeat)
        assert gzip.decompress(fn(parts)) == body
        print(f"| {name} | {t * 1000:.1f} ms | {size / 1e6:.2f} MB | {len(body) / size:.1f}:1 "
              f"| {peak_of(fn, parts) / 1e6:.1f} MB |")


if __name__ == "__main__":
    main()
