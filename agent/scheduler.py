"""Scheduler: one APScheduler job per target × probe on a bounded thread pool.

* first runs are spread over the interval by a stable hash of the job id, so 1,000 targets do not
  all fire at once and restarts keep the same spacing;
* `misfire_grace_time` is half the interval (APScheduler's 1 s default silently drops runs when
  the pool is busy), `max_instances=1` (no overlapping runs of one probe), `coalesce=True`;
* missed and skipped runs are reported; start lateness (actual − scheduled) is measured.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent.targets import TargetPlan

log = logging.getLogger("agent.scheduler")

JobFn = Callable[[TargetPlan, str], None]


def jitter_fraction(job_id: str) -> float:
    """A stable number in [0, 1) for a job id."""
    h = hashlib.blake2b(job_id.encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def pool_size(plans: list[TargetPlan], configured: int | None = None) -> int:
    """Workers to keep up even if every probe ran to its timeout: Σ timeout/interval, +25 %."""
    if configured:
        return configured
    need = sum(p.timeout / p.interval * len(p.probes) for p in plans)
    return max(8, min(256, math.ceil(need * 1.25) + 2))


class ProbeScheduler:
    def __init__(
        self,
        run: JobFn,
        *,
        plan: Callable[[str], TargetPlan | None],
        on_missed: Callable[[str, str], None],
        on_lateness: Callable[[float], None],
        max_workers: int,
    ) -> None:
        self._run = run
        self._plan = plan  # the installed plan of a target id (the service keeps the one copy)
        self._on_missed = on_missed
        self._on_lateness = on_lateness
        self._starts: dict[str, tuple[float, float]] = {}  # job id → (first run epoch, interval)
        self._lock = threading.Lock()
        # APScheduler logs a WARNING line per missed or skipped run: on a saturated agent that is
        # hundreds of lines a second, written with CPU the agent no longer has (bench/scale,
        # 3,000 targets: 22,000 lines in 3 minutes). They are counted in
        # pacs_scheduler_missed_runs_total; a summary is logged at most once a minute instead.
        for name in ("apscheduler.executors.default", "apscheduler.scheduler"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self._missed_unlogged = 0
        self._missed_logged_at = -math.inf
        self.max_workers = max_workers
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=max_workers)},
            timezone=UTC,
        )
        self.scheduler.add_listener(self._missed, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)

    def _missed(self, event: JobEvent) -> None:
        target, _, probe = event.job_id.partition("|")
        if probe:
            self._on_missed(target, probe)
        now = time.monotonic()
        with self._lock:
            self._missed_unlogged += 1
            if now - self._missed_logged_at < 60:
                return
            n, self._missed_unlogged, self._missed_logged_at = self._missed_unlogged, 0, now
        log.warning(
            "%d scheduled probe run(s) missed or skipped since the last report: the worker pool "
            "is busy or the CPU saturated (see pacs_scheduler_missed_runs_total)", n,
        )

    def _job(self, job_id: str) -> None:
        now = time.time()
        with self._lock:
            start = self._starts.get(job_id)
        target, _, probe = job_id.partition("|")
        plan = self._plan(target)
        if start is not None:
            first, interval = start
            scheduled = first + max(0, math.floor((now - first) / interval + 1e-9)) * interval
            self._on_lateness(max(0.0, now - scheduled))
        if plan is None or probe not in plan.probes:
            return
        self._run(plan, probe)

    def add_extra_job(self, job_id: str, fn: Callable[[], None], interval: float) -> None:
        """A job outside the target set (the self-probe)."""
        self.scheduler.add_job(
            fn, IntervalTrigger(seconds=interval), id=job_id, max_instances=1, coalesce=True,
            misfire_grace_time=max(1, round(interval / 2)), replace_existing=True,
            next_run_time=datetime.now(UTC) + timedelta(seconds=0.5),
        )

    def set_plans(self, plans: list[TargetPlan]) -> None:
        """Add, keep or remove jobs so that they match `plans` (used at start and on reload)."""
        wanted: dict[str, tuple[TargetPlan, str]] = {
            f"{p.id}|{name}": (p, name) for p in plans for name in p.probes
        }
        with self._lock:
            old = dict(self._starts)
        for job_id in old.keys() - wanted.keys():
            try:
                self.scheduler.remove_job(job_id)
            except Exception:  # noqa: BLE001 - already gone
                pass
            with self._lock:
                self._starts.pop(job_id, None)
        now = time.time()
        for job_id, (plan, _) in wanted.items():
            if job_id in old and old[job_id][1] == plan.interval:
                continue  # unchanged schedule: keep its phase (the job reads the current plan)
            first = now + jitter_fraction(job_id) * plan.interval
            with self._lock:
                self._starts[job_id] = (first, plan.interval)
            self.scheduler.add_job(
                self._job,
                IntervalTrigger(
                    seconds=plan.interval, start_date=datetime.fromtimestamp(first, UTC)
                ),
                args=(job_id,),
                id=job_id,
                name=job_id,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, round(plan.interval / 2)),  # whole seconds (APScheduler)
                replace_existing=True,
            )

    def start(self) -> None:
        self.scheduler.start()

    def shutdown(self) -> None:
        # Running probes are bounded by their deadlines; do not wait for them here.
        self.scheduler.shutdown(wait=False)
