"""Name resolution bounded by the probe's deadline, on a small pool of resolver threads.

getaddrinfo cannot be given a timeout; it runs on a pool thread and the probe waits for it only
as long as its deadline allows, so a hung resolver cannot hang a probe. The pool is started on
first use (nothing runs at import) and stopped by close(), which whoever runs the probes calls
when it stops (agent.service.AgentService.stop); a later lookup starts a fresh pool.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

from probes.base import Deadline, Phases, Reason
from probes.net.reasons import Stage, Where, failure
from probes.net.waits import result

AddrInfo = tuple[Any, ...]  # one getaddrinfo() entry: (family, type, proto, canonname, sockaddr)


@lru_cache(maxsize=16384)
def _is_literal(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


# An address literal's getaddrinfo never changes: computed once per (host, port), not per run
# (with its IDNA encoding it was a tenth of a C-ECHO's CPU, bench/scale/per_run).
@lru_cache(maxsize=16384)
def _literal_addrinfo(host: str, port: int) -> tuple[AddrInfo, ...]:
    return tuple(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST))


class Resolver:
    def __init__(self, workers: int = 4) -> None:
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def resolve(self, host: str, port: int, deadline: Deadline, phases: Phases) -> list[AddrInfo]:
        """getaddrinfo bounded by the deadline; the `dns` phase is only reported for names."""
        if _is_literal(host):  # no lookup to bound: skip the hand-over to the pool
            deadline.left_or_raise(Reason.DNS, "name resolution")
            return list(_literal_addrinfo(host, port))
        t0 = time.perf_counter()
        with self._lock:  # submit under the lock: close() cannot shut the pool in between
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="dns")
            fut = self._pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        try:
            # concurrent.futures.TimeoutError is the builtin TimeoutError from Python 3.11
            infos = result(fut, deadline.left_or_raise(Reason.DNS, "name resolution"))
        except (TimeoutError, socket.gaierror) as e:
            raise failure(e, Stage.RESOLVE, Where("name resolution", host=host)) from None
        phases.add("dns", time.perf_counter() - t0)
        return infos

    def close(self) -> None:
        """Stop the pool without waiting for a lookup that hangs (its thread ends with it)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


# The process's resolver, shared by every probe (DICOM and HTTP).
RESOLVER = Resolver()


def resolve(host: str, port: int, deadline: Deadline, phases: Phases) -> list[AddrInfo]:
    return RESOLVER.resolve(host, port, deadline, phases)


def close_resolver() -> None:
    RESOLVER.close()
