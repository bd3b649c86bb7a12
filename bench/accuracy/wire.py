"""Read a tcpdump capture and time each DICOM exchange on the wire (pure Python, no deps).

A classic pcap file (µs or ns timestamps; Ethernet, Linux cooked or raw-IP link types) is read
packet by packet; TCP segments are put back in order per connection and direction, keeping the
capture timestamp of every byte range; the byte streams are cut into DICOM PDUs (PS3.8 §9.3:
type, reserved, 4-byte big-endian length) and each PDU gets the timestamp of the segment that
carries its first byte and of the one that carries its last byte.

From those, `dicom_phases` derives the wire duration of each phase as the probe defines it:

* connect:     SYN → SYN-ACK (what connect() waits for)
* associate:   first byte of A-ASSOCIATE-RQ (0x01) → last byte of A-ASSOCIATE-AC/RJ (0x02/0x03)
* dimse:       first byte of the first P-DATA-TF the client sends → last byte of the final
               (non-pending) response message
* first_match: first byte of the request → last byte of the first pending response (C-FIND)
* release:     first byte of A-RELEASE-RQ (0x05) → last byte of A-RELEASE-RP (0x06)
* span:        SYN → last byte of A-RELEASE-RP (what a stopwatch around the whole run could see)

Timestamps are the kernel's capture times (CLOCK_REALTIME), in seconds as floats.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field

LINK_ETHERNET, LINK_RAW, LINK_LINUX_SLL, LINK_LOOP_BSD = 1, 101, 113, 0
TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10
PENDING = (0xFF00, 0xFF01)


@dataclass
class Packet:
    ts: float
    src: tuple[str, int]
    dst: tuple[str, int]
    flags: int
    seq: int
    payload: bytes


def read_pcap(path: str) -> list[Packet]:
    """All TCP packets of a classic pcap file (IPv4 and IPv6)."""
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("not a classic pcap file (pcapng is not supported: use tcpdump -w)")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    div = 1e9 if nano else 1e6
    out: list[Packet] = []
    off = 24
    rec = struct.Struct(endian + "IIII")
    while off + 16 <= len(data):
        sec, frac, incl, _orig = rec.unpack_from(data, off)
        off += 16
        frame = data[off : off + incl]
        off += incl
        pkt = _parse_frame(frame, linktype, sec + frac / div)
        if pkt is not None:
            out.append(pkt)
    return out


def _parse_frame(frame: bytes, linktype: int, ts: float) -> Packet | None:
    if linktype == LINK_ETHERNET:
        ethertype = struct.unpack_from(">H", frame, 12)[0]
        ip = frame[14:]
    elif linktype == LINK_LINUX_SLL:
        ethertype = struct.unpack_from(">H", frame, 14)[0]
        ip = frame[16:]
    elif linktype == LINK_LOOP_BSD:
        ip = frame[4:]
        ethertype = 0x0800 if ip and ip[0] >> 4 == 4 else 0x86DD
    elif linktype == LINK_RAW:
        ip = frame
        ethertype = 0x0800 if ip and ip[0] >> 4 == 4 else 0x86DD
    else:
        raise ValueError(f"unsupported pcap link type {linktype}")
    if ethertype == 0x0800:
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from(">H", ip, 2)[0]
        if ip[9] != 6:
            return None
        src = ".".join(str(b) for b in ip[12:16])
        dst = ".".join(str(b) for b in ip[16:20])
        tcp = ip[ihl:total]
    elif ethertype == 0x86DD:
        if ip[6] != 6:  # no extension headers on loopback TCP
            return None
        plen = struct.unpack_from(">H", ip, 4)[0]
        src = ip[8:24].hex()
        dst = ip[24:40].hex()
        tcp = ip[40 : 40 + plen]
    else:
        return None
    sport, dport, seq, _ack, off_flags = struct.unpack_from(">HHIIH", tcp, 0)
    doff = (off_flags >> 12) * 4
    return Packet(ts, (src, sport), (dst, dport), off_flags & 0x3F, seq, tcp[doff:])


@dataclass
class Direction:
    """One direction of a TCP connection: the bytes in order, with the time each range arrived."""

    isn: int | None = None
    data: bytearray = field(default_factory=bytearray)
    starts: list[int] = field(default_factory=list)  # stream offset where each segment starts
    times: list[float] = field(default_factory=list)
    gap: bool = False  # bytes missing from the capture (dropped): the stream cannot be trusted

    def add(self, seq: int, payload: bytes, ts: float) -> None:
        if self.isn is None or not payload:
            return
        rel = (seq - self.isn - 1) % (1 << 32)
        end = rel + len(payload)
        have = len(self.data)
        if end <= have:
            return  # retransmission of bytes we already have
        if rel > have:
            self.gap = True
            return
        self.starts.append(have)
        self.times.append(ts)
        self.data += payload[have - rel :]

    def time_of(self, offset: int) -> float:
        """Capture time of the segment that carried byte `offset`."""
        i = bisect.bisect_right(self.starts, offset) - 1
        return self.times[i]


@dataclass
class Connection:
    client: tuple[str, int]
    server: tuple[str, int]
    syn: float
    synack: float | None = None
    up: Direction = field(default_factory=Direction)  # client → server
    down: Direction = field(default_factory=Direction)  # server → client
    closed: bool = False


def connections(packets: list[Packet]) -> list[Connection]:
    """TCP connections in order of their SYN; a reused 4-tuple starts a new connection."""
    live: dict[tuple, Connection] = {}
    done: list[Connection] = []
    for p in packets:
        key = (p.src, p.dst)
        rkey = (p.dst, p.src)
        if p.flags & TH_SYN and not p.flags & TH_ACK:
            old = live.pop(key, None)
            if old is not None:
                done.append(old)
            c = Connection(client=p.src, server=p.dst, syn=p.ts)
            c.up.isn = p.seq
            live[key] = c
            continue
        if p.flags & TH_SYN and p.flags & TH_ACK:
            c = live.get(rkey)
            if c is not None and c.synack is None:
                c.synack = p.ts
                c.down.isn = p.seq
            continue
        c = live.get(key)
        if c is not None:
            c.up.add(p.seq, p.payload, p.ts)
            continue
        c = live.get(rkey)
        if c is not None:
            c.down.add(p.seq, p.payload, p.ts)
    done.extend(live.values())
    done.sort(key=lambda c: c.syn)
    return done


@dataclass
class PDU:
    kind: int
    offset: int
    length: int  # whole PDU, header included
    first: float  # capture time of its first byte
    last: float  # capture time of its last byte
    body: bytes


def pdus(d: Direction) -> list[PDU]:
    out: list[PDU] = []
    off = 0
    buf = d.data
    while off + 6 <= len(buf):
        kind, _, length = struct.unpack_from(">BBL", buf, off)
        end = off + 6 + length
        if end > len(buf):
            break
        first, last = d.time_of(off), d.time_of(end - 1)
        out.append(PDU(kind, off, end - off, first, last, bytes(buf[off:end])))
        off = end
    return out


def _command_fields(command: bytes) -> dict[int, int]:
    """(0000,xxxx) US elements of an implicit-VR-LE command set: {element: value}."""
    out: dict[int, int] = {}
    off = 0
    while off + 8 <= len(command):
        group, elem, length = struct.unpack_from("<HHI", command, off)
        off += 8
        if group == 0 and length == 2:
            out[elem] = struct.unpack_from("<H", command, off)[0]
        off += length
    return out


@dataclass
class Message:
    """One DIMSE message as seen on the wire: when it started and completed, and its status."""

    first: float
    last: float
    status: int | None
    command_field: int | None


def dimse_messages(units: list[PDU]) -> list[Message]:
    """Assemble P-DATA-TF PDVs into DIMSE messages (command, then data set if announced)."""
    out: list[Message] = []
    command = bytearray()
    fields: dict[int, int] | None = None
    first: float | None = None
    for u in units:
        if u.kind != 0x04:
            continue
        off = 6
        while off + 6 <= len(u.body):
            item_len = struct.unpack_from(">L", u.body, off)[0]
            header = u.body[off + 5]
            value = u.body[off + 6 : off + 4 + item_len]
            off += 4 + item_len
            if first is None:
                first = u.first
            is_command, is_last = bool(header & 0x01), bool(header & 0x02)
            if is_command:
                command += value
                if is_last:
                    fields = _command_fields(bytes(command))
                    command = bytearray()
                    if fields.get(0x0800, 0x0101) == 0x0101:  # no data set follows
                        out.append(Message(first, u.last, fields.get(0x0900), fields.get(0x0100)))
                        first, fields = None, None
            elif is_last and fields is not None:
                out.append(Message(first, u.last, fields.get(0x0900), fields.get(0x0100)))
                first, fields = None, None
    return out


def dicom_phases(c: Connection) -> dict[str, float] | None:
    """Wire duration (seconds) of each phase of one association; None if it is incomplete."""
    if c.up.gap or c.down.gap or c.synack is None:
        return None
    up, down = pdus(c.up), pdus(c.down)
    out: dict[str, float] = {"connect": c.synack - c.syn}
    rq = next((u for u in up if u.kind == 0x01), None)
    ac = next((u for u in down if u.kind in (0x02, 0x03)), None)
    if rq is None or ac is None:
        return None
    out["associate"] = ac.last - rq.first
    requests = dimse_messages(up)
    responses = dimse_messages(down)
    if requests and responses:
        t0 = requests[0].first
        final = next((m for m in responses if m.status not in PENDING), None)
        pending = next((m for m in responses if m.status in PENDING), None)
        if final is not None:
            out["dimse"] = final.last - t0
        if pending is not None:
            out["first_match"] = pending.last - t0
        out["matches"] = float(sum(1 for m in responses if m.status in PENDING))
    rel = next((u for u in up if u.kind == 0x05), None)
    rp = next((u for u in down if u.kind == 0x06), None)
    if rel is not None and rp is not None:
        out["release"] = rp.last - rel.first
        out["span"] = rp.last - c.syn
    return out
