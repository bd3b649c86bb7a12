"""Real Prometheus for tests, on loopback only.

Usage::

    from tests.helpers.promserver import PromServer

    with PromServer(targets=["127.0.0.1:9887"], rule_files=[...]) as prom:
        prom.wait_for_targets_up()
        prom.wait_for(lambda: prom.query('probe_success == 1'), timeout=20)
        assert not prom.alerts()

or, as a pytest fixture (import it into the test module to register it)::

    from tests.helpers.promserver import prometheus_factory  # noqa: F401

    def test_x(prometheus_factory):
        prom = prometheus_factory(targets=[...])

`PromServer` starts `/usr/bin/prometheus` (or ``$PROMETHEUS_BIN``) on a free 127.0.0.1 port with a
generated config (scrape interval, evaluation interval and scrape timeout all 1 s by default) and a
temporary TSDB, waits for ``/-/ready`` with a deadline, and stops it with SIGTERM, then SIGKILL
after a bound. A missing binary raises `PrometheusNotInstalled`: tests fail, never skip.

Also here, because the rule and dashboard tests share them: `MetricsEndpoint` (serve any text on
``/metrics`` on loopback), `SyntheticAgentMetrics` (agent-shaped series following
docs/metrics.md), the session fixture `synthetic_prometheus` (a warm server with the shipped rules
scraping that data; import `prewarm_synthetic_prometheus` too to start it in the background),
`find_promtool`, and small PromQL helpers that check expressions against the metrics contract.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PROMETHEUS = "/usr/bin/prometheus"
DEFAULT_PROMTOOL = "/usr/bin/promtool"
INSTALL_HINT = (
    "install it with `make system-deps` (Debian/Ubuntu package `prometheus`), "
    "or point {env} at the binary"
)


class PrometheusNotInstalled(RuntimeError):
    """The prometheus or promtool binary is not available: a test failure, not a skip."""


class PromAPIError(RuntimeError):
    """The Prometheus HTTP API answered with status "error"."""

    def __init__(self, path: str, error_type: str, error: str):
        super().__init__(f"{path}: {error_type}: {error}")
        self.error_type = error_type
        self.error = error


def _find_binary(name: str, env: str, default: str) -> str:
    candidates = [os.environ[env]] if os.environ.get(env) else [default, shutil.which(name)]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise PrometheusNotInstalled(
        f"{name} not found (looked at {', '.join(c for c in candidates if c) or name}): "
        + INSTALL_HINT.format(env=env)
    )


def find_prometheus() -> str:
    return _find_binary("prometheus", "PROMETHEUS_BIN", DEFAULT_PROMETHEUS)


def find_promtool() -> str:
    return _find_binary("promtool", "PROMTOOL_BIN", DEFAULT_PROMTOOL)


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Poll `predicate` until it returns something truthy; return that, or raise TimeoutError.

    Exceptions from `predicate` count as "not yet" until the deadline, then are chained.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: BaseException | None = None
    while True:
        try:
            last = predicate()
            last_exc = None
            if last:
                return last
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{message} not met within {timeout:.1f}s (last value: {last!r})"
            ) from last_exc
        time.sleep(interval)


# Loopback only: never route test traffic through an HTTP(S)_PROXY from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PromServer:
    """A real Prometheus on 127.0.0.1 with a generated config.

    targets: "host:port" strings scraped under `job` (default "pacs-health-agent").
    rule_files: rule files Prometheus loads (by absolute path, read at start).
    job_config: extra keys for that job's scrape config, e.g. {"tls_config": {"ca_file": ...},
        "basic_auth": {"username": ..., "password": ...}} for an agent behind --web.config.file.
    scrape_configs: extra raw scrape_configs entries (dicts), appended as given.
    workdir: where config, TSDB and log go; a temporary directory (removed on stop) if None.
    """

    def __init__(
        self,
        targets: Iterable[str] = (),
        *,
        job: str = "pacs-health-agent",
        metrics_path: str = "/metrics",
        scheme: str = "http",
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        rule_files: Iterable[str | os.PathLike[str]] = (),
        scrape_configs: Sequence[dict[str, Any]] = (),
        job_config: dict[str, Any] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        ready_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ):
        self.targets = list(targets)
        self.job = job
        self.metrics_path = metrics_path
        self.scheme = scheme
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.rule_files = [str(Path(f).resolve()) for f in rule_files]
        self.scrape_configs = list(scrape_configs)
        self.job_config = dict(job_config or {})
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self.binary = binary
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self.workdir: Path | None = None
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._own_workdir = False
        self._log = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("Prometheus is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "prometheus.log"

    def config(self) -> dict[str, Any]:
        scrape_configs: list[dict[str, Any]] = []
        if self.targets:
            scrape_configs.append(
                {
                    "job_name": self.job,
                    "metrics_path": self.metrics_path,
                    "scheme": self.scheme,
                    "static_configs": [{"targets": self.targets}],
                    **self.job_config,
                }
            )
        scrape_configs.extend(self.scrape_configs)
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": self.rule_files,
            "scrape_configs": scrape_configs,
        }

    def start(self) -> PromServer:
        binary = self.binary or find_prometheus()
        if self._workdir_arg is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="promserver-"))
            self._own_workdir = True
        else:
            self.workdir = self._workdir_arg
            self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "prometheus.yml"
        # JSON is YAML: no YAML library needed to write the config.
        config_path.write_text(json.dumps(self.config(), indent=2))
        last_error = ""
        for _attempt in range(3):  # the free port can be taken between probe and bind
            self.port = free_port()
            storage = self.workdir / f"data-{self.port}"
            cmd = [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=info",
                *self.extra_args,
            ]
            self._log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                cmd,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
            try:
                self._wait_ready()
                return self
            except _StartFailed as exc:
                last_error = str(exc)
                self._reap()
                if "address already in use" not in last_error:
                    break
        self._cleanup_workdir()
        raise RuntimeError(f"Prometheus did not start: {last_error}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise _StartFailed(
                    f"exited with code {self.proc.returncode}; log:\n{self.log_tail()}"
                )
            try:
                with _OPENER.open(self.url + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() >= deadline:
                raise _StartFailed(
                    f"not ready within {self.ready_timeout:.0f}s; log:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _reap(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=self.stop_timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _cleanup_workdir(self) -> None:
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            self._own_workdir = False

    def stop(self) -> None:
        """SIGTERM, wait up to stop_timeout, then SIGKILL. Idempotent."""
        self._reap()
        self.port = None
        self._cleanup_workdir()

    def __enter__(self) -> PromServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ HTTP API
    def api(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET /api/v1/<path>; return `data`, or raise PromAPIError on an error status."""
        query = urllib.parse.urlencode(params or {}, doseq=True)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with _OPENER.open(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # 4xx/5xx still carry the JSON error
            try:
                body = json.loads(exc.read())
            except ValueError:
                raise PromAPIError(path, f"http_{exc.code}", str(exc)) from exc
        if body.get("status") != "success":
            raise PromAPIError(path, body.get("errorType", "?"), body.get("error", "?"))
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the result list (vector/matrix items, or [scalar] for scalars)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self.api("query", params)
        result = data["result"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": result}]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self.api("query_range", {"query": expr, "start": start, "end": end, "step": step})
        return data["result"]

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        params = {"match[]": match} if match else None
        return self.api(f"label/{urllib.parse.quote(label)}/values", params)

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts (/api/v1/alerts)."""
        return self.api("alerts")["alerts"]

    def rules(self) -> list[dict[str, Any]]:
        """Rule groups with each rule's health and lastError (/api/v1/rules)."""
        return self.api("rules")["groups"]

    def active_targets(self) -> list[dict[str, Any]]:
        return self.api("targets")["activeTargets"]

    def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 30.0,
        interval: float = 0.1,
        message: str = "condition",
    ) -> T:
        try:
            return wait_for(predicate, timeout, interval, message)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\nprometheus log:\n{self.log_tail(15)}") from exc

    def targets_up(self) -> list[dict[str, Any]]:
        """The active targets if every one has been scraped successfully, else [] (a poll)."""
        targets = self.active_targets()
        ok = targets and all(t["health"] == "up" for t in targets)
        return targets if ok else []

    def wait_for_targets_up(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until every configured scrape target has been scraped successfully (Prometheus
        2.x takes about 5 s to hand new targets to its scrape loop)."""
        return self.wait_for(self.targets_up, timeout, message="all targets up")


class _StartFailed(Exception):
    pass


@pytest.fixture
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., PromServer]]:
    """Fixture: call it with PromServer's arguments; servers are stopped at teardown."""
    servers: list[PromServer] = []

    def make(*args: Any, **kwargs: Any) -> PromServer:
        kwargs.setdefault("workdir", tmp_path_factory.mktemp("prometheus"))
        server = PromServer(*args, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in reversed(servers):
        server.stop()


# ---------------------------------------------------------------------- something to scrape
class MetricsEndpoint:
    """Serve `render()`'s text (Prometheus exposition format) at http://127.0.0.1:<port>/metrics."""

    def __init__(self, render: Callable[[], str], path: str = "/metrics"):
        self.render = render
        self.path = path
        self.scrapes = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> MetricsEndpoint:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != endpoint.path:
                    self.send_error(404)
                    return
                body = endpoint.render().encode()
                endpoint.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MetricsEndpoint:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# The synthetic runs of one scrape interval, per series: p95 between 0.5 and 1 s.
RUN_DURATIONS = (0.008, 0.02, 0.04, 0.04, 0.08, 0.08, 0.2, 0.2, 0.4, 0.8)


def _cumulative(les: Sequence[str]) -> tuple[int, ...]:
    """Cumulative bucket counts of RUN_DURATIONS for the bounds `les`."""
    return tuple(sum(d <= float(le) for d in RUN_DURATIONS) for le in les)


class SyntheticAgentMetrics:
    """Agent-shaped exposition following docs/metrics.md; counters advance on every render().

    Two targets: "sim-pacs" (DEGRADED: its viewer fails now and then; primary serving; dicom_find
    keeps missing scheduled runs) and "sim-pacs-dr" (UNHEALTHY: C-FIND fails while C-ECHO
    passes, running on its secondary, viewer p95 2.4 s, a certificate expiring in 10 days).
    `EXPECTED_ACTIVE_ALERTS` lists the (alertname, target) pairs the shipped rules must raise
    (pending or firing) on this data.
    """

    TARGETS = ("sim-pacs", "sim-pacs-dr")
    PROBES = ("dicom_echo", "dicom_find", "api_ping", "viewer", "failover")
    PHASES = {
        "dicom_echo": ("connect", "associate", "dimse", "release"),
        "dicom_find": ("connect", "associate", "first_match", "dimse", "release"),
        "api_ping": ("dns", "connect", "tls", "first_byte", "transfer"),
        "viewer": ("dns", "connect", "tls", "first_byte", "transfer"),
        "failover": ("connect", "associate", "dimse", "release"),
    }
    # dicom_retrieve runs on both targets too, but only its phases are part of this data (the
    # overview's time-to-first-image panel); its runs would change nothing the tests check.
    RETRIEVE_PHASES = ("connect", "associate", "first_image", "last_image", "release")
    # dicom_capabilities' proposed pairs: all accepted (no PacsDicomCapabilityLost here)
    CONTEXTS = (
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1"),
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.4.90"),
        ("1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.1.2.1"),
    )
    LATENESS_LE = (
        "0.001",
        "0.005",
        "0.01",
        "0.025",
        "0.05",
        "0.1",
        "0.25",
        "0.5",
        "1.0",
        "2.5",
        "5.0",
        "10.0",
        "+Inf",
    )
    LATENESS_STEP = _cumulative(LATENESS_LE)
    EXPECTED_ACTIVE_ALERTS = frozenset(
        {
            ("PacsTargetUnhealthy", "sim-pacs-dr"),
            ("PacsTargetDegraded", "sim-pacs"),
            ("PacsDicomFindFailingEchoOk", "sim-pacs-dr"),
            ("PacsLatencyP95High", "sim-pacs-dr"),
            ("PacsProbeAvailabilityLow", "sim-pacs-dr"),
            ("PacsProbeAvailabilityLow", "sim-pacs"),
            ("PacsRunningOnSecondary", "sim-pacs-dr"),
            ("PacsCertificateExpiringSoon", "sim-pacs-dr"),
            ("PacsAgentMissingProbes", "sim-pacs"),
            # sim-pacs-dr's C-FIND availability burns 67x, but it is UNHEALTHY: the state alert
            # pages, so only the slow-burn ticket; sim-pacs's C-FIND latency burns 10x.
            ("PacsErrorBudgetBurnSlow", "sim-pacs-dr"),
            ("PacsErrorBudgetBurnMedium", "sim-pacs"),
            ("PacsErrorBudgetBurnSlow", "sim-pacs"),
        }
    )

    def __init__(self, instance_version: str = "0.0.0-test", shard: str = "0/1"):
        self.version = instance_version
        self.shard = shard
        self.n = 0
        self.started = time.time()
        self._lock = threading.Lock()

    @staticmethod
    def _failing(target: str, probe: str) -> str | None:
        """The failure reason of this (target, probe), if it fails."""
        return {
            ("sim-pacs-dr", "dicom_find"): "timeout",
            ("sim-pacs", "viewer"): "http_status",
        }.get((target, probe))

    def render(self) -> str:
        with self._lock:
            self.n += 1
            n = self.n
        out: list[str] = []

        def family(name: str, kind: str, samples: Iterable[tuple[dict[str, str], float]]) -> None:
            out.append(f"# HELP {name} synthetic test data")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lbl = ",".join(f'{k}="{v}"' for k, v in labels.items())
                out.append(f"{name}{{{lbl}}} {value}" if lbl else f"{name} {value}")

        pairs = [(t, p) for t in self.TARGETS for p in self.PROBES]

        def tp(t: str, p: str, **extra: str) -> dict[str, str]:
            return {"target": t, "probe": p, **extra}

        family(
            "probe_success",
            "gauge",
            [(tp(t, p), 0 if self._failing(t, p) == "timeout" else 1) for t, p in pairs],
        )
        family("probe_duration_seconds", "gauge", [(tp(t, p), 0.08) for t, p in pairs])
        family(
            "pacs_probe_last_run_timestamp_seconds",
            "gauge",
            [(tp(t, p), time.time() - 5) for t, p in pairs],
        )
        # No pacs_probe_duration_seconds: like the agent's default output (it exports the
        # classic histogram only with agent.metrics.classicHistogram), so a dashboard query
        # that needs its buckets finds no data here.

        def p95(t: str, p: str) -> float:
            return 2.4 if (t, p) == ("sim-pacs-dr", "viewer") else 0.12

        # A summary: HDR quantiles over the window, _sum/_count cumulative.
        out.append("# HELP pacs_probe_latency_seconds synthetic test data")
        out.append("# TYPE pacs_probe_latency_seconds summary")
        for t, p in pairs:
            for q, v in (("0.5", 0.05), ("0.95", p95(t, p)), ("0.99", 2.9)):
                labels = f'target="{t}",probe="{p}",quantile="{q}"'
                out.append(f"pacs_probe_latency_seconds{{{labels}}} {v}")
            out.append(f'pacs_probe_latency_seconds_sum{{target="{t}",probe="{p}"}} {0.8 * n}')
            out.append(f'pacs_probe_latency_seconds_count{{target="{t}",probe="{p}"}} {10 * n}')
        family(
            "pacs_probe_phase_duration_seconds",
            "gauge",
            [
                (tp(t, p, phase=ph), 0.01 * (i + 1))
                for t, p in pairs
                for i, ph in enumerate(self.PHASES[p])
            ]
            + [
                (tp(t, "dicom_retrieve", phase=ph), 0.05 * (i + 1))
                for t in self.TARGETS
                for i, ph in enumerate(self.RETRIEVE_PHASES)
            ],
        )
        runs: list[tuple[dict[str, str], float]] = []
        failures: list[tuple[dict[str, str], float]] = []
        for t, p in pairs:
            runs.append((tp(t, p, result="success"), 2 * n))
            reason = self._failing(t, p)
            if reason:  # like a lazily created label set: no failure series until one happens
                runs.append((tp(t, p, result="failure"), n))
                failures.append((tp(t, p, reason=reason), n))
        family("pacs_probe_runs_total", "counter", runs)
        family("pacs_probe_failures_total", "counter", failures)
        family(
            "pacs_probe_attempts_total",
            "counter",
            [(tp(t, p), 3 * n if self._failing(t, p) else 2 * n) for t, p in pairs],
        )

        def check(t: str, p: str) -> str:
            if self._failing(t, p) == "timeout":
                return "FAIL"
            if self._failing(t, p) or (t, p) == ("sim-pacs-dr", "failover"):
                return "WARN"
            return "PASS"

        family(
            "pacs_check_status",
            "gauge",
            [
                (tp(t, p, status=s), int(check(t, p) == s))
                for t, p in pairs
                for s in ("PASS", "WARN", "FAIL")
            ],
        )
        state = {"sim-pacs": "DEGRADED", "sim-pacs-dr": "UNHEALTHY"}
        family(
            "pacs_target_health",
            "gauge",
            [
                ({"target": t, "state": s}, int(state[t] == s))
                for t in self.TARGETS
                for s in ("HEALTHY", "DEGRADED", "UNHEALTHY")
            ],
        )
        family(
            "pacs_agent_health",
            "gauge",
            [({"state": s}, int(s == "UNHEALTHY")) for s in ("HEALTHY", "DEGRADED", "UNHEALTHY")],
        )
        serving = {"sim-pacs": "primary", "sim-pacs-dr": "secondary"}
        family(
            "pacs_failover_active",
            "gauge",
            [
                ({"target": t, "endpoint": e}, int(serving[t] == e))
                for t in self.TARGETS
                for e in ("primary", "secondary")
            ],
        )
        # sim-pacs-dr's primary is down: only its secondary answers
        family(
            "pacs_failover_endpoint_up",
            "gauge",
            [
                ({"target": t, "endpoint": e}, int(t == "sim-pacs" or e == "secondary"))
                for t in self.TARGETS
                for e in ("primary", "secondary")
            ],
        )
        family(
            "pacs_dicom_context_accepted",
            "gauge",
            [
                ({"target": t, "sop_class": sop, "transfer_syntax": ts}, 1)
                for t in self.TARGETS
                for sop, ts in self.CONTEXTS
            ],
        )
        day = 86400
        expiry = {"sim-pacs": self.started + 90 * day, "sim-pacs-dr": self.started + 10 * day}
        tls = [(t, p) for t in self.TARGETS for p in ("api_ping", "viewer")]
        family(
            "probe_ssl_earliest_cert_expiry",
            "gauge",
            [(tp(t, p), round(expiry[t])) for t, p in tls],
        )
        family(
            "pacs_tls_cert_not_after_timestamp_seconds",
            "gauge",
            [(tp(t, p), round(expiry[t]) + day) for t, p in tls],
        )
        family(
            "probe_tls_version_info", "gauge", [(tp(t, p, version="TLS 1.3"), 1) for t, p in tls]
        )
        family("pacs_latency_out_of_range_total", "counter", [(tp(t, p), 0) for t, p in pairs])
        # SLOs on the DICOM probes: availability 99.5 %, latency 95 %; half of sim-pacs's
        # successful C-FINDs are slow (latency budget burning 10x: medium and slow burn).
        dicom = [(t, p) for t, p in pairs if p in ("dicom_echo", "dicom_find")]
        family(
            "pacs_slo_objective_ratio",
            "gauge",
            [
                (tp(t, p, slo=s), v)
                for t, p in dicom
                for s, v in (("availability", 0.995), ("latency", 0.95))
            ],
        )
        family(
            "pacs_probe_slow_runs_total",
            "counter",
            [(tp(t, p), n if (t, p) == ("sim-pacs", "dicom_find") else 0) for t, p in dicom],
        )
        family(
            "pacs_scheduler_missed_runs_total",
            "counter",
            [(tp(t, p), n if (t, p) == ("sim-pacs", "dicom_find") else 0) for t, p in pairs],
        )
        out.append("# HELP pacs_scheduler_start_lateness_seconds synthetic test data")
        out.append("# TYPE pacs_scheduler_start_lateness_seconds histogram")
        for le, step in zip(self.LATENESS_LE, self.LATENESS_STEP, strict=True):
            out.append(f'pacs_scheduler_start_lateness_seconds_bucket{{le="{le}"}} {step * 2 * n}')
        out.append(f"pacs_scheduler_start_lateness_seconds_sum {0.5 * n}")
        out.append(f"pacs_scheduler_start_lateness_seconds_count {20 * n}")
        # per-target thresholds (the defaults) and no maintenance window open
        family(
            "pacs_target_degraded_latency_seconds",
            "gauge",
            [({"target": t}, 2.0) for t in self.TARGETS],
        )
        family(
            "pacs_target_cert_expiry_warning_seconds",
            "gauge",
            [({"target": t}, 14 * 86400.0) for t in self.TARGETS],
        )
        family("pacs_target_maintenance", "gauge", [({"target": t}, 0) for t in self.TARGETS])
        family("pacs_agent_self_probe_overhead_seconds", "gauge", [({}, 0.0012)])
        family("pacs_agent_targets", "gauge", [({}, len(self.TARGETS))])
        family("pacs_agent_info", "gauge", [({"version": self.version, "shard": self.shard}, 1)])
        family("pacs_config_last_reload_successful", "gauge", [({}, 1)])
        family(
            "pacs_config_last_reload_success_timestamp_seconds",
            "gauge",
            [({}, round(self.started))],
        )
        family("pacs_otlp_export_failures_total", "counter", [({}, 0)])
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- shared synthetic server
ALERT_RULE_FILES = sorted((REPO / "alerts").glob("*.yml"))


def rules_for_fast_evaluation(
    dest: Path, rule_files: Iterable[Path] = ALERT_RULE_FILES
) -> list[Path]:
    """Copies of the rule files without per-group `interval:` (the 30d availability group runs
    every 5 minutes; a test needs every rule evaluated within seconds)."""
    import yaml  # PyYAML is a project dependency; imported here to keep the server part light

    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in rule_files:
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            group.pop("interval", None)
        copy = dest / path.name
        copy.write_text(yaml.safe_dump(doc, sort_keys=False))
        copies.append(copy)
    return copies


class Aborted(BaseException):
    """Raised inside a wait to give up at once (a BaseException, so wait_for does not retry)."""


def wait_until_warm(
    prom: PromServer,
    timeout: float = 30.0,
    abort: Callable[[], bool] = lambda: False,
    records: Iterable[str] | None = None,
) -> None:
    """Wait until targets are up, a few scrapes are stored (so rate() over 1m has data) and the
    recording rules `records` (default: every loaded one) have produced series. Some only do
    once something fails (failures by reason): pass the ones the data can produce.
    `abort()` returning True stops the wait (Aborted)."""

    def unless_aborted(predicate: Callable[[], T]) -> Callable[[], T]:
        def check() -> T:
            if abort():
                raise Aborted
            return predicate()

        return check

    prom.wait_for(unless_aborted(prom.targets_up), timeout, message="targets up")
    prom.wait_for(
        unless_aborted(lambda: prom.query("min(count_over_time(up[1m])) >= 3")),
        timeout=timeout,
        message="three scrapes stored",
    )
    if records is None:
        records = [
            rule["name"]
            for group in prom.rules()
            for rule in group["rules"]
            if rule["type"] == "recording"
        ]
    for record in records:
        prom.wait_for(
            unless_aborted(lambda r=record: prom.query(r)),
            timeout=timeout,
            message=f"{record} series",
        )


class _SyntheticPrometheus:
    """The session-wide synthetic server: started in a background thread by the first user (so
    Prometheus's ~5 s wait before its first scrape overlaps with other tests), stopped when the
    last user releases it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._error: BaseException | None = None
        self.server: PromServer | None = None
        self.endpoint: MetricsEndpoint | None = None

    def acquire(self, workdir: Callable[[], Path], wait: bool = True) -> PromServer | None:
        with self._lock:
            self._users += 1
            if self._thread is None:
                self._error = None
                self._cancel.clear()
                self._thread = threading.Thread(
                    target=self._start, args=(workdir(),), name="synthetic-prometheus", daemon=True
                )
                self._thread.start()
            thread = self._thread
        if not wait:
            return None
        thread.join(timeout=120)
        if thread.is_alive():
            raise TimeoutError("synthetic Prometheus did not get ready within 120s")
        if self._error is not None:
            raise RuntimeError(f"synthetic Prometheus failed: {self._error}") from self._error
        assert self.server is not None
        return self.server

    def _start(self, workdir: Path) -> None:
        try:
            self.endpoint = MetricsEndpoint(SyntheticAgentMetrics().render).start()
            self.server = PromServer(
                [self.endpoint.address],
                rule_files=rules_for_fast_evaluation(workdir / "rules"),
                workdir=workdir / "prometheus",
            )
            self.server.start()
            wait_until_warm(self.server, abort=self._cancel.is_set)
        except BaseException as exc:
            self._error = exc
            self._stop_processes()

    def _stop_processes(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            thread, self._thread = self._thread, None
        self._cancel.set()  # nobody is waiting for it any more: do not finish warming up
        if thread is not None:
            thread.join(timeout=120)
        self._stop_processes()


_SYNTHETIC = _SyntheticPrometheus()


@pytest.fixture(scope="session")
def synthetic_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromServer]:
    """A warm Prometheus with the shipped rules (see `rules_for_fast_evaluation`) scraping
    `SyntheticAgentMetrics` under job "pacs-health-agent", shared by the whole session."""
    try:
        server = _SYNTHETIC.acquire(lambda: tmp_path_factory.mktemp("synthetic-prometheus"))
    except BaseException:
        _SYNTHETIC.release()
        raise
    assert server is not None
    try:
        yield server
    finally:
        _SYNTHETIC.release()


@pytest.fixture(scope="module", autouse=True)
def prewarm_synthetic_prometheus(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Autouse (tests/conftest.py registers this module): when a module starts that has a test
    using `synthetic_prometheus`, start the server in the background, so it is warm when that
    test needs it. Modules without one (or whose users are deselected) start nothing."""
    if not any(
        getattr(item, "module", None) is request.module
        and "synthetic_prometheus" in getattr(item, "fixturenames", ())
        for item in request.session.items
    ):
        yield
        return
    _SYNTHETIC.acquire(lambda: tmp_path_factory.mktemp("synthetic-prometheus"), wait=False)
    try:
        yield
    finally:
        _SYNTHETIC.release()


# ---------------------------------------------------------------------- the metrics contract
METRICS_DOC = REPO / "docs" / "metrics.md"
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^{}]*)\}")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


def supervisor_metrics(path: Path = METRICS_DOC) -> dict[str, dict[str, Any]]:
    """{series name: {"type": ..., "labels": set}} of the families only an agent with workers
    exposes, listed in docs/metrics.md as bullet items: "- `name` (kind, label `l`, ...): ..."."""
    item = re.compile(r"^- `(pacs_agent_worker[a-z_]*)` \((gauge|counter)(?:, label `(\w+)`)?")
    found = {}
    for line in path.read_text().splitlines():
        m = item.match(line)
        if m:
            found[m[1]] = {"type": m[2], "labels": {m[3]} if m[3] else set()}
    if not found:
        raise AssertionError(f"no worker metrics listed in {path}")
    return found


def documented_metrics(path: Path = METRICS_DOC) -> dict[str, dict[str, Any]]:
    """{series name: {"type": ..., "labels": set}} from the metrics table of docs/metrics.md.

    Histograms are expanded into their _bucket (with `le`), _sum and _count series, summaries
    into the quantile series plus _sum and _count.
    """
    metrics: dict[str, dict[str, Any]] = {}
    row = re.compile(r"^\|\s*`([a-z_:][a-z0-9_:]*)`\s*\|\s*(\w+)\s*\|([^|]*)\|")
    for line in path.read_text().splitlines():
        m = row.match(line)
        if not m:
            continue
        name, kind, labels_cell = m.groups()
        labels = {lbl.strip() for lbl in labels_cell.split(",") if lbl.strip()}
        if kind == "histogram":
            metrics[f"{name}_bucket"] = {"type": "counter", "labels": labels | {"le"}}
        else:
            metrics[name] = {"type": kind, "labels": labels}
        if kind in ("histogram", "summary"):
            plain = labels - {"quantile"}
            metrics[f"{name}_sum"] = {"type": "counter", "labels": set(plain)}
            metrics[f"{name}_count"] = {"type": "counter", "labels": set(plain)}
    if not metrics:
        raise AssertionError(f"no metrics table found in {path}")
    return metrics


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """Metric selectors `name{...}` in a PromQL expression: [(name, {label: (op, value)})]."""
    found = []
    for name, body in _SELECTOR.findall(expr):
        matchers: dict[str, tuple[str, str]] = {}
        pos = 0
        while pos < len(body):
            m = _MATCHER.match(body, pos)
            if not m:
                if body[pos:].strip():
                    raise ValueError(f"cannot parse matchers {{{body}}} in {expr!r}")
                break
            matchers[m.group(1)] = (m.group(2), m.group(3))
            pos = m.end()
        found.append((name, matchers))
    return found


def bare_metric_uses(expr: str, names: Iterable[str]) -> list[str]:
    """Names from `names` used in `expr` without a `{...}` selector (so without a job matcher)."""
    bare = []
    for name in names:
        if re.search(rf"(?<![A-Za-z0-9_:]){re.escape(name)}(?![A-Za-z0-9_:])(?!\s*\{{)", expr):
            bare.append(name)
    return bare
