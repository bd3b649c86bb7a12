"""A hostile DICOM peer: random and malformed PDUs, generated with hypothesis.

The agent must record a bounded reason (invalid_response, or aborted/rejected/timeout where that
is what the bytes say), never `error`, never let an exception escape run_probe, never allocate
what a declared length asks for, and keep probing its other targets on schedule.
"""

from __future__ import annotations

import socket
import struct
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.runner import run_probe
from agent.targets import TargetPlan
from probes.base import ProbeResult, Reason
from tests.helpers import hostile_peers as hp
from tests.helpers.agent_fixtures import running_agent, sample, scrape
from tests.helpers.config import plan, target
from tests.helpers.peers import wait_until

# pydicom warns about the garbage UIDs in fuzzed A-ASSOCIATE-ACs: expected here
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")

# What malformed bytes may legitimately be called. `error` is not among them: it means a bug.
BOUNDED = {
    Reason.INVALID_RESPONSE,
    Reason.ABORTED,
    Reason.REJECTED,
    Reason.TIMEOUT,
    Reason.DIMSE_STATUS,
}
DEADLINE = 2.0
MARGIN = 0.5
PEAK_LIMIT = 3 * 1024 * 1024  # bytes traced during one run: no declared length is honoured


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[hp.ScriptServer]:
    with hp.ScriptServer(hp.scripted_reply) as s:
        yield s


_PLANS: dict[tuple[int, str], TargetPlan] = {}


def _plan(port: int, probe: str) -> TargetPlan:
    """Built the real way (config → plan) once per server and probe; a plan is reusable."""
    key = (port, probe)
    if key not in _PLANS:
        _PLANS[key] = plan(target(port=port, only=(probe,), timeout_ms=int(DEADLINE * 1000)))
    return _PLANS[key]


def _run(
    server: hp.ScriptServer, probe: str, payload: bytes, after_ac: bool
) -> tuple[ProbeResult, float, int]:
    """One run against `payload`: (result, wall seconds, bytes traced at peak during it)."""
    p = _plan(server.port, probe)
    server.state = {"payload": payload, "after_ac": after_ac}
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    t0 = time.monotonic()
    r = run_probe(p, probe)
    took = time.monotonic() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    return r, took, peak


PROPOSED_SYNTAXES = (b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.1")


def _items(body: bytes) -> list[tuple[int, bytes]] | None:
    """The (type, value) items of a PDU's variable part; None when they do not tile it."""
    out, off = [], 0
    while off < len(body):
        if off + 4 > len(body):
            return None
        item_type, _, n = struct.unpack(">BBH", body[off : off + 4])
        if off + 4 + n > len(body):
            return None
        out.append((item_type, body[off + 4 : off + 4 + n]))
        off += 4 + n
    return out


def _acceptable_ac(payload: bytes) -> bool:
    """An A-ASSOCIATE-AC that has what the probe needs (PS3.8 9.3.3): version 1, DICOM's
    application context, context 1 accepted in a proposed transfer syntax. Anything else in it
    a lenient acceptor may ignore. Read by this walker, not by the probe's decoder."""
    if payload[0] != 0x02 or len(payload) < 74 or not payload[7] & 1:
        return False
    items = _items(payload[74:])
    if items is None or (0x10, hp.APPLICATION_CONTEXT) not in items:
        return False
    for item_type, value in items:
        if item_type == 0x21 and len(value) >= 4 and value[0] == 1 and value[2] == 0:
            subs = _items(value[4:])
            if subs and subs[0][0] == 0x40 and subs[0][1].rstrip(b"\0") in PROPOSED_SYNTAXES:
                return True
    return False


def _incomplete_message(payload: bytes) -> bool:
    """A P-DATA-TF none of whose PDV items ends a command or data set: the rest may follow."""
    off, last = 6, False
    while off + 6 <= len(payload):
        (n,) = struct.unpack(">L", payload[off : off + 4])
        last |= bool(payload[off + 5] & 2)
        off += 4 + max(n, 1)
    return payload[0] == 0x04 and not last


def expected_outcomes(payload: bytes, after_ac: bool) -> set[Reason | None]:
    """What the probe may make of `payload`, from the bytes alone (independent of the probe);
    None stands for success.

    The peer answers A-RELEASE, and C-ECHO/C-FIND after an acceptable A-ASSOCIATE-AC, and stays
    connected after a complete PDU: so `aborted` is only right when the bytes say so (an
    A-ABORT, the peer's own A-RELEASE-RQ) or the stream ended mid-PDU, and `timeout` only when a
    well-framed P-DATA-TF leaves its message unfinished.
    """
    if hp.truncated(payload):
        return {Reason.INVALID_RESPONSE, Reason.ABORTED}
    out: set[Reason | None] = {Reason.INVALID_RESPONSE}
    pdu_type = payload[0]
    if pdu_type in (0x05, 0x07):
        out.add(Reason.ABORTED)
    if not after_ac:
        if pdu_type in (0x02, 0x03):
            out.add(Reason.REJECTED)  # refused, or accepted without the probe's context
        if _acceptable_ac(payload):
            out.add(None)
    elif pdu_type == 0x04 and len(payload) > 11 and payload[10] == 1 and payload[11] & 3 == 3:
        # one whole command PDV on the probe's context: a C-ECHO-RSP that may well be valid
        out |= {None, Reason.DIMSE_STATUS}
    elif _incomplete_message(payload):
        out.add(Reason.TIMEOUT)  # well framed, but the message's end is still to come
    return out


def _check(
    r: ProbeResult,
    took: float,
    peak: int,
    server: hp.ScriptServer | None = None,
    payload: bytes | None = None,
    after_ac: bool = False,
) -> None:
    assert r.reason != Reason.ERROR, r.message  # an exception inside the probe ends up here
    assert took < DEADLINE + MARGIN, took
    assert peak < PEAK_LIMIT, f"{peak} bytes allocated during one run"
    assert "Traceback" not in r.message and "internal error" not in r.message
    if server is not None:
        wait_until(lambda: server.active() == 0, 5, what="the peer's script finished")
        assert server.errors == []  # the peer itself raised nothing
    if payload is not None:
        want = expected_outcomes(payload, after_ac)
        assert r.reason in want, (r.reason, r.message, want, payload[:16].hex())
    else:
        assert not r.ok, "malformed bytes must not pass as a healthy PACS"
        assert r.reason in BOUNDED, (r.reason, r.message)
    if r.ok and server is not None:
        # a success is a real exchange with the peer, released cleanly
        assert server.state.get("answered") == ["dimse", "release"], server.state


# -- strategies ----------------------------------------------------------------------------------

HUGE = (0xFFFFFFF0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 64 * 1024 + 1, 16385)
lengths = st.one_of(st.sampled_from(HUGE), st.integers(0, 0xFFFFFFFF), st.integers(0, 300))
pdu_types = st.one_of(st.integers(0, 255), st.sampled_from([1, 2, 3, 4, 5, 6, 7]))


@st.composite
def any_pdu(draw: st.DrawFn) -> bytes:
    """A PDU header with any type and declared length, and a body that may not match it."""
    body = draw(st.binary(max_size=300))
    declared = draw(st.one_of(st.just(len(body)), lengths))
    return struct.pack(">BBL", draw(pdu_types), draw(st.integers(0, 255)), declared) + body


item_types = st.one_of(
    st.sampled_from([0x10, 0x20, 0x21, 0x30, 0x40, 0x50, 0x51, 0x52, 0x55]), st.integers(0, 255)
)


@st.composite
def garbage_item(draw: st.DrawFn) -> bytes:
    value = draw(st.binary(max_size=64))
    declared = draw(st.one_of(st.just(len(value)), st.integers(0, 0xFFFF)))
    return struct.pack(">BBH", draw(item_types), 0, declared) + value


FAKE_RQ = hp.pdu(
    0x01,
    struct.pack(">HH", 1, 0)
    + b"ANY-SCP".ljust(16)
    + b"PACS_HEALTH".ljust(16)
    + bytes(32)
    + hp._item(0x20, bytes([1, 0, 0, 0])),
)


@st.composite
def garbage_ac(draw: st.DrawFn) -> bytes:
    """A well-framed A-ASSOCIATE-AC whose variable items are garbage."""
    items = b"".join(draw(st.lists(garbage_item(), max_size=6)))
    if draw(st.booleans()):  # sometimes a valid application context first
        items = hp._item(0x10, hp.APPLICATION_CONTEXT) + items
    return hp.associate_ac(FAKE_RQ, items=items)


@st.composite
def truncated_ac(draw: st.DrawFn) -> bytes:
    """A valid AC cut short, with the PDU length either fixed up (truncated items) or not."""
    full = hp.associate_ac(FAKE_RQ, max_pdu=draw(st.sampled_from([None, 0, 16384])))
    cut = draw(st.integers(6, len(full) - 1))
    data = full[:cut]
    if draw(st.booleans()):
        data = data[:2] + struct.pack(">L", len(data) - 6) + data[6:]
    return data


@st.composite
def odd_max_pdu_ac(draw: st.DrawFn) -> bytes:
    """A valid AC announcing a tiny, zero or absurd maximum PDU length."""
    n = draw(st.one_of(st.integers(0, 16), st.sampled_from([0xFFFFFFFF, 0x80000000])))
    return hp.associate_ac(FAKE_RQ, max_pdu=n)


@st.composite
def garbage_pdata(draw: st.DrawFn) -> bytes:
    """After a valid association: P-DATA-TF with bent PDV items and command sets."""
    cmd = hp.echo_rsp_command(draw(st.sampled_from([0, 0x0110, 0xC000])))
    kind = draw(st.sampled_from(["pdv_len", "control", "truncated_cmd", "random_cmd", "items"]))
    if kind == "pdv_len":
        data = struct.pack(">LBB", draw(lengths), 1, 3) + cmd
    elif kind == "control":
        data = (
            struct.pack(">LBB", len(cmd) + 2, draw(st.integers(0, 255)), draw(st.integers(0, 255)))
            + cmd
        )
    elif kind == "truncated_cmd":
        part = cmd[: draw(st.integers(0, len(cmd) - 1))]
        data = struct.pack(">LBB", len(part) + 2, 1, 3) + part
    elif kind == "random_cmd":
        junk = draw(st.binary(max_size=200))
        data = struct.pack(">LBB", len(junk) + 2, 1, 3) + junk
    else:
        data = b"".join(draw(st.lists(st.binary(min_size=0, max_size=40), max_size=5)))
    return hp.pdu(0x04, data)


association_replies = st.one_of(
    any_pdu(), garbage_ac(), truncated_ac(), odd_max_pdu_ac(), st.binary(min_size=1, max_size=200)
)
dimse_replies = st.one_of(garbage_pdata(), any_pdu(), st.binary(min_size=1, max_size=200))


# -- the fuzzer ----------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(reply=association_replies, probe=st.sampled_from(["dicom_echo", "dicom_find"]))
@example(reply=hp.pdu(0x02, b"", declared=0xFFFFFFF0), probe="dicom_echo")
@example(reply=hp.associate_ac(FAKE_RQ, max_pdu=1), probe="dicom_echo")
@example(reply=hp.associate_ac(FAKE_RQ, max_pdu=6), probe="dicom_find")
def test_malformed_association_replies(
    fuzz_server: hp.ScriptServer, reply: bytes, probe: str
) -> None:
    tracemalloc.start()
    try:
        r, took, peak = _run(fuzz_server, probe, reply, after_ac=False)
    finally:
        tracemalloc.stop()
    _check(r, took, peak, fuzz_server, reply, after_ac=False)


@FUZZ
@given(reply=dimse_replies, probe=st.sampled_from(["dicom_echo", "dicom_find"]))
@example(reply=hp.pdu(0x04, b"", declared=0xFFFFFFF0), probe="dicom_echo")
def test_malformed_dimse_replies(fuzz_server: hp.ScriptServer, reply: bytes, probe: str) -> None:
    tracemalloc.start()
    try:
        r, took, peak = _run(fuzz_server, probe, reply, after_ac=True)
    finally:
        tracemalloc.stop()
    _check(r, took, peak, fuzz_server, reply, after_ac=True)


# -- named cases: huge declared lengths on every PDU type -----------------------------------------


@pytest.mark.parametrize("pdu_type", [1, 2, 3, 4, 5, 6, 7, 0x00, 0x08, 0xFF])
@pytest.mark.parametrize("after_ac", [False, True])
def test_huge_declared_length_is_refused_before_allocation(
    fuzz_server: hp.ScriptServer, pdu_type: int, after_ac: bool
) -> None:
    # 0xFFFFFFF0 bytes declared, a few sent: the header alone must end the run.
    reply = struct.pack(">BBL", pdu_type, 0, 0xFFFFFFF0) + b"\x00" * 64
    tracemalloc.start()
    try:
        r, took, peak = _run(fuzz_server, "dicom_echo", reply, after_ac)
    finally:
        tracemalloc.stop()
    _check(r, took, peak, fuzz_server)
    assert r.reason == Reason.INVALID_RESPONSE, (r.reason, r.message)
    assert peak < 1024 * 1024


def test_tiny_peer_max_pdu_is_invalid_response_not_a_crash(fuzz_server: hp.ScriptServer) -> None:
    # A maximum length that cannot carry one PDV byte: pynetdicom's encoder would raise.
    for n in (1, 6):
        fuzz_server.state = {"payload": hp.associate_ac(FAKE_RQ, max_pdu=n), "after_ac": False}
        r = run_probe(_plan(fuzz_server.port, "dicom_echo"), "dicom_echo")
        assert r.reason == Reason.INVALID_RESPONSE, (n, r.reason, r.message)


# -- a hostile target does not disturb the others' schedule --------------------------------------


def _garbage_or_stall(conn: socket.socket, server: hp.ScriptServer) -> None:
    """Alternate between garbage with a huge declared length and stalling until the deadline."""
    with server._lock:  # noqa: SLF001
        n = server.accepted
    if hp.read_pdu(conn, server) is None:
        return
    if n % 2:
        conn.sendall(struct.pack(">BBL", 0x02, 0, 0xFFFFFFF0) + b"\x00" * 1024)
        hp.finish(conn, server)
    else:
        hp.hold(conn, server)


@pytest.mark.timing
def test_hostile_target_does_not_delay_a_healthy_one() -> None:
    interval = 0.25
    # the healthy PACS is a plain socket SCP: it answers in microseconds even on a loaded machine
    with hp.ScriptServer(_garbage_or_stall) as hostile, hp.ScriptServer(hp.echo_ok) as good:
        targets = [
            target(
                "hostile", port=hostile.port, only=("dicom_echo",), timeout_ms=500, interval_ms=500
            ),
            target(
                "healthy",
                port=good.port,
                only=("dicom_echo",),
                timeout_ms=int(interval * 1000),
                interval_ms=int(interval * 1000),
            ),
        ]
        with running_agent(targets, {"selfProbe": {"enabled": False}}) as svc:

            def runs(t: str) -> float:
                s = scrape(svc)
                return sum(
                    sample(s, "pacs_probe_runs_total", target=t, probe="dicom_echo", result=res)
                    or 0
                    for res in ("success", "failure")
                )

            wait_until(lambda: runs("healthy") >= 1 and runs("hostile") >= 1, 10)
            h0, t0 = runs("healthy"), time.monotonic()
            wait_until(lambda: runs("hostile") >= 6, 15)
            h1, t1 = runs("healthy"), time.monotonic()
            s = scrape(svc)
    expected = (t1 - t0) / interval
    assert h1 - h0 >= expected * 0.7 - 1, (h1 - h0, expected)
    assert (
        sample(s, "pacs_probe_runs_total", target="healthy", probe="dicom_echo", result="failure")
        == 0
    )
    # start lateness of every job (both targets): the hostile one does not hold the scheduler up
    late = sample(s, "pacs_scheduler_start_lateness_seconds_bucket", le="0.25") or 0
    starts = sample(s, "pacs_scheduler_start_lateness_seconds_count") or 0
    assert starts >= 8 and late >= 0.9 * starts, (late, starts)
    bad = {
        r.value: sample(
            s, "pacs_probe_failures_total", target="hostile", probe="dicom_echo", reason=r.value
        )
        or 0
        for r in Reason
    }
    assert bad["error"] == 0, bad
    assert bad["invalid_response"] >= 1 and bad["timeout"] >= 1, bad
    assert hostile.errors == []
