"""What the `agent` commands share: exit code 3, loading the config or the demo, logging setup,
writing to stdout. Imports nothing heavy: `check-config` and `--help` load only what they use."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from agent.config import ConfigError, LoadedConfig, load_config, load_config_text

if TYPE_CHECKING:
    from agent.config.schema import Endpoint
    from agent.redaction import Redactor

UNKNOWN = 3  # the Nagios plugin convention's UNKNOWN: usage error, bad config, cannot run
NO_TARGET_WARNING = "warning: no target is enabled: the agent would monitor nothing"


def setup_logging(level: str, redactor: Redactor, fmt: str = "text") -> None:
    """Level, text or JSON lines, redaction, DEBUG_SECTRA/TRACE_SECTRA (agent.logging_setup)."""
    from agent.logging_setup import setup_logging as _setup

    _setup(level, redactor, fmt)


def log_level(loaded: LoadedConfig | None, verbose: bool) -> str:
    if verbose:
        return "DEBUG"
    if loaded is None:
        return "INFO"
    if loaded.model.agent.logLevel:
        return loaded.model.agent.logLevel
    levels = [t.monitoring.logLevel for t in loaded.model.targets] or ["INFO"]
    order = ["DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"]
    return min(levels, key=order.index)


def demo_config(sim: Any, listen: str | None) -> LoadedConfig:
    doc: dict[str, Any] = {
        "targets": [sim.endpoint_config()],
        "agent": {"selfProbe": {"interval": 5000}},
    }
    if listen:
        doc["agent"]["listen"] = listen
    return load_config_text(json.dumps(doc), "<built-in demo>")


def load_or_demo(path: str | None, *, compact: bool = False) -> tuple[LoadedConfig, Any]:
    """The config, or (no path) the demo config with a started simulator. `compact` for the
    daemon, which keeps what it builds from the config (agent.config.loader)."""
    if path:
        return load_config(path, compact=compact), None
    from agent.simulator import SimulatedPACS

    sim = SimulatedPACS(imaging=True).start()  # the demo shows every probe
    return demo_config(sim, None), sim


class UsageError(Exception):
    """A one-shot command cannot run as asked (e.g. no such target): the message, exit 3."""


def refused(e: ConfigError | UsageError) -> int:
    """Say on stderr why a one-shot command cannot run; its exit code (UNKNOWN)."""
    if isinstance(e, ConfigError):
        print(f"agent: invalid configuration:\n{e}", file=sys.stderr)
    else:
        print(e, file=sys.stderr)
    return UNKNOWN


@dataclass
class OneShot:
    loaded: LoadedConfig
    targets: list[Endpoint]
    redactor: Redactor


@contextmanager
def one_shot(
    command: str,
    config: str | None,
    target: str | None,
    *,
    level: str,
    log_format: str | None = None,
    named_disabled: bool = False,
) -> Iterator[OneShot]:
    """What `probe --once` and `diagnose` do first: the config (or the demo, its simulator
    stopped on the way out), redaction and logging set up, and the targets to run, narrowed to
    `target` when one is named. `named_disabled`: a target named on the command line runs even
    when the config disables it. Raises ConfigError, or UsageError when no target matches."""
    from agent.redaction import Redactor

    loaded, sim = load_or_demo(config)
    try:
        redactor = Redactor()
        redactor.update(loaded.secrets)
        setup_logging(level, redactor, log_format or loaded.model.agent.logFormat)
        targets = [
            t for t in loaded.model.targets if t.enabled or (named_disabled and t.id == target)
        ]
        if target:
            targets = [t for t in targets if t.id == target]
            if not targets:
                enabled = "" if named_disabled else "enabled "
                raise UsageError(f"agent {command}: no {enabled}target with id {target!r}")
        yield OneShot(loaded, targets, redactor)
    finally:
        if sim is not None:
            sim.stop()


def printable(text: str) -> str:
    """`text` with control characters, newlines and lone surrogates as escapes: a name from the
    config must not break the table's lines, drive the terminal, or fail to encode."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        for ch in text
    )


def say(line: str) -> None:
    """One line on stdout, flushed at once; a closed pipe (`| head`) is not an error."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        quiet_stdout()


def quiet_stdout() -> None:
    # Python would report the broken pipe again when it flushes stdout at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def emit(text: str) -> None:
    """Print to stdout as UTF-8; a reader that went away (`| head`) ends the output quietly.

    A lone surrogate (from a config's "\\udc80") cannot be encoded: it is written as the escape
    `\\udc80`, never as a raw byte that makes the whole output invalid UTF-8."""
    emit_pieces([text, "\n"])


def emit_pieces(pieces: Iterable[str]) -> None:
    """emit() of the concatenated pieces, written one by one (no copy of a large output)."""
    try:
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is not None:
            sys.stdout.flush()
        for piece in pieces:
            data = piece.encode("utf-8", "backslashreplace")
            if buffer is None:  # a replaced stdout (tests): text only
                sys.stdout.write(data.decode("utf-8"))
            else:
                buffer.write(data)
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_stdout()


def url_host(host: str) -> str:
    """The bound host as it goes in a URL: wildcards as loopback, IPv6 in brackets."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def leave(code: int) -> NoReturn:
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
