"""Command line: `agent run`, `agent probe --once`, `agent diagnose`, `agent check-config`.

This module is the argument parser and the dispatch; each command lives in its own module
(agent.cli_run, agent.cli_probe, agent.cli_check), imported only when it runs, so that
`check-config` (5,000 targets at start and on every reload) and `--help` do not load the probes,
the exporters or the scheduler. Exit codes follow the Nagios plugin convention: 0 HEALTHY,
1 DEGRADED, 2 UNHEALTHY, 3 UNKNOWN (usage error, bad config, cannot run).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from agent import __version__
from agent.cli_common import UNKNOWN, printable, quiet_stdout
from probes.registry import PROBES

__all__ = ["UNKNOWN", "build_parser", "main", "printable"]

# Names that lived here before the commands had their own modules, found where they are now
# (old name -> module, name there), so that code written against the single module still runs.
_MOVED = {
    "run_once": ("agent.cli_probe", "run_once"),
    "plugin_line": ("agent.cli_probe", "plugin_line"),
    "render_table": ("agent.cli_probe", "render_table"),
    "EXIT": ("agent.cli_probe", "EXIT"),
    "cmd_probe": ("agent.cli_probe", "cmd_probe"),
    "cmd_diagnose": ("agent.cli_probe", "cmd_diagnose"),
    "cmd_run": ("agent.cli_run", "cmd_run"),
    "_leave": ("agent.cli_common", "leave"),
    "_url_host": ("agent.cli_common", "url_host"),
    "cmd_check_config": ("agent.cli_check", "cmd_check_config"),
    "effective_for_display": ("agent.cli_check", "effective_for_display"),
    "NO_TARGET_WARNING": ("agent.cli_common", "NO_TARGET_WARNING"),
    "setup_logging": ("agent.cli_common", "setup_logging"),
    "_log_level": ("agent.cli_common", "log_level"),
    "_load": ("agent.cli_common", "load_or_demo"),
    "_demo_config": ("agent.cli_common", "demo_config"),
    "_say": ("agent.cli_common", "say"),
    "_emit": ("agent.cli_common", "emit"),
    "_quiet_stdout": ("agent.cli_common", "quiet_stdout"),
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attr = _MOVED[name]
    return getattr(importlib.import_module(module), attr)


# Each command imports its module when it runs (see the module docstring).
def _run(args: argparse.Namespace) -> int:
    from agent.cli_run import cmd_run

    return cmd_run(args)


def _probe(args: argparse.Namespace) -> int:
    from agent.cli_probe import cmd_probe

    return cmd_probe(args)


def _diagnose(args: argparse.Namespace) -> int:
    from agent.cli_probe import cmd_diagnose

    return cmd_diagnose(args)


def _check_config(args: argparse.Namespace) -> int:
    from agent.cli_check import cmd_check_config

    return cmd_check_config(args)


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
    probe_names = tuple(PROBES)  # run order (probes.registry)
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
    run.set_defaults(fn=_run)

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
        choices=probe_names,
        metavar="NAME",
        help=f"only this probe: {', '.join(probe_names)}",
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
    probe.set_defaults(fn=_probe)

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
    diag.set_defaults(fn=_diagnose)

    check = sub.add_parser("check-config", help="validate a config and print it, secrets redacted")
    check.add_argument("--config", required=True, help="config file (YAML or JSON) to check")
    check.add_argument(
        "--no-file-checks",
        action="store_true",
        help="do not check that TLS files exist (a config for another machine)",
    )
    check.set_defaults(fn=_check_config)
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
        quiet_stdout()
        return 0


if __name__ == "__main__":
    os._exit(main())
