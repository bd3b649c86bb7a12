"""What the simulated PACS (agent.simulator) holds and how it matches queries: the synthetic
studies, the canary study's images, the worklist item, the SOP classes and transfer syntaxes it
supports, the matching rules, and the fault switches. Synthetic values only: no real person."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

CANARY_PATIENT_ID = "CANARY001"
UID_ROOT = "1.2.826.0.1.3680043.10.1082.1"
CANARY_STUDY_UID = f"{UID_ROOT}.1"
CANARY_INSTANCES = 2  # images of the canary study, 8x8 pixels each: a retrieve stays cheap
MAX_STORED = 64  # C-STORE keeps UIDs only, and at most this many objects
DEMO_STATION = "PACS_HEALTH"  # the demo's calling AE title: its worklist has one item
DICOMWEB_PATH = "/dicom-web"
VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
STORAGE_SOP_CLASSES = (SECONDARY_CAPTURE, CT_IMAGE)
SUPPORTED_SOP_CLASSES = (
    VERIFICATION,
    STUDY_ROOT_FIND,
    STUDY_ROOT_MOVE,
    STUDY_ROOT_GET,
    MODALITY_WORKLIST_FIND,
    *STORAGE_SOP_CLASSES,
)
# pynetdicom's default transfer syntaxes for a supported context include both of these
SUPPORTED_TRANSFER_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def synthetic_studies() -> list[Dataset]:
    """Synthetic studies: fake names and ids, no real person."""
    rows = [
        ("CANARY001", "PACS^CANARY", CANARY_STUDY_UID, "ACC0001", "20260101", "CT"),
        ("SIM0002", "SIMULATED^ALPHA", f"{UID_ROOT}.2", "ACC0002", "20260102", "MR"),
        ("SIM0002", "SIMULATED^ALPHA", f"{UID_ROOT}.3", "ACC0003", "20260103", "CT"),
        ("SIM0004", "SIMULATED^BETA", f"{UID_ROOT}.4", "ACC0004", "20260104", "US"),
    ]
    out = []
    for pid, name, uid, acc, date, mod in rows:
        ds = Dataset()
        ds.PatientID, ds.PatientName, ds.StudyInstanceUID = pid, name, uid
        ds.AccessionNumber, ds.StudyDate, ds.ModalitiesInStudy = acc, date, mod
        out.append(ds)
    return out


def canary_instances() -> list[Dataset]:
    """The canary study's images: synthetic 8x8 Secondary Captures, no real person."""
    out = []
    for n in range(1, CANARY_INSTANCES + 1):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = SECONDARY_CAPTURE
        ds.SOPInstanceUID = f"{CANARY_STUDY_UID}.1.{n}"
        ds.StudyInstanceUID = CANARY_STUDY_UID
        ds.SeriesInstanceUID = f"{CANARY_STUDY_UID}.1"
        ds.PatientID, ds.PatientName = CANARY_PATIENT_ID, "PACS^CANARY"
        ds.Modality, ds.ConversionType, ds.InstanceNumber = "OT", "SYN", n
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = bytes(range(n, n + 64))
        out.append(ds)
    return out


def instance_matches(instance: Dataset, query: Dataset) -> bool:
    """IMAGE-level matching on the UIDs (single value or empty)."""
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        want = str(query.get(key, "") or "")
        if want and want != "*" and str(instance.get(key, "")) != want:
            return False
    return True


def worklist_item(query: Dataset) -> Dataset | None:
    """The one synthetic Scheduled Procedure Step (DEMO_STATION, CT, today) if the query asks for
    it: only the Scheduled Procedure Step keys the query names come back."""
    today = dt.date.today().strftime("%Y%m%d")
    item = {
        "ScheduledStationAETitle": DEMO_STATION,
        "Modality": "CT",
        "ScheduledProcedureStepStartDate": today,
    }
    asked = query.get("ScheduledProcedureStepSequence") or [Dataset()]
    sps_query = asked[0]
    station = str(sps_query.get("ScheduledStationAETitle", "") or "")
    if station and "*" not in station and "?" not in station and station != DEMO_STATION:
        return None
    modality = str(sps_query.get("Modality", "") or "")
    if modality and modality != "CT":
        return None
    when = str(sps_query.get("ScheduledProcedureStepStartDate", "") or "")
    if when:
        lo, sep, hi = when.partition("-")
        hi = hi if sep else lo
        if (lo and today < lo) or (hi and today > hi):
            return None
    sps = Dataset()
    for key in sps_query.dir() or list(item):
        setattr(sps, key, item.get(key, ""))
    rsp = Dataset()
    rsp.ScheduledProcedureStepSequence = [sps]
    return rsp


def dicom_json(ds: Dataset, keys: tuple[str, ...]) -> dict[str, Any]:
    """A few UI/LO/CS keys of `ds` as DICOM JSON (PS3.18 Annex F)."""
    out: dict[str, Any] = {}
    for key in keys:
        if key in ds:
            elem = ds[key]
            out[f"{elem.tag:08X}"] = {"vr": elem.VR, "Value": [str(elem.value)]}
    return out


@dataclass
class Faults:
    delay: float = 0.0
    dicom_status: int | None = None
    reject: bool = False
    http_status: int | None = None
    primary_down: bool = False


def study_matches(study: Dataset, query: Dataset) -> bool:
    """Study Root matching the simulators use: single values, `*` and a date range."""
    for key in ("PatientID", "StudyInstanceUID", "AccessionNumber"):
        want = str(query.get(key, "") or "")
        if want and want != "*" and str(study.get(key, "")) != want:
            return False
    date = str(query.get("StudyDate", "") or "")
    if date:
        lo, _, hi = date.partition("-")
        hi = hi if "-" in date else lo
        got = str(study.StudyDate)
        if (lo and got < lo) or (hi and got > hi):
            return False
    return True
