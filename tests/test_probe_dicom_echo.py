"""dicom_echo against real peers on loopback: each outcome has its reason."""

from __future__ import annotations

import socket
import time

import pytest

from agent.evaluator import Thresholds
from agent.runner import run_probe
from agent.targets import RetrySettings, TargetPlan
from probes.base import Reason
from probes.dicom_echo import DicomEchoProbe
from probes.specs import DicomEndpoint
from tests.helpers.peers import LOOPBACK, echo_scp, silent_listener
from tests.helpers.ports import refused_port


def plan_for(port: int, timeout: float = 2.0, host: str = LOOPBACK) -> TargetPlan:
    ep = DicomEndpoint(host, port, "PACS_HEALTH", "SECTRA_PACS")
    return TargetPlan(
        id="t",
        name="t",
        interval=10,
        timeout=timeout,
        retry=RetrySettings(),
        thresholds=Thresholds(),
        probes={"dicom_echo": DicomEchoProbe(ep)},
    )


def test_accepting_scp_succeeds_with_all_phases() -> None:
    with echo_scp() as port:
        r = run_probe(plan_for(port), "dicom_echo")
    assert r.ok and r.reason is None, r.message
    assert set(r.phases) == {"connect", "associate", "dimse", "release"}
    assert all(v > 0 for v in r.phases.values())
    assert r.duration == pytest.approx(sum(r.phases.values()))


def test_non_success_status_is_dimse_status() -> None:
    with echo_scp(status=0x0110) as port:
        r = run_probe(plan_for(port), "dicom_echo")
    assert not r.ok and r.reason == Reason.DIMSE_STATUS
    assert "0x0110" in r.message


def test_rejected_association() -> None:
    with echo_scp("reject") as port:
        r = run_probe(plan_for(port), "dicom_echo")
    assert not r.ok and r.reason == Reason.REJECTED


def test_aborted_association() -> None:
    with echo_scp("abort") as port:
        r = run_probe(plan_for(port), "dicom_echo")
    assert not r.ok and r.reason == Reason.ABORTED


def test_closed_port_is_refused() -> None:
    with refused_port() as port:  # bound, not listening: nothing else can take it meanwhile
        r = run_probe(plan_for(port), "dicom_echo")
    assert not r.ok and r.reason == Reason.REFUSED


def test_unresolvable_name_is_dns() -> None:
    r = run_probe(plan_for(11112, host="pacs.does-not-exist.invalid"), "dicom_echo")
    assert not r.ok and r.reason == Reason.DNS


@pytest.mark.timing
@pytest.mark.parametrize("reads", [False, True])
def test_listener_that_never_answers_times_out_within_the_deadline(reads: bool) -> None:
    stats: dict[str, int] = {}
    took: list[float] = []
    with silent_listener(read=reads, stats=stats) as port:
        for _ in range(3):
            t0 = time.monotonic()
            r = run_probe(plan_for(port, timeout=0.5), "dicom_echo")
            took.append(time.monotonic() - t0)
            assert not r.ok and r.reason == Reason.TIMEOUT
    # never before the deadline; after it by at most 0.3 s in 2 runs of 3 (a preempted run is
    # the host's doing; a probe overrunning its deadline overruns in every run)
    assert min(took) >= 0.45, took
    assert sum(t < 0.5 + 0.3 for t in took) >= 2, took
    assert "connect" in r.phases and "associate" not in r.phases  # a failed phase is not timed
    if reads:  # the listener really read the A-ASSOCIATE-RQ (PDU type 1, 68+ bytes)
        assert stats["received"] >= 3 * 74, stats  # read before the listener was closed
    else:
        assert stats["received"] == 0


def test_probe_socket_has_tcp_nodelay(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = socket.socket.connect_ex  # the probe connects non-blocking (probes.net.waits)

    def spy(self: socket.socket, addr: object) -> int:
        seen.append(self.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return real(self, addr)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect_ex", spy)
    with echo_scp() as port:
        assert run_probe(plan_for(port), "dicom_echo").ok
    assert seen and all(v == 1 for v in seen)


def test_probe_object_is_reusable_and_does_not_leak_sockets() -> None:
    import os

    with echo_scp() as port:
        p = DicomEchoProbe(DicomEndpoint(LOOPBACK, port, "A", "B"))
        plan = plan_for(port)
        plan.probes["dicom_echo"] = p
        run_probe(plan, "dicom_echo")
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            assert run_probe(plan, "dicom_echo").ok
        after = len(os.listdir("/proc/self/fd"))
    assert after <= before + 2
