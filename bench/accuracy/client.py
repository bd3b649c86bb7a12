"""A client worker for the accuracy benchmark: one process per client kind.

    python -m bench.accuracy.client agent|naive

Reads one JSON command per line on stdin and answers one JSON line on stdout:

* {"cmd": "run", "kind": "echo"|"find", "port": N, "aet": "..."} →
  {"ok": bool, "reported": {phase: seconds}, "t0": time.time() before, "t1": after}
* {"cmd": "cpu", "kind": ..., "port": ..., "aet": ..., "n": N} → user/sys/wall per probe
* {"cmd": "selfprobe", "n": N} → the self-probe's reported seconds, N times (agent only)

The agent and the naive pynetdicom path live in separate processes so that pynetdicom's
polling threads (which outlive a release by a few ms) never compete with the agent for the GIL.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import threading
import time
from typing import Any

FIND_PATIENT = "BENCH0001"
FIND_MATCHES = 10


class Agent:
    """Exactly the probe code the daemon runs, as it runs it (a run on the probe loop, where the
    code has one); `reported` is its Phases."""

    def __init__(self) -> None:
        from probes.dicom_echo import DicomEchoProbe
        from probes.dicom_find import DicomFindProbe, FindQuery

        self.echo = DicomEchoProbe
        self.find = DicomFindProbe
        self.query = FindQuery(patient_id=FIND_PATIENT, expected_count=FIND_MATCHES)
        self._pending: list[Any] = []
        try:  # an older checkout (--before) runs its probes on the calling thread
            from probes.net.waits import ProbeLoop
        except ImportError:
            self.loop = None
        else:
            self.loop = ProbeLoop(self._tick)

    def _tick(self) -> None:
        while self._pending:
            assert self.loop is not None
            self.loop.spawn(self._pending.pop())

    def __call__(self, kind: str, port: int, aet: str) -> tuple[bool, dict[str, float]]:
        if self.loop is None:
            return self.run(kind, port, aet)
        out: list[tuple[bool, dict[str, float]]] = []
        self._pending.append(lambda: out.append(self.run(kind, port, aet)))
        self.loop.run_until(lambda: bool(out))
        return out[0]

    def run(self, kind: str, port: int, aet: str) -> tuple[bool, dict[str, float]]:
        from probes.base import Deadline, Phases, ProbeError
        from probes.specs import DicomEndpoint

        ep = DicomEndpoint("127.0.0.1", port, "PACS_HEALTH", aet)
        probe = self.echo(ep) if kind == "echo" else self.find(ep, self.query)
        ph = Phases()
        try:
            probe.run(Deadline(10), ph)
            ok = True
        except ProbeError:
            ok = False
        out = dict(ph.values)
        out["total"] = ph.total()
        return ok, out


class Naive:
    """A stopwatch around pynetdicom's blocking calls, as a hand-written check would do it."""

    def __init__(self) -> None:
        from pynetdicom import AE
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

        ae = AE(ae_title="NAIVE")
        ae.add_requested_context(Verification)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        self.ae = ae
        self.model = StudyRootQueryRetrieveInformationModelFind

    def __call__(self, kind: str, port: int, aet: str) -> tuple[bool, dict[str, float]]:
        from pydicom.dataset import Dataset

        t0 = time.perf_counter()
        assoc = self.ae.associate("127.0.0.1", port, ae_title=aet)
        t1 = time.perf_counter()
        if not assoc.is_established:
            return False, {}
        ok = True
        if kind == "echo":
            st = assoc.send_c_echo()
            ok = bool(st) and st.Status == 0
        else:
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.PatientID = FIND_PATIENT
            ds.StudyInstanceUID = ""
            n = 0
            for st, _ident in assoc.send_c_find(ds, self.model):
                if st and st.Status in (0xFF00, 0xFF01):
                    n += 1
                elif not st or st.Status != 0:
                    ok = False
            ok = ok and n == FIND_MATCHES
        t2 = time.perf_counter()
        assoc.release()
        t3 = time.perf_counter()
        return ok, {"associate": t1 - t0, "dimse": t2 - t1, "release": t3 - t2, "total": t3 - t0}


def cpu(fn: Any, kind: str, port: int, aet: str, n: int) -> dict[str, Any]:
    """user+sys CPU of this process per probe over a batch of n."""
    base_threads = threading.active_count()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = time.perf_counter()
    fails = 0
    for _ in range(n):
        ok, _ = fn(kind, port, aet)
        fails += 0 if ok else 1
    wall = time.perf_counter() - w0
    end = time.monotonic() + 5  # pynetdicom's threads may still be winding down: count them in
    while threading.active_count() > base_threads and time.monotonic() < end:
        time.sleep(0.005)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "n": n, "failed": fails, "user": (r1.ru_utime - r0.ru_utime) / n,
        "sys": (r1.ru_stime - r0.ru_stime) / n, "wall": wall / n,
    }


def main() -> None:
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    which = sys.argv[1]
    fn: Any = Agent() if which == "agent" else Naive()
    import probes.dicom_wire

    print(json.dumps({"ready": which, "code": probes.dicom_wire.__file__}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "run":
            t0 = time.time()
            ok, rep = fn(req["kind"], req["port"], req["aet"])
            t1 = time.time()
            out: dict[str, Any] = {"ok": ok, "reported": rep, "t0": t0, "t1": t1}
        elif req["cmd"] == "cpu":
            out = cpu(fn, req["kind"], req["port"], req["aet"], req["n"])
        elif req["cmd"] == "selfprobe":
            from agent.selfprobe import SelfProbe

            sp = SelfProbe()
            try:
                xs = [sp.measure() for _ in range(req["n"])]
            finally:
                sp.close()
            out = {"values": [x for x in xs if x is not None]}
        else:
            out = {"error": "unknown command"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
