"""`agent probe --once` (every enabled probe once, a Nagios plugin line and a table or the
/health JSON) and `agent diagnose` (the guide's connection steps with hints).

Exit codes follow the Nagios plugin convention: 0 HEALTHY, 1 DEGRADED, 2 UNHEALTHY, 3 UNKNOWN
(bad config, cannot run).
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from agent.cli_common import UNKNOWN, UsageError, emit, one_shot, printable, refused
from agent.config import ConfigError
from agent.evaluator import HealthEvaluator, HealthState
from agent.health_json import health_document
from agent.logging_setup import log_run
from agent.recorder import LatencyRecorder
from agent.redaction import Redactor
from agent.runner import run_probe
from agent.targets import PROBE_ORDER, TargetPlan, build_plan

EXIT = {
    HealthState.HEALTHY: 0,
    HealthState.DEGRADED: 1,
    HealthState.UNHEALTHY: 2,
    HealthState.UNKNOWN: 3,
}


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


def cmd_probe(args: argparse.Namespace) -> int:
    if not args.once:
        print(
            "agent probe: only --once is supported (use `agent run` for the daemon)",
            file=sys.stderr,
        )
        return UNKNOWN
    try:
        # stdout is the report; stderr stays empty unless asked (-v), as a plugin's should
        with one_shot(
            "probe",
            args.config,
            args.target,
            level="DEBUG" if args.verbose else "ERROR",
            log_format=args.log_format,
        ) as run:
            redactor = run.redactor
            plans = [build_plan(t) for t in run.targets]
            if args.probe and not any(args.probe in p.probes for p in plans):
                running = [n for n in PROBE_ORDER if any(n in p.probes for p in plans)]
                raise UsageError(
                    f"agent probe: no target runs probe {args.probe!r}; configured probes: "
                    f"{', '.join(running) or 'none'}"
                )
            doc = run_once(plans, redactor, args.probe)
    except (ConfigError, UsageError) as e:
        return refused(e)
    if args.output == "json":
        out = json.dumps(doc, indent=2)
    else:
        out = plugin_line(doc, plans) + "\n" + render_table(doc)
    # no text search here: the document holds no secret (probe messages are fixed strings and
    # the runner scrubs what a probe reports), and replacing text would corrupt the JSON
    emit(out)
    return EXIT[HealthState(doc["status"])]


def cmd_diagnose(args: argparse.Namespace) -> int:
    """The guide's diagnoseConnection step by step (agent.diagnose); exit codes as probe --once."""
    from agent.diagnose import diagnose_target, exit_code, render_text

    try:
        with one_shot(
            "diagnose",
            args.config,
            args.target,
            level="DEBUG" if args.verbose else "WARNING",
            named_disabled=True,
        ) as run:
            redactor = run.redactor
            results = [diagnose_target(t) for t in run.targets]
    except (ConfigError, UsageError) as e:
        return refused(e)
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
