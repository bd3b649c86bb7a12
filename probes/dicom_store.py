"""dicom_store: C-STORE one synthetic, clearly non-patient instance; optionally find it again.

Opt-in (`probes.dicom_store.enabled: true`): it writes to the PACS. The object is a tiny
Secondary Capture (8×8 pixels, PatientName PACS^HEALTH^CHECK, PatientID PACS-HEALTH-<target>)
whose Study, Series and SOP Instance UIDs are derived from the target id (2.25.<integer from a
hash>): every run stores the same object again, so any number of runs leaves one object per
target on the PACS (docs/security.md says how to remove it).

With `verify: true` the probe then asks for it with a C-FIND (Study Root, IMAGE level, by its
UIDs) until it is found or the deadline nears: phase `findable`, from the C-STORE response to
the C-FIND response that found it, is how long the PACS takes to make a new object visible.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from io import BytesIO

from pydicom.dataset import Dataset
from pynetdicom import sop_class as sc
from pynetdicom.dimse_messages import C_FIND_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_FIND, C_STORE

from probes.base import Deadline, Facts, Phases, ProbeError, ProbeOutcome, Reason, TLSInfo
from probes.dicom_pdu import (
    C_FIND_RSP_FIELD,
    C_STORE_RSP_FIELD,
    STUDY_ROOT_FIND,
    command_field,
    dimse_status,
)
from probes.dicom_session import dicom_session
from probes.dicom_status import describe_status, status_failure
from probes.dicom_wire import DicomAssociation, RequestCache
from probes.net.waits import sleep
from probes.settings import Strict
from probes.specs import BuildContext, DicomEndpoint, ProbeSpec

# pynetdicom creates its SOP class names at import time from the UID dictionary: no static types.
SECONDARY_CAPTURE = str(sc.SecondaryCaptureImageStorage)  # type: ignore[attr-defined]
PATIENT_NAME = "PACS^HEALTH^CHECK"
UID_ROOT = "2.25."  # UUID-derived UIDs (PS3.5 B.2): no organisation root needed
# Storage warnings (PS3.4 B.2.3): the object is stored, with coercion or elements discarded.
STORE_WARNINGS = (0xB000, 0xB006, 0xB007)
FIND_PAUSE = 0.25  # seconds between C-FINDs while waiting for the object to become findable


def derived_uid(target_id: str, kind: str) -> str:
    """A UID fixed for (target, kind): 2.25 and 128 bits of a SHA-256 of both."""
    digest = hashlib.sha256(f"pacs-health-agent/{target_id}/{kind}".encode()).digest()
    return UID_ROOT + str(int.from_bytes(digest[:16], "big"))


def patient_id(target_id: str) -> str:
    return f"PACS-HEALTH-{target_id}"[:64]  # LO: at most 64 characters


def synthetic_instance(target_id: str) -> Dataset:
    """The object dicom_store writes: the same bytes on every run for a given target."""
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = derived_uid(target_id, "instance")
    ds.StudyInstanceUID = derived_uid(target_id, "study")
    ds.SeriesInstanceUID = derived_uid(target_id, "series")
    ds.PatientName = PATIENT_NAME
    ds.PatientID = patient_id(target_id)
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = "20000101"
    ds.StudyTime = "000000"
    ds.StudyID = "HEALTH"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "PACS HEALTH CHECK - synthetic test object, not a patient"
    ds.SeriesDescription = "pacs-health-agent dicom_store probe"
    ds.Modality = "OT"
    ds.ConversionType = "SYN"  # synthetic image (PS3.3 C.8.6.1)
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 8
    ds.Columns = 8
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((x * 8 + y) * 4 for x in range(8) for y in range(8))
    return ds


@lru_cache(maxsize=64)
def _encoded_instance(target_id: str, transfer_syntax: str) -> bytes:
    return DicomAssociation.encode_identifier(
        synthetic_instance(target_id), transfer_syntax
    ).getvalue()


class DicomStoreProbe:
    name = "dicom_store"

    def __init__(self, endpoint: DicomEndpoint, target_id: str, *, verify: bool = False) -> None:
        self.endpoint = endpoint
        self.target_id = target_id
        self.verify = verify
        self.sop_instance_uid = derived_uid(target_id, "instance")
        self.study_uid = derived_uid(target_id, "study")
        self.series_uid = derived_uid(target_id, "series")
        self._stores = RequestCache(SECONDARY_CAPTURE)
        self._finds = RequestCache(STUDY_ROOT_FIND)

    def _build_store(self, message_id: int, transfer_syntax: str) -> C_STORE_RQ:
        req = C_STORE()
        req.MessageID = message_id
        req.AffectedSOPClassUID = SECONDARY_CAPTURE
        req.AffectedSOPInstanceUID = self.sop_instance_uid
        req.Priority = 2  # LOW
        req.DataSet = BytesIO(_encoded_instance(self.target_id, transfer_syntax))
        msg = C_STORE_RQ()
        msg.primitive_to_message(req)
        return msg

    def _build_find(self, message_id: int, transfer_syntax: str) -> C_FIND_RQ:
        ident = Dataset()
        ident.QueryRetrieveLevel = "IMAGE"
        ident.StudyInstanceUID = self.study_uid
        ident.SeriesInstanceUID = self.series_uid
        ident.SOPInstanceUID = self.sop_instance_uid
        req = C_FIND()
        req.MessageID = message_id
        req.AffectedSOPClassUID = STUDY_ROOT_FIND
        req.Priority = 2
        req.Identifier = DicomAssociation.encode_identifier(ident, transfer_syntax)
        msg = C_FIND_RQ()
        msg.primitive_to_message(req)
        return msg

    def run(self, deadline: Deadline, phases: Phases) -> ProbeOutcome:
        tls: list[TLSInfo] = []
        syntaxes = [SECONDARY_CAPTURE, STUDY_ROOT_FIND] if self.verify else [SECONDARY_CAPTURE]
        warning: str | None = None
        with dicom_session(self.endpoint, syntaxes, deadline, phases, tls.append) as s:
            assoc = s.assoc
            for rsp, elapsed in assoc.exchange(
                self._stores.get(assoc, self._build_store), SECONDARY_CAPTURE
            ):
                if command_field(rsp) != C_STORE_RSP_FIELD:
                    raise ProbeError(Reason.INVALID_RESPONSE, "expected a C-STORE-RSP")
                phases.add("store", elapsed)
                status = dimse_status(rsp)
                if status in STORE_WARNINGS:
                    warning = describe_status(status, "C-STORE")
                elif status != 0x0000:
                    raise status_failure(status, "C-STORE")
            if self.verify:
                self._findable(assoc, deadline, phases)
        return ProbeOutcome(
            "C-STORE successful" + (", findable" if self.verify else ""),
            warning=warning,
            tls=tls[0] if tls else None,
            facts=Facts(
                size_bytes=len(_encoded_instance(self.target_id, _ts(assoc, SECONDARY_CAPTURE)))
            ),
        )

    def _findable(self, assoc: DicomAssociation, deadline: Deadline, phases: Phases) -> None:
        """C-FIND by the object's UIDs until one matches; `findable` from the store response."""
        stored_at = assoc.received_at
        while True:
            matches = 0
            for rsp, _ in assoc.exchange(self._finds.get(assoc, self._build_find), STUDY_ROOT_FIND):
                if command_field(rsp) != C_FIND_RSP_FIELD:
                    raise ProbeError(Reason.INVALID_RESPONSE, "expected a C-FIND-RSP")
                status = dimse_status(rsp)
                if status in (0xFF00, 0xFF01):
                    matches += 1
                elif status != 0x0000:
                    raise status_failure(status, "C-FIND")
            if matches:
                phases.add("findable", assoc.received_at - stored_at)
                return
            # leave time to release the association: give up when another pause would not fit
            if deadline.remaining() < FIND_PAUSE + 0.1 * deadline.budget:
                raise ProbeError(
                    Reason.UNEXPECTED_RESULT, "stored, but not found by C-FIND within the deadline"
                )
            sleep(FIND_PAUSE)  # parks only this run on the probe loop


def _ts(assoc: DicomAssociation, syntax: str) -> str:
    return assoc.contexts[syntax].transfer_syntax


class DicomStoreSettings(Strict):
    """`probes.dicom_store`: C-STORE one synthetic, non-patient instance (opt-in)."""

    enabled: bool = False
    verify: bool = False  # then C-FIND it until found (phase `findable`)


def build(st: DicomStoreSettings, ctx: BuildContext) -> DicomStoreProbe | None:
    return DicomStoreProbe(ctx.dicom, ctx.target_id, verify=st.verify) if st.enabled else None


SPEC = ProbeSpec(
    "dicom_store", DicomStoreSettings, build,
    "C-STORE of one synthetic, non-patient instance (opt-in), optionally until C-FIND finds it",
    outputs=("size_bytes", "dicom_status"),
)
