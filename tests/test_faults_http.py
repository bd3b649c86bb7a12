"""HTTP faults the agent must survive, each against a real server on 127.0.0.1.

The slow-loris server is the interesting one: it drips its status line and headers one byte every
200 ms, so every socket read succeeds and a per-read timeout never fires. The probe must still end
at its deadline, not when the server is done dripping (≈ 30 s here).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from agent.evaluator import CheckStatus, HealthState
from agent.runner import run_probe
from probes.base import Reason
from tests.helpers import hostile_peers as hp
from tests.helpers.config import plan, target
from tests.helpers.peers import wait_until
from tests.helpers.pipeline import Harness
from tests.helpers.ports import refused_port, syn_blackhole
from tests.helpers.tls import TLSMaterial
from tests.test_faults_dicom import negotiated_version, old_protocol_context

MARGIN = 0.5
FAILURE_THRESHOLD = 3


def api_target(
    url: str, timeout_ms: int, tls: dict[str, Any] | None = None, tid: str = "api"
) -> dict[str, Any]:
    return target(
        tid,
        only=("api_ping",),
        timeout_ms=timeout_ms,
        sectra={"apiEndpoint": url, "healthCheckEndpoint": "/health"},
        config={"tls": tls} if tls else None,
        health={"failureThreshold": FAILURE_THRESHOLD},
    )


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


# mode, reason, deadline (s)
FAULTS = [
    ("refused", Reason.REFUSED, 2.0),
    ("connect_timeout", Reason.CONNECT_TIMEOUT, 1.0),
    ("read_never_answer", Reason.TIMEOUT, 0.6),
    ("slow_loris", Reason.TIMEOUT, 0.6),
    ("http_500", Reason.HTTP_STATUS, 2.0),
    ("endless_chunked", Reason.INVALID_RESPONSE, 5.0),  # the 1 MiB cap ends it, long before
    ("endless_chunked_slow", Reason.TIMEOUT, 0.6),  # too slow for the cap: the deadline ends it
]


@pytest.mark.timing
@pytest.mark.parametrize(("mode", "reason", "deadline"), FAULTS, ids=[f[0] for f in FAULTS])
def test_http_fault_reason_deadline_and_state(mode: str, reason: Reason, deadline: float) -> None:
    with peer(mode) as (port, server):
        p = plan(api_target(f"http://127.0.0.1:{port}", int(deadline * 1000)))
        h = Harness(p)
        for n in range(1, FAILURE_THRESHOLD + 1):
            t0 = time.monotonic()
            r, check = h.run("api", "api_ping")
            took = time.monotonic() - t0
            assert not r.ok and r.reason == reason, (n, r.reason, r.message)
            assert took < deadline + MARGIN, (n, took)
            if mode == "endless_chunked":
                assert took < 2.0, took  # ended by the size cap, not by the deadline
            expected = CheckStatus.FAIL if n == FAILURE_THRESHOLD else CheckStatus.WARN
            assert check.status == expected, n
        assert h.target_state("api") == HealthState.UNHEALTHY
        assert (
            h.value(
                "pacs_probe_failures_total", target="api", probe="api_ping", reason=reason.value
            )
            == FAILURE_THRESHOLD
        )
        if server is not None:
            assert server.errors == []
            if mode in (
                "slow_loris",
                "endless_chunked",
                "endless_chunked_slow",
                "read_never_answer",
            ):
                # the agent hung up on each of them mid-answer (the slow-loris drip alone would
                # last len(SLOW_LORIS_RESPONSE) × 200 ms ≈ 30 s): nothing drips into a dead probe
                wait_until(lambda: server.peer_closed >= FAILURE_THRESHOLD, 5)


def test_unresolvable_name_is_dns_within_the_deadline() -> None:
    p = plan(api_target("http://api.does-not-exist.invalid:8080", 2000))
    t0 = time.monotonic()
    r = run_probe(p, "api_ping")
    assert time.monotonic() - t0 < 2.0 + MARGIN
    assert not r.ok and r.reason == Reason.DNS, (r.reason, r.message)


# -- HTTPS handshake failures ---------------------------------------------------------------------


def test_https_good_certificate_is_the_control(tls_material: TLSMaterial) -> None:
    with hp.ScriptServer(hp.http_ok, ssl_context=tls_material.good().server_context()) as s:
        r = run_probe(
            plan(
                api_target(
                    f"https://127.0.0.1:{s.port}", 2000, {"caFile": str(tls_material.ca_file)}
                )
            ),
            "api_ping",
        )
    assert r.ok, r.message
    assert "tls" in r.phases and r.tls is not None


@pytest.mark.parametrize("case", ["wrong_ca", "expired", "wrong_hostname", "old_protocol"])
def test_https_handshake_failures(tls_material: TLSMaterial, case: str) -> None:
    ca = str(tls_material.ca_file)
    client: dict[str, Any] = {"caFile": ca}
    if case == "wrong_ca":
        ctx, client = (
            tls_material.good().server_context(),
            {"caFile": str(tls_material.other_ca_file)},
        )
    elif case == "expired":
        ctx = tls_material.expired().server_context()
    elif case == "wrong_hostname":
        ctx = tls_material.for_other_host().server_context()
    else:  # server offers TLS 1.0/1.1 only, the agent requires ≥ 1.2 (its default)
        ctx = old_protocol_context(tls_material.good())
    with hp.ScriptServer(hp.http_ok, ssl_context=ctx) as s:
        if case == "old_protocol":
            assert negotiated_version(s.port, ca) in ("TLSv1", "TLSv1.1")
        t0 = time.monotonic()
        r = run_probe(plan(api_target(f"https://127.0.0.1:{s.port}", 2000, client)), "api_ping")
        took = time.monotonic() - t0
        wait_until(lambda: s.handshake_failures >= 1, 5)
    assert not r.ok and r.reason == Reason.TLS, (r.reason, r.message)
    assert took < 2.0 + MARGIN
    assert "first_byte" not in r.phases


def test_https_verification_off_warns_even_without_enable_tls(
    tls_material: TLSMaterial, caplog: pytest.LogCaptureFixture
) -> None:
    # config.tls also governs HTTPS probes; enableTLS (DICOM over TLS) is off here.
    with caplog.at_level("WARNING", logger="agent.targets"):
        plan(api_target("https://127.0.0.1:9", 1000, {"verify": False}, tid="lax-https"))
        plan(api_target("https://127.0.0.1:9", 1000, {"verifyHostname": False}, tid="lax-name"))
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("lax-https" in m and "certificate verification is OFF" in m for m in messages)
    assert any("lax-name" in m and "host name verification is OFF" in m for m in messages)
