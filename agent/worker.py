"""One worker process of `agent run --workers N`: the daemon (AgentService) over its own slice
of the targets, answering the supervisor on a private unix socket instead of the public port.

Started by agent.supervisor as `python -m agent.worker ...`, never by hand. It reads the config
file itself (and again on SIGHUP), so a reload needs no config to travel between processes.
The text of the config it runs is kept next to its socket (RUNDIR/worker-J.config): a restarted
worker loads that, not the file, so it runs what the other workers run even when the file was
edited (or broken) since and not reloaded.
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

from agent.config import ConfigError, LoadedConfig, load_config, load_config_text
from agent.observation import ConfigLoad
from agent.redaction import Redactor
from agent.service import AgentService
from agent.shard import WorkerShard, parse_shard

log = logging.getLogger("agent")

# GET / on a worker's socket: the status page's inputs, pickled, for the supervisor to render
# one page over every worker's targets (the socket is the supervisor's, in a 0700 directory).
SNAPSHOT_PATH = "/"


class WorkerService(AgentService):
    accepted: Path | None = None  # where the text of the config it runs is kept (accepted_path)

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

    def _accepted(self, loaded: LoadedConfig) -> None:
        if self.accepted is not None:
            keep_accepted(self.accepted, loaded.text)

    @property
    def address(self) -> tuple[str, int]:
        return str(self.server.server_address), 0


def accepted_path(socket_path: str) -> Path:
    """Where worker J keeps the config text it runs: RUNDIR/worker-J.config."""
    return Path(socket_path).with_suffix(".config")


def keep_accepted(path: Path, text: str) -> None:
    """Write the accepted config text whole or not at all (a restart must never read half)."""
    tmp = path.with_suffix(".config.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:  # the worker runs on; only a later restart would read the file instead
        log.warning("cannot keep the accepted config for restarts (%s): %s", path, e.strerror)


def _load(config: str, accepted: Path) -> LoadedConfig:
    """A restart loads the config the worker ran before (named as the user's file in any
    error); the first start, the file."""
    try:
        text = accepted.read_text(encoding="utf-8")
    except FileNotFoundError:
        return load_config(config, compact=True)
    except OSError as e:
        raise ConfigError([f"{accepted}: cannot read: {e.strerror}"]) from None
    return load_config_text(text, config, compact=True)


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
    accepted = accepted_path(args.socket)
    if loaded is None:
        try:
            loaded = _load(args.config, accepted)
        except ConfigError as e:
            print(f"agent worker {w}: invalid configuration:\n{e}", file=sys.stderr)
            return 3
    redactor.update(loaded.secrets)
    setup_logging(
        _log_level(loaded, args.verbose), redactor, args.log_format or loaded.model.agent.logFormat
    )
    keep_accepted(accepted, loaded.text)
    service = WorkerService(
        loaded,
        shard=shard,
        redactor=redactor,
        listen=f"unix:{args.socket}",
        config_path=args.config,
    )
    service.accepted = accepted
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
