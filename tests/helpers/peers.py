"""Real peers on loopback for the spine's tests: pynetdicom SCPs, silent listeners, polling."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

# One implementation of the polling and port helpers for every test module.
from tests.helpers import LOOPBACK, free_port, wait_until  # noqa: E402,F401


@contextmanager
def echo_scp(mode: str = "accept", ae_title: str = "SECTRA_PACS", status: int = 0) -> Iterator[int]:
    """A pynetdicom Verification SCP. mode: accept | reject | abort (A-ABORT on C-ECHO)."""
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(Verification)
    ae.require_called_aet = False
    if mode == "reject":
        ae.require_calling_aet = ["ONLY_THIS_ONE"]

    def on_echo(event: Any) -> int:
        if mode == "abort":
            event.assoc.abort()
        return status

    server = ae.start_server((LOOPBACK, 0), block=False, evt_handlers=[(evt.EVT_C_ECHO, on_echo)])
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


@contextmanager
def silent_listener(read: bool = False, stats: dict[str, int] | None = None) -> Iterator[int]:
    """Accepts TCP connections and never answers; with `read`, reads and discards what the
    client sends (so its sends never block on a full window), counting the bytes in
    `stats["received"]`."""
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    sock.listen(64)
    stop = threading.Event()
    conns: list[socket.socket] = []
    threads: list[threading.Thread] = []
    port = int(sock.getsockname()[1])
    counts = stats if stats is not None else {}
    counts["received"] = 0
    lock = threading.Lock()

    def drain(c: socket.socket) -> None:
        c.settimeout(0.1)
        while not stop.is_set():
            try:
                chunk = c.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            with lock:
                counts["received"] += len(chunk)

    def loop() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = sock.accept()
            except OSError:
                continue
            conns.append(c)
            if read:
                t = threading.Thread(target=drain, args=(c,), daemon=True)
                threads.append(t)
                t.start()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield port
    finally:
        stop.set()
        t.join(2)
        for th in threads:
            th.join(2)
        for c in conns:
            c.close()
        sock.close()
