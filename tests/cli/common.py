"""Shared bits of the CLI tests: run the agent as a process, start it on an ephemeral port."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import wait_until
from tests.helpers.agent_cli import agent_env, run_agent

ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"^Listening on (\S+)$", re.M)


env = agent_env
agent = run_agent


@contextmanager
def daemon(
    *args: str, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`agent run --listen 127.0.0.1:0 ...`; yields the process and the base URL it printed."""
    p = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(extra_env),
        cwd=ROOT,
    )
    try:
        assert p.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        out = p.stdout
        threading.Thread(target=lambda: lines.put(out.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=30)  # the first line on stdout is the bound address
        except queue.Empty:
            raise AssertionError("agent run printed no address within 30 s") from None
        m = LISTENING.match(line.strip())
        assert m, f"no address line: {line!r}; stderr: {p.stderr.read() if p.poll() else ''}"
        yield p, m.group(1)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url + "/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def get_json(url: str) -> Any:
    try:
        return httpx.get(url, timeout=2).json()
    except (httpx.HTTPError, json.JSONDecodeError):
        return None


def wait_health(url: str, pred: Any, timeout: float = 10) -> Any:
    return wait_until(
        lambda: (d := get_json(url + "/health")) is not None and pred(d) and d,
        timeout,
        what="/health condition",
    )


def write_config(directory: Path, targets: list[dict[str, Any]], name: str = "c.json") -> Path:
    p = directory / name
    p.write_text(json.dumps({"targets": targets}))
    return p


def dicom_target(
    port: int,
    target_id: str = "pacs",
    host: str = "127.0.0.1",
    timeout_ms: int = 3000,
    **extra: Any,
) -> dict[str, Any]:
    """A DICOM-only target (echo and find) at host:port."""
    doc: dict[str, Any] = {
        "id": target_id,
        "config": {"host": host, "port": port, "calledAET": "SECTRA_PACS"},
        "healthCheck": {"interval": 30000, "timeout": timeout_ms},
    }
    doc.update(extra)
    return doc
