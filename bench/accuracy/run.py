"""Timing-accuracy benchmark: the agent's phases against the wire, side by side.

    .venv/bin/python -m bench.accuracy.run [--quick] [--out bench/accuracy/results]

Captures the loopback packets with tcpdump while three clients C-ECHO / C-FIND three peers, and
compares what each client reports with what the wire shows for the same association:

* clients: the agent's probes (probes/dicom_echo.py, probes/dicom_find.py), the naive stopwatch
  around pynetdicom's ae.associate() / send_c_echo() / send_c_find() / release(), and DCMTK's
  echoscu / findscu (timed as a process from the outside: that is all it offers);
* peers: DCMTK storescp, the simulator (agent.simulator.SimulatedPACS) in its own process, the
  simulator with a 50 ms handler delay, and storescp behind a proxy that holds each forwarded
  chunk 20 ms each way.

Clients run interleaved (round robin, rotating the order) so a burst of load on the shared
machine hits all of them alike. Each run is matched to its TCP connection by the time window of
the run (the SYN must fall inside it) and the server port. Only durations are compared (reported
duration vs wire duration of the same phase), so no clock mapping is needed.

Writes results.json (every figure) and report.md (the tables that go into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.accuracy import wire
from bench.accuracy.client import FIND_MATCHES, FIND_PATIENT

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
SIM_DELAY = 0.050
PROXY_HOLD = 0.020
# DCMTK's tools cost ~100 ms of process start-up per run: they run every 2nd round only, to keep
# the whole benchmark under 10 minutes on a loaded machine.
EVERY = {"dcmtk": 2}
CLIENTS = ("agent", "before", "naive", "dcmtk", "baseline")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- environment ------------------------------------------------------------------------------


def ensure_tools() -> dict[str, str]:
    """tcpdump and DCMTK, installed with apt-get if missing (the benchmark needs root anyway)."""
    wanted = {"tcpdump": "tcpdump", "storescp": "dcmtk", "echoscu": "dcmtk", "findscu": "dcmtk"}
    missing = sorted({pkg for tool, pkg in wanted.items() if shutil.which(tool) is None})
    if missing:
        log(f"installing {' '.join(missing)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        r = subprocess.run(["apt-get", "install", "-y", *missing], env=env, timeout=300)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, timeout=300, check=True)
            subprocess.run(["apt-get", "install", "-y", *missing], env=env, timeout=300, check=True)
    versions = {}
    for tool in ("tcpdump", "echoscu"):
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10)
        versions[tool] = (out.stdout + out.stderr).strip().splitlines()[0]
    return versions


def machine() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process we started; stopped by its own pid only."""

    def __init__(self, argv: list[str], *, json_port: bool = False, **kw: Any) -> None:
        self.p = subprocess.Popen(argv, **kw)
        self.port = 0
        if json_port:
            assert self.p.stdout is not None
            ready, _, _ = select.select([self.p.stdout], [], [], 30)
            if not ready:
                self.stop()
                raise RuntimeError(f"{argv[:4]} did not start within 30 s")
            self.port = int(json.loads(self.p.stdout.readline())["port"])

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.p.poll() is not None:
            return
        if self.p.stdin is not None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            try:
                self.p.wait(timeout=3)
                return
            except subprocess.TimeoutExpired:
                pass
        self.p.send_signal(sig)
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(timeout=5)


def start_py(*args: str, realtime: bool = False) -> Proc:
    """A peer from servers.py; `realtime` runs it under SCHED_FIFO (chrt) where possible, so
    the delay it injects does not stretch with the machine's load (it is the instrument)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    prefix = ["chrt", "-f", "10"] if realtime and shutil.which("chrt") else []
    return Proc(
        [*prefix, PY, "-m", "bench.accuracy.servers", *args], json_port=True, cwd=ROOT, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )


def start_storescp(workdir: str) -> Proc:
    for _ in range(5):
        port = free_port()
        p = Proc(["storescp", "--aetitle", "STORESCP", "-od", workdir, str(port)],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p.port = port
        if wait_for_echo(port, "STORESCP", 10):
            return p
        p.stop()
    raise RuntimeError("storescp did not start")


def wait_for_echo(port: int, aet: str, within: float) -> bool:
    from probes.base import Deadline, Phases, ProbeError
    from probes.dicom_echo import DicomEchoProbe
    from probes.specs import DicomEndpoint

    probe = DicomEchoProbe(DicomEndpoint("127.0.0.1", port, "BENCH", aet))
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            probe.run(Deadline(2), Phases())
            return True
        except ProbeError:
            time.sleep(0.05)
    return False


class Capture:
    def __init__(self, path: str, ports: list[int]) -> None:
        self.path = path
        flt = "tcp and (" + " or ".join(f"port {p}" for p in ports) + ")"
        self.proc = Proc(
            ["tcpdump", "-i", "lo", "-w", path, "-U", "-s", "0", "-B", "65536",
             "--time-stamp-precision=nano", "--immediate-mode", "-n", flt],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        assert self.proc.p.stderr is not None
        ready, _, _ = select.select([self.proc.p.stderr], [], [], 20)
        line = self.proc.p.stderr.readline() if ready else ""
        if "listening on" not in line:
            self.proc.stop()
            raise RuntimeError(f"tcpdump did not start: {line.strip()!r}")
        self.stats = ""

    def stop(self) -> str:
        time.sleep(0.5)  # let the last packets reach the file (not synchronisation of runs)
        self.proc.stop(signal.SIGINT)
        assert self.proc.p.stderr is not None
        self.stats = " ".join(self.proc.p.stderr.read().split())
        return self.stats


# -- clients ----------------------------------------------------------------------------------


@dataclass
class Run:
    scenario: str
    client: str
    port: int  # the server port the client connected to
    t0: float  # wall clock (time.time) window of the run
    t1: float
    ok: bool
    reported: dict[str, float] = field(default_factory=dict)
    wire: dict[str, float] | None = None
    upstream: dict[str, float] | None = None  # the proxy → server connection


class Worker:
    """A client process (bench/accuracy/client.py) driven over a pipe, one request at a time."""

    def __init__(self, which: str, agent_from: str | None = None) -> None:
        # agent_from: another checkout whose `probes`/`agent` packages shadow this one's
        path = f"{agent_from}{os.pathsep}{ROOT}" if agent_from else str(ROOT)
        env = {**os.environ, "PYTHONPATH": path}
        self.which = which
        # `python -m` puts the working directory first on sys.path: run in the checkout wanted
        self.proc = Proc([PY, "-m", "bench.accuracy.client", which], cwd=agent_from or ROOT,
                         env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.code = self._read(60).get("code", "?")  # where its probes were imported from

    def _read(self, within: float) -> dict[str, Any]:
        out = self.proc.p.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], within)
        if not ready:
            raise RuntimeError(f"{self.which} client did not answer within {within} s")
        line = out.readline()
        if not line:
            raise RuntimeError(f"{self.which} client exited")
        return json.loads(line)

    def call(self, req: dict[str, Any], within: float = 60) -> dict[str, Any]:
        stdin = self.proc.p.stdin
        assert stdin is not None
        stdin.write(json.dumps(req) + "\n")
        stdin.flush()
        return self._read(within)

    def run(self, kind: str, port: int, aet: str) -> tuple[bool, dict[str, float], float, float]:
        r = self.call({"cmd": "run", "kind": kind, "port": port, "aet": aet})
        return r["ok"], r["reported"], r["t0"], r["t1"]


class Dcmtk:
    """DCMTK's echoscu / findscu, timed from fork to exit (all a check script can see)."""

    def run(self, kind: str, port: int, aet: str) -> tuple[bool, dict[str, float], float, float]:
        if kind == "echo":
            argv = ["echoscu", "-aet", "ECHOSCU", "-aec", aet, "127.0.0.1", str(port)]
        else:
            argv = ["findscu", "-S", "-aet", "FINDSCU", "-aec", aet,
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={FIND_PATIENT}",
                    "-k", "StudyInstanceUID", "127.0.0.1", str(port)]
        t0w = time.time()
        t0 = time.perf_counter()
        r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
        wall = time.perf_counter() - t0
        t1w = time.time()
        return r.returncode == 0, {"total": wall}, t0w, t1w

    def measure_startup(self, n: int) -> dict[str, Any]:
        """Process cost without the exchange: `--version`, and a connect to a closed port."""
        closed = free_port()
        out: dict[str, Any] = {}
        for tool in ("echoscu", "findscu"):
            extra = ["-k", "PatientID=X"] if tool == "findscu" else []
            for label, argv in (
                ("version", [tool, "--version"]),
                ("refused", [tool, "127.0.0.1", str(closed), *extra]),
            ):
                xs = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   timeout=20)
                    xs.append(time.perf_counter() - t0)
                out[f"{tool}_{label}"] = pct_summary(xs)
        return out


Client = Callable[[str, int, str], tuple[bool, dict[str, float], float, float]]


def run_interleaved(
    scenario: str, rounds: int, port: int, aet: str, kind: str,
    clients: dict[str, Client | tuple[Client, int]],
    runs: list[Run],
) -> None:
    """Round robin over the clients, rotating who goes first; a (client, port) entry runs
    against that other port (the undelayed baseline, interleaved with the delayed runs)."""
    names = list(clients)
    t_start = time.monotonic()
    for i in range(rounds):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            if i % EVERY.get(name, 1):
                continue
            entry = clients[name]
            fn, p = entry if isinstance(entry, tuple) else (entry, port)
            ok, rep, t0, t1 = fn(kind, p, aet)
            runs.append(Run(scenario, name, p, t0, t1, ok, rep))
    log(f"{scenario}: {rounds} rounds × {len(names)} clients in {time.monotonic() - t_start:.1f} s")


# -- analysis ---------------------------------------------------------------------------------


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def pct_summary(xs: list[float], scale: float = 1000.0) -> dict[str, float]:
    return {
        "n": len(xs),
        "p50": round(percentile(xs, 0.50) * scale, 4),
        "p95": round(percentile(xs, 0.95) * scale, 4),
        "p99": round(percentile(xs, 0.99) * scale, 4),
        "max": round(max(xs) * scale, 4) if xs else float("nan"),
    }


def match(runs: list[Run], conns: list[wire.Connection], proxy_port: int | None,
          upstream_port: int | None) -> dict[str, int]:
    """Give each run the wire phases of the connection it opened; returns unmatched runs."""
    by_port: dict[int, list[wire.Connection]] = {}
    for c in conns:
        by_port.setdefault(c.server[1], []).append(c)
    unmatched: dict[str, int] = {}
    for r in runs:
        cands = [c for c in by_port.get(r.port, []) if r.t0 <= c.syn <= r.t1]
        if len(cands) != 1:
            key = f"{r.scenario}/{r.client}: {len(cands)} connections in the window"
            unmatched[key] = unmatched.get(key, 0) + 1
            continue
        r.wire = wire.dicom_phases(cands[0])
        if r.port == proxy_port and upstream_port is not None:
            ups = [c for c in by_port.get(upstream_port, []) if r.t0 <= c.syn <= r.t1]
            if len(ups) == 1:
                r.upstream = wire.dicom_phases(ups[0])
        if r.wire is None:
            key = f"{r.scenario}/{r.client}: incomplete capture"
            unmatched[key] = unmatched.get(key, 0) + 1
    return unmatched


def errors(runs: list[Run], phase: str, wire_key: str | None = None,
           reported_key: str | None = None) -> tuple[list[float], list[float], list[float]]:
    rep, wir, err = [], [], []
    for r in runs:
        if not r.ok or r.wire is None:
            continue
        a = r.reported.get(reported_key or phase)
        b = r.wire.get(wire_key or phase)
        if a is None or b is None:
            continue
        rep.append(a)
        wir.append(b)
        err.append(a - b)
    return rep, wir, err


def wire_sum(w: dict[str, float]) -> float:
    return sum(w.get(k, 0.0) for k in ("connect", "associate", "dimse", "release"))


def accuracy_rows(runs: list[Run], scenario: str, client: str, phases: list[str]) -> list[dict]:
    sel = [r for r in runs if r.scenario == scenario and r.client == client]
    rows = []
    for ph in phases:
        if ph == "total":
            for r in sel:
                if r.wire is not None:
                    r.wire["sum"] = wire_sum(r.wire)
            rep, wir, err = errors(sel, "total", wire_key="sum")
        else:
            rep, wir, err = errors(sel, ph)
        if not err:
            continue
        rows.append({
            "scenario": scenario, "client": client, "phase": ph, "n": len(err),
            "wire_p50": percentile(wir, 0.5) * 1e3, "reported_p50": percentile(rep, 0.5) * 1e3,
            "err_p50": percentile(err, 0.5) * 1e3, "err_p99": percentile(err, 0.99) * 1e3,
            "abs_err_p50": percentile([abs(e) for e in err], 0.5) * 1e3,
            "abs_err_p99": percentile([abs(e) for e in err], 0.99) * 1e3,
            "err_min": min(err) * 1e3, "err_max": max(err) * 1e3,
        })
    return rows


def side_by_side(runs: list[Run], scenario: str) -> list[dict]:
    """Each client's reported total vs the wire span of the same runs (SYN → last RP byte)."""
    rows = []
    for client in ("agent", "before", "naive", "dcmtk"):
        sel = [r for r in runs if r.scenario == scenario and r.client == client and r.ok
               and r.wire is not None and "span" in r.wire]
        if not sel:
            continue
        for key in ("total",):
            rep = [r.reported[key] for r in sel]
            span = [r.wire["span"] for r in sel]
            wsum = [wire_sum(r.wire) for r in sel]  # type: ignore[arg-type]
            truth = wsum if client in ("agent", "before") else span
            err = [a - b for a, b in zip(rep, truth, strict=True)]
            rows.append({
                "scenario": scenario, "client": client, "measure": key, "n": len(sel),
                "failed": sum(1 for r in runs if r.scenario == scenario and r.client == client
                              and not r.ok),
                "reported": pct_summary(rep), "wire_span": pct_summary(span),
                "wire_phase_sum": pct_summary(wsum),
                "err_vs": "phase sum" if client in ("agent", "before") else "span",
                "err_p50": percentile(err, 0.5) * 1e3, "err_p99": percentile(err, 0.99) * 1e3,
            })
        if client != "dcmtk":
            for ph in ("associate", "dimse", "release"):
                wkey = "connect_associate" if (client == "naive" and ph == "associate") else ph
                for r in sel:
                    w = r.wire
                    assert w is not None
                    w["connect_associate"] = w["connect"] + w["associate"]
                rep, wir, err = errors(sel, ph, wire_key=wkey)
                rows.append({
                    "scenario": scenario, "client": client, "measure": ph, "n": len(err),
                    "reported": pct_summary(rep), "wire": pct_summary(wir),
                    "err_p50": percentile(err, 0.5) * 1e3, "err_p99": percentile(err, 0.99) * 1e3,
                })
    return rows


def injected(runs: list[Run], scenario: str, baseline: bool, phases: list[str],
             inject_ms: float) -> list[dict]:
    """Reported vs injected delay. Truth = injected + the wire time the peer itself needs for the
    phase: for the handler delay, the wire time of the agent's runs against the undelayed
    simulator interleaved with the delayed ones (client "baseline"); for the proxy, per run,
    the wire time of the same phase on the proxy → server connection."""
    rows = []
    inj = inject_ms / 1e3
    for client in ("agent", "before", "naive"):
        sel = [r for r in runs if r.scenario == scenario and r.client == client and r.ok
               and r.wire is not None]
        base = [r for r in runs if r.scenario == scenario and r.client == "baseline" and r.ok
                and r.wire is not None]
        for r in sel + base:
            for w in (r.wire, r.upstream):
                if w is not None and "connect" in w and "associate" in w:
                    w["connect_associate"] = w["connect"] + w["associate"]
        for ph in phases:
            # the naive stopwatch around ae.associate() also covers the TCP connect
            wkey = "connect_associate" if client == "naive" and ph == "associate" else ph
            if not baseline:
                use = [r for r in sel if ph in r.reported and r.upstream is not None
                       and wkey in r.upstream and wkey in r.wire]  # type: ignore[operator]
                truth = [inj + r.upstream[wkey] for r in use]  # type: ignore[index]
                truth_what = "injected + proxy→server wire, same run"
            else:
                use = [r for r in sel if ph in r.reported and wkey in r.wire]  # type: ignore[operator]
                truth = [inj + r.wire[wkey] for r in base if wkey in r.wire]  # type: ignore[index]
                truth_what = "injected + wire baseline without delay"
            if not use or not truth:
                continue
            rep = [r.reported[ph] for r in use]
            wir = [r.wire[wkey] for r in use]  # type: ignore[index]
            row = {
                "scenario": scenario, "client": client, "phase": ph, "n": len(rep),
                "injected_ms": inject_ms, "truth": truth_what, "reported": pct_summary(rep),
                "wire_same_runs": pct_summary(wir), "truth_dist": pct_summary(truth),
                "p50_minus_truth_p50": (percentile(rep, 0.5) - percentile(truth, 0.5)) * 1e3,
                "p95_minus_truth_p95": (percentile(rep, 0.95) - percentile(truth, 0.95)) * 1e3,
                "p99_minus_truth_p99": (percentile(rep, 0.99) - percentile(truth, 0.99)) * 1e3,
                "p95_minus_wire_p95": (percentile(rep, 0.95) - percentile(wir, 0.95)) * 1e3,
            }
            if not baseline:
                per = [a - b for a, b in zip(rep, truth, strict=True)]
                hold = [w - t for w, t in zip(wir, truth, strict=True)]
                agent = [a - w for a, w in zip(rep, wir, strict=True)]
                row["per_run_error"] = {
                    "p50": percentile(per, 0.5) * 1e3, "p95": percentile(per, 0.95) * 1e3,
                    "p99": percentile(per, 0.99) * 1e3,
                    # the proxy's own overshoot: client-side wire − (40 ms + upstream wire)
                    "proxy_p50": percentile(hold, 0.5) * 1e3,
                    "proxy_p95": percentile(hold, 0.95) * 1e3,
                    # the client's own error: reported − client-side wire
                    "client_p50": percentile(agent, 0.5) * 1e3,
                    "client_p95": percentile(agent, 0.95) * 1e3,
                }
            rows.append(row)
    return rows


def cpu_batches(workers: dict[str, Worker], storescp: int, sim: int, n_echo: int,
                n_find: int) -> list[dict]:
    """user+sys CPU of the client process per probe, for the agent and the naive path."""
    rows = []
    for kind, port, aet, n in (("echo", storescp, "STORESCP", n_echo),
                               ("find", sim, "SECTRA_PACS", n_find)):
        for name in [c for c in ("agent", "before", "naive") if c in workers]:
            r = workers[name].call({"cmd": "cpu", "kind": kind, "port": port, "aet": aet, "n": n},
                                   within=300)
            rows.append({"kind": kind, "client": name, "n": n, "failed": r["failed"],
                         "user_ms": r["user"] * 1e3, "sys_ms": r["sys"] * 1e3,
                         "cpu_ms": (r["user"] + r["sys"]) * 1e3, "wall_ms": r["wall"] * 1e3})
            log(f"cpu {kind}/{name}: {(r['user'] + r['sys']) * 1e3:.2f} ms CPU per probe")
    return rows


# -- report -----------------------------------------------------------------------------------


def f(x: float, nd: int = 3) -> str:
    return f"{x:+.{nd}f}" if x == x else "n/a"


def g(x: float, nd: int = 2) -> str:
    return f"{x:.{nd}f}" if x == x else "n/a"


def report(res: dict[str, Any]) -> str:
    L: list[str] = []
    m = res["machine"]
    L.append(f"Run {res['started']} · {m['nproc']} × {m['cpu_model']} · Python {m['python']} · "
             f"kernel {m['kernel']} · {res['tools']['echoscu']} · {res['tools']['tcpdump']}")
    L.append(f"Load average (1/5/15 min) at start {res['load_start']}, at end {res['load_end']}; "
             f"runtime {res['runtime_s']:.0f} s; tcpdump: {res['capture_stats']}; "
             f"runs not matched to a connection: {res['unmatched']}.")
    L.append("")
    L.append("**Agent vs wire, per phase** (error = reported − wire for the same association, ms; "
             "target |error| ≤ 0.5 ms at p50 and ≤ 2 ms at p99)")
    L.append("")
    L.append("| peer | probe | phase | n | wire p50 | agent p50 | error p50 | abs. error p99 | "
             "error min / max | target |")
    L.append("|---|---|---|---:|---:|---:|---:|---:|---:|:---:|")
    for row in res["accuracy"]:
        ok = abs(row["err_p50"]) <= 0.5 and row["abs_err_p99"] <= 2.0
        peer, _, kind = row["scenario"].rpartition("-")
        L.append(f"| {peer} | {kind} | {row['phase']} | {row['n']} | {g(row['wire_p50'], 3)} | "
                 f"{g(row['reported_p50'], 3)} | {f(row['err_p50'])} | {g(row['abs_err_p99'], 3)} |"
                 f" {f(row['err_min'])} / {f(row['err_max'])} | {'met' if ok else '**missed**'} |")
    if res.get("accuracy_before"):
        L.append("")
        L.append(f"**The same, for the probes before this change** ({res['before']}), measured "
                 "in the same run, interleaved with the others (ms)")
        L.append("")
        L.append("| peer | probe | phase | n | wire p50 | before p50 | error p50 | "
                 "abs. error p99 | error min / max | target |")
        L.append("|---|---|---|---:|---:|---:|---:|---:|---:|:---:|")
        for row in res["accuracy_before"]:
            ok = abs(row["err_p50"]) <= 0.5 and row["abs_err_p99"] <= 2.0
            peer, _, kind = row["scenario"].rpartition("-")
            L.append(f"| {peer} | {kind} | {row['phase']} | {row['n']} | "
                     f"{g(row['wire_p50'], 3)} | {g(row['reported_p50'], 3)} | "
                     f"{f(row['err_p50'])} | {g(row['abs_err_p99'], 3)} | {f(row['err_min'])} / "
                     f"{f(row['err_max'])} | {'met' if ok else '**missed**'} |")
    L.append("")
    L.append("**Side by side: what each client reports vs the wire** (ms; the agent's total is "
             "the sum of its phases, compared with the sum of the same wire phases; the naive "
             "stopwatch and DCMTK are compared with the wire span SYN → last byte of "
             "A-RELEASE-RP)")
    L.append("")
    L.append("| peer | probe | client | measure | n | reported p50 / p95 / p99 "
             "| wire p50 / p95 / p99 | error p50 | error p99 |")
    L.append("|---|---|---|---|---:|---:|---:|---:|---:|")
    for row in res["side_by_side"]:
        peer, _, kind = row["scenario"].rpartition("-")
        rp = row["reported"]
        w = row.get("wire") or (row["wire_phase_sum"] if row["client"] in ("agent", "before")
                                else row["wire_span"])
        L.append(f"| {peer} | {kind} | {row['client']} | {row['measure']} | {row['n']} | "
                 f"{g(rp['p50'])} / {g(rp['p95'])} / {g(rp['p99'])} | "
                 f"{g(w['p50'])} / {g(w['p95'])} / {g(w['p99'])} | {f(row['err_p50'], 2)} | "
                 f"{f(row['err_p99'], 2)} |")
    L.append("")
    L.append("**Injected delay** (ms; target: the agent's p95 within 1 ms of the truth's p95. "
             "Handler sleep: truth = 50 ms + the simulator's wire time for the phase measured "
             "without delay, in runs interleaved with the delayed ones. Proxy: each round trip "
             "gains 40 ms, truth = 40 ms + the wire time of the same phase on the proxy → "
             "storescp connection in the same run)")
    L.append("")
    L.append("| injected | probe | client | phase | n | reported p50 / p95 / p99 | "
             "truth p50 / p95 / p99 | wire (same runs) p95 | p95 − truth p95 | target |")
    L.append("|---|---|---|---|---:|---:|---:|---:|---:|:---:|")
    for row in res["injected"]:
        rp, tr, wr = row["reported"], row["truth_dist"], row["wire_same_runs"]
        ok = abs(row["p95_minus_truth_p95"]) <= 1.0
        what = ("handler sleep 50 ms" if row["scenario"].startswith("sim50")
                else "proxy 20 ms each way")
        # first_match is not additive (the simulator prepares its first match while it would
        # otherwise poll): shown, but the target is the dimse phase (and the proxy's phases)
        verdict = "—" if row["phase"] == "first_match" else ("met" if ok else "**missed**")
        kind = row["scenario"].rpartition("-")[2]
        L.append(f"| {what} | {kind} | {row['client']} | {row['phase']} | {row['n']} | "
                 f"{g(rp['p50'])} / {g(rp['p95'])} / {g(rp['p99'])} | "
                 f"{g(tr['p50'])} / {g(tr['p95'])} / {g(tr['p99'])} | {g(wr['p95'])} | "
                 f"{f(row['p95_minus_truth_p95'], 2)} | {verdict} |")
    per = [r for r in res["injected"] if "per_run_error" in r]
    if per:
        L.append("")
        L.append("Proxy, per run, ms: reported − (40 ms + proxy→storescp wire time of the same "
                 "phase in the same run), split into the proxy's own overshoot (client-side wire "
                 "− truth) and the client's error (reported − client-side wire):")
        L.append("")
        L.append("| client | phase | n | reported − truth p50 / p95 / p99 | proxy overshoot "
                 "p50 / p95 | client error p50 / p95 |")
        L.append("|---|---|---:|---:|---:|---:|")
        for r in per:
            p = r["per_run_error"]
            L.append(f"| {r['client']} | {r['phase']} | {r['n']} | {f(p['p50'], 2)} / "
                     f"{f(p['p95'], 2)} / {f(p['p99'], 2)} | {f(p['proxy_p50'], 2)} / "
                     f"{f(p['proxy_p95'], 2)} | {f(p['client_p50'], 2)} / "
                     f"{f(p['client_p95'], 2)} |")
    L.append("")
    L.append("**CPU per probe in the client process** (user + sys from getrusage over a batch, "
             "ms per probe; storescp for C-ECHO, the simulator with "
             f"{FIND_MATCHES} matches for C-FIND)")
    L.append("")
    L.append("| probe | client | n | user | sys | user+sys | wall per probe |")
    L.append("|---|---|---:|---:|---:|---:|---:|")
    for row in res["cpu"]:
        L.append(f"| C-{row['kind'].upper()} | {row['client']} | {row['n']} | {g(row['user_ms'])} "
                 f"| {g(row['sys_ms'])} | {g(row['cpu_ms'])} | {g(row['wall_ms'])} |")
    L.append("")
    st = res["dcmtk_startup"]
    L.append("DCMTK process cost without an exchange (ms, p50 / p95): "
             + "; ".join(f"{k} {v['p50']:.2f} / {v['p95']:.2f}" for k, v in st.items())
             + ". `version`: `--version` (exec, dynamic linking, exit); `refused`: a run "
             "against a closed port (also loads the data dictionary and fails at connect()). "
             "The DCMTK rows' error (wall − wire span) is this process cost, measured per run.")
    sp = res["self_probe"]
    L.append("")
    L.append(f"Self-probe (what pacs_agent_self_probe_overhead_seconds reports: a full C-ECHO "
             f"to the in-process loopback SCP), n={sp['n']}: p50 {sp['p50']:.3f} ms, "
             f"p95 {sp['p95']:.3f} ms, p99 {sp['p99']:.3f} ms.")
    return "\n".join(L) + "\n"


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the runs (smoke test)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "accuracy" / "results"))
    ap.add_argument("--keep-pcap", action="store_true", help="copy the capture to --out")
    ap.add_argument("--before", metavar="DIR",
                    help="also run the probes of another checkout of the agent (e.g. made with "
                         "`git worktree add DIR COMMIT`) as client 'before', for an A/B")
    ap.add_argument("--before-label", help="how to name --before in the report")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite report.md from --out/results.json without measuring")
    args = ap.parse_args()
    if args.report_only:
        res = json.loads((Path(args.out) / "results.json").read_text())
        text = report(res)
        (Path(args.out) / "report.md").write_text(text)
        print(text)
        return 0
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    scale = 0.1 if args.quick else 1.0

    def n(x: int) -> int:
        return max(10, int(x * scale))

    started = time.time()
    res: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv),
        "machine": machine(), "load_start": loadavg(), "tools": ensure_tools(),
    }
    log(f"load average at start {res['load_start']}")
    work = tempfile.mkdtemp(prefix="pacs-accuracy-")
    procs: list[Proc] = []
    try:
        store = start_storescp(work)
        procs.append(store)
        sim = start_py("simulator", "--extra-studies", str(FIND_MATCHES))
        procs.append(sim)
        sim50 = start_py("simulator", "--delay", str(SIM_DELAY),
                         "--extra-studies", str(FIND_MATCHES))
        procs.append(sim50)
        proxy = start_py("proxy", "--upstream", f"127.0.0.1:{store.port}",
                         "--hold", str(PROXY_HOLD), realtime=True)
        procs.append(proxy)
        for port, aet in ((sim.port, "SECTRA_PACS"), (sim50.port, "SECTRA_PACS")):
            if not wait_for_echo(port, aet, 20):
                raise RuntimeError("simulator did not answer")

        dcmtk = Dcmtk()
        res["dcmtk_startup"] = dcmtk.measure_startup(n(50))
        workers = {"agent": Worker("agent"), "naive": Worker("naive")}
        if args.before:
            workers["before"] = Worker("agent", agent_from=args.before)
        procs += [w.proc for w in workers.values()]
        res["client_code"] = {name: w.code for name, w in workers.items()}
        log(f"client code: {res['client_code']}")
        both: dict[str, Client | tuple[Client, int]] = {
            name: w.run for name, w in workers.items()}
        three: dict[str, Client | tuple[Client, int]] = {**both, "dcmtk": dcmtk.run}
        # warm up imports and code paths (not captured)
        for c in three.values():
            assert not isinstance(c, tuple)
            c("echo", store.port, "STORESCP")
            c("find", sim.port, "SECTRA_PACS")

        pcap = os.path.join(work, "probe.pcap")
        cap = Capture(pcap, [store.port, sim.port, sim50.port, proxy.port])
        runs: list[Run] = []
        try:
            run_interleaved("storescp-echo", n(500), store.port, "STORESCP", "echo", three, runs)
            run_interleaved("simulator-echo", n(500), sim.port, "SECTRA_PACS", "echo", three, runs)
            run_interleaved("simulator-find", n(200), sim.port, "SECTRA_PACS", "find", three, runs)
            with_base: dict[str, Client | tuple[Client, int]] = {
                **both, "baseline": (workers["agent"].run, sim.port)}
            run_interleaved("sim50-echo", n(200), sim50.port, "SECTRA_PACS", "echo", with_base,
                            runs)
            run_interleaved("sim50-find", n(200), sim50.port, "SECTRA_PACS", "find", with_base,
                            runs)
            run_interleaved("proxy-echo", n(200), proxy.port, "STORESCP", "echo", both, runs)
        finally:
            res["capture_stats"] = cap.stop()
        log(f"tcpdump: {res['capture_stats']}")
        if args.keep_pcap:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            shutil.copy(pcap, Path(args.out) / "probe.pcap")
        conns = wire.connections(wire.read_pcap(pcap))
        if args.keep_pcap:
            (Path(args.out) / "runs.json").write_text(json.dumps([r.__dict__ for r in runs]))
        res["unmatched"] = match(runs, conns, proxy.port, store.port)
        res["failed_runs"] = {
            f"{s}/{c}": sum(1 for r in runs if r.scenario == s and r.client == c and not r.ok)
            for s in {r.scenario for r in runs} for c in CLIENTS
            if any(r.scenario == s and r.client == c for r in runs)
        }

        acc: list[dict] = []
        for sc, phases in (
            ("storescp-echo", ["connect", "associate", "dimse", "release", "total"]),
            ("simulator-echo", ["connect", "associate", "dimse", "release", "total"]),
            ("simulator-find", ["connect", "associate", "first_match", "dimse", "release",
                                "total"]),
            ("sim50-echo", ["dimse"]),
            ("sim50-find", ["first_match", "dimse"]),
            ("proxy-echo", ["associate", "dimse", "release"]),
        ):
            acc += accuracy_rows(runs, sc, "agent", phases)
        res["accuracy"] = acc
        if args.before:
            res["before"] = args.before_label or args.before
            res["accuracy_before"] = [
                row for sc, phases in (
                    ("storescp-echo", ["connect", "associate", "dimse", "release", "total"]),
                    ("simulator-echo", ["connect", "associate", "dimse", "release", "total"]),
                    ("simulator-find", ["connect", "associate", "first_match", "dimse",
                                        "release", "total"]),
                    ("sim50-echo", ["dimse"]),
                    ("sim50-find", ["first_match", "dimse"]),
                    ("proxy-echo", ["associate", "dimse", "release"]),
                ) for row in accuracy_rows(runs, sc, "before", phases)
            ]
        sbs: list[dict] = []
        for sc in ("storescp-echo", "simulator-echo", "simulator-find"):
            sbs += side_by_side(runs, sc)
        res["side_by_side"] = sbs
        res["injected"] = (
            injected(runs, "sim50-echo", True, ["dimse"], SIM_DELAY * 1e3)
            + injected(runs, "sim50-find", True, ["first_match", "dimse"], SIM_DELAY * 1e3)
            + injected(runs, "proxy-echo", False, ["associate", "dimse", "release"],
                       2 * PROXY_HOLD * 1e3)
        )
        res["cpu"] = cpu_batches(workers, store.port, sim.port, n(200), n(100))
        sp = workers["agent"].call({"cmd": "selfprobe", "n": n(200)}, within=120)
        res["self_probe"] = pct_summary(sp["values"])
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)
    res["load_end"] = loadavg()
    res["runtime_s"] = time.time() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    text = report(res)
    (out / "report.md").write_text(text)
    print(text)
    log(f"load average at end {res['load_end']}; {res['runtime_s']:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
