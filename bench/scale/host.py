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


def proc_tree(pid: int) -> list[int]:
    """The process and its children (an agent run with --workers N is N + 1 processes)."""
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                kids.append(int(d))
    return [pid, *kids]


def proc_cpu(pid: int) -> float:
    """utime + stime of a process and its children (all their threads), seconds."""
    total = 0
    for p in proc_tree(pid):
        text = Path(f"/proc/{p}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / clk_tck()


def proc_user_cpu(pid: int) -> float:
    total = 0
    for p in proc_tree(pid):
        text = Path(f"/proc/{p}/stat").read_text()
        total += int(text[text.rindex(")") + 2 :].split()[11])
    return total / clk_tck()


def proc_rss_mb(pid: int) -> float:
    """RSS of one process. For a tree of several (`--workers N`: workers forked from the
    supervisor share its pages), the sum of PSS, which counts each shared page once, as the
    container's memory limit does: summed RSS counted the shared pages once per process."""
    pids = proc_tree(pid)
    if len(pids) == 1:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page_size() / 1e6
    kib = 0
    for p in pids:
        for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                kib += int(line.split()[1])
                break
    return kib * 1024 / 1e6


def proc_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0
