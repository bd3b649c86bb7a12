"""Start `agent run` on a port the agent binds itself (`--listen 127.0.0.1:0`) and read the URL
it prints ("Listening on http://127.0.0.1:PORT"): no window in which a released port can be
taken by someone else."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

LISTENING = re.compile(r"Listening on (https?://\S+)")


def start_agent(
    args: list[str],
    *,
    stderr: IO[str] | int | None,
    env: dict[str, str],
    cwd: Path,
    timeout: float = 30.0,
    command: list[str] | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """`python -m agent run ARGS --listen 127.0.0.1:0` (or `COMMAND run ...`, e.g. an installed
    `agent` script): (process, base URL). The rest of its stdout is drained (and kept in
    `process.stdout_lines`) so it never blocks on a full pipe."""
    p = subprocess.Popen(
        [*(command or [sys.executable, "-m", "agent"]), "run", *args, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
        cwd=cwd,
    )
    found: list[str] = []
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            lines.append(line)
            m = LISTENING.search(line)
            if m and not found:
                found.append(m.group(1))
                ready.set()
        ready.set()  # EOF: the agent exited

    threading.Thread(target=read, daemon=True, name="agent-stdout").start()
    end = time.monotonic() + timeout
    while not ready.wait(0.1):
        if time.monotonic() > end:
            break
    attr: Any = p
    attr.stdout_lines = lines
    if not found:
        p.kill()
        p.wait(10)
        raise AssertionError(f"agent printed no 'Listening on' line: {''.join(lines)!r}")
    return p, found[0]
