"""The machine: its description, load average, and /proc figures of a process."""

from __future__ import annotations

import functools
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.scale.settings import log


# Read when first needed, not at import.
@functools.cache
def clk_tck() -> int:
    return os.sysconf("SC_CLK_TCK")


@functools.cache
def page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{mem_kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": os.cpu_count(), "cpu_model": model, "memory": mem,
        "python": platform.python_version(), "kernel": platform.release(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_for_quiet(limit: float = 1.5, max_wait: float = 600.0) -> dict[str, Any]:
    """Poll the 1-minute load average until it is ≤ limit, at most max_wait seconds."""
    t0 = time.monotonic()
    first = loadavg()
    while os.getloadavg()[0] > limit and time.monotonic() - t0 < max_wait:
        log(f"load average {os.getloadavg()[0]:.2f} > {limit}: waiting "
            f"({time.monotonic() - t0:.0f}/{max_wait:.0f} s)")
        time.sleep(15)
    return {"before_wait": first, "waited_s": round(time.monotonic() - t0), "after_wait": loadavg(),
            "quiet": os.getloadavg()[0] <= limit}


# -- /proc ---------------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / clk_tck()


def proc_user_cpu(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2 :].split()[11]) / clk_tck()


def proc_rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page_size() / 1e6


def proc_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0
