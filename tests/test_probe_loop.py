"""The probe loop: many runs on one thread, each parked while it waits, none holding up another.

Every wait a probe makes (connect, send, reply, TLS handshake, name lookup, retry pause, a
target's connection limit) goes through probes.net.waits. On the loop, a wait that blocked the
thread would stall every other run: these tests put a run that waits long beside runs that do
not, and check the others finish first, on the loop's one thread.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from agent.runner import run_probe
from agent.scheduler import BATCH_MIN_RATE, BATCH_S, ProbeScheduler, batch_window
from agent.targets import ConnectionLimit, RetrySettings, TargetPlan
from probes.base import ProbeResult, Reason
from probes.net.waits import READ, ProbeLoop, current_loop, wait_fd
from tests.helpers.agent_fixtures import running_agent, scrape, total
from tests.helpers.config import plan, target
from tests.helpers.dicom_scp import DicomSCP, study
from tests.helpers.http_servers import HTTPPeer, Route
from tests.helpers.peers import LOOPBACK, echo_scp, free_port, silent_listener, wait_until
from tests.helpers.tls import TLSMaterial
from tests.test_probe_dicom_echo import plan_for

LOOP_THREAD = "test-probe-loop"


def on_loop(*runs: Callable[[], Any]) -> tuple[list[Any], list[int], set[str]]:
    """Each callable as a run on one ProbeLoop: (results, the order they finished in, the names
    of the threads they ran on)."""
    results: dict[int, Any] = {}
    order: list[int] = []
    threads: set[str] = set()
    done = threading.Event()
    loop = ProbeLoop(lambda: None)

    def run(i: int, fn: Callable[[], Any]) -> None:
        threads.add(threading.current_thread().name)
        try:
            results[i] = fn()
        except Exception as e:  # noqa: BLE001 - handed to the test to assert on
            results[i] = e
        order.append(i)
        if len(order) == len(runs):
            done.set()

    def start_all() -> None:
        for i, fn in enumerate(runs):
            loop.spawn(run, i, fn)

    loop.call_soon(start_all)
    loop.start(LOOP_THREAD)
    try:
        assert done.wait(30), f"runs finished: {order}"
    finally:
        loop.stop()
        assert loop.thread is not None
        loop.thread.join(5)
    return [results[i] for i in range(len(runs))], order, threads


def test_a_silent_peer_parks_only_its_own_run() -> None:
    with echo_scp() as good, silent_listener() as hung:
        runs = [lambda: run_probe(plan_for(hung, timeout=1.5), "dicom_echo")]
        runs += [lambda: run_probe(plan_for(good), "dicom_echo") for _ in range(5)]
        results, order, threads = on_loop(*runs)
    assert threads == {LOOP_THREAD}
    assert order[-1] == 0, order  # the five answered runs did not wait for the silent one
    assert all(r.ok for r in results[1:]), [r.message for r in results[1:]]
    silent: ProbeResult = results[0]
    assert not silent.ok and silent.reason == Reason.TIMEOUT, silent.message


def test_refused_connection_reports_as_on_a_thread() -> None:
    port = free_port()  # nothing listens there
    on_thread = run_probe(plan_for(port), "dicom_echo")
    (parked,), _, _ = on_loop(lambda: run_probe(plan_for(port), "dicom_echo"))
    assert not parked.ok
    assert (parked.reason, parked.message) == (on_thread.reason, on_thread.message)


def test_runs_of_one_target_pass_its_connection_limit_between_them() -> None:
    # A blocking acquire on the loop would wait for a token the other run, parked on the same
    # thread, could never give back: the second run would fail with "connection limit busy".
    with echo_scp() as port:
        p = replace(plan_for(port), limiter=ConnectionLimit(1))
        results, _, _ = on_loop(*(lambda: run_probe(p, "dicom_echo") for _ in range(3)))
    assert [r.ok for r in results] == [True] * 3, [r.message for r in results]


def test_a_retry_pause_parks_only_its_run() -> None:
    refused = free_port()
    retrying = replace(
        plan_for(refused, timeout=5.0),
        retry=RetrySettings(max_attempts=2, initial_delay=1.0, max_delay=1.0),
    )
    with echo_scp() as good:
        results, order, _ = on_loop(
            lambda: run_probe(retrying, "dicom_echo"),
            lambda: run_probe(plan_for(good), "dicom_echo"),
        )
    assert order == [1, 0]
    assert results[1].ok
    assert not results[0].ok and results[0].attempts == 2


def test_a_name_lookup_waits_on_the_loop() -> None:
    with echo_scp() as port:
        (r,), _, _ = on_loop(lambda: run_probe(plan_for(port, host="localhost"), "dicom_echo"))
    assert r.ok, r.message
    assert "dns" in r.phases


def test_tls_on_the_loop_dicom_and_https(tls_material: TLSMaterial) -> None:
    leaf = tls_material.good()
    ca = str(tls_material.ca_file)
    with DicomSCP([study("CANARY001")], ssl_context=leaf.server_context()) as scp, \
            HTTPPeer({"/health": Route()}, ssl_context=leaf.server_context()) as api:
        dicom_tls = target("dicom-tls", port=scp.port, only=("dicom_echo",),
                           config={"enableTLS": True, "tls": {"caFile": ca}})
        https = target("https", only=("api_ping",), config={"tls": {"caFile": ca}},
                       sectra={"apiEndpoint": api.base_url, "healthCheckEndpoint": "/health"})
        results, _, _ = on_loop(
            lambda: run_probe(plan(dicom_tls), "dicom_echo"),
            lambda: run_probe(plan(https), "api_ping"),
        )
    for r in results:
        assert r.ok, r.message
        assert "tls" in r.phases and r.tls is not None and r.tls.leaf_not_after == leaf.not_after


class _Plan:
    """What ProbeScheduler reads of a TargetPlan."""

    def __init__(self, tid: str, probe: str, interval: float) -> None:
        self.id, self.interval, self.timeout, self.probes = tid, interval, interval, {probe: None}


def test_scheduler_runs_cooperative_probes_on_its_loop_and_others_on_workers() -> None:
    seen: dict[str, set[tuple[str, bool]]] = {"loop": set(), "thread": set()}

    def run(p: TargetPlan, probe: str) -> None:
        seen[probe].add((threading.current_thread().name, current_loop() is not None))

    plans: list[Any] = [_Plan("a", "loop", 0.05), _Plan("b", "thread", 0.05)]
    by_id = {p.id: p for p in plans}
    sched = ProbeScheduler(
        run, plan=by_id.get, on_missed=lambda t, p: None, on_lateness=lambda s: None,
        max_workers=4, cooperative=lambda probe: probe == "loop",
    )
    sched.set_plans(plans)
    sched.start()
    try:
        wait_until(lambda: all(seen.values()), 5)
    finally:
        sched.shutdown()
    assert seen["loop"] == {("scheduler", True)}
    assert seen["thread"] == {("probe-worker", False)}


def test_a_parked_run_still_going_at_its_next_slot_is_not_started_twice() -> None:
    release_r, release_w = socket.socketpair()
    calls: list[str] = []
    missed: list[tuple[str, str]] = []

    def run(p: TargetPlan, probe: str) -> None:
        calls.append(probe)
        if len(calls) == 1:  # the first run parks until released
            assert wait_fd(release_r, READ, 10)

    p: Any = _Plan("t", "p", 0.1)
    sched = ProbeScheduler(
        run, plan=lambda tid: p if tid == "t" else None,
        on_missed=lambda t, q: missed.append((t, q)), on_lateness=lambda s: None,
        max_workers=4, cooperative=lambda probe: True,
    )
    sched.set_plans([p])
    sched.start()
    try:
        wait_until(lambda: len(missed) >= 3, 5)  # slots passing while the run is parked
        assert calls == ["p"], calls
        release_w.send(b"x")
        wait_until(lambda: len(calls) >= 3, 5)  # the loop went on; the job runs again
    finally:
        sched.shutdown()
        release_r.close()
        release_w.close()


def test_the_daemon_runs_its_probes_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.service

    ran_on: set[tuple[str, bool]] = set()
    real = agent.service.run_probe

    def spy(*args: Any, **kwargs: Any) -> ProbeResult:
        ran_on.add((threading.current_thread().name, current_loop() is not None))
        return real(*args, **kwargs)

    monkeypatch.setattr(agent.service, "run_probe", spy)
    with echo_scp() as port:
        targets = [
            {"id": f"t{i}", "config": {"host": LOOPBACK, "port": port, "calledAET": "SECTRA_PACS"},
             "healthCheck": {"interval": 500, "timeout": 400},
             "probes": {"dicom_find": {"enabled": False}}}
            for i in range(5)
        ]
        with running_agent(targets, {"selfProbe": {"enabled": False}}) as svc:
            wait_until(lambda: total(scrape(svc), "pacs_probe_runs_total") >= 20, 10)
    assert ran_on == {("scheduler", True)}


def test_batch_window_starts_at_the_rate_where_rounds_pay() -> None:
    def plans(n: int, interval: float) -> list[Any]:
        return [_Plan(f"t{i}", "p", interval) for i in range(n)]

    assert batch_window(plans(10, 30.0)) == 0.0  # a small site: runs start on their slot
    assert batch_window(plans(int(BATCH_MIN_RATE * 30), 30.0)) == BATCH_S
    assert batch_window(plans(5000, 30.0)) == BATCH_S


def test_at_scale_runs_start_in_rounds() -> None:
    starts: list[float] = []
    plans: list[Any] = [_Plan(f"t{i}", "p", 1.0) for i in range(200)]  # 200 runs/s
    by_id = {p.id: p for p in plans}
    sched = ProbeScheduler(
        lambda p, probe: starts.append(time.monotonic()), plan=by_id.get,
        on_missed=lambda t, p: None, on_lateness=lambda s: None, max_workers=64,
        cooperative=lambda probe: True,
    )
    sched.set_plans(plans)
    sched.start()
    try:
        wait_until(lambda: len(starts) >= 300, 10)
    finally:
        sched.shutdown()
    runs = starts[:300]
    # a round's runs start within microseconds (the run is a list append); one by one, 200 slots
    # a second are ~5 ms apart, most more than 2 ms: ~200 rounds in 1.5 s rather than ~30
    rounds = 1 + sum(1 for a, b in itertools.pairwise(runs) if b - a > 0.002)
    assert rounds <= (runs[-1] - runs[0]) / BATCH_S + 2, rounds
    assert len(runs) / rounds >= 5


def test_stopping_the_loop_ends_parked_runs_so_their_sockets_close() -> None:
    r, w = socket.socketpair()
    cleaned: list[str] = []
    parked = threading.Event()

    def run() -> None:
        try:
            parked.set()
            wait_fd(r, READ, 60)  # nothing is ever written: parked until the loop stops
        finally:
            r.close()
            cleaned.append("closed")

    loop = ProbeLoop(lambda: None)
    loop.call_soon(lambda: loop.spawn(run))
    loop.start(LOOP_THREAD)
    assert parked.wait(5)
    loop.stop()
    assert loop.thread is not None
    loop.thread.join(5)
    assert not loop.thread.is_alive()
    assert cleaned == ["closed"] and r.fileno() == -1
    w.close()


def test_no_delayed_ack_stall_on_the_loop() -> None:
    # the loop's waits re-arm TCP_QUICKACK as a thread's do (tests/test_timing_truth.py has
    # the control that shows the stall without it)
    from probes.dicom_find import DicomFindProbe, FindQuery
    from tests.test_timing_truth import MANY, MS, NagleFindSCP, endpoint, median_of
    from tests.test_timing_truth import run as timed

    scp = NagleFindSCP(matches=10)
    try:
        probe = DicomFindProbe(endpoint(scp.port), FindQuery(patient_id=MANY, expected_count=10))
        runs, _, _ = on_loop(*(lambda: timed(probe) for _ in range(6)))
    finally:
        scp.close()
    runs = runs[1:]  # the first is the warm-up
    assert sum(r["dimse"] >= 38 * MS for r in runs) <= 1, runs
    assert median_of(runs, "dimse") < 20 * MS, runs
