"""`agent run --workers N`: N worker processes (agent.worker) behind the agent's one port.

This process owns the public port (agent.http_server, with the configured auth and TLS), starts
and restarts the workers (agent.worker_pool), forwards SIGHUP and SIGTERM to them, and answers
every endpoint with one document over all of them:

- /metrics: the workers' expositions merged (agent.metrics_merge), plus the supervisor's own
  pacs_agent_workers, pacs_agent_worker_up and pacs_agent_worker_restarts_total;
- /health and /: one document, the shape one process gives, targets in config order;
- /probe: passed to the worker that owns the target; /-/reload: to every worker.

The targets are split with the shards' rendezvous hash in its own hash domain (shard.worker_owner),
inside the pod's shard: a pod that is shard k of M runs N workers over shard k's targets.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import re
import shutil
import signal
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

from agent.config import LoadedConfig
from agent.cpus import usable_cpus
from agent.evaluator import HealthState, worst
from agent.health_json import http_status_for
from agent.http_server import Endpoints, make_server, serve_in_thread
from agent.metrics_merge import merge_expositions
from agent.shard import Shard, worker_owner
from agent.web_config import WebConfig
from agent.worker_pool import Worker, WorkerPool

log = logging.getLogger("agent")

START_TIMEOUT_S = 120.0  # 10,000 targets load, plan and schedule in a few seconds per worker
STOP_TIMEOUT_S = 10.0  # a worker's stop() is bounded well below this; then SIGKILL
SCRAPE_TIMEOUT_S = 8.0  # under Prometheus' default 10 s scrape timeout
RELOAD_WAIT_S = 5.0  # a scrape waits this long at most for a reload under way to finish


def resolve_workers(flag: int | None, loaded: LoadedConfig, shard: Shard) -> int:
    """--workers, then AGENT_WORKERS, then one per usable CPU (affinity and cgroup quota), but
    no more workers than this shard has enabled targets."""
    if flag is not None:
        return flag
    env = os.environ.get("AGENT_WORKERS", "").strip()
    if env:
        return parse_workers(env)
    owned = sum(1 for t in loaded.model.targets if t.enabled and shard.owns(t.id))
    return max(1, min(usable_cpus(), owned))


def parse_workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"workers must be a whole number, got {text!r}") from None
    if not 1 <= n <= 256:
        raise ValueError(f"workers must be between 1 and 256, got {n}")
    return n


class Supervisor:
    def __init__(
        self,
        *,
        config_path: str,
        loaded: LoadedConfig,
        shard: Shard,
        count: int,
        listen: str,
        web: WebConfig | None,
        worker_args: list[str],
        rundir: Path,
    ) -> None:
        self.config_path = config_path
        self.shard = shard
        self.count = count
        self._rundir = rundir
        self._worker_args = worker_args
        self._serving = False
        self._ready = False
        # set while no reload is under way: a scrape waits for one to finish (bounded), so it
        # does not show some workers on the new config and some on the old
        self._idle = threading.Event()
        self._idle.set()
        self._reload_lock = threading.Lock()
        self.registry = r = CollectorRegistry(auto_describe=True)
        Gauge("pacs_agent_workers", "Worker processes this agent runs", registry=r).set(count)
        self._up = Gauge(
            "pacs_agent_worker_up", "1 if the worker answered this scrape", ["worker"], registry=r
        )
        self._restarts = Counter(
            "pacs_agent_worker_restarts", "Worker processes restarted", ["worker"], registry=r
        )
        for j in range(count):
            self._restarts.labels(str(j))
            self._up.labels(str(j)).set(0)
        self.pool = WorkerPool(
            count,
            self._command,
            self._rundir,
            on_restart=lambda j: self._restarts.labels(str(j)).inc(),
            forked=lambda w: self._run_forked(w, loaded),
        )
        self.server = make_server(
            listen,
            Endpoints(
                metrics=self.metrics,
                health=self.health,
                # like one process: ready from a complete start to stop; a worker restarting
                # meanwhile shows as pacs_agent_worker_up 0, the others' targets still serve
                ready=lambda: self._ready,
                reload=self.reload,
                status_page=self.status_page,
                probe=self.probe,
            ),
            web,
        )

    def _command(self, w: Worker) -> list[str]:
        return [
            sys.executable,
            "-m",
            "agent.worker",
            "--config",
            self.config_path,
            "--socket",
            w.socket,
            "--worker",
            f"{w.index}/{self.count}",
            "--shard",
            str(self.shard),
            *self._worker_args,
        ]

    def _run_forked(self, w: Worker, loaded: LoadedConfig) -> int:
        """In a worker forked from this process: let go of the public port, run the worker."""
        from agent.worker import main

        self.server.socket.close()
        return main(self._command(w)[3:], loaded=loaded)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    # -- endpoints -------------------------------------------------------------------------------

    def _settled(self) -> None:
        self._idle.wait(RELOAD_WAIT_S)

    def metrics(self) -> bytes:
        self._settled()
        texts: list[bytes] = []
        for j, got in enumerate(self.pool.fan_out("GET", "/metrics", SCRAPE_TIMEOUT_S)):
            ok = got is not None and got[0] == 200
            self._up.labels(str(j)).set(1 if ok else 0)
            if ok and got is not None:
                texts.append(got[1])
        return merge_expositions(texts) + generate_latest(self.registry)

    def health(self) -> tuple[int, bytes]:
        """One /health from the workers' lines (agent.worker: `INDEX\tJSON` per target): sorted
        into config order and joined, as bytes; the state is the worst target's, read from each
        fragment's head (`{"id":..,"name":..,"status":"X"`: an escaped name holds no bare quote)."""
        self._settled()
        rows: list[tuple[int, bytes]] = []
        for got in self.pool.fan_out("GET", "/health", SCRAPE_TIMEOUT_S):
            if got is not None and got[0] == 200 and got[1]:
                for line in got[1].split(b"\n"):
                    index, _, frag = line.partition(b"\t")
                    rows.append((int(index), frag))
        rows.sort(key=lambda r: r[0])
        states = []
        for _, frag in rows:
            at = frag.index(b'"status":"') + 10
            states.append(HealthState(frag[at : frag.index(b'"', at)].decode()))
        state = worst(states)
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        head = f'{{"timestamp":"{ts}","status":"{state.value}","targets":['.encode()
        tail = f',"shard":{json.dumps(str(self.shard))}}}\n' if self.shard.count > 1 else "}\n"
        body = head + b",".join(f for _, f in rows) + b"]" + tail.encode()
        return http_status_for(state), body

    def status_page(self) -> bytes:
        from agent import status_page

        targets: list[Any] = []
        history: dict[tuple[str, str], list[float | None]] = {}
        self._settled()
        for got in self.pool.fan_out("GET", "/", SCRAPE_TIMEOUT_S):
            if got is not None and got[0] == 200:
                # our own child's answer on our own 0700 socket: trusted
                ts, hist = pickle.loads(got[1])  # noqa: S301
                targets.extend(ts)
                history.update(hist)
        shard = str(self.shard) if self.shard.count > 1 else None
        return status_page.render(targets, lambda t, c: history.get((t, c), []), shard=shard)

    def probe(self, target: str, probe: str) -> tuple[int, bytes]:
        w = self.pool.workers[worker_owner(target, self.count)]
        got = self.pool.request(
            w, "GET", f"/probe?target={quote(target)}&probe={quote(probe)}", timeout=120.0
        )
        if got is None:
            return 503, b"the worker probing this target is restarting; try again shortly\n"
        return got

    def reload(self) -> tuple[bool, str]:
        """POST /-/reload and SIGHUP: every worker reloads the file, all at once; the answer is
        the first rejection, or the total."""
        with self._reload_lock:
            self._idle.clear()
            try:
                answers = self.pool.fan_out("POST", "/-/reload", timeout=120.0)
            finally:
                self._idle.set()
        total = 0
        for j, got in enumerate(answers):
            if got is None:
                return False, f"config reload: worker {j} is restarting (it reads the new config)"
            text = got[1].decode(errors="replace").strip()
            if got[0] != 200:
                return False, text
            m = re.search(r"(\d+) target", text)
            total += int(m.group(1)) if m else 0
        return True, f"config reloaded: {total} target(s)"

    def sighup(self) -> None:
        """SIGHUP reaches every worker as a reload through its socket: the supervisor then knows
        when all are done (scrapes wait for that) and what each answered."""

        def run() -> None:
            ok, text = self.reload()
            if not ok and "rejected" not in text:  # a rejection: worker 0 logged it already
                log.error("%s", text)

        threading.Thread(target=run, name="reload", daemon=True).start()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> str | None:
        problem = self.pool.start(START_TIMEOUT_S)
        if problem is None:
            serve_in_thread(self.server)
            self._serving = True
            self._ready = True
        return problem

    def stop(self) -> None:
        self._ready = False
        self.pool.stop(STOP_TIMEOUT_S)
        if self._serving:  # shutdown() waits for a serve_forever() that never started otherwise
            self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self._rundir, ignore_errors=True)
        log.info("agent stopped (%d workers)", self.count)


def run_workers(
    args: argparse.Namespace,
    loaded: LoadedConfig,
    shard: Shard,
    web: WebConfig | None,
    count: int,
) -> int:
    """cmd_run for N > 1 workers; the same lines on stdout and stderr, the same exit codes."""
    from agent.cli_common import UNKNOWN
    from agent.cli_common import leave as _leave
    from agent.cli_common import say as _say
    from agent.cli_common import url_host as _url_host

    worker_args = ["-v"] if args.verbose else []
    if args.log_format:
        worker_args += ["--log-format", args.log_format]
    listen = args.listen or loaded.model.agent.listen
    try:
        rundir = Path(tempfile.mkdtemp(prefix="pacs-agent-workers-"))  # 0700: only this user
    except OSError as e:
        print(
            f"agent: --workers {count} needs a writable temporary directory (TMPDIR, /tmp) for "
            f"the workers' sockets: {e.strerror}; --workers 1 needs none",
            file=sys.stderr,
        )
        return UNKNOWN
    try:
        sup = Supervisor(
            rundir=rundir,
            config_path=args.config,
            loaded=loaded,
            shard=shard,
            count=count,
            listen=listen,
            web=web,
            worker_args=worker_args,
        )
    except OSError as e:
        shutil.rmtree(rundir, ignore_errors=True)
        print(f"agent: cannot listen on {listen}: {e.strerror}", file=sys.stderr)
        return UNKNOWN
    stop = threading.Event()

    def on_stop(*_: object) -> None:
        stop.set()
        sup.pool.cancel_start()  # a SIGTERM while the workers start ends the wait for them

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, lambda *_: sup.sighup())
    problem = sup.start()
    if problem is not None:
        sup.stop()
        if stop.is_set():  # asked to stop before it was up: not an error
            _leave(0)
        print(f"agent: {problem}", file=sys.stderr)
        return UNKNOWN
    log.info(
        "agent started: %d workers over shard %s, listening on %s",
        count,
        shard,
        "{}:{}".format(*sup.address),
    )
    scheme = "https" if web is not None and web.ssl_context is not None else "http"
    base = f"{scheme}://{_url_host(sup.address[0])}:{sup.address[1]}"
    _say(f"Listening on {base}")
    print(f"Metrics: {base}/metrics   Health: {base}/health", file=sys.stderr, flush=True)
    stop.wait()
    sup.stop()
    _leave(0)


__all__ = ["Supervisor", "parse_workers", "resolve_workers", "run_workers"]
