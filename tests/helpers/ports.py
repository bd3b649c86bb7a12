"""Ports with a known, held fault: one that refuses, one that drops SYNs.

`free_port()` hands out a port that was free a moment ago. Released, it is back in the ephemeral
range: another process may bind it, and a probe's own client socket may draw it as its source
port and connect to itself (a TCP self-connect), turning "refused" into an answer from the probe's
own socket. The helpers here keep the port bound for as long as the test runs.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import LOOPBACK


@contextmanager
def refused_port(host: str = LOOPBACK) -> Iterator[int]:
    """A port that is bound but not listening: every connect is refused (RST), and nothing else
    (neither another process nor a client's source port) can take it while the test runs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        yield int(s.getsockname()[1])


_HELD: list[socket.socket] = []


def held_refused_port(host: str = LOOPBACK) -> int:
    """refused_port() for the rest of the test process: for a port written into a config that
    outlives one `with` block (an agent in a subprocess, a fixture's targets)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    _HELD.append(s)  # kept bound, never listening, until the test process ends
    return int(s.getsockname()[1])


@contextmanager
def syn_blackhole(host: str = LOOPBACK, settle: float = 0.3) -> Iterator[int]:
    """A port whose SYNs go unanswered, like a firewall that silently drops them.

    A listener with backlog 0 that never accepts: the first connection fills its accept queue,
    after which Linux drops every further SYN (no SYN-ACK, no RST), so a client's connect can
    only time out. The filling connections are held until the end. No root, no netfilter.
    """
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held: list[socket.socket] = []
    try:
        lst.bind((host, 0))
        lst.listen(0)
        port = int(lst.getsockname()[1])
        for _ in range(16):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            held.append(c)
            c.connect_ex((host, port))
            _, writable, _ = select.select([], [c], [], settle)
            if not writable:
                break  # this SYN went unanswered: the queue is full
        else:
            raise AssertionError("the accept queue never filled: SYNs are still answered")
        # the control: a blocking connect now times out (not refused, not accepted)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(settle)
            try:
                probe.connect((host, port))
            except TimeoutError:
                pass
            else:
                raise AssertionError("a connect to the SYN black hole completed")
        yield port
    finally:
        for c in held:
            c.close()
        lst.close()
