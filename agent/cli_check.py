"""`agent check-config`: validate a config as `agent run` does and print it as the agent sees it.

It must stay fast on a large config (5,000 targets: bench/config_load): it builds each target's
probes (agent.probe_selection) but no plan, and imports no scheduler or exporter.
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Any

from agent.cli_common import NO_TARGET_WARNING, UNKNOWN, emit_pieces
from agent.config import ConfigError, LoadedConfig, load_config
from agent.config.render import yaml_chunks
from agent.config.warnings import config_warnings
from agent.probe_selection import selected_probes, tls_warnings


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
    running: dict[str, tuple[str, ...]] = {}
    for t in loaded.model.targets:
        if t.enabled:
            for warning in tls_warnings(t):
                print(warning, file=sys.stderr)
            running[t.id] = selected_probes(t, warn=_warn)
    if not running:
        print(NO_TARGET_WARNING, file=sys.stderr)
    lines = [
        f"# {args.config}: valid; {len(loaded.model.targets)} target(s), "
        f"{sum(map(len, running.values()))} probe(s) enabled; "
        "durations in ms, secrets redacted"
    ]
    lines += [f"# {tid}: {', '.join(names) or 'no probes'}" for tid, names in running.items()]
    lines.append("")
    # the effective config is redacted by key (LoadedConfig.effective)
    emit_pieces(["\n".join(lines), *yaml_chunks(effective_for_display(loaded, running)), "\n"])
    return 0


def _warn(text: str) -> None:
    print(text, file=sys.stderr)


def effective_for_display(
    loaded: LoadedConfig, running: dict[str, tuple[str, ...]]
) -> dict[str, Any]:
    """The effective config as check-config shows it: the name a target reports (its id when
    unset), under `probes:` only the probes that will run (`running`: target id -> probe names;
    dump_yaml writes durations as whole milliseconds)."""
    doc = loaded.effective()
    for t in doc.get("targets", []):
        if not t.get("name"):
            t["name"] = t["id"]
        names = running.get(t["id"], ())
        if isinstance(t.get("probes"), dict):
            t["probes"] = {k: v for k, v in t["probes"].items() if k in names}
    return doc
