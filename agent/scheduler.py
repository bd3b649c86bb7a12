"""Scheduler: one timer per target × probe, fired by one thread that also runs the probes that
wait cooperatively (probes.net.waits); the others go to a bounded pool of worker threads.

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
run is a heap pop, a greenlet and a float comparison. APScheduler still provides the triggers
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
from collections import deque
from collections.abc import Callable

from agent.targets import TargetPlan
from probes.net.waits import ProbeLoop

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


# Runs start in rounds BATCH_S apart once the timetable holds BATCH_MIN_RATE runs a second or
# more. A run that starts alone, on a CPU that was idle or busy elsewhere, costs about twice
# what it costs started beside others: its code and data come back into the caches, and the
# loop wakes for it alone. Measured through this scheduler at 300 runs/s: 0.86-0.95 ms of CPU
# per run one by one, 0.45-0.61 ms in rounds of 50 ms (BENCHMARKS.md "Second night"). A
# round adds at most BATCH_S to a run's start (start lateness shows it); below the rate, runs
# start on their slot.
BATCH_S = 0.05
BATCH_MIN_RATE = 20.0


def batch_window(plans: list[TargetPlan]) -> float:
    """Seconds between dispatch rounds for these plans: BATCH_S at BATCH_MIN_RATE runs/s."""
    rate = sum(len(p.probes) / p.interval for p in plans)
    return BATCH_S if rate >= BATCH_MIN_RATE else 0.0


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
    """Fires each job at its slots. Runs of cooperative probes (`cooperative(probe)`: the probe
    waits only through probes.net.waits) are greenlets on the probe loop, whose thread also keeps
    the timetable: a run starts without a thread hand-off. Everything else (the self-probe, a
    probe that runs servers of its own) runs on a worker thread, as before the loop existed.
    Both have the same rules: at most `max_workers` runs of each kind at once, the same grace
    time, one run of a job at a time."""

    def __init__(
        self,
        run: JobFn,
        *,
        plan: Callable[[str], TargetPlan | None],
        on_missed: Callable[[str, str], None],
        on_lateness: Callable[[float], None],
        max_workers: int,
        cooperative: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self._run = run
        self._plan = plan  # the installed plan of a target id (the service keeps the one copy)
        self._on_missed = on_missed
        self._on_lateness = on_lateness
        self._cooperative = cooperative
        self._lock = threading.Lock()  # the missed-run summary
        # jobs, their heap, which of them are queued or running, the worker and run counts
        self._jobs_lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._heap: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()  # heap tie-break: jobs are not comparable
        self._busy: set[str] = set()  # job ids queued or running (max one instance per job)
        self._queue: queue.SimpleQueue[tuple[_Job, float] | None] = queue.SimpleQueue()
        self._idle = 0  # workers that finished a run and wait for the next
        self._workers = 0
        self._green: deque[tuple[_Job, float]] = deque()  # loop runs waiting for a free place
        self._green_running = 0
        self._batch = 0.0  # seconds between dispatch rounds (batch_window)
        self._next_batch = 0.0
        self._loop = ProbeLoop(self._tick)
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

    # -- the timetable, on the loop's thread -----------------------------------------------------

    def _push(self, job: _Job) -> None:
        heapq.heappush(self._heap, (job.due, next(self._seq), job))

    def _tick(self) -> float | None:
        """Start what is due; seconds until the next slot (None: no job)."""
        missed: list[_Job] = []
        spawn = 0
        heap = self._heap
        now = time.time()
        if now < self._next_batch:  # the loop turns on every reply: most turns end here
            return self._next_batch - now
        with self._jobs_lock:
            self._next_batch = now + self._batch
            while heap and heap[0][0] <= now:
                due, _, job = heapq.heappop(heap)
                if self._jobs.get(job.id) is not job:
                    continue  # removed or replaced
                # coalesce: the latest slot that is due runs, earlier ones are not made up for
                slot = due + math.floor((now - due) / job.interval + 1e-9) * job.interval
                job.due = slot + job.interval
                self._push(job)
                if job.id in self._busy:
                    missed.append(job)  # still queued or running: not started twice
                    continue
                self._busy.add(job.id)
                if job.fn is None and self._cooperative(job.probe):
                    self._green.append((job, slot))
                    continue
                self._queue.put((job, slot))
                # a new worker only when none is idle (as concurrent.futures does)
                if self._idle:
                    self._idle -= 1
                elif self._workers < self.max_workers:
                    self._workers += 1
                    spawn += 1
            while self._green and self._green_running < self.max_workers:
                self._green_running += 1
                self._loop.spawn(self._green_run, *self._green.popleft())
            wait = max(heap[0][0] - now, self._batch) if heap else None
        # not under the lock: the callbacks take other locks, and a thread start waits for the
        # new thread, which on a loaded machine can take a while
        for job in missed:
            self._missed(job)
        for _ in range(spawn):
            threading.Thread(target=self._worker, name="probe-worker", daemon=True).start()
        return wait

    def _green_run(self, job: _Job, slot: float) -> None:
        try:
            self._execute(job, slot)
        finally:
            with self._jobs_lock:
                self._busy.discard(job.id)
                self._green_running -= 1

    # -- runs ------------------------------------------------------------------------------------

    def _execute(self, job: _Job, slot: float) -> None:
        try:
            now = time.time()
            if now - slot > job.grace:
                self._missed(job)  # waited for a free place past its grace time: skipped
            elif job.fn is not None:
                job.fn()
            else:
                self._on_lateness(max(0.0, now - slot))
                self._job(job)
        except Exception:  # noqa: BLE001 - a job must not kill its worker
            log.exception("scheduled job %s failed", job.id)

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, slot = item
            try:
                self._execute(job, slot)
            finally:
                with self._jobs_lock:
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
        with self._jobs_lock:
            self._jobs[job.id] = job
            self._push(job)
        self._loop.wake()

    def add_extra_job(self, job_id: str, fn: Callable[[], None], interval: float) -> None:
        """A job outside the target set (the self-probe); first run half a second from now."""
        self._add(_Job(job_id, time.time() + 0.5, interval, fn))

    def set_plans(self, plans: list[TargetPlan]) -> None:
        """Add, keep or remove jobs so that they match `plans` (used at start and on reload)."""
        wanted: dict[str, TargetPlan] = {f"{p.id}|{name}": p for p in plans for name in p.probes}
        with self._jobs_lock:
            for job_id in [j for j, job in self._jobs.items() if job.fn is None]:
                if job_id not in wanted:
                    del self._jobs[job_id]  # its heap entry is dropped when it comes up
            old = {j: job.interval for j, job in self._jobs.items()}
        self._batch = batch_window(plans)
        now = time.time()
        for job_id, plan in wanted.items():
            if old.get(job_id) == plan.interval:
                continue  # unchanged schedule: keep its phase (the job reads the current plan)
            first = now + jitter_fraction(job_id) * plan.interval
            self._add(_Job(job_id, first, plan.interval))

    def start(self) -> None:
        self._loop.start("scheduler")

    def shutdown(self) -> None:
        # Running probes are bounded by their deadlines; do not wait for them here. Runs parked
        # on the loop end with it.
        with self._jobs_lock:
            workers = self._workers
        self._loop.stop()
        for _ in range(workers):
            self._queue.put(None)
