"""Command line: `agent run`, `agent probe --once`, `agent check-config`.

Exit codes of `probe --once` follow the Nagios plugin convention: 0 HEALTHY, 1 DEGRADED,
2 UNHEALTHY, 3 UNKNOWN (bad config, cannot run).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, NoReturn

from agent import __version__
from agent.config import ConfigError, LoadedConfig, load_config, load_config_text
from agent.config.render import dump_yaml
from agent.config.warnings import config_warnings
from agent.evaluator import HealthEvaluator, HealthState
from agent.health_json import health_document
from agent.logging_setup import log_run
from agent.recorder import LatencyRecorder
from agent.redaction import Redactor
from agent.runner import run_probe
from agent.shard import resolve_shard
from agent.targets import PROBE_ORDER, TargetPlan, build_plan

EXIT = {
    HealthState.HEALTHY: 0,
    HealthState.DEGRADED: 1,
    HealthState.UNHEALTHY: 2,
    HealthState.UNKNOWN: 3,
}
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
    doc: dict[str, Any] = {
        "targets": [sim.endpoint_config()],
        "agent": {"selfProbe": {"interval": 5000}},
    }
    if listen:
        doc["agent"]["listen"] = listen
    return load_config_text(json.dumps(doc), "<built-in demo>")


def _load(path: str | None) -> tuple[LoadedConfig, Any]:
    """The config, or (no path) the demo config with a started simulator."""
    if path:
        return load_config(path), None
    from agent.simulator import SimulatedPACS

    sim = SimulatedPACS(imaging=True).start()  # the demo shows every probe
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
    setup_logging(
        _log_level(loaded, args.verbose), redactor, args.log_format or loaded.model.agent.logFormat
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
            f"(DICOM {sim.host}:{sim.dicom_port}, API {sim.api_url}).",
            file=sys.stderr,
        )
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
    evaluator.set_maintenance({p.id: p.maintenance.active() for p in plans})
    return health_document(evaluator.snapshot())


def printable(text: str) -> str:
    """`text` with control characters, newlines and lone surrogates as escapes: a name from the
    config must not break the table's lines, drive the terminal, or fail to encode."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        for ch in text
    )


def _ms_text(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


def render_table(doc: dict[str, Any]) -> str:
    lines = [f"{doc['timestamp']}  agent: {doc['status']}"]
    for t in doc["targets"]:
        lines.append(f"\n{printable(t['id'])} ({printable(t['name'])}): {t['status']}")
        lines.append(f"  {'CHECK':<11} {'STATUS':<6} {'TIME ms':>9}  {'REASON':<17} MESSAGE")
        for c in t["checks"]:
            lines.append(
                f"  {c['name']:<11} {c['status']:<6} {_ms_text(c['responseTime']):>9}  "
                f"{c['reason'] or '-':<17} {printable(c['message'])}"
            )
            if c.get("phases"):
                ph = "  ".join(f"{k}={v:.2f}" for k, v in c["phases"].items())
                lines.append(f"  {'':<11} phases ms: {ph}")
    return "\n".join(lines)


def plugin_line(doc: dict[str, Any], plans: list[TargetPlan]) -> str:
    """The Nagios plugin output line: `STATUS - what failed | perfdata`.

    Perfdata is `name=VALUEms;WARN;CRIT` per check (WARN = degradedLatency, CRIT = the probe
    deadline, healthCheck.timeout); name is the check, `target/check` with several targets.
    """
    by_id = {p.id: p for p in plans}
    several = len(doc["targets"]) > 1
    problems: list[str] = []
    perf: list[str] = []
    checks = 0
    for t in doc["targets"]:
        plan = by_id.get(t["id"])
        for c in t["checks"]:
            checks += 1
            name = f"{t['id']}/{c['name']}" if several else c["name"]
            if c["status"] in ("FAIL", "WARN"):
                why = f"{c['reason']}: {c['message']}" if c["reason"] else c["message"]
                problems.append(f"{name} {c['status']} ({why})")
            value = "U" if c["responseTime"] is None else f"{c['responseTime']:.1f}ms"
            if plan is not None:
                warn = f"{plan.thresholds.degraded_latency * 1000:.0f}"
                crit = f"{plan.timeout * 1000:.0f}"
                perf.append(f"{name}={value};{warn};{crit}")
            else:
                perf.append(f"{name}={value}")
    n = len(doc["targets"])
    if not n:
        return f"{doc['status']} - no enabled target"
    summary = "; ".join(problems) or (
        f"{n} target{'s' * (n != 1)}, {checks} check{'s' * (checks != 1)} passed"
    )
    # one line, and no '|' before the perfdata separator
    text = printable(summary).replace("|", "/")
    return f"{doc['status']} - {text} | {' '.join(perf)}".rstrip(" |")


def _emit(text: str) -> None:
    """Print to stdout as UTF-8; a reader that went away (`| head`) ends the output quietly.

    A lone surrogate (from a config's "\\udc80") cannot be encoded: it is written as the escape
    `\\udc80`, never as a raw byte that makes the whole output invalid UTF-8."""
    data = (text + "\n").encode("utf-8", "backslashreplace")
    try:
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:  # a replaced stdout (tests): text only
            sys.stdout.write(data.decode("utf-8"))
        else:
            sys.stdout.flush()
            buffer.write(data)
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()


def cmd_probe(args: argparse.Namespace) -> int:
    if not args.once:
        print(
            "agent probe: only --once is supported (use `agent run` for the daemon)",
            file=sys.stderr,
        )
        return UNKNOWN
    redactor = Redactor()
    sim = None
    try:
        loaded, sim = _load(args.config)
        redactor.update(loaded.secrets)
        # stdout is the report; stderr stays empty unless asked (-v), as a plugin's should
        setup_logging(
            "DEBUG" if args.verbose else "ERROR",
            redactor,
            args.log_format or loaded.model.agent.logFormat,
        )
        targets = [t for t in loaded.model.targets if t.enabled]
        if args.target:
            targets = [t for t in targets if t.id == args.target]
            if not targets:
                print(f"agent probe: no enabled target with id {args.target!r}", file=sys.stderr)
                return UNKNOWN
        plans = [build_plan(t) for t in targets]
        if args.probe and not any(args.probe in p.probes for p in plans):
            running = [n for n in PROBE_ORDER if any(n in p.probes for p in plans)]
            print(
                f"agent probe: no target runs probe {args.probe!r}; configured probes: "
                f"{', '.join(running) or 'none'}",
                file=sys.stderr,
            )
            return UNKNOWN
        doc = run_once(plans, redactor, args.probe)
    except ConfigError as e:
        print(f"agent: invalid configuration:\n{e}", file=sys.stderr)
        return UNKNOWN
    finally:
        if sim is not None:
            sim.stop()
    if args.output == "json":
        out = json.dumps(doc, indent=2)
    else:
        out = plugin_line(doc, plans) + "\n" + render_table(doc)
    # no text search here: the document holds no secret (probe messages are fixed strings and
    # the runner scrubs what a probe reports), and replacing text would corrupt the JSON
    _emit(out)
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
        setup_logging(
            "DEBUG" if args.verbose else "WARNING", redactor, loaded.model.agent.logFormat
        )
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
        doc = {
            "status": {0: "OK", 1: "WARN", 2: "FAIL"}.get(exit_code(results), "UNKNOWN"),
            "targets": [r.json() for r in results],
        }
        out = json.dumps(redactor.scrub_values(doc), indent=2, ensure_ascii=False)
    else:
        out = redactor.scrub(render_text(results))
    print(out)
    return exit_code(results)


# -- check-config --------------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    # A short-lived process building a large object tree (5,000 targets: millions of objects):
    # the cyclic collector would traverse it again and again for nothing; the process exits.
    gc.disable()
    try:
        loaded = load_config(args.config, check_files=not args.no_file_checks)
    except ConfigError as e:
        print(f"{args.config}: invalid\n{e}", file=sys.stderr)
        return UNKNOWN
    for warning in config_warnings(loaded):
        print(warning, file=sys.stderr)
    plans = [build_plan(t) for t in loaded.model.targets if t.enabled]
    if not plans:
        print(NO_TARGET_WARNING, file=sys.stderr)
    lines = [
        f"# {args.config}: valid; {len(loaded.model.targets)} target(s), "
        f"{sum(len(p.probes) for p in plans)} probe(s) enabled; "
        "durations in ms, secrets redacted"
    ]
    lines += [f"# {p.id}: {', '.join(p.probes) or 'no probes'}" for p in plans]
    lines.append(dump_yaml(effective_for_display(loaded, plans)))
    _emit("\n".join(lines))  # the effective config is redacted by key (LoadedConfig.effective)
    return 0


NO_TARGET_WARNING = "warning: no target is enabled: the agent would monitor nothing"


def effective_for_display(loaded: LoadedConfig, plans: list[TargetPlan]) -> dict[str, Any]:
    """The effective config as check-config shows it: the name a target reports (its id when
    unset), under `probes:` only the probes that will run (dump_yaml writes durations as whole
    milliseconds)."""
    doc = loaded.effective()
    running = {p.id: p for p in plans}
    for t in doc.get("targets", []):
        if not t.get("name"):
            t["name"] = t["id"]
        plan = running.get(t["id"])
        if isinstance(t.get("probes"), dict):
            t["probes"] = {
                k: v for k, v in t["probes"].items() if plan is not None and k in plan.probes
            }
    return doc


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 3 (UNKNOWN): its own 2 reads as CRITICAL to Nagios."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(UNKNOWN, f"{self.prog}: error: {message}\n")


def _listen_arg(text: str) -> str:
    from agent.config.listen import parse_listen

    try:
        parse_listen(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _workers_arg(text: str) -> int:
    from agent.supervisor import parse_workers

    try:
        return parse_workers(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="agent",
        description="PACS health-monitoring agent. Exit codes: 0 HEALTHY, 1 DEGRADED, "
        "2 UNHEALTHY, 3 UNKNOWN (usage error, bad config, cannot run).",
    )
    ap.add_argument(
        "--version",
        action="version",
        version=f"pacs-health-agent {__version__}",
        help="print the version and exit",
    )
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")

    run = sub.add_parser("run", help="run the monitoring daemon")
    run.add_argument(
        "--config", help="config file (YAML or JSON); omit to probe the built-in simulated PACS"
    )
    run.add_argument(
        "--listen",
        type=_listen_arg,
        metavar="HOST:PORT",
        help="address for /metrics and /health (default agent.listen, :9887); "
        "port 0 binds a free port, printed as 'Listening on URL'",
    )
    run.add_argument("--shard", help="i/n: probe only this shard of the targets (or AGENT_SHARD)")
    run.add_argument(
        "--workers",
        type=_workers_arg,
        metavar="N",
        help="probe in N processes behind the one port (or AGENT_WORKERS; default one per "
        "usable CPU, at most one per target; 1 = a single process)",
    )
    run.add_argument("--web.config.file", dest="web_config", help="exporter-toolkit web config")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text or JSON (default: agent.logFormat, text)",
    )
    run.set_defaults(fn=cmd_run)

    probe = sub.add_parser("probe", help="run every enabled probe once and report")
    probe.add_argument(
        "--once",
        action="store_true",
        required=True,
        help="run each probe once and exit (required; the daemon is `agent run`)",
    )
    probe.add_argument(
        "--config", help="config file (YAML or JSON); omit to probe the built-in simulated PACS"
    )
    probe.add_argument("--target", help="only this target id")
    probe.add_argument(
        "--probe",
        choices=PROBE_ORDER,
        metavar="NAME",
        help=f"only this probe: {', '.join(PROBE_ORDER)}",
    )
    probe.add_argument(
        "--output",
        choices=["table", "json"],
        default="table",
        help="table: a Nagios plugin line (status, failures, perfdata) and a "
        "table; json: the /health document (default table)",
    )
    probe.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging on stderr (otherwise stderr stays empty)",
    )
    probe.add_argument("--log-format", choices=["text", "json"], help="log lines as text or JSON")
    probe.set_defaults(fn=cmd_probe)

    diag = sub.add_parser(
        "diagnose", help="DNS, TCP, TLS, association, C-ECHO, C-FIND, API step by step, with hints"
    )
    diag.add_argument("--config", help="config file; omit to diagnose the built-in simulator")
    diag.add_argument("--target", help="only this target id")
    diag.add_argument(
        "--output",
        choices=["text", "json"],
        default="text",
        help="text for people, json for tools (default text)",
    )
    diag.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    diag.set_defaults(fn=cmd_diagnose)

    check = sub.add_parser("check-config", help="validate a config and print it, secrets redacted")
    check.add_argument("--config", required=True, help="config file (YAML or JSON) to check")
    check.add_argument(
        "--no-file-checks",
        action="store_true",
        help="do not check that TLS files exist (a config for another machine)",
    )
    check.set_defaults(fn=cmd_check_config)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "fn", None) is None:  # `agent` alone
        parser.print_help(sys.stderr)
        return UNKNOWN
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout closed early (`| head`): not an error of the agent
        _quiet_stdout()
        return 0


if __name__ == "__main__":
    os._exit(main())
