"""Memory of repeated reloads that bring new target ids: 200 reloads of 100 new ids each, RSS and
the number of `logging` loggers before and after, this tree against an older checkout in the same
run (a per-target logging.getLogger() is cached by `logging` forever).

    git archive 55a295f | tar -x -C /tmp/agent-before
    .venv/bin/python -m bench.config_mistakes.reload_memory --before /tmp/agent-before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs inside the measured interpreter (this tree or --before), in-process: AgentService.reload().
CHILD = r"""
import json, logging, os, sys, tempfile
from pathlib import Path
from agent.config import load_config_text
from agent.redaction import Redactor
from agent.service import AgentService
from agent.shard import Shard

RELOADS, IDS = int(sys.argv[1]), int(sys.argv[2])

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def targets(gen):
    return [{"id": f"t{gen}-{i}", "config": {"host": "127.0.0.1", "port": 1},
             "healthCheck": {"interval": 600000, "timeout": 1000}} for i in range(IDS)]

cfg = Path(tempfile.mkdtemp()) / "agent.json"
doc = {"targets": targets(0), "agent": {"listen": "127.0.0.1:0", "selfProbe": {"enabled": False}}}
cfg.write_text(json.dumps(doc))
svc = AgentService(load_config_text(json.dumps(doc), "<bench>", {}), shard=Shard(0, 1),
                   redactor=Redactor(), config_path=str(cfg))
svc.start()
for gen in range(1, 21):  # warm-up: allocator pools, caches
    doc["targets"] = targets(gen)
    cfg.write_text(json.dumps(doc))
    svc.reload()
rss0, loggers0 = rss_mb(), len(logging.Logger.manager.loggerDict)
for gen in range(21, 21 + RELOADS):
    doc["targets"] = targets(gen)
    cfg.write_text(json.dumps(doc))
    svc.reload()
print(json.dumps({"rss_growth_mb": round(rss_mb() - rss0, 1),
                  "loggers_added": len(logging.Logger.manager.loggerDict) - loggers0}))
svc.stop()
os._exit(0)
"""


def measure(tree: Path, reloads: int, ids: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_"))}
    env["PYTHONPATH"] = str(tree)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(reloads), str(ids)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, help="an older checkout to measure in the same run")
    ap.add_argument("--reloads", type=int, default=200)
    ap.add_argument("--ids", type=int, default=100)
    args = ap.parse_args()
    rows = [("this tree", measure(ROOT, args.reloads, args.ids))]
    if args.before:
        rows.append((f"before ({args.before})", measure(args.before, args.reloads, args.ids)))
    print(
        f"| tree | RSS growth over {args.reloads} reloads of {args.ids} new ids | loggers added |"
    )
    print("|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['rss_growth_mb']:.1f} MB | {r['loggers_added']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
