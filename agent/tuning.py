"""Process-wide settings for the daemon (`agent run`), chosen with bench/scale (docs/scaling.md).

* GIL switch interval 5 ms → 1 ms. The agent is many I/O-bound threads timing the wire; when
  one thread is busy in Python (a scrape, pydicom), a probe or HTTP thread whose socket became
  ready waits up to the switch interval for the GIL at every hand-over. At 1,000 targets, in two
  runs on a shared machine, 1 ms took start lateness p99 from 84 to 24 ms and /metrics p99 from
  336 to 225 ms for no measurable CPU. Only when the interval is still Python's default: a
  process started with another one (bench/scale's --switch-interval experiment) keeps it.
* glibc malloc_trim after a burst (release_free_heap): an OTLP export allocates ~30 requests of a
  few hundred KB (below the mmap threshold) and gRPC copies each in its own threads' arenas;
  glibc kept ~6 MB of that resident after each export at 1,000 targets.
* glibc malloc: one arena (M_ARENA_MAX 1). glibc gives threads their own arenas, up to 8 per
  core; the probe threads' results, /metrics fragments and PDUs were spread over 16 arenas, each
  keeping its own freed holes resident. Under the GIL the threads seldom allocate at once, so
  one arena costs no measurable CPU. Only when MALLOC_ARENA_MAX is not set in the environment.
* glibc malloc: a fixed mmap threshold (1 MiB). /metrics for 1,000 targets is a 10 MB buffer; with
  glibc's default dynamic threshold such buffers end up inside the per-thread arenas and stay
  resident after they are freed (RSS reached 225 MB); mmapped, they go back to the OS at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import sys

log = logging.getLogger("agent.tuning")

SWITCH_INTERVAL = 0.001
PYTHON_DEFAULT_SWITCH_INTERVAL = 0.005
M_MMAP_THRESHOLD = -3  # mallopt parameters (glibc malloc.h)
M_ARENA_MAX = -8
ARENA_MAX = 1
MMAP_THRESHOLD = 1 << 20


_libc: ctypes.CDLL | None = None


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError as e:
            log.debug("libc unavailable: %s", e)
    return _libc


def release_free_heap() -> None:
    """Return freed heap memory to the OS (glibc malloc_trim: the top of every arena and the
    whole free pages inside them); a no-op elsewhere. A few ms for the agent's heap."""
    libc = _glibc()
    if libc is not None:
        try:
            libc.malloc_trim(0)
        except AttributeError:  # a libc without it
            pass


def tune_daemon_process() -> None:
    if sys.getswitchinterval() == PYTHON_DEFAULT_SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)
    libc = _glibc()
    if libc is not None:
        try:
            if not libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
                log.debug("mallopt(M_MMAP_THRESHOLD) refused")
            if "MALLOC_ARENA_MAX" not in os.environ and not libc.mallopt(M_ARENA_MAX, ARENA_MAX):
                log.debug("mallopt(M_ARENA_MAX) refused")
        except AttributeError as e:
            log.debug("mallopt unavailable: %s", e)
