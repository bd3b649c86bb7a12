"""Peers for the accuracy benchmark, each run in its own process (so that its CPU time and its
threads do not disturb the client process being measured).

    python -m bench.accuracy.servers simulator [--delay S] [--extra-studies N]
    python -m bench.accuracy.servers proxy --upstream HOST:PORT [--hold S]

Each prints one JSON line {"port": N} once it listens, then serves until its stdin closes.

The proxy holds every chunk it forwards (each recv() result) for `hold` seconds in each
direction, measured from the moment the kernel received it, so one request/response round trip
through it takes 2 × hold more than without it; chunks are pipelined, not serialised.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import select
import socket
import struct
import sys
import time


def run_simulator(delay: float, extra: int) -> None:
    from pydicom.dataset import Dataset

    from agent.simulator import SimulatedPACS

    sim = SimulatedPACS()
    for i in range(extra):
        ds = Dataset()
        ds.PatientID, ds.PatientName = "BENCH0001", "BENCH^MANY"
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1082.9.{i + 1}"
        ds.AccessionNumber, ds.StudyDate, ds.ModalitiesInStudy = f"BEN{i:04d}", "20260201", "CT"
        sim.studies.append(ds)
    sim.faults.delay = delay
    sim.start_dicom()
    print(json.dumps({"port": sim.dicom_port}), flush=True)
    sys.stdin.read()
    sim.stop_dicom()


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS is the same


def _arrival(anc: list[tuple[int, int, bytes]]) -> float:
    """Kernel receive time (CLOCK_REALTIME) of the data recvmsg returned, or now."""
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec + nsec / 1e9
    return time.time()


def run_proxy(upstream: tuple[str, int], hold: float) -> None:
    """One thread, select() with µs timeouts; each chunk is due `hold` after the kernel received
    it (SO_TIMESTAMPNS), so the proxy's own scheduling delays do not shift the hold."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    peer: dict[socket.socket, socket.socket] = {}
    eof: set[socket.socket] = set()
    due: list[tuple[float, int, socket.socket, bytes | None]] = []  # heap
    seq = 0
    print(json.dumps({"port": lsock.getsockname()[1]}), flush=True)
    stdin = sys.stdin.fileno()

    def drop(s: socket.socket) -> None:
        for x in (s, peer.get(s)):
            if x is not None and x in peer:
                peer.pop(x, None)
                eof.discard(x)
                x.close()

    while True:
        timeout = max(0.0, due[0][0] - time.time()) if due else 1.0
        readable, _, _ = select.select([lsock, stdin, *peer], [], [], timeout)
        for s in readable:
            if s == stdin:
                if not os.read(stdin, 4096):
                    lsock.close()
                    return
            elif s is lsock:
                client, _ = lsock.accept()
                try:
                    server = socket.create_connection(upstream, timeout=5)
                except OSError:
                    client.close()
                    continue
                for x in (client, server):
                    x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    x.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                    x.settimeout(5)
                peer[client], peer[server] = server, client
            elif s in peer:
                try:
                    data, anc, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(16))
                except OSError:
                    data, anc = b"", []
                at = _arrival(anc) if data else time.time()
                seq += 1
                heapq.heappush(due, (at + hold, seq, peer[s], data or None))
                if not data:
                    eof.add(s)
        now = time.time()
        while due and due[0][0] <= now:
            _, _, dst, chunk = heapq.heappop(due)
            if dst not in peer:
                continue
            try:
                if chunk is None:
                    dst.shutdown(socket.SHUT_WR)
                    if peer[dst] in eof and dst in eof:
                        drop(dst)
                else:
                    dst.sendall(chunk)
            except OSError:
                drop(dst)
        for s in [s for s in list(eof) if s in peer and peer[s] in eof]:
            if not any(d is s or d is peer[s] for _, _, d, _ in due):
                drop(s)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("simulator")
    s.add_argument("--delay", type=float, default=0.0)
    s.add_argument("--extra-studies", type=int, default=0)
    p = sub.add_parser("proxy")
    p.add_argument("--upstream", required=True)
    p.add_argument("--hold", type=float, default=0.02)
    args = ap.parse_args()
    if args.what == "simulator":
        run_simulator(args.delay, args.extra_studies)
    else:
        host, _, port = args.upstream.rpartition(":")
        run_proxy((host, int(port)), args.hold)


if __name__ == "__main__":
    main()
