"""Stopping a peer started in its own process group (start_new_session=True): DCMTK servers fork
a child per association, so the whole group goes, politely first."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 10.0) -> int:
    """SIGTERM the process group, wait up to `grace` seconds, then SIGKILL it; the exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode
