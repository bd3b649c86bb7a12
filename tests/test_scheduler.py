"""The scheduler keeps every target's schedule, even when some targets hang; misses are counted."""

from __future__ import annotations

import threading
import time

import pytest

from agent.scheduler import ProbeScheduler, jitter_fraction, pool_size
from tests.helpers.agent_fixtures import running_agent, sample, scrape, total
from tests.helpers.peers import LOOPBACK, echo_scp, silent_listener, wait_until


def target(tid: str, port: int, interval: int, timeout: int) -> dict:
    return {
        "id": tid,
        "config": {"host": LOOPBACK, "port": port, "calledAET": "SECTRA_PACS"},
        "healthCheck": {"interval": interval, "timeout": timeout},
        "probes": {"dicom_find": {"enabled": False}},
    }


def _eight_runs_of_good(targets: list[dict]) -> tuple[float, dict]:
    """Seconds the "good" target takes for 8 more runs in an agent probing `targets`."""
    with running_agent(targets, {"selfProbe": {"enabled": False}}) as svc:
        runs = lambda: total(scrape(svc), "pacs_probe_runs_total", target="good")  # noqa: E731
        wait_until(lambda: runs() >= 1, 5)
        t0, n0 = time.monotonic(), runs()
        wait_until(lambda: runs() >= n0 + 8, 6)
        return time.monotonic() - t0, scrape(svc)


@pytest.mark.timing
def test_hung_target_does_not_delay_other_targets() -> None:
    with echo_scp() as good, silent_listener() as hung:
        # control: the good target alone, on this machine, now
        alone, _ = _eight_runs_of_good([target("good", good, 300, 300)])
        hung_targets = [target(f"hung{i}", hung, 1000, 1000) for i in range(4)]
        beside, s = _eight_runs_of_good([*hung_targets, target("good", good, 300, 300)])
    # 8 runs at a 300 ms interval take ~2.4 s; four hung targets must not stretch that beyond
    # what the same machine needs without them (+25 %, +1 interval)
    assert beside < alone * 1.25 + 0.3, (beside, alone)
    assert (
        sample(s, "pacs_probe_failures_total", target="hung0", probe="dicom_echo", reason="timeout")
        >= 1
    )
    assert sample(s, "pacs_scheduler_missed_runs_total", target="good", probe="dicom_echo") == 0
    assert sample(s, "probe_success", target="good", probe="dicom_echo") == 1


def test_saturated_pool_counts_missed_runs() -> None:
    with silent_listener() as hung:
        # 6 probes of 1 s each due every 2 s on one worker: runs queue past the 1 s grace
        targets = [target(f"hung{i}", hung, 2000, 1000) for i in range(6)]
        with running_agent(targets, {"maxWorkers": 1, "selfProbe": {"enabled": False}}) as svc:
            wait_until(lambda: total(scrape(svc), "pacs_scheduler_missed_runs_total") >= 1, 12)
            s = scrape(svc)
            assert total(s, "pacs_scheduler_start_lateness_seconds_count") >= 1


def test_first_runs_are_spread_and_stable() -> None:
    fr = [jitter_fraction(f"t{i}|dicom_echo") for i in range(1000)]
    assert fr == [jitter_fraction(f"t{i}|dicom_echo") for i in range(1000)]
    # roughly uniform: every tenth of the interval gets 60..140 of 1000 first runs
    for k in range(10):
        n = sum(1 for f in fr if k / 10 <= f < (k + 1) / 10)
        assert 60 <= n <= 140, (k, n)


def test_pool_is_sized_for_every_probe_hitting_its_timeout() -> None:
    class P:
        def __init__(self) -> None:
            self.timeout, self.interval, self.probes = 5.0, 30.0, {"a": 1, "b": 2, "c": 3}

    assert pool_size([P()] * 100) == 65  # 100 × 3 × 5/30 = 50, +25 %, +2
    assert pool_size([P()]) == 8
    assert pool_size([P()] * 10_000) == 256
    assert pool_size([P()], configured=3) == 3


class _Plan:
    """What ProbeScheduler reads of a TargetPlan."""

    def __init__(self, tid: str, interval: float) -> None:
        self.id, self.interval, self.timeout, self.probes = tid, interval, interval, {"p": None}


def test_a_run_still_going_at_its_next_slot_is_not_started_twice() -> None:
    release = threading.Event()
    calls: list[str] = []
    missed: list[tuple[str, str]] = []
    lateness: list[float] = []

    def run(plan: object, probe: str) -> None:
        calls.append(probe)
        assert release.wait(10)  # the first run hangs until released

    plan = _Plan("t", 0.1)
    sched = ProbeScheduler(
        run, plan=lambda tid: plan if tid == "t" else None,  # type: ignore[arg-type,return-value]
        on_missed=lambda t, p: missed.append((t, p)), on_lateness=lateness.append, max_workers=4,
    )
    sched.set_plans([plan])  # type: ignore[list-item]
    sched.start()
    try:
        wait_until(lambda: len(missed) >= 3, 5)  # slots passing while the run hangs
        assert calls == ["p"], calls  # one instance: never a second run of the same job
        assert set(missed) == {("t", "p")}
        release.set()
        wait_until(lambda: len(calls) >= 3, 5)  # then it runs on its schedule again
        assert len(lateness) == len(calls)
        assert all(0 <= x < 1.0 for x in lateness), lateness
    finally:
        release.set()
        sched.shutdown()
