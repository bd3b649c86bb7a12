"""dicom_retrieve: fetch a canary study with C-GET or C-MOVE, timing the first and last image.

C-ECHO and C-FIND prove the PACS answers; a radiologist feels whether images arrive. This probe
retrieves one configured canary study (Study Root, STUDY level) and measures at the socket, from
the first byte of the C-GET/C-MOVE request:

* `first_image`: until the last byte of the first instance arrived (overlaps last_image, so it
  is not summed into the run's duration: probes.base.NON_ADDITIVE_PHASES),
* `last_image`: until the last byte of the last instance arrived.

C-GET (the default) needs no inbound connection: the association proposes Study Root GET plus
storage contexts with SCP role selection, and the PACS sends the instances back as C-STORE
sub-operations on the same association. C-MOVE has the PACS open a second association to the
agent's own storage SCP (`storeListen`, known to the PACS as `moveDestination`: probes.storage_scp).

Instances are counted and dropped as they pass: never written, never decoded; only the command
set is read (to answer each C-STORE). Sub-operation counts are checked: any failed one fails the
run with reason dimse_status, named by its standard meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator
from pydicom.dataset import Dataset
from pynetdicom import sop_class as sc
from pynetdicom.dimse_messages import C_GET_RQ, C_MOVE_RQ
from pynetdicom.dimse_primitives import C_GET, C_MOVE

from probes.addresses import parse_listen
from probes.base import Deadline, Facts, Phases, ProbeError, ProbeOutcome, Reason, TLSInfo
from probes.dicom_pdu import (
    AFFECTED_SOP_CLASS,
    AFFECTED_SOP_INSTANCE,
    C_STORE_RQ_FIELD,
    COMMAND_FIELD,
    COMPLETED,
    EXPLICIT_VR_LE,
    FAILED,
    IMPLICIT_VR_LE,
    MESSAGE_ID,
    PENDING_STATUSES,
    STATUS,
    WARNING,
    c_store_rsp_pdu,
)
from probes.dicom_session import dicom_session
from probes.dicom_status import (
    DicomStatusError,
    describe_status,
    status_failure,
    status_label,
)
from probes.dicom_wire import DicomAssociation, RequestCache
from probes.settings import AETitle, DicomUID, Listen, Strict
from probes.specs import BuildContext, DicomEndpoint, ProbeSpec
from probes.storage_scp import Received, receiving

# pynetdicom creates its SOP class names at import time from the UID dictionary: no static types.
STUDY_ROOT_GET = str(sc.StudyRootQueryRetrieveInformationModelGet)  # type: ignore[attr-defined]
STUDY_ROOT_MOVE = str(sc.StudyRootQueryRetrieveInformationModelMove)  # type: ignore[attr-defined]
C_GET_RSP_FIELD, C_MOVE_RSP_FIELD = 0x8010, 0x8021
WARNING_STATUS = 0xB000  # some sub-operations failed or had warnings

# Storage SOP classes a C-GET can send back: the common image types and the objects that travel
# with them. A study holding another class gets a failed sub-operation, which is reported.
STORAGE_CLASSES: tuple[str, ...] = tuple(
    str(getattr(sc, name))
    for name in (
        "CTImageStorage",
        "EnhancedCTImageStorage",
        "LegacyConvertedEnhancedCTImageStorage",
        "MRImageStorage",
        "EnhancedMRImageStorage",
        "ComputedRadiographyImageStorage",
        "DigitalXRayImageStorageForPresentation",
        "DigitalXRayImageStorageForProcessing",
        "DigitalMammographyXRayImageStorageForPresentation",
        "DigitalIntraOralXRayImageStorageForPresentation",
        "BreastTomosynthesisImageStorage",
        "UltrasoundImageStorage",
        "UltrasoundMultiFrameImageStorage",
        "SecondaryCaptureImageStorage",
        "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
        "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
        "MultiFrameTrueColorSecondaryCaptureImageStorage",
        "NuclearMedicineImageStorage",
        "PositronEmissionTomographyImageStorage",
        "EnhancedPETImageStorage",
        "XRayAngiographicImageStorage",
        "XRayRadiofluoroscopicImageStorage",
        "RTImageStorage",
        "VLPhotographicImageStorage",
        "GrayscaleSoftcopyPresentationStateStorage",
        "BasicTextSRStorage",
        "EnhancedSRStorage",
        "ComprehensiveSRStorage",
        "KeyObjectSelectionDocumentStorage",
        "EncapsulatedPDFStorage",
    )
)
# Whatever the PACS holds the images in: nothing is decoded, so every encoding will do.
STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
)


@dataclass(frozen=True)
class RetrieveSpec:
    study_uid: str
    method: str = "get"  # "get" | "move"
    move_destination: str | None = None
    store_host: str | None = None  # move: where the agent's storage SCP listens
    store_port: int | None = None
    expected_instances: int | None = None


@dataclass
class _Tally:
    """Instances received and the PACS's final sub-operation counts."""

    instances: int = 0
    bytes: int = 0
    first_at: float | None = None
    last_at: float | None = None
    completed: int | None = None
    failed: int | None = None
    warning: int | None = None


class DicomRetrieveProbe:
    name = "dicom_retrieve"

    def __init__(self, endpoint: DicomEndpoint, spec: RetrieveSpec) -> None:
        self.endpoint = endpoint
        self.spec = spec
        self.service = "C-MOVE" if spec.method == "move" else "C-GET"
        self.model = STUDY_ROOT_MOVE if spec.method == "move" else STUDY_ROOT_GET
        self._requests = RequestCache(self.model)

    def _build(self, message_id: int, transfer_syntax: str) -> C_GET_RQ | C_MOVE_RQ:
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = self.spec.study_uid
        req: C_GET | C_MOVE = C_MOVE() if self.spec.method == "move" else C_GET()
        req.MessageID = message_id
        req.AffectedSOPClassUID = self.model
        req.Priority = 2  # LOW: a health check must not compete with radiologists' retrievals
        if isinstance(req, C_MOVE):
            req.MoveDestination = self.spec.move_destination
        req.Identifier = DicomAssociation.encode_identifier(ident, transfer_syntax)
        msg: C_GET_RQ | C_MOVE_RQ = C_MOVE_RQ() if isinstance(req, C_MOVE) else C_GET_RQ()
        msg.primitive_to_message(req)
        return msg

    def run(self, deadline: Deadline, phases: Phases) -> ProbeOutcome:
        tls: list[TLSInfo] = []
        if self.spec.method == "move":
            tally = self._move(deadline, phases, tls)
        else:
            tally = self._get(deadline, phases, tls)
        self._check(tally)
        n = tally.instances
        return ProbeOutcome(
            f"{self.service} successful: {n} instance{'s' if n != 1 else ''}",
            tls=tls[0] if tls else None,
            facts=Facts(instances=n, size_bytes=tally.bytes),
        )

    # -- C-GET: the images come back on the same association -------------------------------------

    def _get(self, deadline: Deadline, phases: Phases, tls: list[TLSInfo]) -> _Tally:
        tally = _Tally()
        with dicom_session(
            self.endpoint,
            [self.model, *STORAGE_CLASSES],
            deadline,
            phases,
            tls.append,
            scp_roles=STORAGE_CLASSES,
            role_transfer_syntaxes=STORAGE_TRANSFER_SYNTAXES,
        ) as s:
            assoc = s.assoc
            t0 = assoc.send_pdus(self._requests.get(assoc, self._build), "C-GET")
            while True:
                msg = assoc.read_message_counted("C-GET")
                assert msg is not None  # release_ok is off
                field = msg.fields.get(COMMAND_FIELD)
                if field == C_STORE_RQ_FIELD:
                    tally.instances += 1
                    tally.bytes += msg.data_bytes
                    tally.first_at = tally.first_at or msg.received_at
                    tally.last_at = msg.received_at
                    rsp = c_store_rsp_pdu(
                        msg.context_id,
                        msg.fields.get(MESSAGE_ID, 0),
                        msg.uids.get(AFFECTED_SOP_CLASS, ""),
                        msg.uids.get(AFFECTED_SOP_INSTANCE, ""),
                    )
                    assoc.send_pdus([rsp], "C-GET")
                    continue
                if field != C_GET_RSP_FIELD:
                    raise ProbeError(Reason.INVALID_RESPONSE, "expected a C-GET-RSP or C-STORE-RQ")
                if self._final(msg.fields, tally):
                    break
            self._phases(phases, t0, tally.first_at, tally.last_at)
        return tally

    # -- C-MOVE: the PACS opens an association to our storage SCP --------------------------------

    def _move(self, deadline: Deadline, phases: Phases, tls: list[TLSInfo]) -> _Tally:
        spec = self.spec
        assert spec.store_host is not None and spec.store_port is not None
        tally = _Tally()
        with receiving(spec.store_host, spec.store_port, deadline, self.endpoint.max_pdu) as scp:
            with dicom_session(self.endpoint, [self.model], deadline, phases, tls.append) as s:
                assoc = s.assoc
                t0 = assoc.send_pdus(self._requests.get(assoc, self._build), "C-MOVE")
                while True:
                    msg = assoc.read_message_counted("C-MOVE")
                    assert msg is not None  # release_ok is off
                    if msg.fields.get(COMMAND_FIELD) != C_MOVE_RSP_FIELD:
                        raise ProbeError(Reason.INVALID_RESPONSE, "expected a C-MOVE-RSP")
                    if self._final(msg.fields, tally):
                        break
                # Every C-STORE was counted before we answered it, and the PACS sends the final
                # response after the last answer: the counts are complete. Let the PACS release
                # its storage association (briefly) so it does not log an abort.
                scp.wait_idle(0.5)
                got: Received = scp.received
                with got.lock:
                    tally.instances, tally.bytes = got.instances, got.bytes
                    tally.first_at, tally.last_at = got.first_at, got.last_at
                self._phases(phases, t0, tally.first_at, tally.last_at)
        return tally

    # -- shared ---------------------------------------------------------------------------------

    def _final(self, fields: dict[int, int], tally: _Tally) -> bool:
        """Note a C-GET/C-MOVE-RSP; True when it is the final one (status not pending)."""
        status = fields.get(STATUS)
        if status is None:
            raise ProbeError(Reason.INVALID_RESPONSE, f"{self.service}-RSP without a status")
        if status in PENDING_STATUSES:
            return False
        tally.completed = fields.get(COMPLETED)
        tally.failed = fields.get(FAILED)
        tally.warning = fields.get(WARNING)
        if status not in (0x0000, WARNING_STATUS):
            raise status_failure(status, self.service)  # named, and counted by its label
        if tally.failed:
            total = tally.failed + (tally.completed or 0) + (tally.warning or 0)
            raise DicomStatusError(
                Reason.DIMSE_STATUS,
                f"{describe_status(status, self.service)}: "
                f"{tally.failed} of {total} sub-operations failed",
                status_label(status, self.service),
            )
        return True

    @staticmethod
    def _phases(phases: Phases, t0: float, first: float | None, last: float | None) -> None:
        if first is not None and last is not None:
            phases.add("first_image", max(first - t0, 0.0))
            phases.add("last_image", max(last - t0, 0.0))

    def _check(self, tally: _Tally) -> None:
        n = tally.instances
        if n == 0:
            raise ProbeError(Reason.UNEXPECTED_RESULT, f"{self.service}: no instance arrived")
        done = (tally.completed or 0) + (tally.warning or 0)
        if tally.completed is not None and done != n:
            raise ProbeError(
                Reason.UNEXPECTED_RESULT,
                f"{self.service}: the PACS reports {done} sub-operations done, {n} instances "
                "arrived",
            )
        want = self.spec.expected_instances
        if want is not None and n != want:
            raise ProbeError(Reason.UNEXPECTED_RESULT, f"{n} instances, expected {want}")


class DicomRetrieveSettings(Strict):
    """`probes.dicom_retrieve`: fetch a canary study with C-GET (default) or C-MOVE. Off unless
    this block is given."""

    enabled: bool = True
    studyInstanceUID: DicomUID | None = None
    method: Literal["get", "move"] = "get"
    moveDestination: AETitle | None = None  # the AE title the PACS knows the agent by (move)
    storeListen: Listen | None = None  # HOST:PORT of the agent's storage SCP (move)
    expectedInstances: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _complete(self) -> DicomRetrieveSettings:
        if not self.enabled:
            return self
        if self.studyInstanceUID is None:
            raise ValueError("studyInstanceUID is required (the canary study to retrieve)")
        if self.method == "move":
            if not self.moveDestination or not self.storeListen:
                raise ValueError("method move needs moveDestination and storeListen")
            if parse_listen(self.storeListen)[1] == 0:
                raise ValueError("storeListen needs a fixed port: the PACS connects to it")
        elif self.moveDestination or self.storeListen:
            raise ValueError("moveDestination and storeListen are for method: move only")
        return self


def build(g: DicomRetrieveSettings, ctx: BuildContext) -> DicomRetrieveProbe | None:
    if not g.enabled:
        return None
    assert g.studyInstanceUID is not None  # the settings model requires it when enabled
    store_host, store_port = parse_listen(g.storeListen) if g.storeListen else (None, None)
    return DicomRetrieveProbe(
        ctx.dicom,
        RetrieveSpec(
            study_uid=g.studyInstanceUID,
            method=g.method,
            move_destination=g.moveDestination,
            store_host=store_host,
            store_port=store_port,
            expected_instances=g.expectedInstances,
        ),
    )


SPEC = ProbeSpec(
    "dicom_retrieve", DicomRetrieveSettings, build,
    "C-GET or C-MOVE of a canary study: instances and bytes received",
    outputs=("instances", "size_bytes", "dicom_status"),
    optional=True,
    # C-MOVE's storage SCP serves the PACS's associations on threads of its own, and the run
    # joins them: a thread's run, not the probe loop's
    cooperative=False,
)
