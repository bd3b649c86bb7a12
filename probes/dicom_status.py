"""DICOM statuses and association rejections by their standard names, and as bounded labels.

A DIMSE status is named from pynetdicom's per-service tables (PS3.4 annexes, PS3.7 Annex C):
"C-MOVE status 0xA801 Move destination unknown". An A-ASSOCIATE-RJ is named from PS3.8
Table 9-21: "association rejected permanently by the called peer: called AE title not
recognized".

Each also gets a label for `pacs_probe_dicom_status_total{status}` from a bounded set: a status
the tables know is its code (`0xA801`), the wide failure ranges collapse to one value each
(`0xA7xx` out of resources, `0xA9xx` data set does not match, `0xCxxx` unable to process), a
rejection is `RJ-<result>-<source>-<reason>` for the combinations PS3.8 defines, and anything else
is `other`. A peer that invents codes cannot grow the label set.
"""

from __future__ import annotations

from pynetdicom import status as _tables

from probes.base import Facts, ProbeError, Reason

OTHER = "other"

# Which table names a status of which service (the generic statuses are in every table).
_SERVICE_TABLES: dict[str, dict[int, tuple[str, str]]] = {
    "C-ECHO": _tables.VERIFICATION_SERVICE_CLASS_STATUS,
    "C-FIND": _tables.QR_FIND_SERVICE_CLASS_STATUS,
    "MWL C-FIND": _tables.MODALITY_WORKLIST_SERVICE_CLASS_STATUS,
    "C-MOVE": _tables.QR_MOVE_SERVICE_CLASS_STATUS,
    "C-GET": _tables.QR_GET_SERVICE_CLASS_STATUS,
    "C-STORE": _tables.STORAGE_SERVICE_CLASS_STATUS,
}
# Ranges PS3.7 reserves for one meaning each; labelled once, not per code.
_RANGES = ((0xA700, 0xA7FF, "0xA7xx"), (0xA900, 0xA9FF, "0xA9xx"), (0xC000, 0xCFFF, "0xCxxx"))


def status_name(status: int, service: str = "") -> str:
    """The standard meaning of a DIMSE status for `service`, or a category when none is known."""
    table = _SERVICE_TABLES.get(service, _tables.GENERAL_STATUS)
    entry = table.get(status) or _tables.GENERAL_STATUS.get(status)
    if entry is not None and entry[1]:
        return entry[1]
    if 0xA000 <= status <= 0xAFFF or 0xC000 <= status <= 0xCFFF:
        return "Failure"
    if 0xB000 <= status <= 0xBFFF:
        return "Warning"
    return "unknown status"


def status_label(status: int, service: str = "") -> str:
    """A label value from a bounded set (see the module docstring)."""
    for lo, hi, label in _RANGES:
        if lo <= status <= hi:
            return label
    table = _SERVICE_TABLES.get(service, _tables.GENERAL_STATUS)
    if status in table or status in _tables.GENERAL_STATUS:
        return f"0x{status:04X}"
    return OTHER


def describe_status(status: int, service: str) -> str:
    """E.g. "C-MOVE status 0xA801 Move destination unknown" (a code and its standard name)."""
    return f"{service} status 0x{status:04X} {status_name(status, service)}"


# PS3.8 Table 9-21: result, source and reason of an A-ASSOCIATE-RJ.
RJ_RESULTS = {1: "permanently", 2: "transiently"}
RJ_SOURCES = {
    1: "the called peer",  # DICOM UL service-user
    2: "the peer's ACSE",  # DICOM UL service-provider, ACSE related
    3: "the peer's network layer",  # DICOM UL service-provider, presentation related
}
RJ_REASONS: dict[tuple[int, int], str] = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


def describe_reject(result: int, source: int, reason: int) -> str:
    """E.g. "association rejected permanently by the called peer: called AE title not
    recognized"."""
    how = RJ_RESULTS.get(result, f"(result {result})")
    who = RJ_SOURCES.get(source, f"source {source}")
    why = RJ_REASONS.get((source, reason), f"reason {reason}")
    return f"association rejected {how} by {who}: {why}"


def reject_label(result: int, source: int, reason: int) -> str:
    if result in RJ_RESULTS and (source, reason) in RJ_REASONS:
        return f"RJ-{result}-{source}-{reason}"
    return OTHER


class DicomStatusError(ProbeError):
    """A failure the peer stated in DICOM terms; `status` is its bounded label."""

    def __init__(self, reason: Reason, message: str, status: str) -> None:
        super().__init__(reason, message, Facts(dicom_status=status))
        self.status = status


def status_failure(status: int, service: str, reason: Reason = Reason.DIMSE_STATUS) -> ProbeError:
    """The ProbeError for a non-success DIMSE status: its name in the message, its label kept."""
    return DicomStatusError(reason, describe_status(status, service), status_label(status, service))


def reject_failure(result: int, source: int, reason: int) -> ProbeError:
    return DicomStatusError(
        Reason.REJECTED,
        describe_reject(result, source, reason),
        reject_label(result, source, reason),
    )
