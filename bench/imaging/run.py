"""CPU per run of the imaging probes (dicom_retrieve, dicom_store) against DCMTK peers on loopback,
with dicom_echo and pynetdicom's own Association doing the same C-GET as comparisons, measured in
the same run.

    .venv/bin/python -m bench.imaging.run --runs 100

The peers (dcmqrscp, storescp) are separate processes: their CPU is not counted. The agent side
is this process: `time.process_time()` (all threads, user + system) around N runs of each case,
after a warm-up; wall time per run is reported too. Results: bench/imaging/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from agent.runner import run_probe
from probes import dicom_wire, storage_scp
from probes.dicom_retrieve import STORAGE_CLASSES
from tests.helpers import LOOPBACK, free_port
from tests.helpers.config import plan, target
from tests.helpers.dcmtk import QRServer, StoreSCP

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "imaging" / "results"


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dcmtk = subprocess.run(["dcmqrscp", "--version"], capture_output=True, text=True).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "dcmtk": dcmtk.split("\n")[0].strip(),
        "loadavg_start": os.getloadavg(),
        "utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def measure(name: str, once: Callable[[], Any], runs: int, warmup: int = 5) -> dict[str, Any]:
    for _ in range(warmup):
        once()
    walls = []
    cpu0 = time.process_time()
    for _ in range(runs):
        t0 = time.perf_counter()
        once()
        walls.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / runs
    row = {
        "case": name,
        "runs": runs,
        "cpu_ms_per_run": round(cpu * 1000, 3),
        "wall_ms_p50": round(statistics.median(walls) * 1000, 2),
        "wall_ms_max": round(max(walls) * 1000, 2),
    }
    print(json.dumps(row), flush=True)
    return row


def probe_case(t: dict[str, Any], name: str) -> Callable[[], Any]:
    p = plan(t)

    def once() -> Any:
        r = run_probe(p, name)
        assert r.ok, r.message
        return r

    return once


def pynetdicom_get(port: int, study_uid: str) -> Callable[[], None]:
    """The same C-GET through pynetdicom's Association (its reactor thread, its C-STORE handler)."""
    ae = AE(ae_title="PACS_HEALTH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for uid in STORAGE_CLASSES:
        ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    roles = [build_role(uid, scp_role=True) for uid in STORAGE_CLASSES]
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = study_uid
    handlers = [(evt.EVT_C_STORE, lambda event: 0x0000)]

    def once() -> None:
        assoc = ae.associate(LOOPBACK, port, ae_title="QRSCP", ext_neg=roles, evt_handlers=handlers)
        assert assoc.is_established
        final = None
        for status, _ in assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet):
            final = status
        assoc.release()
        assert final is not None and final.Status == 0x0000

    return once


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    info = machine()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small, large = generate_uid(), generate_uid()
        move_port = free_port()
        with QRServer(
            work / "qr-small", small, 10, move_destinations={"BENCH_STORE": move_port}
        ) as qr:
            # a second archive: one study of 20 × 512×512 8-bit instances (256 KiB each)
            with QRServer(work / "qr-large", large, 20, side=512) as qr_large:

                def t(**kw: Any) -> dict[str, Any]:
                    return target(
                        port=kw.pop("port", qr.port), called_aet="QRSCP", timeout_ms=20000, **kw
                    )

                rows.append(
                    measure(
                        "dicom_echo (baseline)",
                        probe_case(t(only=("dicom_echo",)), "dicom_echo"),
                        args.runs,
                    )
                )
                rows.append(
                    measure(
                        "dicom_retrieve C-GET, 10 × 4 KiB",
                        probe_case(
                            t(
                                only=("dicom_retrieve",),
                                probes={"dicom_retrieve": {"studyInstanceUID": small}},
                            ),
                            "dicom_retrieve",
                        ),
                        args.runs,
                    )
                )
                get_case = probe_case(
                    t(
                        only=("dicom_retrieve",),
                        probes={"dicom_retrieve": {"studyInstanceUID": small}},
                    ),
                    "dicom_retrieve",
                )
                uncached_ac = dicom_wire.decode_associate_ac.__wrapped__  # type: ignore[attr-defined]
                cached_ac, dicom_wire.decode_associate_ac = (
                    dicom_wire.decode_associate_ac,
                    uncached_ac,
                )
                try:
                    rows.append(
                        measure(
                            "dicom_retrieve C-GET, 10 × 4 KiB, A-ASSOCIATE-AC decoded every run",
                            get_case,
                            args.runs,
                        )
                    )
                finally:
                    dicom_wire.decode_associate_ac = cached_ac
                rows.append(
                    measure(
                        "pynetdicom Association C-GET, 10 × 4 KiB",
                        pynetdicom_get(qr.port, small),
                        args.runs,
                    )
                )
                move_case = probe_case(
                    t(
                        only=("dicom_retrieve",),
                        probes={
                            "dicom_retrieve": {
                                "studyInstanceUID": small,
                                "method": "move",
                                "moveDestination": "BENCH_STORE",
                                "storeListen": f"{LOOPBACK}:{move_port}",
                            }
                        },
                    ),
                    "dicom_retrieve",
                )
                rows.append(measure("dicom_retrieve C-MOVE, 10 × 4 KiB", move_case, args.runs))
                uncached = storage_scp.accept_response.__wrapped__  # type: ignore[attr-defined]
                cached, storage_scp.accept_response = storage_scp.accept_response, uncached
                try:
                    rows.append(
                        measure(
                            "dicom_retrieve C-MOVE, 10 × 4 KiB, A-ASSOCIATE-AC not cached",
                            move_case,
                            args.runs,
                        )
                    )
                finally:
                    storage_scp.accept_response = cached
                rows.append(
                    measure(
                        "dicom_retrieve C-GET, 20 × 256 KiB",
                        probe_case(
                            t(
                                port=qr_large.port,
                                only=("dicom_retrieve",),
                                probes={"dicom_retrieve": {"studyInstanceUID": large}},
                            ),
                            "dicom_retrieve",
                        ),
                        max(args.runs // 4, 10),
                    )
                )
                rows.append(
                    measure(
                        "pynetdicom Association C-GET, 20 × 256 KiB",
                        pynetdicom_get(qr_large.port, large),
                        max(args.runs // 4, 10),
                    )
                )
                rows.append(
                    measure(
                        "dicom_store + verify (dcmqrscp)",
                        probe_case(
                            t(
                                only=("dicom_store",),
                                probes={"dicom_store": {"enabled": True, "verify": True}},
                            ),
                            "dicom_store",
                        ),
                        args.runs,
                    )
                )
        with StoreSCP(work / "storescp") as scp:
            rows.append(
                measure(
                    "dicom_store (storescp)",
                    probe_case(
                        target(
                            port=scp.port,
                            called_aet=scp.ae_title,
                            timeout_ms=20000,
                            only=("dicom_store",),
                            probes={"dicom_store": {"enabled": True}},
                        ),
                        "dicom_store",
                    ),
                    args.runs,
                )
            )
    info["loadavg_end"] = os.getloadavg()
    doc = {"machine": info, "rows": rows}
    (OUT / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = ["| case | runs | CPU ms/run | wall p50 ms | wall max ms |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['runs']} | {r['cpu_ms_per_run']} | {r['wall_ms_p50']} "
            f"| {r['wall_ms_max']} |"
        )
    (OUT / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
