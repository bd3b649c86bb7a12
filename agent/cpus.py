"""How many CPUs this process may really use: the affinity mask, capped by a cgroup CPU quota.

os.cpu_count() is the host's count; in a container limited to 1.5 CPUs on a 64-core node it says
64. The quota (cgroup v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us) is rounded down: a
worker per fractional CPU would only make the workers take turns.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs the cgroup quota allows (1.5 for "150000 100000"), or None when unlimited/unknown."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        parts = v2.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                quota, period = int(parts[0]), int(parts[1])
            except ValueError:
                return None
            return quota / period if quota > 0 and period > 0 else None
        return None
    for d in ("cpu", "cpu,cpuacct", "cpuacct,cpu", "."):
        quota_s = _read(root / d / "cpu.cfs_quota_us")
        period_s = _read(root / d / "cpu.cfs_period_us")
        if quota_s is None or period_s is None:
            continue
        try:
            quota, period = int(quota_s), int(period_s)
        except ValueError:
            return None
        return quota / period if quota > 0 and period > 0 else None  # -1: no quota
    return None


def affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """min(affinity, floor(cgroup quota)), at least 1."""
    n = affinity_cpus()
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        n = min(n, math.floor(limit))
    return max(1, n)


__all__ = ["cgroup_cpu_limit", "usable_cpus"]
