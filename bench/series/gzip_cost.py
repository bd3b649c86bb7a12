"""What gzip costs a /metrics scrape: the standard library's zlib against ISA-L (isal), on the
same rendered exposition, in the same run.

    .venv/bin/python -m bench.series.gzip_cost --targets 5000

The exposition is the real PrometheusExporter's render of N targets x 3 probes, fed as
bench.series.run feeds it. Its values repeat more than a live agent's (it compresses ~20:1, a
live 5,000-target scrape ~11:1), so read the times as a comparison, not as a scrape's latency.
Each figure is the best of --repeat compressions (CPU-bound, so the best is the least disturbed).
"""

from __future__ import annotations

import argparse
import gzip
import platform
import time
from collections.abc import Callable

from isal import igzip

from bench.series.run import build

CODECS: dict[str, Callable[[bytes], bytes]] = {
    "zlib level 1 (before)": lambda b: gzip.compress(b, compresslevel=1),
    "zlib level 6 (gzip's default)": lambda b: gzip.compress(b, compresslevel=6),
    "isal level 1 (now)": lambda b: igzip.compress(b, compresslevel=1),
}


def best_of(fn: Callable[[bytes], bytes], body: bytes, repeat: int) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(body)
        best = min(best, time.perf_counter() - t0)
        size = len(out)
    return best, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    ex, _, _ = build(a.targets, a.rounds, classic=False, traced=False)
    body = ex.render()
    print(
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"{a.targets} targets x 3 probes: /metrics {len(body) / 1e6:.1f} MB, best of {a.repeat}"
    )
    print("| codec | time | output | ratio |\n|---|---|---|---|")
    for name, fn in CODECS.items():
        t, size = best_of(fn, body, a.repeat)
        assert gzip.decompress(fn(body)) == body
        print(f"| {name} | {t * 1000:.1f} ms | {size / 1e6:.2f} MB | {len(body) / size:.1f}:1 |")


if __name__ == "__main__":
    main()
