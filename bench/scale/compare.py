"""The comparison sweeps after the main run: the same targets with DCMTK echoscu, a naive
pynetdicom thread pool and the agent's own echo code in that pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.scale.host import loadavg
from bench.scale.processes import Sim
from bench.scale.settings import ROOT, log


def compare(sim: Sim, rows: list[dict], out: Path, echoscu_parallel: int, pool_workers: int
            ) -> list[dict[str, Any]]:
    targets = [["127.0.0.1", r["port"], r["aet"]] for r in rows]
    tf = out / "targets.json"
    tf.write_text(json.dumps(targets))
    results = []
    # DCMTK echoscu, one process per target, `echoscu_parallel` at a time
    log(f"comparison: echoscu x {len(targets)}, {echoscu_parallel} at a time")
    load0 = loadavg()

    def one(t: list) -> tuple[int, float]:
        p = subprocess.Popen(
            ["echoscu", "-aet", "BENCH", "-aec", t[2], "-to", "10", t[0], str(t[1])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        return p.returncode, ru.ru_utime + ru.ru_stime

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=echoscu_parallel) as pool:
        outs = list(pool.map(one, targets))
    results.append({
        "client": f"DCMTK echoscu loop ({echoscu_parallel} processes at a time)",
        "sweep_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(sum(c for _, c in outs), 2),
        "ok": sum(1 for rc, _ in outs if rc == 0), "failed": sum(1 for rc, _ in outs if rc != 0),
        "load_before": load0, "load_after": loadavg(),
    })
    for client in ("pynetdicom", "agent-code"):
        log(f"comparison: {client} thread pool ({pool_workers} workers) x {len(targets)}")
        load0 = loadavg()
        p = subprocess.run(
            [sys.executable, "-m", "bench.scale.naive", client, "--targets", str(tf),
             "--workers", str(pool_workers)],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )
        if p.returncode != 0:
            raise RuntimeError(f"{client} sweep failed: {p.stderr[-2000:]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["client"] = {
            "pynetdicom": f"naive pynetdicom thread pool ({pool_workers} workers)",
            "agent-code": f"agent's echo code in the same pool ({pool_workers} workers)",
        }[client]
        r["load_before"], r["load_after"] = load0, loadavg()
        results.append(r)
    return results
