"""CPU per run of the other three imaging-path probes (worklist, dicom_capabilities, dicomweb)
against real peers on loopback, with dicom_echo against the same peers as the reference, measured
in the same run. The same method as bench/imaging/run.py (whose `measure` this reuses).

    .venv/bin/python -m bench.imaging.others --runs 200 --rounds 5
    .venv/bin/python -m bench.imaging.others --runs 200 --no-orthanc

Peers, each a separate process so their CPU is not counted: the embedded simulator
(agent/simulator.py, `SimulatedPACS(imaging=True)`, started by this module with
`--serve-simulator`), DCMTK's wlmscpfs over generated .wl files and storescp, and Orthanc with its
DICOMweb plugin (optional). Results: bench/imaging/results/others.json and others.md.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.runner import run_probe
from agent.simulator import (
    CANARY_INSTANCES,
    CANARY_STUDY_UID,
    DEMO_STATION,
    DICOMWEB_PATH,
    SUPPORTED_SOP_CLASSES,
    SUPPORTED_TRANSFER_SYNTAXES,
    SimulatedPACS,
)
from bench.imaging.run import OUT, machine, measure
from probes import dicom_capabilities, dicom_wire
from tests.helpers import LOOPBACK
from tests.helpers.config import plan, target
from tests.helpers.dcmtk import StoreSCP

SIM_AET = "SECTRA_PACS"
IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
# storage classes storescp accepts uncompressed by default (it takes every storage class)
STORAGE_7 = [
    "CTImageStorage",
    "MRImageStorage",
    "SecondaryCaptureImageStorage",
    "ComputedRadiographyImageStorage",
    "DigitalXRayImageStorageForPresentation",
    "UltrasoundImageStorage",
    "EnhancedCTImageStorage",
]
STORAGE_16 = [
    *STORAGE_7,
    "EnhancedMRImageStorage",
    "NuclearMedicineImageStorage",
    "PositronEmissionTomographyImageStorage",
    "DigitalMammographyXRayImageStorageForPresentation",
    "XRayAngiographicImageStorage",
    "UltrasoundMultiFrameImageStorage",
    "RTImageStorage",
    "BasicTextSRStorage",
    "EncapsulatedPDFStorage",
]
# 3 uncompressed (storescp accepts them) + 5 compressed (storescp refuses them by default)
SYNTAXES_8 = [
    "ImplicitVRLittleEndian",
    "ExplicitVRLittleEndian",
    "ExplicitVRBigEndian",
    "JPEG_BASELINE",
    "JPEG_LOSSLESS",
    "JPEG_LS_LOSSLESS",
    "JPEG2000_LOSSLESS",
    "RLE",
]


def serve_simulator() -> None:
    """Child process: the simulator on loopback; prints its ports, runs until stdin closes."""
    with SimulatedPACS(host=LOOPBACK, imaging=True) as sim:
        print(json.dumps({"dicom": sim.dicom_port, "http": sim.http_port}), flush=True)
        sys.stdin.read()


@contextmanager
def simulator_process() -> Iterator[dict[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.imaging.others", "--serve-simulator"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else b""
        assert line, "the simulator process did not report its ports within 60 s"
        yield json.loads(line)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def case(t: dict[str, Any], name: str, **expect: Any) -> Callable[[], Any]:
    """One run of probe `name` through run_probe, checked: ok, and each `expect` key of its
    facts (probes.base.Facts field names, or `warning=True/False`) as given."""
    p = plan(t)

    def once() -> Any:
        r = run_probe(p, name)
        assert r.ok, r.message
        for key, want in expect.items():
            got = (r.warning is not None) if key == "warning" else getattr(r.facts, key)
            assert got == want, (name, key, got, want)
        return r

    return once


@contextmanager
def uncached_association() -> Iterator[None]:
    """dicom_capabilities without its two caches: the A-ASSOCIATE-RQ encoded and the
    A-ASSOCIATE-AC decoded on every run."""
    rq, ac = dicom_capabilities.pairs_rq_bytes, dicom_wire.decode_associate_ac
    dicom_capabilities.pairs_rq_bytes = rq.__wrapped__  # type: ignore[assignment]
    dicom_wire.decode_associate_ac = ac.__wrapped__  # type: ignore[assignment]
    try:
        yield
    finally:
        dicom_capabilities.pairs_rq_bytes = rq
        dicom_wire.decode_associate_ac = ac


def repeat(name: str, once: Callable[[], Any], runs: int, rounds: int) -> dict[str, Any]:
    """`rounds` measurements of `runs` runs each, back to back: the median CPU per run, every
    round's figure (the spread shows what the shared machine did), the median wall p50, the max."""
    got = [measure(name, once, runs) for _ in range(rounds)]
    return {
        "case": name,
        "runs": runs,
        "rounds": rounds,
        "cpu_ms_per_run": round(statistics.median(r["cpu_ms_per_run"] for r in got), 3),
        "cpu_ms_per_run_rounds": [r["cpu_ms_per_run"] for r in got],
        "wall_ms_p50": round(statistics.median(r["wall_ms_p50"] for r in got), 2),
        "wall_ms_max": max(r["wall_ms_max"] for r in got),
    }


def simulator_rows(runs: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    with simulator_process() as ports:
        base = f"http://{LOOPBACK}:{ports['http']}{DICOMWEB_PATH}"

        def t(probe: str, block: dict[str, Any] | None = None) -> dict[str, Any]:
            return target(
                port=ports["dicom"],
                called_aet=SIM_AET,
                timeout_ms=20000,
                only=(probe,),
                probes={probe: block} if block is not None else None,
            )

        rows.append(
            repeat("sim: dicom_echo (reference)", case(t("dicom_echo"), "dicom_echo"), runs, rounds)
        )
        wl = {"scheduledStationAETitle": DEMO_STATION, "modality": "CT", "minCount": 1}
        rows.append(
            repeat(
                "sim: worklist, 1 item",
                case(t("worklist", wl), "worklist", matches=1),
                runs,
                rounds,
            )
        )
        caps = {
            "sopClasses": list(SUPPORTED_SOP_CLASSES),
            "transferSyntaxes": list(SUPPORTED_TRANSFER_SYNTAXES),
        }
        n = len(SUPPORTED_SOP_CLASSES) * len(SUPPORTED_TRANSFER_SYNTAXES)
        cap_case = case(t("dicom_capabilities", caps), "dicom_capabilities", accepted=n)
        rows.append(repeat(f"sim: dicom_capabilities, {n} contexts", cap_case, runs, rounds))
        with uncached_association():
            rows.append(
                repeat(
                    f"sim: dicom_capabilities, {n} contexts, RQ encoded + AC decoded every run",
                    cap_case,
                    runs,
                    rounds,
                )
            )
        dw = {"endpoint": base, "studyInstanceUID": CANARY_STUDY_UID}
        rows.append(
            repeat(
                f"sim: dicomweb, QIDO-RS + WADO-RS metadata ({CANARY_INSTANCES} instances)",
                case(t("dicomweb", dw), "dicomweb", matches=1, instances=CANARY_INSTANCES),
                runs,
                rounds,
            )
        )
        rows.append(
            repeat(
                "sim: dicomweb, QIDO-RS only (no canary: a query matching nobody)",
                case(t("dicomweb", {"endpoint": base}), "dicomweb", matches=0),
                runs,
                rounds,
            )
        )
    return rows


def dcmtk_rows(runs: int, rounds: int, work: Path) -> list[dict[str, Any]]:
    # wlmscpfs and its .wl items exactly as the worklist tests build them (dump2dcm)
    from tests.test_probe_worklist import ITEMS, WLM_AET, Wlmscpfs

    rows = []
    with Wlmscpfs(work / "wlm", ITEMS) as wlm:

        def wt(probe: str, block: dict[str, Any] | None = None) -> dict[str, Any]:
            return target(
                port=wlm.port,
                called_aet=WLM_AET,
                timeout_ms=20000,
                only=(probe,),
                probes={probe: block} if block is not None else None,
            )

        rows.append(
            repeat(
                "wlmscpfs: dicom_echo (reference)",
                case(wt("dicom_echo"), "dicom_echo"),
                runs,
                rounds,
            )
        )
        for station, count in (("CT01", 3), ("CT02", 25)):
            rows.append(
                repeat(
                    f"wlmscpfs: worklist, {count} items",
                    case(
                        wt("worklist", {"scheduledStationAETitle": station}),
                        "worklist",
                        matches=count,
                    ),
                    runs,
                    rounds,
                )
            )
        rows.append(
            repeat(
                "wlmscpfs: worklist, 25 items capped at maxResults 10 (C-CANCEL)",
                case(
                    wt("worklist", {"scheduledStationAETitle": "CT02", "maxResults": 10}),
                    "worklist",
                    matches=10,
                    capped=True,
                ),
                runs,
                rounds,
            )
        )
    with StoreSCP(work / "storescp") as scp:

        def st(probe: str, block: dict[str, Any] | None = None) -> dict[str, Any]:
            return target(
                port=scp.port,
                called_aet=scp.ae_title,
                timeout_ms=20000,
                only=(probe,),
                probes={probe: block} if block is not None else None,
            )

        rows.append(
            repeat(
                "storescp: dicom_echo (reference)",
                case(st("dicom_echo"), "dicom_echo"),
                runs,
                rounds,
            )
        )
        small = {"sopClasses": STORAGE_7, "transferSyntaxes": ["Implicit", "Explicit"]}
        rows.append(
            repeat(
                "storescp: dicom_capabilities, 14 contexts (7 storage × 2), all accepted",
                case(
                    st("dicom_capabilities", small),
                    "dicom_capabilities",
                    accepted=14,
                    warning=False,
                ),
                runs,
                rounds,
            )
        )
        big = {"sopClasses": STORAGE_16, "transferSyntaxes": SYNTAXES_8}
        rows.append(
            repeat(
                "storescp: dicom_capabilities, 128 contexts (16 × 8), 48 accepted (warning)",
                case(
                    st("dicom_capabilities", big),
                    "dicom_capabilities",
                    accepted=48,
                    warning=True,
                ),
                runs,
                rounds,
            )
        )
    return rows


def orthanc_rows(runs: int, rounds: int, work: Path) -> list[dict[str, Any]]:
    # Orthanc (with DICOMweb) exactly as the dicomweb tests start and load it
    from pydicom.uid import generate_uid

    from tests.test_probe_dicomweb import CANARY_UID, PASSWORD, USER, Orthanc

    rows = []
    with Orthanc(work / "orthanc") as o:
        o.load(CANARY_UID, 3)
        o.load(generate_uid(), 1)
        block = {
            "endpoint": o.base + "/dicom-web",
            "studyInstanceUID": CANARY_UID,
            "credentials": {"username": USER, "password": PASSWORD},
        }
        t = target(port=11112, timeout_ms=20000, only=("dicomweb",), probes={"dicomweb": block})
        rows.append(
            repeat(
                "Orthanc: dicomweb, QIDO-RS + WADO-RS metadata (3 instances)",
                case(t, "dicomweb", matches=1, instances=3),
                runs,
                rounds,
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3, help="measurements of --runs runs per case")
    ap.add_argument("--no-orthanc", action="store_true", help="skip the Orthanc dicomweb row")
    ap.add_argument("--serve-simulator", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_simulator:
        serve_simulator()
        return
    OUT.mkdir(parents=True, exist_ok=True)
    info = machine()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows += simulator_rows(args.runs, args.rounds)
        rows += dcmtk_rows(args.runs, args.rounds, work)
        if not args.no_orthanc:
            rows += orthanc_rows(args.runs, args.rounds, work)
    info["loadavg_end"] = os.getloadavg()
    (OUT / "others.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
    lines = [
        "| case | runs × rounds | CPU ms/run (median) | rounds | wall p50 ms | wall max ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        each = " / ".join(str(x) for x in r["cpu_ms_per_run_rounds"])
        lines.append(
            f"| {r['case']} | {r['runs']} × {r['rounds']} | {r['cpu_ms_per_run']} | {each} "
            f"| {r['wall_ms_p50']} | {r['wall_ms_max']} |"
        )
    (OUT / "others.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
