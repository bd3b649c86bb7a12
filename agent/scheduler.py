"""Scheduler: one timer per target × probe, fired by one thread onto a bounded worker pool.

* first runs are spread over the interval by a stable hash of the job id, so 1,000 targets do not
  all fire at once and restarts keep the same spacing; runs then fall on first + k × interval;
* a run that would start more than half an interval late is skipped and counted as missed, one
  still running when its next slot comes is not started twice, and slots missed while the
  pool was busy are coalesced into one run (the semantics the agent had with APScheduler:
  `misfire_grace_time` half the interval, `max_instances=1`, `coalesce=True`);
* missed and skipped runs are reported; start lateness (actual − scheduled) is measured.

Why not APScheduler: at 5,000 targets (500 runs/s) its per-run machinery (a Future, an event
object per submission and per completion, a sorted job store rewritten per run, datetime
arithmetic in its triggers) was about a third of the agent's CPU (bench/scale, py-spy). Here a
run is a heap pop, a queue put and a float comparison. APScheduler still provides the triggers
that config validation and maintenance windows use.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import math
import queue
import sys
import threading
import time
from collections.abc import Callable

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


def grace_time(interval: float) -> float:
    """How late a run may start before it is skipped: half the interval, in whole seconds, ≥ 1."""
    return float(max(1, round(interval / 2)))


class _Job:
    """One periodic job. `due` is the next slot (epoch seconds); slots are first + k × interval."""

    __slots__ = ("id", "probe", "fn", "first", "interval", "grace", "due")

    def __init__(
        self, job_id: str, first: float, interval: float, fn: Callable[[], None] | None = None
    ) -> None:
        self.id = job_id
        # target jobs are "target|probe"; extra jobs (self-probe, maintenance) carry their own fn
        # interned: one "dicom_echo" for every target's job, not one string per job
        self.probe = sys.intern(job_id.partition("|")[2]) if fn is None else ""
        self.fn = fn
        self.first = first
        self.interval = interval
        self.grace = grace_time(interval)
        self.due = first


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
        self._lock = threading.Lock()  # the missed-run summary
        # jobs, their heap and which of them are queued or running, guarded by _cond
        self._cond = threading.Condition(threading.Lock())
        self._jobs: dict[str, _Job] = {}
        self._heap: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()  # heap tie-break: jobs are not comparable
        self._busy: set[str] = set()  # job ids queued or running (max one instance per job)
        self._queue: queue.SimpleQueue[tuple[_Job, float] | None] = queue.SimpleQueue()
        self._idle = 0  # workers that finished a run and wait for the next (under _cond)
        self._workers = 0
        self._stopped = False
        self._timer: threading.Thread | None = None
        self._missed_unlogged = 0
        self._missed_logged_at = -math.inf
        self.max_workers = max_workers

    # -- missed runs -----------------------------------------------------------------------------

    def _missed(self, job: _Job) -> None:
        target, _, probe = job.id.partition("|")
        if probe and job.fn is None:
            self._on_missed(target, probe)
        now = time.monotonic()
        with self._lock:
            self._missed_unlogged += 1
            # a saturated agent would log hundreds of lines a second, with CPU it no longer has;
            # every run is counted in pacs_scheduler_missed_runs_total, a summary is logged
            # at most once a minute
            if now - self._missed_logged_at < 60:
                return
            n, self._missed_unlogged, self._missed_logged_at = self._missed_unlogged, 0, now
        log.warning(
            "%d scheduled probe run(s) missed or skipped since the last report: the worker pool "
            "is busy or the CPU saturated (see pacs_scheduler_missed_runs_total)", n,
        )

    # -- timer thread ----------------------------------------------------------------------------

    def _push(self, job: _Job) -> None:
        heapq.heappush(self._heap, (job.due, next(self._seq), job))

    def _timer_loop(self) -> None:
        cond = self._cond
        with cond:
            while not self._stopped:
                if not self._heap:
                    cond.wait()
                    continue
                due, _, job = self._heap[0]
                now = time.time()
                if due > now:
                    cond.wait(due - now)
                    continue
                heapq.heappop(self._heap)
                if self._jobs.get(job.id) is not job:
                    continue  # removed or replaced
                # coalesce: the latest slot that is due runs, earlier ones are not made up for
                slot = due + math.floor((now - due) / job.interval + 1e-9) * job.interval
                job.due = slot + job.interval
                self._push(job)
                missed = spawn = False
                if job.id in self._busy:
                    missed = True  # still queued or running: not started twice
                else:
                    self._busy.add(job.id)
                    self._queue.put((job, slot))
                    # a new worker only when none is idle (as concurrent.futures does)
                    if self._idle:
                        self._idle -= 1
                    elif self._workers < self.max_workers:
                        self._workers += 1
                        spawn = True
                if missed or spawn:
                    # not under our lock: the callbacks take other locks, and a thread start
                    # waits for the new thread, which on a loaded machine can take a while
                    cond.release()
                    try:
                        if missed:
                            self._missed(job)
                        if spawn:
                            threading.Thread(
                                target=self._worker, name="probe-worker", daemon=True
                            ).start()
                    finally:
                        cond.acquire()

    # -- workers ---------------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, slot = item
            try:
                now = time.time()
                if now - slot > job.grace:
                    self._missed(job)  # waited in the queue past its grace time: skipped
                elif job.fn is not None:
                    job.fn()
                else:
                    self._on_lateness(max(0.0, now - slot))
                    self._job(job)
            except Exception:  # noqa: BLE001 - a job must not kill its worker
                log.exception("scheduled job %s failed", job.id)
            finally:
                with self._cond:
                    self._busy.discard(job.id)
                    self._idle += 1

    def _job(self, job: _Job) -> None:
        target = job.id.partition("|")[0]
        plan = self._plan(target)
        if plan is None or job.probe not in plan.probes:
            return
        self._run(plan, job.probe)

    # -- jobs ------------------------------------------------------------------------------------

    def _add(self, job: _Job) -> None:
        with self._cond:
            self._jobs[job.id] = job
            self._push(job)
            self._cond.notify()

    def add_extra_job(self, job_id: str, fn: Callable[[], None], interval: float) -> None:
        """A job outside the target set (the self-probe); first run half a second from now."""
        self._add(_Job(job_id, time.time() + 0.5, interval, fn))

    def set_plans(self, plans: list[TargetPlan]) -> None:
        """Add, keep or remove jobs so that they match `plans` (used at start and on reload)."""
        wanted: dict[str, TargetPlan] = {f"{p.id}|{name}": p for p in plans for name in p.probes}
        with self._cond:
            for job_id in [j for j, job in self._jobs.items() if job.fn is None]:
                if job_id not in wanted:
                    del self._jobs[job_id]  # its heap entry is dropped when it comes up
            old = {j: job.interval for j, job in self._jobs.items()}
        now = time.time()
        for job_id, plan in wanted.items():
            if old.get(job_id) == plan.interval:
                continue  # unchanged schedule: keep its phase (the job reads the current plan)
            first = now + jitter_fraction(job_id) * plan.interval
            self._add(_Job(job_id, first, plan.interval))

    def start(self) -> None:
        self._timer = threading.Thread(target=self._timer_loop, name="scheduler", daemon=True)
        self._timer.start()

    def shutdown(self) -> None:
        # Running probes are bounded by their deadlines; do not wait for them here.
        with self._cond:
            self._stopped = True
            self._cond.notify()
            workers = self._workers
        for _ in range(workers):
            self._queue.put(None)
