"""TCP connect within the deadline; the `connect` phase is the kernel's SYN → SYN-ACK time."""

from __future__ import annotations

import errno
import os
import socket
import struct
import time
from typing import Any

from probes.base import Deadline, Phases, ProbeError, Reason
from probes.net.reasons import Stage, Where, failure
from probes.net.resolver import resolve
from probes.net.stream import enable_rx_timestamps
from probes.net.waits import WRITE, wait_fd

_TCP_INFO = getattr(socket, "TCP_INFO", None)  # Linux


def kernel_connect_rtt(sock: socket.socket) -> float | None:
    """SYN → SYN-ACK as the kernel timed it, read from TCP_INFO right after connect().

    The first RTT sample of a connection is the handshake's; tcpi_rtt holds it in µs until data
    flows. None when the OS does not tell or the SYN was retransmitted (the sample then starts at
    the retransmission, and the wait before it is latency too).
    """
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
    except OSError:
        return None
    if len(info) < 104:
        return None
    rtt_us = struct.unpack_from("I", info, 68)[0]
    total_retrans = struct.unpack_from("I", info, 100)[0]
    if rtt_us == 0 or total_retrans or info[2]:  # info[2]: tcpi_retransmits
        return None
    return rtt_us / 1e6


_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EALREADY)


def _connect(sock: socket.socket, addr: Any, timeout: float) -> None:
    """connect() on a non-blocking socket: the OSError a blocking connect would raise."""
    err = sock.connect_ex(addr)
    if err in _IN_PROGRESS:
        if not wait_fd(sock, WRITE, timeout):
            raise TimeoutError("timed out")
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))  # ConnectionRefusedError and the like


def where(addr: Any) -> str:
    """host:port of a socket address, IPv6 in brackets (messages name the peer that failed)."""
    host, port = str(addr[0]), addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def open_socket(host: str, port: int, deadline: Deadline, phases: Phases) -> socket.socket:
    """Resolve and connect with TCP_NODELAY, trying each address in turn; the error of the last
    address tried is the one reported."""
    return connect_any(resolve(host, port, deadline, phases), deadline, phases, host)


def connect_any(
    infos: list[Any], deadline: Deadline, phases: Phases, host: str = ""
) -> socket.socket:
    """Connect to the first of these resolved addresses that answers (the HTTP path resolves
    each redirect hop itself, once, then dials here as the DICOM path does)."""
    last: ProbeError | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        # Nagle + delayed ACK would stall multi-PDU exchanges by ~40 ms: the agent's fault, not
        # the PACS's. TCP_QUICKACK is re-armed before each receive (TimedStream).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        enable_rx_timestamps(sock)
        sock.setblocking(False)  # the wait is ours (probes.net.waits): a thread's or the loop's
        try:
            left = deadline.left_or_raise(Reason.CONNECT_TIMEOUT, "connect")
            t0 = time.perf_counter()
            _connect(sock, addr, left)
            elapsed = time.perf_counter() - t0
            rtt = kernel_connect_rtt(sock)
            phases.add("connect", min(elapsed, rtt) if rtt is not None else elapsed)
            return sock
        except ProbeError as e:
            sock.close()
            last = e
        except OSError as e:
            sock.close()
            last = failure(e, Stage.CONNECT, Where("connect", peer=where(addr)))
    raise last or ProbeError(Reason.DNS, f"{host} resolved to no address")
