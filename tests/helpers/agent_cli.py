"""Run the `agent` command as a user would: a separate process, from the repository root, with
no OTLP or agent settings leaking in from the environment of whoever runs the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def agent_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_"))}
    env.update(extra or {})
    return env


def run_agent(
    *args: str,
    extra_env: dict[str, str] | None = None,
    timeout: float = 60,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m agent ARGS`, bounded by `timeout`; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=agent_env(extra_env),
        cwd=ROOT,
        input=stdin,
    )
