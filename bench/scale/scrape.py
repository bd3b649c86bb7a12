"""The agent's HTTP endpoints as the benchmark reads them: one timed GET, and the figures it
parses out of /metrics."""

from __future__ import annotations

import gzip
import http.client
import math
import re
import time
from dataclasses import dataclass

LATENESS_RE = re.compile(
    rb'^pacs_scheduler_start_lateness_seconds_bucket\{le="([^"]+)"\} (\S+)$', re.M
)
SELF_PROBE_RE = re.compile(rb"^pacs_agent_self_probe_overhead_seconds (\S+)$", re.M)
RUNS_RE = re.compile(
    rb'^pacs_probe_runs_total\{target="([^"]+)",probe="([^"]+)",result="([^"]+)"\} (\S+)$', re.M
)
MISSED_RE = re.compile(rb"^pacs_scheduler_missed_runs_total\{[^}]*\} (\S+)$", re.M)
SUCCESS_RE = re.compile(rb"^probe_success\{[^}]*\} (\S+)$", re.M)


@dataclass
class Got:
    status: int
    seconds: float
    body: bytes
    wire_bytes: int
    sent_at: float  # wall clock when the request was sent


def get(port: int, path: str, *, gzip_ok: bool = False, timeout: float = 30) -> Got:
    """One GET on a fresh connection, timed from connect to the last body byte."""
    headers = {"Accept-Encoding": "gzip"} if gzip_ok else {}
    sent = time.time()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        rsp = conn.getresponse()
        raw = rsp.read()
        seconds = time.perf_counter() - t0
        body = gzip.decompress(raw) if rsp.getheader("Content-Encoding") == "gzip" else raw
        return Got(rsp.status, seconds, body, len(raw), sent)
    finally:
        conn.close()


# -- metrics -------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    at: float  # wall clock of the request
    runs: dict[tuple[str, str], float]
    missed: float
    lateness: dict[float, float]  # le → cumulative count
    self_probe: float | None
    failing: int
    cpu: float  # agent CPU seconds right after the scrape
    cpu_user: float
    lines: int


def parse_metrics(body: bytes, at: float, cpu: float, cpu_user: float) -> Snapshot:
    runs: dict[tuple[str, str], float] = {}
    for t, p, _, v in RUNS_RE.findall(body):
        key = (t.decode(), p.decode())
        runs[key] = runs.get(key, 0.0) + float(v)
    lat = {
        math.inf if le == b"+Inf" else float(le): float(v) for le, v in LATENESS_RE.findall(body)
    }
    sp = SELF_PROBE_RE.search(body)
    return Snapshot(
        at=at, runs=runs, missed=sum(float(v) for v in MISSED_RE.findall(body)), lateness=lat,
        self_probe=float(sp.group(1)) if sp else None,
        failing=sum(1 for v in SUCCESS_RE.findall(body) if float(v) == 0.0),
        cpu=cpu, cpu_user=cpu_user, lines=body.count(b"\n"),
    )


def self_probe_value(body: bytes) -> float | None:
    m = SELF_PROBE_RE.search(body, max(0, len(body) - 20000))
    return float(m.group(1)) if m else None
