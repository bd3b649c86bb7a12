"""One worker process of `agent run --workers N`: the daemon (AgentService) over its own slice
of the targets, answering the supervisor on a private unix socket instead of the public port.

Started by agent.supervisor as `python -m agent.worker ...`, never by hand. It reads the config
file itself (and again on SIGHUP), so a reload needs no config to travel between processes.
Its stdin is a pipe from the supervisor: end of file means the supervisor is gone (even
SIGKILLed), and the worker stops instead of probing on as an orphan.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import signal
import sys
import threading
from pathlib import Path

from agent.config import ConfigError, LoadedConfig, load_config
from agent.observation import ConfigLoad
from agent.redaction import Redactor
from agent.service import AgentService
from agent.shard import WorkerShard, parse_shard

log = logging.getLogger("agent")

# GET / on a worker's socket: the status page's inputs, pickled, for the supervisor to render
# one page over every worker's targets (the socket is the supervisor's, in a 0700 directory).
SNAPSHOT_PATH = "/"


class WorkerService(AgentService):
    def _health(self) -> tuple[int, bytes]:
        """GET /health on a worker's socket: one line per target, `INDEX\tJSON`, INDEX its
        position in the config. The supervisor sorts and joins the lines into one /health
        without parsing any JSON (10,000 targets: a parse and a dump took seconds per scrape).
        The JSON fragments are the /health exporter's cached ones: no newline inside (JSON escapes
        them), the same text one process serves."""
        self._refresh_maintenance()
        order = self.target_order
        parts, _ = self.health.parts()
        lines = []
        for part in parts:
            tid = part[7 : part.index('"', 7)]  # '{"id":"ID",...': ids are [A-Za-z0-9_.:-]
            lines.append(f"{order.get(tid, len(order))}\t{part}")
        return 200, "\n".join(lines).encode()

    def _status_page(self) -> bytes:
        self._refresh_maintenance()
        targets = self.evaluator.snapshot()
        history = {(t.id, c): self.recorder.history(t.id, c) for t in targets for c in t.checks}
        return pickle.dumps((targets, history), protocol=pickle.HIGHEST_PROTOCOL)

    def _reject(
        self, reason: str, details: str | None = None, scrub: Redactor | None = None
    ) -> tuple[bool, str]:
        # every worker rejects the same file for the same reason: worker 0 logs it, once, as
        # one process would; the others answer the same line quietly
        if getattr(self.shard, "worker", 0) == 0:
            return super()._reject(reason, details, scrub)
        self.pipeline.emit(ConfigLoad(False))
        line = " ".join((scrub or self.redactor).scrub(reason).split())
        return False, f"config reload rejected, keeping the running config: {line}"

    @property
    def address(self) -> tuple[str, int]:
        return str(self.server.server_address), 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="agent.worker")
    ap.add_argument("--config", required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--worker", required=True, help="j/N: this worker of N")
    ap.add_argument("--shard", default="0/1", help="the pod's shard, resolved by the supervisor")
    ap.add_argument("--log-format", default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap.parse_args(argv)


def _watch_parent(stop: threading.Event) -> None:
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    stop.set()


def main(argv: list[str] | None = None, loaded: LoadedConfig | None = None) -> int:
    """`python -m agent.worker ARGS`; a forked worker passes the supervisor's `loaded` config."""
    from agent.cli_common import leave as _leave
    from agent.cli_common import log_level as _log_level
    from agent.cli_common import setup_logging
    from agent.tuning import tune_daemon_process

    args = _parse(argv)
    w, pod = parse_shard(args.worker), parse_shard(args.shard)
    shard = WorkerShard(pod.index, pod.count, worker=w.index, workers=w.count)
    redactor = Redactor()
    if loaded is None:
        try:
            loaded = load_config(args.config)
        except ConfigError as e:
            print(f"agent worker {w}: invalid configuration:\n{e}", file=sys.stderr)
            return 3
    redactor.update(loaded.secrets)
    setup_logging(
        _log_level(loaded, args.verbose), redactor, args.log_format or loaded.model.agent.logFormat
    )
    service = WorkerService(
        loaded,
        shard=shard,
        redactor=redactor,
        listen=f"unix:{args.socket}",
        config_path=args.config,
    )
    del loaded  # the service keeps what it needs (kept_config); the target models can go
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which stops us
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=service.reload).start())
    threading.Thread(target=_watch_parent, args=(stop,), daemon=True, name="parent").start()
    tune_daemon_process()
    # who is who, for tools and tests: RUNDIR/worker-J.pid next to RUNDIR/worker-J.sock
    Path(args.socket).with_suffix(".pid").write_text(f"{os.getpid()}\n")
    service.start()
    stop.wait()
    service.stop()
    _leave(0)


if __name__ == "__main__":
    sys.exit(main())
