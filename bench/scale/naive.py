"""Comparison clients for the scale benchmark: one C-ECHO sweep over every target, in a thread pool.

    python -m bench.scale.naive pynetdicom --targets FILE [--workers 16]
    python -m bench.scale.naive agent-code --targets FILE [--workers 16]

`pynetdicom`: the obvious script, ae.associate() / send_c_echo() / release() per target in a
ThreadPoolExecutor. `agent-code`: the agent's own DicomEchoProbe (socket-level client, pynetdicom
only as codec) in the same pool, to separate what the wire client buys from what the daemon's
scheduling buys. FILE is JSON: [[host, port, called_aet], ...]. Prints one JSON line: sweep
seconds, CPU seconds of this process during the sweep (not interpreter start-up), ok / failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sweep_pynetdicom(targets: list[list], workers: int) -> list[bool]:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    logging.getLogger("pynetdicom").setLevel(logging.ERROR)
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10

    def one(t: list) -> bool:
        host, port, called = t
        assoc = ae.associate(host, port, ae_title=called)
        if not assoc.is_established:
            return False
        try:
            status = assoc.send_c_echo()
            return bool(status) and status.Status == 0x0000
        finally:
            assoc.release()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, targets))


def sweep_agent_code(targets: list[list], workers: int) -> list[bool]:
    from probes.base import Deadline, Phases, ProbeError
    from probes.dicom_echo import DicomEchoProbe
    from probes.specs import DicomEndpoint

    probes = [DicomEchoProbe(DicomEndpoint(h, p, "BENCH", aet)) for h, p, aet in targets]

    def one(probe: DicomEchoProbe) -> bool:
        try:
            probe.run(Deadline(10), Phases())
            return True
        except ProbeError:
            return False

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, probes))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("client", choices=["pynetdicom", "agent-code"])
    ap.add_argument("--targets", required=True)
    ap.add_argument("--workers", type=int, default=16)
    args = ap.parse_args(argv)
    with open(args.targets) as f:
        targets = json.load(f)
    fn = sweep_pynetdicom if args.client == "pynetdicom" else sweep_agent_code
    fn(targets[:4], 2)  # imports and first-use costs outside the measurement
    cpu0, t0 = _cpu(), time.perf_counter()
    peak = [threading.active_count()]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], threading.active_count())

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    results = fn(targets, args.workers)
    sweep, cpu = time.perf_counter() - t0, _cpu() - cpu0
    stop.set()
    print(json.dumps({
        "client": args.client, "targets": len(targets), "workers": args.workers,
        "sweep_s": round(sweep, 3), "cpu_s": round(cpu, 3), "ok": sum(results),
        "failed": len(results) - sum(results), "threads_peak": peak[0],
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
