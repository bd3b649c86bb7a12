"""`agent check-config` on a generated N-target JSON: wall time and peak memory, this tree against
an older checkout measured in the same run (/usr/bin/time -v around each process).

    .venv/bin/python -m bench.config_load.run --targets 5000 --before /tmp/old-config --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sectra-pacs-prod.json"
ENV = {"SECTRA_API_PASSWORD": "bench-password-value", "SECTRA_API_KEY": "bench-api-key-value"}


def generate(n: int) -> dict:
    """n copies of the guide's sample, each with its own id and hosts (TLS off: no cert files)."""
    base = json.loads(EXAMPLE.read_text())
    targets = []
    for i in range(n):
        t = json.loads(json.dumps(base))
        t["id"] = f"pacs-{i:05d}"
        t["name"] = f"PACS {i}"
        t["config"].update(host=f"pacs-{i}.example.org", enableTLS=False)
        s = t["secttraConfig"]
        s["apiEndpoint"] = f"https://api-{i}.example.org"
        s["worklistEndpoint"] = f"https://api-{i}.example.org/worklist"
        s["viewerEndpoint"] = f"https://viewer-{i}.example.org"
        targets.append(t)
    return {"targets": targets}


def measure(tree: Path, cfg: Path) -> tuple[float, float, float, int]:
    """(wall s, CPU s, max RSS MiB, exit code) of one check-config process run from `tree`."""
    env = {**os.environ, **ENV}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "-m",
            "agent",
            "check-config",
            "--config",
            str(cfg),
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    assert wall and rss, proc.stderr[-2000:]
    h, m, s = wall.groups()
    secs = int(h or 0) * 3600 + int(m) * 60 + float(s)
    code = re.search(r"Exit status: (\d+)", proc.stderr)
    user = re.search(r"User time \(seconds\): ([\d.]+)", proc.stderr)
    system = re.search(r"System time \(seconds\): ([\d.]+)", proc.stderr)
    assert user and system
    cpu = float(user.group(1)) + float(system.group(1))
    return secs, cpu, int(rss.group(1)) / 1024, int(code.group(1)) if code else -1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", type=Path, help="a checkout of the older code to compare with")
    ap.add_argument("--before-label", default="before")
    a = ap.parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / f"targets-{a.targets}.json"
        cfg.write_text(json.dumps(generate(a.targets), indent=2))
        size = cfg.stat().st_size
        trees = [("after (this tree)", ROOT)]
        if a.before:
            trees.insert(0, (a.before_label, a.before))
        runs: dict[str, list[tuple[float, float, float, int]]] = {label: [] for label, _ in trees}
        for _ in range(a.rounds):  # interleaved, so background load hits both alike
            for label, tree in trees:
                runs[label].append(measure(tree, cfg))
    load = os.getloadavg()  # the machine is shared: load average at the start and the end
    print(f"# check-config, {a.targets} targets, {size / 1e6:.1f} MB JSON, {a.rounds} rounds")
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, "
        f"at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        "| code | exit | wall s (median, max) | CPU s (median, max) | max RSS MiB (median, max) |"
    )
    print("|---|---|---|---|---|")
    for label, rs in runs.items():
        walls, cpus, rsss = [r[0] for r in rs], [r[1] for r in rs], [r[2] for r in rs]
        codes = sorted({r[3] for r in rs})
        print(
            f"| {label} | {','.join(map(str, codes))} | "
            f"{statistics.median(walls):.2f}, {max(walls):.2f} | "
            f"{statistics.median(cpus):.2f}, {max(cpus):.2f} | "
            f"{statistics.median(rsss):.0f}, {max(rsss):.0f} |"
        )


if __name__ == "__main__":
    main()
