"""The processes a run starts: the simulator processes and the agent daemon, and the agent's
config for a set of simulated targets."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.scale.host import proc_cpu
from bench.scale.scrape import get
from bench.scale.settings import INTERVAL, PROBE_TIMEOUT_MS, ROOT


class Sim:
    """The simulator processes (each: several DICOM ports and one HTTP port)."""

    def __init__(self, procs: int = 2, dicom_ports: int = 4) -> None:
        self.procs: list[subprocess.Popen] = []
        self.dicom: list[int] = []
        self.http: list[int] = []
        for _ in range(procs):
            p = subprocess.Popen(
                [sys.executable, "-m", "bench.scale.sim", "--dicom-ports", str(dicom_ports),
                 "--http-ports", "1", "--stats"],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            self.procs.append(p)
        for p in self.procs:
            line = _readline_bounded(p, 30)
            info = json.loads(line)
            self.dicom += info["dicom"]
            self.http += info["http"]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu(self) -> float:
        return sum(proc_cpu(p) for p in self.pids)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def _readline_bounded(p: subprocess.Popen, timeout: float) -> str:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(p.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not out or not out[0]:
        raise RuntimeError("simulator did not start")
    return out[0]


def target_rows(n: int, sim: Sim) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        rows.append({
            "id": f"site-{i:04d}",
            "port": sim.dicom[i % len(sim.dicom)],
            "aet": f"PACS{i:04d}",
            "http": sim.http[i % len(sim.http)],
        })
    return rows


def write_config(path: Path, rows: list[dict[str, Any]], self_probe_ms: int = 5000) -> None:
    """The agent's config in the integration guide's format (YAML)."""
    lines = ["targets:"]
    for r in rows:
        lines += [
            f"  - id: {r['id']}",
            f"    name: Simulated PACS {r['aet']}",
            "    vendor: Sectra AB",
            "    config:",
            "      host: 127.0.0.1",
            f"      port: {r['port']}",
            "      callingAET: PACS_HEALTH",
            f"      calledAET: {r['aet']}",
            f"      timeout: {PROBE_TIMEOUT_MS}",
            "    secttraConfig:",
            f"      apiEndpoint: http://127.0.0.1:{r['http']}",
            "    healthCheck:",
            f"      interval: {int(INTERVAL * 1000)}",
            f"      timeout: {PROBE_TIMEOUT_MS}",
        ]
    lines += ["agent:", "  selfProbe:", f"    interval: {self_probe_ms}"]
    path.write_text("\n".join(lines) + "\n")


AGENT_PREFIX: list[str] = ["-m", "agent"]  # --switch-interval swaps in a wrapper
AGENT_ARGS: list[str] = []  # --agent-args, e.g. "--workers 2"
# --installed: the interpreter of a venv holding `pip install .` (bench/scale/installed.py); it
# starts outside the checkout, so that `-m agent` imports the installed copy, not the source
AGENT_PYTHON: list[str] = []


class Agent:
    def __init__(self, config: Path, logfile: Path) -> None:
        self.logfile = logfile
        self._log = open(logfile, "w")  # noqa: SIM115 - closed in stop()
        self.spawned = time.time()
        self.proc = subprocess.Popen(
            [*(AGENT_PYTHON or [sys.executable]), *AGENT_PREFIX, "run", "--config",
             str(config), "--listen", "127.0.0.1:0", *AGENT_ARGS],
            cwd=config.parent if AGENT_PYTHON else ROOT,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        self.port = self._wait_port(60)
        self.ready_at = self._wait_ready(30)

    def _wait_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"Metrics: http://[^:]+:(\d+)/metrics", self.logfile.read_text())
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {self.logfile.read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("agent did not print its listen address")

    def _wait_ready(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if get(self.port, "/-/ready", timeout=2).status == 200:
                    return time.time()
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("agent not ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def log_summary(self) -> dict[str, int]:
        text = self.logfile.read_text(errors="replace")
        return {
            "lines": text.count("\n"),
            "errors": len(re.findall(r" ERROR ", text)),
            "warnings": len(re.findall(r" WARNING ", text)),
            "tracebacks": text.count("Traceback"),
        }
