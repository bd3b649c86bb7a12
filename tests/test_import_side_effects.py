"""Importing the agent changes no global state: no logging filter, handler or level, no
prometheus_client registry entry or setting, no thread, no signal or exception hook. What an
exporter needs (the OTLP SDK log capture) is installed when the exporter is built.

Run in fresh interpreters: the first lists the third-party modules the agent's modules import;
the second imports those first, takes a snapshot, imports every agent and probes module and
compares."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WALK = r"""
import importlib, pkgutil
import agent, probes
names = []
for pkg in (agent, probes):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if not m.name.endswith("__main__"):  # `python -m agent` runs the CLI
            names.append(m.name)
"""

LIST_THIRD_PARTY = WALK + r"""
import json, sys
for n in names:
    importlib.import_module(n)
ours = ("agent", "probes", "__main__")
print(json.dumps([m for m in sys.modules if m.split(".")[0] not in ours]))
"""

COMPARE = WALK + r"""
import json, logging, signal, sys, threading, warnings
for n in json.load(sys.stdin):
    try:
        importlib.import_module(n)
    except Exception:
        pass

def loggers():
    out = {}
    known = logging.Logger.manager.loggerDict.items()
    items = [("", logging.getLogger())] + [
        (k, v) for k, v in known if isinstance(v, logging.Logger)]
    for name, lg in items:
        out[name] = [lg.level, [type(f).__name__ for f in lg.filters],
                     [type(h).__name__ for h in lg.handlers], lg.propagate, lg.disabled]
    return out

def snapshot():
    import prometheus_client, prometheus_client.metrics as pm
    return {
        "loggers": loggers(),
        "registry": sorted(prometheus_client.REGISTRY._names_to_collectors),
        "created_metrics": pm._use_created,
        "threads": sorted(t.name for t in threading.enumerate()),
        "hooks": [repr(sys.excepthook), repr(threading.excepthook)],
        "signals": [repr(signal.getsignal(s))
                    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)],
        "warnings": len(warnings.filters),
    }

before = snapshot()
for n in names:
    importlib.import_module(n)
after = snapshot()
problems = []
default = [logging.NOTSET, [], [], True, False]
for name, state in after["loggers"].items():
    old = before["loggers"].get(name, default)
    if state != old:
        problems.append(f"logger {name!r}: {old} -> {state}")
for key in ("registry", "created_metrics", "threads", "hooks", "signals", "warnings"):
    if before[key] != after[key]:
        problems.append(f"{key}: {before[key]} -> {after[key]}")
print(json.dumps({"modules": len(names), "problems": problems}))
"""


def _python(code: str, stdin: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], input=stdin, capture_output=True, text=True, cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_agent_modules_changes_no_global_state() -> None:
    third_party = _python(LIST_THIRD_PARTY)
    report = json.loads(_python(COMPARE, third_party))
    assert report["modules"] > 40  # every agent and probes module was imported
    assert report["problems"] == []
