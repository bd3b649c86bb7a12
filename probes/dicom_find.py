"""dicom_find: a synthetic Study Root C-FIND at STUDY level for a canary, counting matches.

With no canary configured it asks for a PatientID that matches nobody and expects 0 matches, so
by default no patient data is read at all. Matches are counted from each response's Status, read
from the command bytes (probes/dicom_command.py); only a canary's identifiers are decoded, to be
checked against the query, then dropped: never logged, exported or kept (they are PHI).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import Field, model_validator
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import C_FIND_RQ
from pynetdicom.dimse_primitives import C_FIND

from probes.base import Deadline, Facts, Phases, ProbeError, ProbeOutcome, Reason, TLSInfo
from probes.dicom_command import DimseResponse, read_keys
from probes.dicom_pdu import (
    C_FIND_RSP_FIELD,
    IMPLICIT_VR_LE,
    PENDING_STATUSES,
    STUDY_ROOT_FIND,
    command_field,
    dimse_status,
)
from probes.dicom_session import dicom_session
from probes.dicom_status import status_failure
from probes.dicom_wire import DicomAssociation, RequestCache
from probes.settings import Strict
from probes.specs import BuildContext, DicomEndpoint, ProbeSpec

NO_MATCH_PATIENT_ID = "PACS-HEALTH-NO-MATCH-0000"


@dataclass(frozen=True)
class FindQuery:
    patient_id: str | None = None
    accession_number: str | None = None
    study_instance_uid: str | None = None
    study_date: str | None = None  # YYYYMMDD or a DICOM range
    expected_count: int | None = None
    min_count: int | None = None
    max_results: int = 100

    @property
    def is_canary(self) -> bool:
        return bool(self.patient_id or self.accession_number or self.study_instance_uid)

    def effective(self) -> FindQuery:
        if self.is_canary:
            if self.expected_count is None and self.min_count is None:
                return FindQuery(**{**self.__dict__, "min_count": 1})
            return self
        return FindQuery(
            patient_id=NO_MATCH_PATIENT_ID, expected_count=0, study_date=self.study_date
        )

    def identifier(self) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientID = self.patient_id or ""
        ds.StudyInstanceUID = self.study_instance_uid or ""
        ds.AccessionNumber = self.accession_number or ""
        if self.study_date:
            ds.StudyDate = self.study_date
        return ds

    def matches(self, ds: Dataset) -> bool:
        """Does a returned identifier satisfy the query's single-value keys and date range?"""
        return self.matches_text(lambda key: raw_text(ds, key))

    def matches_text(self, text: Callable[[str], str]) -> bool:
        """matches(), given each key's value as text (`text(keyword)`, "" when absent)."""
        for key, want in (
            ("PatientID", self.patient_id),
            ("StudyInstanceUID", self.study_instance_uid),
            ("AccessionNumber", self.accession_number),
        ):
            if want and "*" not in want and "?" not in want and text(key) != want:
                return False
        if self.study_date:
            got = text("StudyDate")
            lo, _, hi = self.study_date.partition("-")
            if "-" not in self.study_date:
                hi = lo
            if got and ((lo and got < lo) or (hi and got > hi)):
                return False
        return True


# The keys matches() reads, by tag: read from an identifier's bytes without pydicom (read_keys).
_KEY_TAGS = {
    "PatientID": 0x00100020,
    "StudyInstanceUID": 0x0020000D,
    "AccessionNumber": 0x00080050,
    "StudyDate": 0x00080020,
}
_KEYS = frozenset(_KEY_TAGS.values())


def identifier_matches(q: FindQuery, assoc: DicomAssociation, rsp: DimseResponse) -> bool:
    """Does a pending response's identifier satisfy `q`? Its keys are read from the raw bytes
    when it is a plain run of elements, else it is decoded with pydicom; either way nothing of it
    outlives this call (patient data)."""
    cx = assoc.contexts[STUDY_ROOT_FIND]
    values = read_keys(rsp.data_set, cx.transfer_syntax == IMPLICIT_VR_LE, _KEYS)
    if values is None:
        ident = assoc.decode_identifier(rsp, STUDY_ROOT_FIND)
        return q.matches(ident)
    return q.matches_text(
        lambda key: values.get(_KEY_TAGS[key], b"").decode("latin-1").strip(" \x00")
    )


def raw_text(ds: Dataset, keyword: str) -> str:
    """An element's value as text, taken from its raw bytes.

    Going through pydicom's value conversion would validate the value, and pydicom quotes an
    invalid one (a UID with letters, a malformed date) in a warning and a log record: returned
    identifiers are PHI, so they must not reach the log by that route either.
    """
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return ""
    elem = ds.get_item(tag)
    value = getattr(elem, "value", None)
    if isinstance(value, bytes):
        return value.decode("latin-1").strip(" \x00")
    return "" if value is None else str(value)


class DicomFindProbe:
    name = "dicom_find"

    def __init__(self, endpoint: DicomEndpoint, query: FindQuery) -> None:
        self.endpoint = endpoint
        self.query = query.effective()
        self._requests = RequestCache(STUDY_ROOT_FIND, shared=self.query)

    def _build(self, message_id: int, transfer_syntax: str) -> C_FIND_RQ:
        req = C_FIND()
        req.MessageID = message_id
        req.AffectedSOPClassUID = STUDY_ROOT_FIND
        req.Priority = 2  # LOW: a health check must not compete with radiologists' queries
        ident = self.query.identifier()
        req.Identifier = DicomAssociation.encode_identifier(ident, transfer_syntax)
        msg = C_FIND_RQ()
        msg.primitive_to_message(req)
        return msg

    def _request(self, assoc: DicomAssociation) -> list[bytes]:
        return self._requests.get(assoc, self._build)

    def run(self, deadline: Deadline, phases: Phases) -> ProbeOutcome:
        q = self.query
        tls: list[TLSInfo] = []
        count = 0
        with dicom_session(self.endpoint, [STUDY_ROOT_FIND], deadline, phases, tls.append) as s:
            for rsp, elapsed in s.assoc.exchange(self._request(s.assoc), STUDY_ROOT_FIND):
                if command_field(rsp) != C_FIND_RSP_FIELD:
                    raise ProbeError(Reason.INVALID_RESPONSE, "expected a C-FIND-RSP")
                status = dimse_status(rsp)
                if status in PENDING_STATUSES:
                    if count == 0:
                        phases.add("first_match", elapsed)
                    count += 1
                    if not identifier_matches(q, s.assoc, rsp):  # PHI: checked, never kept
                        raise ProbeError(
                            Reason.UNEXPECTED_RESULT, "a returned match does not satisfy the query"
                        )
                    if count > q.max_results:
                        raise ProbeError(
                            Reason.UNEXPECTED_RESULT, f"more than {q.max_results} matches"
                        )
                    continue
                phases.add("dimse", elapsed)
                if status != 0x0000:
                    raise status_failure(status, "C-FIND")
                break
        if q.expected_count is not None and count != q.expected_count:
            raise ProbeError(
                Reason.UNEXPECTED_RESULT, f"{count} matches, expected {q.expected_count}"
            )
        if q.min_count is not None and count < q.min_count:
            raise ProbeError(Reason.UNEXPECTED_RESULT, f"{count} matches, expected ≥ {q.min_count}")
        return ProbeOutcome(
            f"C-FIND successful: {count} match{'es' if count != 1 else ''}",
            tls=tls[0] if tls else None,
            facts=Facts(matches=count),
        )


class DicomFindSettings(Strict):
    enabled: bool = True
    patientID: str | None = None
    accessionNumber: str | None = None
    studyInstanceUID: str | None = None
    studyDate: str | None = Field(default=None, pattern=r"^\d{8}(-\d{8})?$|^-\d{8}$|^\d{8}-$")
    expectedCount: int | None = Field(default=None, ge=0)
    minCount: int | None = Field(default=None, ge=0)
    maxResults: int = Field(default=100, ge=1, le=10000)

    @model_validator(mode="after")
    def _one_count(self) -> DicomFindSettings:
        if self.expectedCount is not None and self.minCount is not None:
            raise ValueError("give expectedCount or minCount, not both")
        return self


def build(f: DicomFindSettings, ctx: BuildContext) -> DicomFindProbe | None:
    if not f.enabled:
        return None
    return DicomFindProbe(
        ctx.dicom,
        FindQuery(
            patient_id=f.patientID,
            accession_number=f.accessionNumber,
            study_instance_uid=f.studyInstanceUID,
            study_date=f.studyDate,
            expected_count=f.expectedCount,
            min_count=f.minCount,
            max_results=f.maxResults,
        ),
    )


SPEC = ProbeSpec(
    "dicom_find", DicomFindSettings, build,
    "Study-level C-FIND: a canary query or one that must match nothing",
    outputs=("matches", "dicom_status"),
)
