"""The daemon: config → plans → scheduler → probes → pipeline → exporters, plus reload and stop."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from agent.config import ConfigError, LoadedConfig, load_config
from agent.evaluator import HealthEvaluator
from agent.health_json import JsonRenderer, health_json_bytes, http_status_for
from agent.http_server import Endpoints, make_server, serve_in_thread
from agent.pipeline import Pipeline
from agent.prometheus_exporter import PrometheusExporter
from agent.recorder import LatencyRecorder
from agent.redaction import Redactor
from agent.runner import run_probe
from agent.scheduler import ProbeScheduler, pool_size
from agent.selfprobe import SelfProbe
from agent.shard import Shard
from agent.targets import TargetPlan, build_plan
from agent.web_config import WebConfig

if TYPE_CHECKING:
    from agent.config.schema import AgentSettings
    from agent.otlp_exporter import OTLPExporter

log = logging.getLogger("agent")


def plans_for(loaded: LoadedConfig, shard: Shard) -> list[TargetPlan]:
    return [
        build_plan(ep)
        for ep in loaded.model.targets
        if ep.enabled and shard.owns(ep.id)
    ]


def _checks_shape(p: TargetPlan) -> tuple:
    """What the evaluator and exporters were set up with for a target."""
    return (p.name, p.thresholds, tuple(p.probes), p.metrics_enabled)


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
        self.loaded = loaded
        self.shard = shard
        self.redactor = redactor
        self.config_path = config_path
        settings = loaded.model.agent
        self.listen = listen or settings.listen
        self.stop_event = threading.Event()
        self._reload_lock = threading.Lock()
        # Guards the installed target set against results arriving while it is swapped.
        self._plans_lock = threading.Lock()
        self._installed: dict[str, TargetPlan] = {}
        self.recorder = LatencyRecorder(settings.latencyWindow, settings.latencyWindowBuckets)
        self.evaluator = HealthEvaluator(JsonRenderer())
        self.prometheus = PrometheusExporter(shard=str(shard))
        self.exporters: list = [self.prometheus]
        self.pipeline = Pipeline(self.recorder, self.evaluator, self.exporters)
        self.plans = plans_for(loaded, shard)
        self.scheduler = ProbeScheduler(
            self._run_job,
            on_missed=self.prometheus.missed_run,
            on_lateness=self.prometheus.lateness.observe,
            max_workers=pool_size(self.plans, settings.maxWorkers),
        )
        self.self_probe: SelfProbe | None = None
        self.ready = False
        self.server = make_server(
            self.listen,
            Endpoints(
                metrics=self.prometheus.render,
                health=self._health,
                ready=lambda: self.ready,
                reload=self.reload,
            ),
            web,
        )
        # Last, so a failed bind leaves no export thread behind.
        self.otlp = self._make_otlp(settings, str(shard))
        if self.otlp is not None:
            self.exporters.append(self.otlp)

    def _make_otlp(self, settings: AgentSettings, shard: str) -> OTLPExporter | None:
        from agent.otlp_exporter import OTLPSetupError, otlp_from_config

        try:
            return otlp_from_config(
                settings.otlp, on_failure=self.prometheus.otlp_failures.inc, shard=shard
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
        with self._plans_lock:
            # A run that was in flight across a reload that removed its target (or probe), or
            # across stop(), is dropped: recording it would bring the removed series back.
            current = self._installed.get(plan.id)
            if self.stop_event.is_set() or current is None or probe not in current.probes:
                return
            self.pipeline.handle(current, result)
        if not result.ok:
            plan.logger.info(
                "probe %s/%s failed: %s (%s)", plan.id, probe, result.reason, result.message
            )

    def _self_probe_job(self) -> None:
        if self.self_probe is None:
            return
        v = self.self_probe.measure()
        if v is not None:
            self.prometheus.self_probe.set(v)
            if self.otlp is not None:
                self.otlp.set_self_probe_overhead(v)

    def _health(self) -> tuple[int, bytes]:
        # joined from fragments cached per check (see HealthEvaluator): ~ms for 1,000 targets
        state, body = health_json_bytes(
            self.evaluator, shard=str(self.shard) if self.shard.count > 1 else None
        )
        return http_status_for(state), body

    # -- lifecycle -------------------------------------------------------------------------------

    def _install(self, plans: list[TargetPlan]) -> None:
        """Swap in a target set. Targets whose checks are unchanged keep their state and series
        (a reload must not flash them UNKNOWN); removed ones disappear at once."""
        with self._plans_lock:
            new = {p.id: p for p in plans}
            for tid in self._installed.keys() - new.keys():
                self.pipeline.remove_target(tid)
            for tid, p in new.items():
                prev = self._installed.get(tid)
                if prev is not None and _checks_shape(prev) == _checks_shape(p):
                    continue
                if prev is not None:
                    self.pipeline.remove_target(tid)
                self.pipeline.add_target(p)
            self._installed = new
            self.plans = plans
            self.prometheus.targets_gauge.set(len(plans))
        self.scheduler.set_plans(plans)

    def start(self) -> None:
        settings = self.loaded.model.agent
        self._install(self.plans)
        if settings.selfProbe.enabled:
            self.self_probe = SelfProbe()
            self.scheduler.add_extra_job(
                "selfprobe", self._self_probe_job, settings.selfProbe.interval
            )
        self.prometheus.reload_ok.set(1)
        self.prometheus.reload_ts.set(time.time())
        self.scheduler.start()
        serve_in_thread(self.server)
        self.ready = True
        log.info(
            "agent started: %d target(s), %d probe job(s), %d workers, shard %s, listening on %s",
            len(self.plans), sum(len(p.probes) for p in self.plans), self.scheduler.max_workers,
            self.shard, "{}:{}".format(*self.address),
        )

    def reload(self) -> tuple[bool, str]:
        """Re-read the config file; an invalid one is rejected and the old one keeps running."""
        if not self.config_path:
            return False, "no config file to reload (running the built-in demo)"
        with self._reload_lock:
            try:
                loaded = load_config(self.config_path)
                plans = plans_for(loaded, self.shard)
            except ConfigError as e:
                self.prometheus.reload_ok.set(0)
                log.error("config reload rejected, keeping the running config:\n%s", e)
                return False, "config reload rejected:\n" + str(e)
            self.redactor.update(set(loaded.secrets) | set(self.loaded.secrets))
            self.loaded = loaded
            self._install(plans)
            self.prometheus.reload_ok.set(1)
            self.prometheus.reload_ts.set(time.time())
            log.info("config reloaded: %d target(s)", len(plans))
            return True, f"config reloaded: {len(plans)} target(s)"

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
        log.info("agent stopped")


__all__ = ["AgentService", "plans_for"]
