"""A light simulated PACS fleet for the scale benchmark: many DICOM ports and AE titles, HTTP.

One asyncio process, no polling: it answers A-ASSOCIATE-RQ, C-ECHO-RQ, C-FIND-RQ (no matches,
status 0x0000) and A-RELEASE-RQ, and `GET /health` over HTTP/1.1 (keep-alive). Every reply is
computed once with pynetdicom's codec for each distinct request (keyed by the request's bytes)
and then served from a cache, so the simulator's CPU per association is a few reads and writes:
the agent's 1,000-target workload sends ~2,000 distinct association requests (one per called AE
title and service) and two distinct DIMSE requests. Any called AE title is accepted.

Run as its own process so its CPU is not counted as the agent's:

    python -m bench.scale.sim --dicom-ports 4 --http-ports 1

It prints one JSON line to stdout once listening: {"pid": .., "dicom": [ports], "http": [ports]},
then serves until stdin closes or SIGTERM. `--stats` prints counters on exit (stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import sys

from pynetdicom.dimse_messages import (
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_FIND_RQ,
    C_FIND_RSP,
    DIMSEMessage,
)
from pynetdicom.dimse_primitives import C_ECHO, C_FIND
from pynetdicom.pdu import A_RELEASE_RP, P_DATA_TF

from agent.selfprobe import association_accept
from probes.dicom_pdu import command_fields

VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
SUPPORTED = (VERIFICATION, STUDY_ROOT_FIND)
MAX_PDU = 16384
MAX_CACHE = 100_000
RELEASE_RP = A_RELEASE_RP().encode()
HEALTH_BODY = b'{"status":"UP"}'
HEALTH_RSP = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(HEALTH_BODY)).encode() + b"\r\n\r\n" + HEALTH_BODY
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

STATS = {"associations": 0, "echo": 0, "find": 0, "http": 0, "errors": 0}
_cache: dict[bytes, bytes] = {}


def accept_bytes(rq_bytes: bytes) -> bytes:
    """A-ASSOCIATE-AC for an A-ASSOCIATE-RQ: each supported context."""
    return association_accept(rq_bytes, lambda syntax: syntax in SUPPORTED, MAX_PDU)


def dimse_reply(pdus: list[bytes]) -> bytes:
    """The final response to one DIMSE request (C-ECHO: success; C-FIND: no matches)."""
    msg = DIMSEMessage()
    cx_id = 1
    for data in pdus:
        pdu = P_DATA_TF()
        pdu.decode(data)
        cx_id = pdu.presentation_data_value_items[0].presentation_context_id
        msg.decode_msg(pdu.to_primitive())
    if isinstance(msg, C_ECHO_RQ):
        prim = C_ECHO()
        prim.MessageIDBeingRespondedTo = msg.command_set.MessageID
        prim.AffectedSOPClassUID = msg.command_set.AffectedSOPClassUID
        prim.Status = 0x0000
        out: DIMSEMessage = C_ECHO_RSP()
    elif isinstance(msg, C_FIND_RQ):
        prim = C_FIND()
        prim.MessageIDBeingRespondedTo = msg.command_set.MessageID
        prim.AffectedSOPClassUID = msg.command_set.AffectedSOPClassUID
        prim.Status = 0x0000
        out = C_FIND_RSP()
    else:
        raise ValueError("unsupported DIMSE request")
    out.primitive_to_message(prim)
    return b"".join(P_DATA_TF(p).encode() for p in out.encode_msg(cx_id, MAX_PDU))


def cached(key: bytes, make) -> bytes:  # noqa: ANN001
    out = _cache.get(key)
    if out is None:
        if len(_cache) >= MAX_CACHE:
            _cache.clear()
        out = _cache[key] = make(key)
    return out


def _message_done(data: bytes, state: dict) -> bool:
    """Track PDV control headers of one P-DATA-TF; True when the DIMSE message is complete."""
    off = 6
    done = False
    while off + 6 <= len(data):
        item_len = struct.unpack_from(">L", data, off)[0]
        control = data[off + 5]
        fragment = data[off + 6 : off + 4 + item_len]
        off += 4 + item_len
        if control & 0x01:
            state["command"] += fragment
            if control & 0x02:
                fields = command_fields(bytes(state["command"]))
                state["has_data"] = fields.get(0x0800, 0x0101) != 0x0101
                state["field"] = fields.get(0x0100, 0)
                done = not state["has_data"]
        elif control & 0x02:
            done = True
    return done


async def serve_dicom(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message: list[bytes] = []
    state: dict = {"command": bytearray(), "has_data": False}
    try:
        while True:
            head = await reader.readexactly(6)
            pdu_type, _, length = struct.unpack(">BBL", head)
            if length > 1 << 20:
                break
            data = head + await reader.readexactly(length)
            if pdu_type == 0x01:
                STATS["associations"] += 1
                writer.write(cached(data, accept_bytes))
            elif pdu_type == 0x04:
                message.append(data)
                if _message_done(data, state):
                    key = b"".join(message)
                    reply = cached(b"D" + key, lambda k, m=message: dimse_reply(m))
                    writer.write(reply)
                    STATS["find" if state.get("field") == 0x0020 else "echo"] += 1
                    message = []
                    state = {"command": bytearray(), "has_data": False}
            elif pdu_type == 0x05:
                writer.write(RELEASE_RP)
                await writer.drain()
                break
            else:  # abort or anything else
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    except Exception:  # noqa: BLE001 - count and drop the connection
        STATS["errors"] += 1
    finally:
        writer.close()


async def serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line, _, rest = head.partition(b"\r\n")
            parts = line.split(b" ")
            path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
            STATS["http"] += 1
            writer.write(HEALTH_RSP if path.endswith(b"/health") else NOT_FOUND)
            if b"connection: close" in rest.lower():
                await writer.drain()
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def main_async(dicom_ports: int, http_ports: int, host: str) -> None:
    servers = []
    for _ in range(dicom_ports):
        servers.append(await asyncio.start_server(serve_dicom, host, 0, backlog=1024))
    for _ in range(http_ports):
        servers.append(await asyncio.start_server(serve_http, host, 0, backlog=1024))
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps({"pid": os.getpid(), "dicom": ports[:dicom_ports],
                      "http": ports[dicom_ports:]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    # stdin closing (the orchestrator died) also stops us
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(0, 4096) else None)
    await stop.wait()
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--dicom-ports", type=int, default=4)
    ap.add_argument("--http-ports", type=int, default=1)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--stats", action="store_true")
    args = ap.parse_args(argv)
    asyncio.run(main_async(args.dicom_ports, args.http_ports, args.host))
    if args.stats:
        print(json.dumps(STATS), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
