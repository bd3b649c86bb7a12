"""DICOM faults the agent must survive, each against a real peer on 127.0.0.1.

For each fault: the run ends within its deadline (+ a margin for a loaded machine), the reason is
the documented one, and the target's state follows the documented states: WARN/DEGRADED
after the first failures, FAIL/UNHEALTHY at failureThreshold (3).
"""

from __future__ import annotations

import ssl
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from agent.evaluator import CheckStatus, HealthState
from agent.runner import run_probe
from probes.base import ProbeResult, Reason
from tests.helpers import hostile_peers as hp
from tests.helpers.config import plan, target
from tests.helpers.peers import wait_until
from tests.helpers.pipeline import Harness
from tests.helpers.ports import refused_port, syn_blackhole
from tests.helpers.tls import Leaf, TLSMaterial

MARGIN = 0.5  # seconds past the deadline a run may take on a loaded 2-core machine
FAILURE_THRESHOLD = 3


@contextmanager
def peer(mode: str) -> Iterator[tuple[int, hp.ScriptServer | None]]:
    if mode == "refused":
        with refused_port() as port:  # bound, not listening: held for the whole test
            yield port, None
        return
    if mode == "connect_timeout":
        with syn_blackhole() as port:  # SYNs dropped, as by a silent firewall
            yield port, None
        return
    with hp.ScriptServer(hp.MODES[mode]) as s:
        yield s.port, s


def timed(p: Any, probe: str) -> tuple[ProbeResult, float]:
    t0 = time.monotonic()
    r = run_probe(p, probe)
    return r, time.monotonic() - t0


# mode, expected reason, deadline (s), phases reached, phases not reached
FAULTS = [
    ("refused", Reason.REFUSED, 2.0, set(), {"connect", "associate"}),
    ("connect_timeout", Reason.CONNECT_TIMEOUT, 1.0, set(), {"connect", "associate"}),
    ("never_read", Reason.TIMEOUT, 0.4, {"connect"}, {"associate"}),
    ("read_never_answer", Reason.TIMEOUT, 0.4, {"connect"}, {"associate"}),
    ("stall_after_ac", Reason.TIMEOUT, 0.4, {"connect", "associate"}, {"dimse", "release"}),
    ("abort", Reason.ABORTED, 2.0, {"connect", "associate"}, {"dimse", "release"}),
    ("close_mid_ac", Reason.ABORTED, 2.0, {"connect"}, {"associate"}),
    ("close_mid_dimse", Reason.ABORTED, 2.0, {"connect", "associate"}, {"dimse", "release"}),
    ("reject", Reason.REJECTED, 2.0, {"connect", "associate"}, {"dimse"}),
]


@pytest.mark.timing
@pytest.mark.parametrize(
    ("mode", "reason", "deadline", "reached", "not_reached"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_echo_fault_reason_deadline_and_state(
    mode: str, reason: Reason, deadline: float, reached: set[str], not_reached: set[str]
) -> None:
    with peer(mode) as (port, server):
        p = plan(
            target(
                "faulty",
                port=port,
                only=("dicom_echo",),
                timeout_ms=int(deadline * 1000),
                health={"failureThreshold": FAILURE_THRESHOLD},
            )
        )
        h = Harness(p)
        for n in range(1, FAILURE_THRESHOLD + 1):
            t0 = time.monotonic()
            r, check = h.run("faulty", "dicom_echo")
            took = time.monotonic() - t0
            assert not r.ok and r.reason == reason, (n, r.reason, r.message)
            assert took < deadline + MARGIN, (n, took)
            assert reached <= set(r.phases) and not (not_reached & set(r.phases)), r.phases
            if n < FAILURE_THRESHOLD:
                assert check.status == CheckStatus.WARN
                assert h.target_state("faulty") == HealthState.DEGRADED
        assert check.status == CheckStatus.FAIL
        assert h.target_state("faulty") == HealthState.UNHEALTHY
        assert (
            h.value(
                "pacs_probe_failures_total",
                target="faulty",
                probe="dicom_echo",
                reason=reason.value,
            )
            == FAILURE_THRESHOLD
        )
        assert h.value("pacs_target_health", target="faulty", state="UNHEALTHY") == 1
        if server is not None:
            assert server.errors == []
            if mode in ("read_never_answer", "stall_after_ac"):
                # the agent closed every connection it gave up on: nothing lingers at the PACS
                wait_until(lambda: server.peer_closed >= FAILURE_THRESHOLD, 5)


@pytest.mark.parametrize(
    ("mode", "reason", "deadline", "reached", "not_reached"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_find_fault_reason_and_deadline(
    mode: str, reason: Reason, deadline: float, reached: set[str], not_reached: set[str]
) -> None:
    with peer(mode) as (port, _):
        p = plan(target(port=port, only=("dicom_find",), timeout_ms=int(deadline * 1000)))
        r, took = timed(p, "dicom_find")
    assert not r.ok and r.reason == reason, (r.reason, r.message)
    assert took < deadline + MARGIN, took


def test_a_stalled_association_is_aborted_by_the_agent() -> None:
    # Giving up on a stalled DIMSE exchange, the agent sends A-ABORT before closing, so the PACS
    # can free the association at once instead of waiting for its own timeout.
    with hp.ScriptServer(hp.stall_after_ac) as s:
        r, _ = timed(plan(target(port=s.port, only=("dicom_echo",), timeout_ms=300)), "dicom_echo")
        wait_until(lambda: s.peer_closed >= 1, 5)
        received = list(s.state.get("after_stall", []))
    assert r.reason == Reason.TIMEOUT
    assert received == [0x07], received


def test_unresolvable_name_is_dns_within_the_deadline() -> None:
    p = plan(target(host="pacs.does-not-exist.invalid", only=("dicom_echo",), timeout_ms=2000))
    r, took = timed(p, "dicom_echo")
    assert not r.ok and r.reason == Reason.DNS, (r.reason, r.message)
    assert took < 2.0 + MARGIN
    assert "connect" not in r.phases


# -- DICOM over TLS: handshake failures -----------------------------------------------------------


def old_protocol_context(leaf: Leaf) -> ssl.SSLContext:
    """A server that speaks TLS 1.0 and 1.1 only (SECLEVEL=0 lets OpenSSL 3 still offer them)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    leaf.cert.configure_cert(ctx)
    return ctx


def negotiated_version(port: int, ca_file: str) -> str | None:
    """What a permissive client gets from the server: proves the old-protocol peer is real."""
    import socket

    ctx = ssl.create_default_context(cafile=ca_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.version()


def tls_target(port: int, tls: dict[str, Any]) -> dict[str, Any]:
    return target(
        "tls",
        port=port,
        only=("dicom_echo",),
        timeout_ms=2000,
        config={"enableTLS": True, "tls": tls},
    )


def test_dicom_tls_good_certificate_is_the_control(tls_material: TLSMaterial) -> None:
    with hp.ScriptServer(hp.echo_ok, ssl_context=tls_material.good().server_context()) as s:
        r = run_probe(plan(tls_target(s.port, {"caFile": str(tls_material.ca_file)})), "dicom_echo")
    assert r.ok, r.message
    assert "tls" in r.phases and r.tls is not None


@pytest.mark.parametrize("case", ["wrong_ca", "expired", "wrong_hostname", "old_protocol"])
def test_dicom_tls_handshake_failures(tls_material: TLSMaterial, case: str) -> None:
    ca = str(tls_material.ca_file)
    if case == "wrong_ca":
        ctx, client = (
            tls_material.good().server_context(),
            {"caFile": str(tls_material.other_ca_file)},
        )
    elif case == "expired":
        ctx, client = tls_material.expired().server_context(), {"caFile": ca}
    elif case == "wrong_hostname":
        ctx, client = tls_material.for_other_host().server_context(), {"caFile": ca}
    else:
        ctx, client = old_protocol_context(tls_material.good()), {"caFile": ca, "minVersion": "1.2"}
    with hp.ScriptServer(hp.echo_ok, ssl_context=ctx) as s:
        if case == "old_protocol":
            assert negotiated_version(s.port, ca) in ("TLSv1", "TLSv1.1")
        t0 = time.monotonic()
        r = run_probe(plan(tls_target(s.port, client)), "dicom_echo")
        took = time.monotonic() - t0
        wait_until(lambda: s.handshake_failures >= 1, 5)  # the control above succeeded
    assert not r.ok and r.reason == Reason.TLS, (r.reason, r.message)
    assert took < 2.0 + MARGIN
    assert "associate" not in r.phases


def test_verification_off_is_a_logged_choice(
    tls_material: TLSMaterial, caplog: pytest.LogCaptureFixture
) -> None:
    # Off by choice only: a warning names the target when the plan is built (at start-up and
    # reload), and only then does a certificate from an unknown CA pass.
    with hp.ScriptServer(hp.echo_ok, ssl_context=tls_material.good().server_context()) as s:
        wrong_ca = {"caFile": str(tls_material.other_ca_file)}
        with caplog.at_level("WARNING", logger="agent.targets"):
            strict = plan(tls_target(s.port, wrong_ca))
            assert not caplog.records
            lax = plan(tls_target(s.port, wrong_ca | {"verify": False}))
        assert run_probe(strict, "dicom_echo").reason == Reason.TLS
        assert run_probe(lax, "dicom_echo").ok
    [rec] = caplog.records
    assert rec.levelname == "WARNING" and "tls" in rec.getMessage()
    assert "verification is OFF" in rec.getMessage()
