"""failover: a primary/secondary pair of real servers on loopback, stopped and started again on
the same port, through the daemon's result path (run_probe → Pipeline → evaluator + metrics)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from agent.config.schema import OTLPConfig
from agent.evaluator import CheckStatus, HealthState
from agent.otlp import OTLPExporter, resolve_settings
from probes.base import Facts, Reason
from tests.helpers import LOOPBACK
from tests.helpers.config import plan, target
from tests.helpers.dicom_scp import DicomSCP
from tests.helpers.http_servers import HTTPPeer, Route
from tests.helpers.observe import info, observation
from tests.helpers.otlp_receiver import GrpcReceiver
from tests.helpers.peers import silent_listener
from tests.helpers.pipeline import Harness
from tests.helpers.promserver import find_promtool

REPO = Path(__file__).resolve().parent.parent

TID = "pacs-pair"


@contextmanager
def http_pair() -> Iterator[tuple[HTTPPeer, HTTPPeer, dict[str, Any]]]:
    with (
        HTTPPeer({"/health": Route(body=b'{"role":"primary"}')}) as primary,
        HTTPPeer({"/health": Route(body=b'{"role":"secondary"}')}) as secondary,
    ):
        t = target(
            TID,
            only=("failover",),
            timeout_ms=3000,
            sectra={
                "primaryEndpoint": primary.base_url,
                "secondaryEndpoint": secondary.base_url,
                "healthCheckEndpoint": "/health",
                "failoverTimeout": 1000,
            },
        )
        yield primary, secondary, t
        primary.stop()
        secondary.stop()


@contextmanager
def dicom_pair() -> Iterator[tuple[DicomSCP, DicomSCP, dict[str, Any]]]:
    with DicomSCP(ae_title="PACS_A") as primary, DicomSCP(ae_title="PACS_B") as secondary:
        t = target(
            TID,
            port=primary.port,
            called_aet="PACS_A",
            only=("failover",),
            timeout_ms=3000,
            config={
                "secondaryHosts": [
                    {"host": "127.0.0.1", "port": secondary.port, "calledAET": "PACS_B"}
                ]
            },
        )
        yield primary, secondary, t
        primary.stop()
        secondary.stop()


PAIRS = {"http": http_pair, "dicom": dicom_pair}


def active(h: Harness) -> dict[str, float | None]:
    return {
        ep: h.value("pacs_failover_active", target=TID, endpoint=ep)
        for ep in ("primary", "secondary")
    }


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_failover_cycle(kind: str) -> None:
    with PAIRS[kind]() as (primary, secondary, t):
        p = plan(t)
        assert list(p.probes) == ["failover"]
        h = Harness(p)

        # 1. primary up: PASS, serving from the primary
        r, check = h.run(TID, "failover")
        assert r.ok and r.warning is None, r.message
        assert r.facts == Facts(
            active_endpoint="primary", endpoints_up={"primary": True, "secondary": True}
        )
        assert {"primary", "secondary"} <= set(r.phases)
        assert check.status == CheckStatus.PASS
        assert h.target_state(TID) == HealthState.HEALTHY
        assert active(h) == {"primary": 1.0, "secondary": 0.0}

        # 2. primary stopped: still served, by the secondary → WARN, target DEGRADED
        port = primary.port
        primary.stop()
        r, check = h.run(TID, "failover")
        assert r.ok, r.message
        assert r.facts.active_endpoint == "secondary"
        assert check.status == CheckStatus.WARN
        assert "running on secondary" in check.message
        assert h.target_state(TID) == HealthState.DEGRADED
        assert active(h) == {"primary": 0.0, "secondary": 1.0}
        assert h.value("pacs_check_status", target=TID, probe="failover", status="WARN") == 1.0
        assert h.value("pacs_target_health", target=TID, state="DEGRADED") == 1.0

        # 3. primary back on the same port: back to primary, PASS, HEALTHY
        primary.start()
        assert primary.port == port
        r, check = h.run(TID, "failover")
        assert r.ok and r.facts.active_endpoint == "primary", r.message
        assert check.status == CheckStatus.PASS
        assert h.target_state(TID) == HealthState.HEALTHY
        assert active(h) == {"primary": 1.0, "secondary": 0.0}

        # 4. both down: a failure; FAIL once failureThreshold (3) runs in a row failed
        primary.stop()
        secondary.stop()
        statuses = []
        for _ in range(3):
            r, check = h.run(TID, "failover")
            assert not r.ok
            assert r.reason == Reason.REFUSED, r.message
            assert "all endpoints down" in r.message
            statuses.append(check.status)
        assert statuses == [CheckStatus.WARN, CheckStatus.WARN, CheckStatus.FAIL]
        assert h.target_state(TID) == HealthState.UNHEALTHY
        assert active(h) == {"primary": 0.0, "secondary": 0.0}
        assert (
            h.value("pacs_probe_failures_total", target=TID, probe="failover", reason="refused")
            == 3.0
        )


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_dead_standby_is_seen_while_the_primary_serves(kind: str) -> None:
    with PAIRS[kind]() as (_primary, secondary, t):
        h = Harness(plan(t))
        secondary.stop()
        r, check = h.run(TID, "failover")
    assert r.ok, r.message
    assert r.facts == Facts(
        active_endpoint="primary", endpoints_up={"primary": True, "secondary": False}
    )
    assert "secondary down" in r.message
    # still served, but the redundancy is gone: WARN, target DEGRADED, before the primary fails
    assert check.status == CheckStatus.WARN
    assert check.message.startswith("no standby: secondary ")
    assert h.target_state(TID) == HealthState.DEGRADED
    assert active(h) == {"primary": 1.0, "secondary": 0.0}
    assert endpoint_up(h) == {"primary": 1.0, "secondary": 0.0}


def endpoint_up(h: Harness) -> dict[str, float | None]:
    return {
        ep: h.value("pacs_failover_endpoint_up", target=TID, endpoint=ep)
        for ep in ("primary", "secondary")
    }


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_round_robin_needs_both_nodes(kind: str) -> None:
    with PAIRS[kind]() as (primary, secondary, t):
        t.setdefault("sectraConfig", {})["loadBalancing"] = "ROUND_ROBIN"
        h = Harness(plan(t))
        r, check = h.run(TID, "failover")
        assert r.ok and r.warning is None, r.message
        assert r.message == "all endpoints serving (round robin)"
        assert check.status == CheckStatus.PASS
        assert endpoint_up(h) == {"primary": 1.0, "secondary": 1.0}
        # either node down is DEGRADED: the other one carries all the load
        for stopped in (secondary, primary):
            stopped.stop()
            r, check = h.run(TID, "failover")
            assert r.ok, r.message
            assert check.status == CheckStatus.WARN
            assert check.message.startswith("round robin degraded: ")
            assert h.target_state(TID) == HealthState.DEGRADED
            down = "primary" if stopped is primary else "secondary"
            assert endpoint_up(h)[down] == 0.0
            stopped.start()
        r, check = h.run(TID, "failover")
        assert check.status == CheckStatus.PASS
        # both down: a failure, every endpoint 0
        primary.stop()
        secondary.stop()
        r, _ = h.run(TID, "failover")
        assert not r.ok
        assert endpoint_up(h) == {"primary": 0.0, "secondary": 0.0}


def test_failing_primary_status_fails_over_to_the_secondary() -> None:
    """Primary answering 503 (up but unhealthy) is not serving either."""
    with http_pair() as (primary, _secondary, t):
        primary.routes["/health"] = Route(status=503)
        h = Harness(plan(t))
        r, check = h.run(TID, "failover")
    assert r.ok and r.facts.active_endpoint == "secondary"
    assert "HTTP 503" in (r.warning or "")
    assert check.status == CheckStatus.WARN


# -- three or more DICOM nodes -------------------------------------------------------------------

NODES3 = ("primary", "secondary", "secondary2")


def active3(h: Harness) -> dict[str, float | None]:
    return {ep: h.value("pacs_failover_active", target=TID, endpoint=ep) for ep in NODES3}


def assert_running_on_secondary_fires(
    exposition: bytes, endpoints: list[str], tmp_path: Path
) -> None:
    """promtool evaluates the shipped PacsRunningOnSecondary rule over `exposition`'s
    pacs_failover_active series (held for 10 minutes): it fires for exactly `endpoints`."""
    series = []
    for fam in text_string_to_metric_families(exposition.decode()):
        if fam.name != "pacs_failover_active":
            continue
        for s in fam.samples:
            labels = {"job": "pacs-health-agent", "instance": "agent-1:9887", **s.labels}
            sel = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            series.append({"series": f"pacs_failover_active{{{sel}}}", "values": f"{s.value:g}x10"})
    assert series, "no pacs_failover_active series exported"
    expected = [
        {
            "labels": (
                'ALERTS{alertname="PacsRunningOnSecondary", alertstate="firing", '
                f'endpoint="{ep}", instance="agent-1:9887", job="pacs-health-agent", '
                f'severity="ticket", target="{TID}"}}'
            ),
            "value": 1,
        }
        for ep in endpoints
    ]
    unit = {
        "rule_files": [str(REPO / "alerts" / "pacs-health-agent.alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": 'ALERTS{alertname="PacsRunningOnSecondary"}',
                        "eval_time": "8m",
                        "exp_samples": expected,
                    }
                ],
            }
        ],
    }
    f = tmp_path / "unit.yml"
    f.write_text(yaml.safe_dump(unit))
    out = subprocess.run(
        [find_promtool(), "test", "rules", str(f)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_third_dicom_node_serving_is_exported_and_raises_the_alert(tmp_path: Path) -> None:
    """Three real pynetdicom SCPs; with the first two stopped the third (`secondary2`) serves:
    Prometheus and OTLP both say so, and PacsRunningOnSecondary fires on that exposition."""
    with (
        DicomSCP(ae_title="PACS_A") as a,
        DicomSCP(ae_title="PACS_B") as b,
        DicomSCP(ae_title="PACS_C") as c,
    ):
        t = target(
            TID,
            port=a.port,
            called_aet="PACS_A",
            only=("failover",),
            timeout_ms=3000,
            config={
                "secondaryHosts": [
                    {"host": "127.0.0.1", "port": b.port, "calledAET": "PACS_B"},
                    {"host": "127.0.0.1", "port": c.port, "calledAET": "PACS_C"},
                ]
            },
        )
        h = Harness(plan(t))
        r, check = h.run(TID, "failover")
        assert r.facts == Facts(
            active_endpoint="primary", endpoints_up=dict.fromkeys(NODES3, True)
        ), r.message
        assert active3(h) == {"primary": 1.0, "secondary": 0.0, "secondary2": 0.0}
        assert_running_on_secondary_fires(h.exporter.render(), [], tmp_path)

        a.stop()
        b.stop()
        r, check = h.run(TID, "failover")
        assert r.ok and r.facts.active_endpoint == "secondary2", r.message
        assert r.facts.endpoints_up == {"primary": False, "secondary": False, "secondary2": True}
        assert {"primary", "secondary", "secondary2"} <= set(r.phases)
        assert check.status == CheckStatus.WARN
        assert "running on secondary2" in check.message
        assert h.target_state(TID) == HealthState.DEGRADED
        assert active3(h) == {"primary": 0.0, "secondary": 0.0, "secondary2": 1.0}
        assert_running_on_secondary_fires(h.exporter.render(), ["secondary2"], tmp_path)

        # the same result through the OTLP exporter, to a real gRPC receiver
        with GrpcReceiver() as rx:
            s = resolve_settings(
                OTLPConfig(endpoint=rx.endpoint, protocol="grpc", interval=60000), {}
            )
            assert s is not None
            ox = OTLPExporter(s)
            ox.add_target(info(TID, ["failover"]))
            ox.observe(observation(r, {}, check.status, target_state=HealthState.DEGRADED))
            ox.shutdown()
            pts = [p for p in rx.points() if p.name == "pacs.failover.active"]
        assert {p.attributes["endpoint"]: p.value for p in pts} == {
            "primary": 0,
            "secondary": 0,
            "secondary2": 1,
        }

        # all three down: every node's series reads 0, none is dropped
        c.stop()
        r, check = h.run(TID, "failover")
        assert not r.ok and r.reason == Reason.REFUSED
        assert active3(h) == {"primary": 0.0, "secondary": 0.0, "secondary2": 0.0}


# -- a hung primary and the failoverTimeout split -------------------------------------------------
#
# A hung primary accepts the connection and never answers. The run's timeout (4 s) is split so
# that each later endpoint keeps `failoverTimeout` (1 s): the primary gets 3 s, the secondary 1 s.
# Without failoverTimeout the split is even (2 s each). A secondary answering after 1.5 s is
# therefore served without failoverTimeout and not served with it: the split decides the outcome.

HUNG_TIMEOUT_MS = 4000
FAILOVER_MS = 1000
SLOW_SECONDARY_S = 1.5


@contextmanager
def slow_echo_scp(delay: float, ae_title: str = "PACS_B") -> Iterator[int]:
    """pynetdicom's own Verification SCP answering each C-ECHO after `delay` seconds."""
    released = threading.Event()

    def on_echo(event: Any) -> int:
        released.wait(delay)  # the peer's behaviour (a slow node), bounded; set at shutdown
        return 0x0000

    ae = AE(ae_title=ae_title)
    ae.add_supported_context(Verification)
    ae.require_called_aet = False
    server = ae.start_server((LOOPBACK, 0), block=False, evt_handlers=[(evt.EVT_C_ECHO, on_echo)])
    try:
        yield int(server.server_address[1])
    finally:
        released.set()
        server.shutdown()


@contextmanager
def hung_pair(
    kind: str, secondary_delay: float, failover_ms: int | None
) -> Iterator[dict[str, Any]]:
    """A hung primary (accepts, never answers) and a secondary answering after `secondary_delay`."""
    extra = {} if failover_ms is None else {"failoverTimeout": failover_ms}
    with silent_listener() as hung:
        if kind == "http":
            route = Route(body=b'{"role":"secondary"}', first_byte_delay=secondary_delay)
            with HTTPPeer({"/health": route}) as secondary:
                yield target(
                    TID,
                    only=("failover",),
                    timeout_ms=HUNG_TIMEOUT_MS,
                    sectra={
                        "primaryEndpoint": f"http://{LOOPBACK}:{hung}",
                        "secondaryEndpoint": secondary.base_url,
                        "healthCheckEndpoint": "/health",
                        **extra,
                    },
                )
        else:
            with slow_echo_scp(secondary_delay) as port:
                yield target(
                    TID,
                    port=hung,
                    called_aet="PACS_A",
                    only=("failover",),
                    timeout_ms=HUNG_TIMEOUT_MS,
                    sectra=extra or None,
                    config={
                        "secondaryHosts": [{"host": LOOPBACK, "port": port, "calledAET": "PACS_B"}]
                    },
                )


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_hung_primary_fails_over_within_the_run_timeout(kind: str) -> None:
    with hung_pair(kind, 0.0, FAILOVER_MS) as t:
        h = Harness(plan(t))
        t0 = time.monotonic()
        r, check = h.run(TID, "failover")
        wall = time.monotonic() - t0
    assert r.ok and r.facts == Facts(
        active_endpoint="secondary", endpoints_up={"primary": False, "secondary": True}
    ), r.message
    assert check.status == CheckStatus.WARN
    assert "running on secondary" in (r.warning or "")
    # the primary waited for its whole share (run timeout minus one failoverTimeout), no more
    share = (HUNG_TIMEOUT_MS - FAILOVER_MS) / 1000
    assert share - 0.05 <= r.phases["primary"] <= share + 0.5, r.phases
    assert wall <= HUNG_TIMEOUT_MS / 1000 + 0.5
    assert active(h) == {"primary": 0.0, "secondary": 1.0}


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_failover_timeout_split_decides_whether_a_slow_secondary_serves(kind: str) -> None:
    # 1. with failoverTimeout the secondary has 1 s and answers after 1.5 s: all down
    with hung_pair(kind, SLOW_SECONDARY_S, FAILOVER_MS) as t:
        h = Harness(plan(t))
        r, _ = h.run(TID, "failover")
    assert not r.ok, r.message
    assert r.reason == Reason.TIMEOUT, r.message  # the primary's reason: it hung
    assert "all endpoints down" in r.message
    assert r.phases["secondary"] <= FAILOVER_MS / 1000 + 0.3, r.phases

    # 2. the same peers without failoverTimeout: an even split gives the secondary 2 s, it serves
    with hung_pair(kind, SLOW_SECONDARY_S, None) as t:
        h = Harness(plan(t))
        r, check = h.run(TID, "failover")
    assert r.ok and r.facts.active_endpoint == "secondary", r.message
    assert check.status == CheckStatus.WARN
    half = HUNG_TIMEOUT_MS / 2000
    assert half - 0.05 <= r.phases["primary"] <= half + 0.3, r.phases
