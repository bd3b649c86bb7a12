"""Command line: `agent run`, `agent probe --once`, `agent check-config` (DESIGN §3 CLI).

Exit codes of `probe --once` follow the Nagios plugin convention: 0 HEALTHY, 1 DEGRADED,
2 UNHEALTHY, 3 UNKNOWN (bad config, cannot run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, NoReturn

import yaml

from agent import __version__
from agent.config import ConfigError, LoadedConfig, load_config, load_config_text
from agent.config.warnings import config_warnings
from agent.evaluator import HealthEvaluator, HealthState
from agent.health_json import health_document
from agent.logging_setup import log_run
from agent.recorder import LatencyRecorder
from agent.redaction import Redactor
from agent.runner import run_probe
from agent.shard import resolve_shard
from agent.targets import TargetPlan, build_plan

EXIT = {HealthState.HEALTHY: 0, HealthState.DEGRADED: 1, HealthState.UNHEALTHY: 2,
        HealthState.UNKNOWN: 3}
UNKNOWN = 3

log = logging.getLogger("agent")


def setup_logging(level: str, redactor: Redactor, fmt: str = "text") -> None:
    """Level, text or JSON lines, redaction, DEBUG_SECTRA/TRACE_SECTRA (agent.logging_setup)."""
    from agent.logging_setup import setup_logging as _setup

    _setup(level, redactor, fmt)


def _log_level(loaded: LoadedConfig | None, verbose: bool) -> str:
    if verbose:
        return "DEBUG"
    if loaded is None:
        return "INFO"
    if loaded.model.agent.logLevel:
        return loaded.model.agent.logLevel
    levels = [t.monitoring.logLevel for t in loaded.model.targets] or ["INFO"]
    order = ["DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"]
    return min(levels, key=order.index)


def _demo_config(sim: Any, listen: str | None) -> LoadedConfig:
    doc = {"targets": [sim.endpoint_config()], "agent": {"selfProbe": {"interval": 5000}}}
    if listen:
        doc["agent"]["listen"] = listen
    return load_config_text(json.dumps(doc), "<built-in demo>")


def _load(path: str | None) -> tuple[LoadedConfig, Any]:
    """The config, or (no path) the demo config with a started simulator."""
    if path:
        return load_config(path), None
    from agent.simulator import SimulatedPACS

    sim = SimulatedPACS().start()
    return _demo_config(sim, None), sim


# -- run -----------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from agent.service import AgentService

    redactor = Redactor()
    try:
        loaded, sim = _load(args.config)
        shard = resolve_shard(args.shard, loaded.model.agent.shard)
    except (ConfigError, ValueError) as e:
        print(f"agent: invalid configuration:\n{e}", file=sys.stderr)
        return UNKNOWN
    redactor.update(loaded.secrets)
    setup_logging(_log_level(loaded, args.verbose), redactor,
                  args.log_format or loaded.model.agent.logFormat)
    web = None
    if args.web_config:
        from agent.web_config import WebConfigError, load_web_config

        try:
            web = load_web_config(args.web_config)
        except WebConfigError as e:
            print(f"agent: invalid --web.config.file: {e}", file=sys.stderr)
            return UNKNOWN
    try:
        service = AgentService(
            loaded, shard=shard, redactor=redactor, listen=args.listen, config_path=args.config,
            web=web,
        )
    except OSError as e:
        print(f"agent: cannot listen on {args.listen or loaded.model.agent.listen}: {e.strerror}",
              file=sys.stderr)
        if sim:
            sim.stop()
        return UNKNOWN
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=service.reload).start())
    from agent.tuning import tune_daemon_process

    tune_daemon_process()
    service.start()
    scheme = "https" if web is not None and web.ssl_context is not None else "http"
    base = f"{scheme}://{_url_host(service.address[0])}:{service.address[1]}"
    if sim is not None:
        print(
            f"No --config given: probing the built-in simulated Sectra PACS "
            f"(DICOM {sim.host}:{sim.dicom_port}, API {sim.api_url}).", file=sys.stderr)
    # The port actually bound (`--listen 127.0.0.1:0` picks a free one), in one line on stdout
    # that scripts and tests read: "Listening on http://127.0.0.1:PORT".
    _say(f"Listening on {base}")
    print(f"Metrics: {base}/metrics   Health: {base}/health", file=sys.stderr, flush=True)
    stop.wait()
    service.stop()
    if sim is not None:
        sim.stop()
    _leave(0)


def _url_host(host: str) -> str:
    """The bound host as it goes in a URL: wildcards as loopback, IPv6 in brackets."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _say(line: str) -> None:
    """One line on stdout, flushed at once; a closed pipe (`| head`) is not an error."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        _quiet_stdout()


def _quiet_stdout() -> None:
    # Python would report the broken pipe again when it flushes stdout at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _leave(code: int) -> NoReturn:
    """End `agent run` now, cancelling probes still in flight.

    A probe blocked on a silent PACS holds a scheduler worker until its deadline (up to the
    configured timeout, 30 s or more), and a normal interpreter exit joins those workers: SIGTERM
    would take that long. stop() has already flushed the exporters and discarded late results, so
    the process leaves without waiting; the kernel closes the probes' connections.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# -- probe --once --------------------------------------------------------------------------------


def run_once(
    plans: list[TargetPlan], redactor: Redactor, probe_filter: str | None = None
) -> dict[str, Any]:
    """Every enabled probe once, concurrently; one failed run is FAIL (no history to wait for)."""
    evaluator = HealthEvaluator()
    recorder = LatencyRecorder()
    jobs = []
    for plan in plans:
        names = [n for n in plan.probes if probe_filter in (None, n)]
        th = replace(plan.thresholds, failure=1, success=1)
        evaluator.add_target(plan.id, plan.name, th, names)
        jobs += [(plan, n) for n in names]
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(jobs)))) as pool:
        results = list(pool.map(lambda j: run_probe(j[0], j[1], redactor=redactor), jobs))
    for r in results:
        log_run(r)
    for r in results:
        q = recorder.record(r.target, r.probe, r.duration) if r.ok else {}
        evaluator.update(r, q.get(0.95))
    return health_document(evaluator.snapshot())


def render_table(doc: dict[str, Any]) -> str:
    lines = [f"{doc['timestamp']}  agent: {doc['status']}"]
    for t in doc["targets"]:
        lines.append(f"\n{t['id']} ({t['name']}): {t['status']}")
        lines.append(f"  {'CHECK':<11} {'STATUS':<6} {'TIME ms':>9}  {'REASON':<17} MESSAGE")
        for c in t["checks"]:
            rt = "" if c["responseTime"] is None else f"{c['responseTime']:.1f}"
            lines.append(
                f"  {c['name']:<11} {c['status']:<6} {rt:>9}  {c['reason'] or '-':<17} "
                f"{c['message']}"
            )
            if c.get("phases"):
                ph = "  ".join(f"{k}={v:.2f}" for k, v in c["phases"].items())
                lines.append(f"  {'':<11} phases ms: {ph}")
    return "\n".join(lines)


def cmd_probe(args: argparse.Namespace) -> int:
    if not args.once:
        print("agent probe: only --once is supported (use `agent run` for the daemon)",
              file=sys.stderr)
        return UNKNOWN
    redactor = Redactor()
    sim = None
    try:
        loaded, sim = _load(args.config)
        redactor.update(loaded.secrets)
        setup_logging("DEBUG" if args.verbose else "WARNING", redactor,
                      args.log_format or loaded.model.agent.logFormat)
        targets = [t for t in loaded.model.targets if t.enabled]
        if args.target:
            targets = [t for t in targets if t.id == args.target]
            if not targets:
                print(f"agent probe: no enabled target with id {args.target!r}", file=sys.stderr)
                return UNKNOWN
        plans = [build_plan(t) for t in targets]
        if args.probe and not any(args.probe in p.probes for p in plans):
            print(f"agent probe: no target runs probe {args.probe!r}", file=sys.stderr)
            return UNKNOWN
        doc = run_once(plans, redactor, args.probe)
    except ConfigError as e:
        print(f"agent: invalid configuration:\n{e}", file=sys.stderr)
        return UNKNOWN
    finally:
        if sim is not None:
            sim.stop()
    out = json.dumps(doc, indent=2) if args.output == "json" else render_table(doc)
    print(redactor.scrub(out))
    return EXIT[HealthState(doc["status"])]


# -- diagnose ------------------------------------------------------------------------------------


def cmd_diagnose(args: argparse.Namespace) -> int:
    """The guide's diagnoseConnection step by step (agent.diagnose); exit codes as probe --once."""
    from agent.diagnose import diagnose_target, exit_code, render_text

    redactor = Redactor()
    sim = None
    try:
        loaded, sim = _load(args.config)
        redactor.update(loaded.secrets)
        setup_logging("DEBUG" if args.verbose else "WARNING", redactor,
                      loaded.model.agent.logFormat)
        targets = [t for t in loaded.model.targets if t.enabled or t.id == args.target]
        if args.target:
            targets = [t for t in targets if t.id == args.target]
            if not targets:
                print(f"agent diagnose: no target with id {args.target!r}", file=sys.stderr)
                return UNKNOWN
        results = [diagnose_target(t) for t in targets]
    except ConfigError as e:
        print(f"agent: invalid configuration:\n{e}", file=sys.stderr)
        return UNKNOWN
    finally:
        if sim is not None:
            sim.stop()
    if args.output == "json":
        doc = {"status": {0: "OK", 1: "WARN", 2: "FAIL"}.get(exit_code(results), "UNKNOWN"),
               "targets": [r.json() for r in results]}
        out = json.dumps(doc, indent=2, ensure_ascii=False)
    else:
        out = render_text(results)
    print(redactor.scrub(out))
    return exit_code(results)


# -- check-config --------------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        loaded = load_config(args.config, check_files=not args.no_file_checks)
    except ConfigError as e:
        print(f"{args.config}: invalid\n{e}", file=sys.stderr)
        return UNKNOWN
    for warning in config_warnings(loaded):
        print(warning, file=sys.stderr)
    redactor = Redactor(loaded.secrets)
    plans = [build_plan(t) for t in loaded.model.targets if t.enabled]
    print(f"# {args.config}: valid; {len(loaded.model.targets)} target(s), "
          f"{sum(len(p.probes) for p in plans)} probe(s) enabled; "
          "durations in ms, secrets redacted")
    for p in plans:
        print(f"# {p.id}: {', '.join(p.probes) or 'no probes'}")
    print(redactor.scrub(yaml.safe_dump(loaded.effective(), sort_keys=False)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="agent", description="PACS health-monitoring agent")
    ap.add_argument("--version", action="version", version=f"pacs-health-agent {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the monitoring daemon")
    run.add_argument("--config", help="config file (YAML or JSON); omit to probe the built-in "
                     "simulated PACS")
    run.add_argument("--listen", help="HOST:PORT for /metrics and /health (default :9887)")
    run.add_argument("--shard", help="i/n: probe only this shard of the targets (or AGENT_SHARD)")
    run.add_argument("--web.config.file", dest="web_config", help="exporter-toolkit web config")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.add_argument("--log-format", choices=["text", "json"], help="log lines as text or JSON "
                     "(default: agent.logFormat, text)")
    run.set_defaults(fn=cmd_run)

    probe = sub.add_parser("probe", help="run every enabled probe once and report")
    probe.add_argument("--once", action="store_true", required=True)
    probe.add_argument("--config")
    probe.add_argument("--target", help="only this target id")
    probe.add_argument("--probe", help="only this probe (dicom_echo, dicom_find, api_ping, ...)")
    probe.add_argument("--output", choices=["table", "json"], default="table")
    probe.add_argument("-v", "--verbose", action="store_true")
    probe.add_argument("--log-format", choices=["text", "json"], help="log lines as text or JSON")
    probe.set_defaults(fn=cmd_probe)

    diag = sub.add_parser(
        "diagnose", help="DNS, TCP, TLS, association, C-ECHO, C-FIND, API step by step, with hints"
    )
    diag.add_argument("--config", help="config file; omit to diagnose the built-in simulator")
    diag.add_argument("--target", help="only this target id")
    diag.add_argument("--output", choices=["text", "json"], default="text",
                      help="text for people, json for tools (default text)")
    diag.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    diag.set_defaults(fn=cmd_diagnose)

    check = sub.add_parser("check-config", help="validate a config and print it, secrets redacted")
    check.add_argument("--config", required=True)
    check.add_argument("--no-file-checks", action="store_true",
                       help="do not check that TLS files exist (a config for another machine)")
    check.set_defaults(fn=cmd_check_config)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os._exit(main())
