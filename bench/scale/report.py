"""The Markdown tables for BENCHMARKS.md and the growth plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.scale.settings import (
    INTERVAL,
    MATPLOTLIB_PIN,
    TARGET_CPU,
    TARGET_HEALTH_P99,
    TARGET_METRICS_P99,
    TARGET_RSS_MB,
    log,
)


def _ok(b: bool) -> str:
    return "yes" if b else "**NO**"


def main_report(doc: dict[str, Any]) -> str:
    r = doc["run"]
    idle = doc["idle_self_probe"]
    m = doc["machine"]
    lines = [
        f"Machine: {m['nproc']} × {m['cpu_model']}, {m['memory']}, Python {m['python']}, "
        f"Linux {m['kernel']}; {m['date']}. Shared machine: load average (1/5/15 min) "
        f"{doc['load']['before_wait']} when the bench started"
        + (f", waited {doc['load']['waited_s']} s for it to drop to {doc['load']['after_wait']}"
           if doc["load"]["waited_s"] else "")
        + f"; {r['load_before']} when the agent started, {r['load_after']} when it stopped.",
        "",
        f"Workload: {r['targets']} targets × (dicom_echo + dicom_find + api_ping) every 30 s = "
        f"{r['jobs']} jobs, {r['jobs'] / INTERVAL:.0f} probes/s; {r['minutes']} min run, "
        f"steady-state window {r['window_s']:.0f} s after {r['warmup_s']:.0f} s warm-up.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| executed ≥ 99.9 % of scheduled | {r['executed']:.0f} of {r['expected']:.0f} = "
        f"{100 * r['executed_ratio']:.3f} % (nominal rate: {r['expected_nominal']:.0f}); "
        f"jobs short of their schedule: {r['jobs_short']} | "
        f"{_ok(r['checks']['executed >= 99.9 %'])} |",
        f"| no missed/skipped runs | pacs_scheduler_missed_runs_total +{r['missed']:.0f} | "
        f"{_ok(r['checks']['no missed runs'])} |",
        f"| start lateness p99 ≤ 250 ms | histogram: p50 {1000 * r['lateness_p50']:.2f} ms, "
        f"p99 {1000 * r['lateness_p99']:.1f} ms (bucket ≤ {1000 * r['lateness_p99_bucket']:g} ms), "
        f"{100 * r['lateness_le_250ms']:.3f} % ≤ 250 ms, max bucket ≤ "
        f"{1000 * r['lateness_max_bucket']:g} ms; from /health lastRun (1 ms resolution): "
        f"p50 {r['lateness_lastrun_p50_ms']} ms, p99 {r['lateness_lastrun_p99_ms']} ms, "
        f"max {r['lateness_lastrun_max_ms']} ms | "
        f"{_ok(r['checks']['lateness p99 <= 250 ms'])} |",
        f"| agent CPU ≤ 50 % of one core | {100 * r['cpu_avg']:.1f} % in the window "
        f"({100 * r['cpu_whole_run']:.1f} % over the whole run incl. start-up; "
        f"{100 * r['cpu_user_share']:.0f} % of it user, the rest kernel; "
        f"{r['cpu_ms_per_probe']:.2f} ms CPU per probe run incl. scrapes); simulator "
        f"{100 * r['sim_cpu_avg']:.1f} % (not counted) | "
        f"{_ok(r['checks']['CPU <= 50 % of a core'])} |",
        f"| RSS ≤ 200 MB after 10 min, not growing | {r['rss_end_mb']:.1f} MB at the end, max "
        f"{r['rss_max_mb']:.1f} MB; slope {r['rss_slope_mb_per_h']:+.1f} MB/h from "
        f"t = {r['rss_slope_from_s']:.0f} s | {_ok(r['checks']['RSS <= 200 MB'])} |",
        f"| /metrics ≤ 250 ms p99 under load | p50 {r['metrics_p50_ms']:.0f} ms, p99 "
        f"{r['metrics_p99_ms']:.0f} ms, max {r['metrics_max_ms']:.0f} ms over "
        f"{len(r['metrics_ms'])} gzip scrapes ({r['metrics_lines']} lines, "
        f"{r['metrics_bytes'] / 1e6:.1f} MB, {r['metrics_gzip_bytes'] / 1e6:.2f} MB gzipped) | "
        f"{_ok(r['checks']['/metrics p99 <= 250 ms'])} |",
        f"| /health ≤ 50 ms | p50 {r['health_p50_ms']:.1f} ms, p99 {r['health_p99_ms']:.1f} ms, "
        f"max {r['health_max_ms']:.0f} ms over {len(r['health_ms'])} GETs "
        f"({r['health_bytes'] / 1e6:.2f} MB) | {_ok(r['checks']['/health p99 <= 50 ms'])} |",
    ]
    if "self-probe p50 <= idle p50 + 3 ms" in r["checks"]:
        lines.append(
            f"| self-probe overhead ≈ idle + a few ms (median ≤ idle + 3 ms) | idle (1 target): "
            f"p50 {idle['p50_ms']:.2f} ms, "
            f"p95 {idle['p95_ms']:.2f} ms; loaded: p50 {r['self_probe_p50_ms']:.2f} ms, p95 "
            f"{r['self_probe_p95_ms']:.2f} ms, max {r['self_probe_max_ms']:.2f} ms "
            f"({len(r['self_probe_loaded'])} samples) | "
            f"{_ok(r['checks']['self-probe p50 <= idle p50 + 3 ms'])} |"
        )
    lines += [
        "",
        f"Probes failing at the end: {r['failing_probes_end']}; agent log: {r['agent_log']}; "
        f"agent threads at the end: {r['threads_end']}.",
    ]
    if doc.get("compare"):
        lines += [
            "",
            f"Same {r['targets']} targets, same simulator, one C-ECHO each, after the agent run:",
            "",
            "| client | sweep of all targets | CPU | CPU per echo | failed |",
            "|---|---|---|---|---|",
        ]
        for c in doc["compare"]:
            n = c["ok"] + c["failed"]
            lines.append(
                f"| {c['client']} | {c['sweep_s']:.1f} s | {c['cpu_s']:.1f} s | "
                f"{1000 * c['cpu_s'] / n:.1f} ms | {c['failed']} |"
            )
        lines.append(
            f"| the agent daemon (echo + find + api_ping, spread over each 30 s cycle) | "
            f"{r['jobs']} probes every 30 s | {100 * r['cpu_avg']:.1f} % of a core | "
            f"{r['cpu_ms_per_probe']:.1f} ms per probe (any type, incl. /metrics and /health "
            f"scrapes) | {r['failing_probes_end']} |"
        )
    return "\n".join(lines) + "\n"


def growth_report(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"Machine: {m['nproc']} × {m['cpu_model']}, {m['memory']}, Python {m['python']}; "
        f"{m['date']}. Each count: a fresh agent, {doc['warmup_s']:.0f} s warm-up, then "
        f"{doc['minutes']} min measured (RSS is therefore before the 5-min latency window fills; "
        f"see the 10-min main run for steady-state memory). Idle self-probe (1 target): "
        f"p50 {doc['idle_self_probe']['p50_ms']:.2f} ms, "
        f"p95 {doc['idle_self_probe']['p95_ms']:.2f} ms.",
        "",
        "| targets | probes/s | executed | missed | lateness p99 | agent CPU | sim CPU | RSS end "
        "| /metrics p50 / p99 | /metrics size | /health p50 / p99 | self-probe p50 / p95 "
        "| load before → after | all targets met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["runs"]:
        failed = [k for k, v in r["checks"].items() if not v]
        lines.append(
            f"| {r['targets']} | {r['jobs'] / INTERVAL:.1f} | {100 * r['executed_ratio']:.2f} % "
            f"| {r['missed']:.0f} | ≤ {1000 * r['lateness_p99_bucket']:g} ms "
            f"({r['lateness_lastrun_p99_ms']} ms) | {100 * r['cpu_avg']:.1f} % | "
            f"{100 * r['sim_cpu_avg']:.1f} % | {r['rss_end_mb']:.0f} MB | "
            f"{r['metrics_p50_ms']:.0f} / {r['metrics_p99_ms']:.0f} ms | "
            f"{r['metrics_lines']} lines, {r['metrics_bytes'] / 1e6:.1f} MB | "
            f"{r['health_p50_ms']:.1f} / {r['health_p99_ms']:.1f} ms | "
            f"{r['self_probe_p50_ms']:.2f} / {r['self_probe_p95_ms']:.2f} ms | "
            f"{r['load_before'][0]} → {r['load_after'][0]} | "
            + ("yes" if not failed else "**no**: " + ", ".join(failed)) + " |"
        )
    best = [r["targets"] for r in doc["runs"] if all(r["checks"].values())]
    lines += ["", f"Largest measured count meeting every target: {max(best) if best else 'none'}."]
    return "\n".join(lines) + "\n"


def ensure_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        log(f"installing {MATPLOTLIB_PIN} into {sys.prefix}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", MATPLOTLIB_PIN],
                       check=True, timeout=600)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_growth(doc: dict[str, Any], path: Path) -> None:
    plt = ensure_matplotlib()
    runs = doc["runs"]
    n = [r["targets"] for r in runs]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    ax = axes[0]
    ax.plot(n, [100 * r["cpu_avg"] for r in runs], "o-", label="agent")
    ax.plot(n, [100 * r["sim_cpu_avg"] for r in runs], "s--", label="simulator (not counted)")
    ax.axhline(100 * TARGET_CPU, color="red", lw=0.8, ls=":", label="target 50 %")
    ax.set_title("CPU (% of one core)")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(n, [r["rss_end_mb"] for r in runs], "o-")
    ax.axhline(TARGET_RSS_MB, color="red", lw=0.8, ls=":", label="target 200 MB")
    ax.set_title("RSS at the end (MB)")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(n, [r["metrics_p99_ms"] for r in runs], "o-", label="/metrics p99 (gzip)")
    ax.plot(n, [r["health_p99_ms"] for r in runs], "s-", label="/health p99")
    ax.axhline(TARGET_METRICS_P99 * 1000, color="red", lw=0.8, ls=":", label="/metrics target")
    ax.axhline(TARGET_HEALTH_P99 * 1000, color="orange", lw=0.8, ls=":", label="/health target")
    ax.set_title("scrape time (ms)")
    ax.legend(fontsize=8)
    for i, ax in enumerate(axes):
        ax.set_xscale("log")
        if i != 1:  # RSS: linear, it has a large fixed part
            ax.set_yscale("log")
        ax.set_xlabel("targets (3 probes each, every 30 s)")
        ax.grid(True, which="both", alpha=0.3)
    m = doc["machine"]
    dates = sorted(r.get("started") or m["date"] for r in runs)
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} – {dates[-1]}"
    fig.suptitle(f"pacs-health-agent scale: {m['nproc']} × {m['cpu_model']}, Python {m['python']}"
                 f" ({when})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
