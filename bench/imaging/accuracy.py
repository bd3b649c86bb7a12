"""Are dicom_retrieve's first_image and last_image the wire's? Against packet captures.

    sudo .venv/bin/python -m bench.imaging.accuracy --runs 300      # as root (tcpdump on lo)

dcmqrscp serves a generated study on loopback; tcpdump captures every packet of the runs (ns
timestamps); each run is matched to its connection(s) by server port and time window, as in
bench/accuracy (whose pcap reader and DICOM reassembly this reuses). Wire truth:

* C-GET: from the first segment of the C-GET-RQ to the segment completing the first / last
  C-STORE-RQ (its data set's last fragment) on the same connection;
* C-MOVE: from the first segment of the C-MOVE-RQ on the probe's association to the segment
  completing the first / last C-STORE-RQ on the PACS's storage association(s) to the agent.

Error = reported − wire; targets |error| p50 ≤ 0.5 ms, p99 ≤ 2 ms. Writes
bench/imaging/results/accuracy-<instances>x<side>.json and .md (--side: pixels per row and
column of each 8-bit instance, 64 → 4 KiB, 512 → 256 KiB).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid

from agent.runner import run_probe
from bench.accuracy import wire
from bench.imaging.run import OUT, machine
from tests.helpers import LOOPBACK, free_port
from tests.helpers.config import plan, target
from tests.helpers.dcmtk import QRServer

C_STORE_RQ = 0x0001


def capture(path: str, ports: list[int]) -> subprocess.Popen[str]:
    flt = " or ".join(f"tcp port {p}" for p in ports)
    proc = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-w", path, "-U", "-s", "0", "-B", "65536",
         "--time-stamp-precision=nano", "--immediate-mode", "-n", flt],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], 20)
    line = proc.stderr.readline() if ready else ""
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"tcpdump did not start: {line.strip()!r}")
    return proc


def stop(proc: subprocess.Popen[str]) -> str:
    time.sleep(0.5)  # let the last packets reach the file (not synchronisation of runs)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    assert proc.stderr is not None
    return " ".join(proc.stderr.read().split())


def stores(c: wire.Connection) -> list[wire.Message]:
    return [m for m in wire.dimse_messages(wire.pdus(c.down)) if m.command_field == C_STORE_RQ]


def stores_up(c: wire.Connection) -> list[wire.Message]:
    """C-STORE-RQs the PACS sent on a storage association it opened (client → server is up)."""
    return [m for m in wire.dimse_messages(wire.pdus(c.up)) if m.command_field == C_STORE_RQ]


def wire_truth(
    conns: list[wire.Connection], run: dict[str, Any], qr_port: int, store_port: int
) -> dict[str, float] | None:
    inside = [c for c in conns if run["t_before"] <= c.syn <= run["t_after"]]
    ctrl = [c for c in inside if c.server[1] == qr_port]
    if len(ctrl) != 1 or ctrl[0].up.gap or ctrl[0].down.gap:
        return None
    requests = wire.dimse_messages(wire.pdus(ctrl[0].up))
    if not requests:
        return None
    t0 = requests[0].first
    if run["method"] == "get":
        got = stores(ctrl[0])
    else:
        got = []
        for c in inside:
            if c.server[1] == store_port and not (c.up.gap or c.down.gap):
                got += stores_up(c)
        got.sort(key=lambda m: m.last)
    if not got:
        return None
    return {"first_image": got[0].last - t0, "last_image": got[-1].last - t0, "n": len(got)}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--side", type=int, default=64, help="pixels per row/column (8-bit)")
    args = ap.parse_args()
    assert os.geteuid() == 0, "needs root: tcpdump on lo"
    OUT.mkdir(parents=True, exist_ok=True)
    info = machine()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        uid = generate_uid()
        store_port = free_port()
        with QRServer(
            work / "qr", uid, args.instances, move_destinations={"ACC": store_port}, side=args.side
        ) as qr:
            cases = {
                "get": plan(target(port=qr.port, called_aet="QRSCP", timeout_ms=10000,
                                   only=("dicom_retrieve",),
                                   probes={"dicom_retrieve": {"studyInstanceUID": uid}})),
                "move": plan(target(port=qr.port, called_aet="QRSCP", timeout_ms=10000,
                                    only=("dicom_retrieve",),
                                    probes={"dicom_retrieve": {
                                        "studyInstanceUID": uid, "method": "move",
                                        "moveDestination": "ACC",
                                        "storeListen": f"{LOOPBACK}:{store_port}"}})),
            }  # fmt: skip
            for p in cases.values():  # warm up (dcmqrscp forks, caches fill)
                for _ in range(3):
                    assert run_probe(p, "dicom_retrieve").ok
            pcap = str(work / "lo.pcap")
            proc = capture(pcap, [qr.port, store_port])
            try:
                for _ in range(args.runs):
                    for method, p in cases.items():
                        before = time.time()
                        r = run_probe(p, "dicom_retrieve")
                        after = time.time()
                        assert r.ok, r.message
                        runs.append({"method": method, "t_before": before, "t_after": after,
                                     "first_image": r.phases["first_image"],
                                     "last_image": r.phases["last_image"]})  # fmt: skip
            finally:
                stats = stop(proc)
            conns = wire.connections(wire.read_pcap(pcap))
            for run in runs:
                truth = wire_truth(conns, run, qr.port, store_port)
                # a capture that lost the end of a stream (tcpdump drops under load) shows fewer
                # instances than arrived: no truth for that run
                run["wire"] = truth if truth and truth["n"] == args.instances else None
    info["loadavg_end"] = os.getloadavg()
    rows = []
    for method in ("get", "move"):
        matched = [r for r in runs if r["method"] == method and r["wire"]]
        for phase in ("first_image", "last_image"):
            errs = [(r[phase] - r["wire"][phase]) * 1000 for r in matched]
            abs_errs = [abs(e) for e in errs]
            rows.append({
                "method": method, "phase": phase, "runs": len(matched),
                "unmatched": sum(1 for r in runs if r["method"] == method and not r["wire"]),
                "wire_p50_ms": round(pct([r["wire"][phase] * 1000 for r in matched], 0.5), 3),
                "err_p50_ms": round(pct(errs, 0.5), 3),
                "abs_err_p50_ms": round(pct(abs_errs, 0.5), 3),
                "abs_err_p99_ms": round(pct(abs_errs, 0.99), 3),
                "abs_err_max_ms": round(max(abs_errs), 3),
                "met": pct(abs_errs, 0.5) <= 0.5 and pct(abs_errs, 0.99) <= 2.0,
            })  # fmt: skip
    name = f"accuracy-{args.instances}x{args.side}"
    doc = {"machine": info, "tcpdump": stats, "instances": args.instances, "side": args.side,
           "rows": rows, "runs": runs}  # fmt: skip
    (OUT / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [
        "| method | phase | runs | wire p50 ms | error p50 ms | abs error p50 ms "
        "| abs error p99 ms | abs error max ms | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['phase']} | {r['runs']} | {r['wire_p50_ms']} | "
            f"{r['err_p50_ms']} | {r['abs_err_p50_ms']} | {r['abs_err_p99_ms']} | "
            f"{r['abs_err_max_ms']} | {'yes' if r['met'] else 'no'} |"
        )
    (OUT / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(info), stats)


if __name__ == "__main__":
    main()
