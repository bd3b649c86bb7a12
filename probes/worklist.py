"""worklist: a Modality Worklist C-FIND for one station, counting the scheduled procedure steps.

The query asks only for Scheduled Procedure Step keys (station AE title, modality, start date):
no patient key is requested. A worklist is patient data all the same, so responses are counted as
they arrive, straight from the command set, without decoding them; only the first match is decoded,
checked against the query (a worklist that ignores its query is broken) and dropped. Nothing of
an item is kept, logged or exported: the result is a count.

An empty worklist is a success by default (`minCount: 0`): an idle modality at 3 a.m. is not an
outage. A worklist of thousands of items is counted up to `maxResults`; there the query is
cancelled (C-CANCEL, then the SCP's final response is awaited for at most CANCEL_WAIT, without
decoding what still arrives) and the run ends with "at least N". An SCP that ignores the cancel
gets an A-ABORT instead, so a worklist's length can never stretch a run past its deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pydantic import Field, model_validator
from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import C_CANCEL_RQ, C_FIND_RQ
from pynetdicom.dimse_primitives import C_CANCEL, C_FIND

from probes.base import Deadline, Facts, Phases, ProbeError, ProbeOutcome, Reason, TLSInfo
from probes.dicom_find import raw_text
from probes.dicom_pdu import C_FIND_RSP_FIELD, PENDING_STATUSES, command_field, dimse_status
from probes.dicom_session import dicom_session
from probes.dicom_status import status_failure
from probes.dicom_wire import DicomAssociation
from probes.settings import AETitle, Strict
from probes.specs import BuildContext, DicomEndpoint, ProbeSpec

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
SPS_SEQUENCE = 0x00400100  # Scheduled Procedure Step Sequence
CANCEL_WAIT = 1.0  # seconds an SCP gets to end a cancelled query before it is aborted


@dataclass(frozen=True)
class WorklistQuery:
    station_aet: str
    modality: str | None = None
    scheduled_date: str = "today"  # today | any | a DICOM date or range
    min_count: int = 0
    max_results: int = 1000

    def date_range(self, today: date | None = None) -> str:
        """The Scheduled Procedure Step Start Date to match ("" matches any date)."""
        if self.scheduled_date == "any":
            return ""
        if self.scheduled_date == "today":
            return (today or date.today()).strftime("%Y%m%d")
        return self.scheduled_date

    def identifier(self, when: str) -> Dataset:
        sps = Dataset()
        sps.ScheduledStationAETitle = self.station_aet
        sps.Modality = self.modality or ""
        sps.ScheduledProcedureStepStartDate = when
        ds = Dataset()
        ds.ScheduledProcedureStepSequence = [sps]
        return ds

    def matches(self, ident: Dataset, when: str) -> bool:
        """Does the first returned item answer this query? Reads raw bytes (see raw_text)."""
        if SPS_SEQUENCE not in ident:
            return False
        try:
            items = ident[SPS_SEQUENCE].value
        except Exception:  # noqa: BLE001 - a malformed sequence from the peer
            return False
        if not items:
            return False
        sps = items[0]
        got_station = raw_text(sps, "ScheduledStationAETitle")
        if got_station and not _wild(self.station_aet) and got_station != self.station_aet:
            return False
        got_modality = raw_text(sps, "Modality")
        if self.modality and got_modality and got_modality != self.modality:
            return False
        got_date = raw_text(sps, "ScheduledProcedureStepStartDate")
        if when and got_date:
            lo, sep, hi = when.partition("-")
            if not sep:
                hi = lo
            if (lo and got_date < lo) or (hi and got_date > hi):
                return False
        return True


def _wild(value: str) -> bool:
    return "*" in value or "?" in value


class WorklistProbe:
    name = "worklist"

    def __init__(self, endpoint: DicomEndpoint, query: WorklistQuery) -> None:
        self.endpoint = endpoint
        self.query = query

    def _request(self, assoc: DicomAssociation, when: str, message_id: int) -> list[bytes]:
        # built per run: "today" changes (the worklist probe runs rarely, encoding is cheap)
        cx = assoc.contexts[MODALITY_WORKLIST_FIND]
        req = C_FIND()
        req.MessageID = message_id
        req.AffectedSOPClassUID = MODALITY_WORKLIST_FIND
        req.Priority = 2  # LOW
        req.Identifier = DicomAssociation.encode_identifier(
            self.query.identifier(when), cx.transfer_syntax
        )
        msg = C_FIND_RQ()
        msg.primitive_to_message(req)
        return assoc.encode_dimse(msg, MODALITY_WORKLIST_FIND)

    @staticmethod
    def _cancel(assoc: DicomAssociation, message_id: int) -> None:
        """C-CANCEL the query and read on, undecoded, until the SCP's final response (within
        CANCEL_WAIT and the run's deadline); the association is then released as usual. An SCP
        that goes on sending, or closes, is aborted instead: the count is known either way."""
        prim = C_CANCEL()
        prim.MessageIDBeingRespondedTo = message_id
        msg = C_CANCEL_RQ()
        msg.primitive_to_message(prim)
        run_deadline = assoc.deadline
        assoc.deadline = run_deadline.sub(min(CANCEL_WAIT, run_deadline.remaining() / 2))
        try:
            assoc.send_pdus(assoc.encode_dimse(msg, MODALITY_WORKLIST_FIND), "DIMSE request")
            while assoc.recv_message_raw()[1] in PENDING_STATUSES:
                pass  # matches still in flight: neither counted nor decoded
        except ProbeError:
            assoc.abort()
        finally:
            assoc.deadline = run_deadline

    def run(self, deadline: Deadline, phases: Phases) -> ProbeOutcome:
        q = self.query
        when = q.date_range()
        tls: list[TLSInfo] = []
        count = 0
        capped = False
        with dicom_session(
            self.endpoint, [MODALITY_WORKLIST_FIND], deadline, phases, tls.append
        ) as s:
            assoc = s.assoc
            message_id = assoc.next_message_id()
            t0 = assoc.send_pdus(self._request(assoc, when, message_id), "DIMSE request")
            first: list[bytes] | None = None
            while True:
                units, status = assoc.recv_message_raw()
                if status in PENDING_STATUSES:
                    count += 1
                    if count == 1:
                        phases.add("first_match", assoc.received_at - t0)
                        first = units
                    if count >= q.max_results:
                        # enough to know the worklist serves; reading on would only cost time
                        phases.add("dimse", assoc.received_at - t0)
                        capped = True
                        self._cancel(assoc, message_id)
                        break
                    continue
                phases.add("dimse", assoc.received_at - t0)
                final = assoc.decode_message(units)
                if command_field(final) != C_FIND_RSP_FIELD:
                    raise ProbeError(Reason.INVALID_RESPONSE, "expected a C-FIND-RSP")
                code = dimse_status(final)
                if code != 0x0000:
                    raise status_failure(code, "MWL C-FIND")
                break
            if first is not None:
                rsp = assoc.decode_message(first)
                if command_field(rsp) != C_FIND_RSP_FIELD:
                    raise ProbeError(Reason.INVALID_RESPONSE, "expected a C-FIND-RSP")
                ident = assoc.decode_identifier(rsp, MODALITY_WORKLIST_FIND)
                ok = q.matches(ident, when)
                del ident, rsp, first  # patient data: checked, never kept
                if not ok:
                    raise ProbeError(
                        Reason.UNEXPECTED_RESULT, "a worklist item does not satisfy the query"
                    )
        if count < q.min_count:
            raise ProbeError(
                Reason.UNEXPECTED_RESULT, f"{count} worklist items, expected ≥ {q.min_count}"
            )
        text = f"at least {count}" if capped else str(count)
        return ProbeOutcome(
            f"Worklist C-FIND successful: {text} item{'s' if count != 1 else ''}",
            tls=tls[0] if tls else None,
            facts=Facts(matches=count, capped=True) if capped else Facts(matches=count),
        )


class WorklistSettings(Strict):
    """`probes.worklist`: a Modality Worklist C-FIND for one station. Off unless given. Counts
    only: worklist items are patient data."""

    enabled: bool = True
    scheduledStationAETitle: AETitle | None = None  # default: config.callingAET
    modality: str | None = Field(default=None, pattern=r"^[A-Z0-9_ ]{1,16}$")
    # today | any | a DICOM date or range (YYYYMMDD, YYYYMMDD-YYYYMMDD, -YYYYMMDD, YYYYMMDD-)
    scheduledDate: str = Field(
        default="today", pattern=r"^(today|any|\d{8}(-\d{8})?|-\d{8}|\d{8}-)$"
    )
    minCount: int = Field(default=0, ge=0)  # an empty worklist passes by default
    maxResults: int = Field(default=1000, ge=1, le=100_000)  # counted up to here, then stopped

    @model_validator(mode="after")
    def _min_within_max(self) -> WorklistSettings:
        if self.minCount > self.maxResults:
            raise ValueError("minCount must not exceed maxResults")
        return self


def build(w: WorklistSettings, ctx: BuildContext) -> WorklistProbe | None:
    if not w.enabled:
        return None
    return WorklistProbe(
        ctx.dicom,
        WorklistQuery(
            station_aet=w.scheduledStationAETitle or ctx.dicom.calling_aet,
            modality=w.modality,
            scheduled_date=w.scheduledDate,
            min_count=w.minCount,
            max_results=w.maxResults,
        ),
    )


SPEC = ProbeSpec(
    "worklist", WorklistSettings, build,
    "Modality Worklist C-FIND for one station: items counted, never read",
    outputs=("matches", "capped", "dicom_status"),
    optional=True,
)
