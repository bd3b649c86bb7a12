"""The daemon: config → plans → scheduler → probes → pipeline → exporters, plus reload and stop."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from apscheduler.triggers.interval import IntervalTrigger

from agent.config import ConfigError, LoadedConfig, load_config
from agent.evaluator import HealthEvaluator
from agent.health_json import HealthJsonExporter, http_status_for
from agent.http_body import Body
from agent.http_server import Endpoints, make_server, serve_in_thread
from agent.logging_setup import log_run, run_fields
from agent.maintenance import MaintenanceBook
from agent.observation import (
    ConfigLoad,
    ExportFailed,
    Maintenance,
    MissedRun,
    PlansInstalled,
    SelfProbeOverhead,
    StartLateness,
)
from agent.pipeline import Pipeline, target_info
from agent.probe_endpoint import OnDemandProber
from agent.prometheus_exporter import PrometheusExporter
from agent.recorder import LatencyRecorder
from agent.redaction import Redactor
from agent.runner import run_probe
from agent.scheduler import ProbeScheduler, pool_size
from agent.selfprobe import SelfProbe
from agent.shard import Shard
from agent.targets import TargetPlan, build_plan
from agent.tuning import release_free_heap
from agent.web_config import WebConfig
from probes.net import close_resolver
from probes.registry import PROBES

if TYPE_CHECKING:
    from agent.config.schema import AgentSettings
    from agent.otlp import OTLPExporter

log = logging.getLogger("agent")

# glibc keeps the pages that runs' temporaries (receive buffers, rendered text, scrape output)
# freed inside its heap; handing them back once a minute held ~15 MB less at 5,000 targets, for
# ~2 ms of malloc_trim (bench/scale/memory.py, BENCHMARKS.md)
HEAP_RELEASE_EVERY = 60.0


def plans_for(loaded: LoadedConfig, shard: Shard) -> list[TargetPlan]:
    return [build_plan(ep) for ep in loaded.model.targets if ep.enabled and shard.owns(ep.id)]


def kept_config(loaded: LoadedConfig) -> LoadedConfig:
    """What the running service keeps of a loaded config once its plans are built: the agent
    settings and the secrets. The validated target models (~8 KB a target, more than the plans
    built from them) and the file's line map are not read again; keeping them was a third of
    the Python heap per target."""
    return dataclasses.replace(
        loaded,
        model=loaded.model.model_copy(update={"targets": []}),
        secttra_targets=frozenset(),
        literal_secrets=(),
        url_passwords=(),
        line=lambda path: 0,  # the default: no line map
        text="",
    )


def target_order(loaded: LoadedConfig) -> dict[str, int]:
    """Each target id's position in the config (workers order /health lines by it)."""
    return {t.id: i for i, t in enumerate(loaded.model.targets)}


def check_schedulable(plans: list[TargetPlan]) -> None:
    """Raise ValueError for a plan whose interval the scheduler cannot turn into a trigger (an
    interval so long its first run lies past the calendar's end), before anything is swapped."""
    now = time.time()
    for p in plans:
        try:
            first = datetime.fromtimestamp(now + p.interval, UTC)
            IntervalTrigger(seconds=p.interval, start_date=first).get_next_fire_time(None, first)
        except (OverflowError, ValueError, OSError) as e:
            raise ValueError(
                f"target {p.id}: healthCheck.interval of {p.interval * 1000:.0f} ms cannot be "
                f"scheduled ({e})"
            ) from e


def _checks_shape(p: TargetPlan) -> tuple:
    """What the evaluator and exporters were set up with for a target (thresholds apply to the
    next result and are swapped in place)."""
    return (p.name, tuple(p.probes), p.metrics_enabled)


class AgentService:
    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        shard: Shard,
        redactor: Redactor,
        listen: str | None = None,
        config_path: str | None = None,
        web: WebConfig | None = None,
    ) -> None:
        self.loaded = kept_config(loaded)
        self.target_order = target_order(loaded)
        self.shard = shard
        self.redactor = redactor
        self.config_path = config_path
        settings = loaded.model.agent
        self.listen = listen or settings.listen
        self.stop_event = threading.Event()
        self._reload_lock = threading.Lock()
        # Guards the installed target set against results arriving while it is swapped.
        self._plans_lock = threading.Lock()
        # The one copy of the installed plans, by id, replaced whole on a swap: the scheduler,
        # the result path and GET /probe all read it.
        self._installed: dict[str, TargetPlan] = {}
        self.recorder = LatencyRecorder(settings.latencyWindow, settings.latencyWindowBuckets)
        self.evaluator = HealthEvaluator()
        self.prometheus = PrometheusExporter(
            shard=str(shard), classic_histogram=settings.metrics.classicHistogram
        )
        self.health = HealthJsonExporter()
        self.pipeline = Pipeline(self.recorder, self.evaluator, [self.prometheus, self.health])
        self._initial = plans_for(loaded, shard)
        check_schedulable(self._initial)  # before binding: a bad interval is a config error
        self.scheduler = ProbeScheduler(
            self._run_job,
            plan=lambda tid: self._installed.get(tid),
            on_missed=lambda t, p: self.pipeline.emit(MissedRun(t, p)),
            on_lateness=lambda s: self.pipeline.emit(StartLateness(s)),
            max_workers=pool_size(self._initial, settings.maxWorkers),
            cooperative=lambda probe: probe in PROBES and PROBES[probe].cooperative,
        )
        self.self_probe: SelfProbe | None = None
        self.maintenance = MaintenanceBook()
        self._maintenance_lock = threading.Lock()
        self._maintenance_shown: dict[str, bool] | None = None  # as last handed on
        self.ready = False
        self.server = make_server(
            self.listen,
            Endpoints(
                metrics=self._metrics,
                health=self._health,
                ready=lambda: self.ready,
                reload=self.reload,
                status_page=self._status_page,
                probe=OnDemandProber(
                    lambda: self._installed, stop=self.stop_event, redactor=self.redactor
                ),
            ),
            web,
        )
        # Last, so a failed bind leaves no export thread behind.
        self.otlp = self._make_otlp(settings, str(shard))
        if self.otlp is not None:
            self.pipeline.add_exporter(self.otlp)

    @property
    def plans(self) -> list[TargetPlan]:
        """The installed plans (before start(), the ones start() will install)."""
        return list(self._installed.values()) if self._installed else list(self._initial)

    def _make_otlp(self, settings: AgentSettings, shard: str) -> OTLPExporter | None:
        from agent.otlp import OTLPSetupError, otlp_from_config

        try:
            return otlp_from_config(
                settings.otlp, on_failure=lambda: self.pipeline.emit(ExportFailed("otlp")),
                shard=shard,
            )
        except OTLPSetupError as e:  # probing and /metrics go on without OTLP
            log.error("OTLP export disabled: %s", e)
            return None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    # -- jobs ------------------------------------------------------------------------------------

    def _run_job(self, plan: TargetPlan, probe: str) -> None:
        if self.stop_event.is_set():
            return
        result = run_probe(plan, probe, stop=self.stop_event, redactor=self.redactor)
        log_run(result)
        with self._plans_lock:
            # A run that was in flight across a reload that removed its target (or probe), or
            # across stop(), is dropped: recording it would bring the removed series back.
            current = self._installed.get(plan.id)
            if self.stop_event.is_set() or current is None or probe not in current.probes:
                return
            self.pipeline.handle(result)
        if not result.ok:
            plan.logger.info(
                "probe %s/%s failed: %s (%s)",
                plan.id,
                probe,
                result.reason,
                result.message,
                extra=run_fields(result),
            )

    def _self_probe_job(self) -> None:
        if self.self_probe is None:
            return
        v = self.self_probe.measure()
        if v is not None:
            self.pipeline.emit(SelfProbeOverhead(v))

    def _refresh_maintenance(self, *, force: bool = False) -> None:
        """Open or close maintenance windows (on a timer, and before /metrics and /health).

        Only a change is handed on: at 5,000 targets telling the evaluator and every exporter
        the same 5,000 flags again cost ~5 ms of each scrape. `force` after a new target set
        (its targets start out of any window in every exporter)."""
        with self._maintenance_lock:
            active = self.maintenance.active()
            if not force and active == self._maintenance_shown:
                return
            self.evaluator.set_maintenance(active)
            self.pipeline.emit(Maintenance(active))
            self._maintenance_shown = active

    def _metrics(self) -> list[bytes]:
        self._refresh_maintenance()
        return self.prometheus.render_parts()

    def _status_page(self) -> bytes:
        from agent import status_page

        self._refresh_maintenance()
        shard = str(self.shard) if self.shard.count > 1 else None
        declared = {tid: target_info(p).declared for tid, p in self._installed.items()}
        return status_page.render(
            self.evaluator.snapshot(), self.recorder.history, shard=shard, declared=declared
        )

    def _health(self) -> tuple[int, Body]:
        self._refresh_maintenance()
        # joined from fragments cached per check (HealthJsonExporter): ~ms for 1,000 targets
        state, body = self.health.render(str(self.shard) if self.shard.count > 1 else None)
        return http_status_for(state), body

    # -- lifecycle -------------------------------------------------------------------------------

    def _install(self, plans: list[TargetPlan]) -> None:
        """Swap in a target set. Targets whose checks are unchanged keep their state and series
        (a reload must not flash them UNKNOWN); removed ones disappear at once.

        The scheduler goes first: it is the step that can fail (a trigger it cannot build), and
        until the pipeline below is swapped a run of a new target is simply dropped. If it fails,
        the previous jobs are put back and nothing else has changed."""
        previous = list(self._installed.values())
        try:
            self.scheduler.set_plans(plans)
        except Exception:
            self.scheduler.set_plans(previous)
            raise
        with self._plans_lock:
            new = {p.id: p for p in plans}
            for tid in self._installed.keys() - new.keys():
                self.pipeline.remove_target(tid)
            for tid, p in new.items():
                prev = self._installed.get(tid)
                if prev is not None and _checks_shape(prev) == _checks_shape(p):
                    if prev.thresholds != p.thresholds:
                        # judged by the new thresholds from its next result on; its history,
                        # state and series stay (no counter reset, no UNKNOWN flash)
                        self.pipeline.set_thresholds(p)
                    continue
                if prev is not None:
                    self.pipeline.remove_target(tid)
                self.pipeline.add_target(p)
            self._installed = new
            self.pipeline.emit(PlansInstalled(len(plans)))
            self.maintenance.install({p.id: p.maintenance for p in plans})
        self._refresh_maintenance(force=True)
        # loading and validating the config peaked well above what the plans keep; give the
        # freed pages back rather than hold them as RSS for the life of the process
        release_free_heap()

    def start(self) -> None:
        settings = self.loaded.model.agent
        self._install(self._initial)
        if settings.selfProbe.enabled:
            self.self_probe = SelfProbe()
            self.scheduler.add_extra_job(
                "selfprobe", self._self_probe_job, settings.selfProbe.interval
            )
        # windows open and close between scrapes too (OTLP pushes, the status page reads state)
        self.scheduler.add_extra_job("maintenance", self._refresh_maintenance, 15.0)
        self.scheduler.add_extra_job("release-heap", release_free_heap, HEAP_RELEASE_EVERY)
        self.pipeline.emit(ConfigLoad(True, time.time()))
        self.scheduler.start()
        serve_in_thread(self.server)
        self.ready = True
        log.info(
            "agent started: %d target(s), %d probe job(s), %d workers, shard %s, listening on %s",
            len(self.plans),
            sum(len(p.probes) for p in self.plans),
            self.scheduler.max_workers,
            self.shard,
            "{}:{}".format(*self.address),
        )

    def reload(self) -> tuple[bool, str]:
        """Re-read the config file and swap it in whole, or not at all.

        Everything that can fail (parse, validate, build the plans, check they can be scheduled,
        install the jobs) happens before anything the old config runs is touched; on any error the
        running config stays, pacs_config_last_reload_successful goes to 0 and the reply is one
        line naming the reason (secrets scrubbed)."""
        if not self.config_path:
            return False, "no config file to reload (running the built-in demo)"
        with self._reload_lock:
            loaded: LoadedConfig | None = None
            try:
                loaded = load_config(self.config_path, compact=True)
                plans = plans_for(loaded, self.shard)
                check_schedulable(plans)
            except ConfigError as e:
                more = len(e.problems) - 1
                reason = e.problems[0] if e.problems else str(e)
                return self._reject(
                    reason + (f" (and {more} more problem(s))" if more else ""),
                    "\n".join(e.problems),
                )
            except Exception as e:  # noqa: BLE001 - a bad config must not take the agent down
                secrets = set(loaded.secrets) if loaded is not None else set()
                return self._reject(
                    f"{type(e).__name__}: {e}",
                    scrub=Redactor(secrets | set(self.loaded.secrets)),
                )
            redactor = Redactor(set(loaded.secrets) | set(self.loaded.secrets))
            try:
                self._install(plans)
            except Exception as e:  # noqa: BLE001 - the previous jobs were put back
                return self._reject(
                    f"cannot schedule the new config: {type(e).__name__}: {e}", scrub=redactor
                )
            self.redactor.update(set(loaded.secrets) | set(self.loaded.secrets))
            self.loaded = kept_config(loaded)
            self.target_order = target_order(loaded)
            self._accepted(loaded)
            self.pipeline.emit(ConfigLoad(True, time.time()))
            enabled = sum(1 for t in loaded.model.targets if t.enabled)
            if not enabled:
                log.warning("config reloaded: no target is enabled, nothing is monitored")
            log.info("config reloaded: %d target(s)", len(plans))
            return True, f"config reloaded: {len(plans)} target(s)"

    def _accepted(self, loaded: LoadedConfig) -> None:
        """A reloaded config is installed (a worker keeps its text for its restarts)."""

    def _reject(
        self, reason: str, details: str | None = None, scrub: Redactor | None = None
    ) -> tuple[bool, str]:
        scrub = scrub or self.redactor
        line = " ".join(scrub.scrub(reason).split())  # one line, whatever the error said
        self.pipeline.emit(ConfigLoad(False))
        log.error(
            "config reload rejected, keeping the running config: %s",
            scrub.scrub(details) if details else line,
        )
        return False, f"config reload rejected, keeping the running config: {line}"

    def stop(self) -> None:
        self.ready = False
        self.stop_event.set()
        self.scheduler.shutdown()
        if self.otlp is not None:
            self.otlp.shutdown()  # final flush, bounded by the export timeout
        self.server.shutdown()
        self.server.server_close()
        if self.self_probe is not None:
            self.self_probe.close()
        # the probes' resolver pool starts with the first lookup and is the service's to stop
        close_resolver()
        log.info("agent stopped")


__all__ = ["AgentService", "check_schedulable", "plans_for"]
