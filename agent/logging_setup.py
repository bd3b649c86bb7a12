"""Logging: level, text or JSON lines, redaction, and the integration guide's two switches.

* `DEBUG_SECTRA=true` turns on debug logging (as `--verbose` does).
* `TRACE_SECTRA=true` logs one line per operation (a probe run) with its duration in ms and
  SUCCESS/FAILURE, in the guide's shape: `[SECTRA TRACE] <target>/<probe>: 12ms (SUCCESS)`.
  Only the target id, probe name, reason code and duration: never a query or a response (PHI).
* `--log-format json` / `agent.logFormat: json`: one JSON object per line for log pipelines,
  with `target`, `probe`, `reason` and `duration_ms` as fields where a line is about a run.

Redaction (agent.redaction) is a filter on the root handler: it scrubs and freezes the message
before any formatter runs, so JSON lines are as redacted as text lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from agent.redaction import Redactor, install_log_redaction
from probes.base import ProbeResult

TRUE = frozenset({"1", "true", "yes", "on"})
# Fields a record may carry (logging's `extra=`) that the JSON formatter emits as keys.
RUN_FIELDS = ("target", "probe", "reason", "duration_ms", "outcome", "attempts")
NOISY = ("pynetdicom", "apscheduler", "httpx", "httpcore")

trace_log = logging.getLogger("agent.trace")
run_log = logging.getLogger("agent.run")
_trace = False


def env_flag(name: str, env: Mapping[str, str] | None = None) -> bool:
    return (env if env is not None else os.environ).get(name, "").strip().lower() in TRUE


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, run fields, exception text."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in RUN_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(
    level: str,
    redactor: Redactor,
    fmt: str = "text",
    env: Mapping[str, str] | None = None,
) -> None:
    """Root handler on stderr with the redaction filter; DEBUG_SECTRA/TRACE_SECTRA honoured."""
    global _trace
    level = "WARNING" if level == "WARN" else level
    if env_flag("DEBUG_SECTRA", env):
        level = "DEBUG"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # third-party chatter (pynetdicom logs every association at INFO)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _trace = env_flag("TRACE_SECTRA", env)
    # the trace lines are wanted even when the root level is WARNING (probe --once)
    trace_log.setLevel(logging.INFO if _trace else logging.NOTSET)
    install_log_redaction(redactor)


def tracing() -> bool:
    return _trace


def run_fields(r: ProbeResult) -> dict[str, Any]:
    """The `extra=` of a log line about one run (no message text: it is in the line)."""
    return {
        "target": r.target,
        "probe": r.probe,
        "reason": r.reason.value if r.reason else None,
        "duration_ms": round(float(r.duration) * 1000, 3),
        "outcome": "SUCCESS" if r.ok else "FAILURE",
        "attempts": r.attempts,
    }


def log_run(r: ProbeResult) -> None:
    """Every probe run: a debug line with its phases, and with TRACE_SECTRA the trace line.
    Neither is on by default: then this is two flag checks, no formatting."""
    debug = run_log.isEnabledFor(logging.DEBUG)
    if not (debug or _trace):
        return
    fields = run_fields(r)
    if debug:
        phases = " ".join(f"{k}={v * 1000:.1f}ms" for k, v in r.phases.items())
        run_log.debug(
            "probe %s/%s %s in %.1f ms (%d attempt(s)) %s",
            r.target,
            r.probe,
            "ok" if r.ok else f"failed: {r.reason}",
            r.duration * 1000,
            r.attempts,
            phases,
            extra=fields,
        )
    if not _trace:
        return
    trace_log.info(
        "[SECTRA TRACE] %s/%s: %.0fms (%s)",
        r.target,
        r.probe,
        r.duration * 1000,
        "SUCCESS" if r.ok else "FAILURE",
        extra=fields,
    )


__all__ = [
    "JsonFormatter",
    "env_flag",
    "log_run",
    "run_fields",
    "setup_logging",
    "tracing",
]
