"""dicom_echo: C-ECHO (Verification SOP Class) to the PACS; success only on status 0x0000."""

from __future__ import annotations

from pynetdicom.dimse_messages import C_ECHO_RQ
from pynetdicom.dimse_primitives import C_ECHO

from probes.base import Deadline, Phases, ProbeError, ProbeOutcome, Reason, TLSInfo
from probes.dicom_pdu import C_ECHO_RSP_FIELD, VERIFICATION, command_field, dimse_status
from probes.dicom_session import dicom_session
from probes.dicom_status import status_failure
from probes.dicom_wire import DicomAssociation, RequestCache
from probes.settings import ProbeToggle
from probes.specs import BuildContext, DicomEndpoint, ProbeSpec


class DicomEchoProbe:
    name = "dicom_echo"

    def __init__(self, endpoint: DicomEndpoint) -> None:
        self.endpoint = endpoint
        self._requests = RequestCache(VERIFICATION, shared=())  # the same for every target

    @staticmethod
    def _build(message_id: int, _transfer_syntax: str) -> C_ECHO_RQ:
        req = C_ECHO()
        req.MessageID = message_id
        req.AffectedSOPClassUID = VERIFICATION
        msg = C_ECHO_RQ()
        msg.primitive_to_message(req)
        return msg

    def _request(self, assoc: DicomAssociation) -> list[bytes]:
        return self._requests.get(assoc, self._build)

    def run(self, deadline: Deadline, phases: Phases) -> ProbeOutcome:
        tls: list[TLSInfo] = []
        with dicom_session(self.endpoint, [VERIFICATION], deadline, phases, tls.append) as s:
            for rsp, elapsed in s.assoc.exchange(self._request(s.assoc), VERIFICATION):
                if command_field(rsp) != C_ECHO_RSP_FIELD:
                    raise ProbeError(Reason.INVALID_RESPONSE, "expected a C-ECHO-RSP")
                phases.add("dimse", elapsed)
                status = dimse_status(rsp)
                if status != 0x0000:
                    raise status_failure(status, "C-ECHO")
                break
        return ProbeOutcome("Echo successful", tls=tls[0] if tls else None)


def build(settings: ProbeToggle, ctx: BuildContext) -> DicomEchoProbe | None:
    return DicomEchoProbe(ctx.dicom) if settings.enabled else None


SPEC = ProbeSpec(
    "dicom_echo", ProbeToggle, build, "C-ECHO: the PACS answers a DICOM association",
    outputs=("dicom_status",),
)
