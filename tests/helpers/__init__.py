"""Real peers on loopback for the probe tests: TLS material, HTTP(S) servers, DICOM SCPs.

Every wait here is bounded; nothing sleeps to synchronise (poll with `wait_until`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

LOOPBACK = "127.0.0.1"

T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout: float, interval: float = 0.02, what: str = "") -> T:
    """Poll `pred` until it returns something truthy; AssertionError after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"{what or 'condition'} not met within {timeout} s")
        time.sleep(interval)


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (for peers that cannot bind port 0 themselves)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def bind_retry(make: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Re-bind a just-closed port: retry EADDRINUSE for a bounded time."""
    end = time.monotonic() + timeout
    while True:
        try:
            return make()
        except OSError as e:
            if e.errno not in (98, 48) or time.monotonic() > end:  # EADDRINUSE (Linux, BSD)
                raise
            time.sleep(0.05)
