"""`agent run`: the monitoring daemon, until SIGTERM or SIGINT; SIGHUP reloads the config."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from agent.cli_common import (
    NO_TARGET_WARNING,
    UNKNOWN,
    leave,
    load_or_demo,
    log_level,
    say,
    setup_logging,
    url_host,
)
from agent.config import ConfigError
from agent.config.warnings import config_warnings
from agent.redaction import Redactor
from agent.shard import resolve_shard

log = logging.getLogger("agent")


def cmd_run(args: argparse.Namespace) -> int:
    from agent.service import AgentService

    redactor = Redactor()
    try:
        loaded, sim = load_or_demo(args.config, compact=True)
        shard = resolve_shard(args.shard, loaded.model.agent.shard)
    except (ConfigError, ValueError) as e:
        print(f"agent: invalid configuration:\n{e}", file=sys.stderr)
        return UNKNOWN
    redactor.update(loaded.secrets)
    setup_logging(
        log_level(loaded, args.verbose), redactor, args.log_format or loaded.model.agent.logFormat
    )
    for warning in config_warnings(loaded):
        log.warning("%s", warning)
    web = None
    if args.web_config:
        from agent.web_config import WebConfigError, load_web_config

        try:
            web = load_web_config(args.web_config)
        except WebConfigError as e:
            print(f"agent: invalid --web.config.file: {e}", file=sys.stderr)
            return UNKNOWN
    from agent.supervisor import resolve_workers, run_workers

    try:  # the demo (no --config) is one target: one process
        workers = resolve_workers(args.workers, loaded, shard) if args.config else 1
    except ValueError as e:
        print(f"agent: {e}", file=sys.stderr)
        return UNKNOWN
    if workers > 1:  # N processes behind this one port (agent.supervisor)
        return run_workers(args, loaded, shard, web, workers)
    try:
        service = AgentService(
            loaded,
            shard=shard,
            redactor=redactor,
            listen=args.listen,
            config_path=args.config,
            web=web,
        )
    except OSError as e:
        print(
            f"agent: cannot listen on {args.listen or loaded.model.agent.listen}: {e.strerror}",
            file=sys.stderr,
        )
        if sim:
            sim.stop()
        return UNKNOWN
    except (ValueError, OverflowError) as e:
        # a plan that cannot run, e.g. an interval no scheduler can place
        print(f"agent: invalid configuration: {e}", file=sys.stderr)
        if sim:
            sim.stop()
        return UNKNOWN
    if not any(t.enabled for t in loaded.model.targets):
        print(NO_TARGET_WARNING, file=sys.stderr)
    del loaded  # the service keeps what it needs (kept_config); the target models can go
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=service.reload).start())
    from agent.tuning import tune_daemon_process

    tune_daemon_process()
    service.start()
    scheme = "https" if web is not None and web.ssl_context is not None else "http"
    base = f"{scheme}://{url_host(service.address[0])}:{service.address[1]}"
    if sim is not None:
        print(
            f"No --config given: probing the built-in simulated Sectra PACS "
            f"(DICOM {sim.host}:{sim.dicom_port}, API {sim.api_url}).",
            file=sys.stderr,
        )
    # The port actually bound (`--listen 127.0.0.1:0` picks a free one), in one line on stdout
    # that scripts and tests read: "Listening on http://127.0.0.1:PORT".
    say(f"Listening on {base}")
    print(f"Metrics: {base}/metrics   Health: {base}/health", file=sys.stderr, flush=True)
    stop.wait()
    service.stop()
    if sim is not None:
        sim.stop()
    leave(0)
