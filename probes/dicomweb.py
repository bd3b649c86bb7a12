"""dicomweb: QIDO-RS (and WADO-RS metadata for a canary) against a DICOMweb base URL.

With a canary `studyInstanceUID`: QIDO-RS `/studies?StudyInstanceUID=<uid>` must list it, and
WADO-RS `/studies/<uid>/metadata` must return its instances (the `metadata` phase). Without one:
a QIDO-RS query for a PatientID that matches nobody must answer with no match, so by default no
patient data is read at all.

Responses are DICOM JSON (PS3.18 Annex F) and hold patient data: they are parsed to check the
Study Instance UID and count, then dropped. Only counts reach the result (`matches`,
`instances`). Requests go through probes.http_timing.timed_get: the endpoint's own secrets, only
to its own origin, every wait bounded by the deadline, bodies capped.
"""

from __future__ import annotations

import json
import zlib
from typing import Any
from urllib.parse import quote

from pydantic import Field, model_validator

from probes.base import Deadline, Facts, Phases, ProbeError, ProbeOutcome, Reason
from probes.dicom_find import NO_MATCH_PATIENT_ID
from probes.http_timing import HttpResponse, timed_get
from probes.settings import HttpProbeSecrets, HttpUrl
from probes.specs import BuildContext, HttpEndpoint, ProbeSpec

STUDY_UID_TAG = "0020000D"
DICOM_JSON = "application/dicom+json"
# WADO-RS metadata of a large study (thousands of instances) runs to megabytes.
MAX_METADATA_BODY = 32 * 1024 * 1024


class DicomwebProbe:
    name = "dicomweb"

    def __init__(
        self,
        endpoint: HttpEndpoint,
        *,
        study_uid: str | None = None,
        max_redirects: int = 3,
        max_metadata_body: int = MAX_METADATA_BODY,
    ) -> None:
        # Accept travels with the endpoint's headers (it is no secret, and harmless to drop)
        self.endpoint = HttpEndpoint(
            url=endpoint.url.rstrip("/"),
            headers=(("Accept", DICOM_JSON), ("Accept-Encoding", "identity"), *endpoint.headers),
            username=endpoint.username,
            password=endpoint.password,
            tls=endpoint.tls,
        )
        self.study_uid = study_uid
        self.max_redirects = max_redirects
        self.max_metadata_body = max_metadata_body

    def _qido_url(self) -> str:
        base = self.endpoint.url
        if self.study_uid:
            return f"{base}/studies?StudyInstanceUID={quote(self.study_uid)}"
        return f"{base}/studies?PatientID={NO_MATCH_PATIENT_ID}"

    def run(self, deadline: Deadline, phases: Phases) -> ProbeOutcome:
        ep = self.endpoint
        rsp = timed_get(ep, self._qido_url(), deadline, phases, max_redirects=self.max_redirects)
        studies = _dicom_json(rsp, "QIDO-RS")
        matches = len(studies)
        wrong = sum(1 for s in studies if _study_uid(s) != self.study_uid)
        del studies  # patient data: counted, never kept
        if not self.study_uid:
            if matches:
                raise ProbeError(
                    Reason.UNEXPECTED_RESULT,
                    f"QIDO-RS: {matches} studies for a query that matches nobody",
                )
            return ProbeOutcome(
                "QIDO-RS successful: 0 matches", tls=rsp.tls, facts=Facts(matches=0)
            )
        if matches == 0:
            raise ProbeError(Reason.UNEXPECTED_RESULT, "QIDO-RS: the canary study was not found")
        if wrong:
            raise ProbeError(
                Reason.UNEXPECTED_RESULT, "QIDO-RS: a returned study is not the one asked for"
            )
        sub = Phases()
        try:
            meta = timed_get(
                ep,
                f"{ep.url}/studies/{quote(self.study_uid)}/metadata",
                deadline,
                sub,
                max_redirects=self.max_redirects,
                max_body=self.max_metadata_body,
            )
        finally:
            phases.add("metadata", sub.total())
        instances = _dicom_json(meta, "WADO-RS metadata")
        count = len(instances)
        wrong = sum(1 for i in instances if _study_uid(i) != self.study_uid)
        del instances  # patient data
        if count == 0:
            raise ProbeError(Reason.UNEXPECTED_RESULT, "WADO-RS: no metadata for the canary study")
        if wrong:
            raise ProbeError(
                Reason.UNEXPECTED_RESULT, "WADO-RS: metadata of another study returned"
            )
        return ProbeOutcome(
            f"QIDO-RS and WADO-RS successful: {count} instance{'s' if count != 1 else ''}",
            tls=rsp.tls,
            facts=Facts(matches=matches, instances=count),
        )


def _dicom_json(rsp: HttpResponse, what: str) -> list[Any]:
    """The response's DICOM JSON array ([] for 204 No Content). Error text names no content."""
    if rsp.status == 204:
        return []
    if not 200 <= rsp.status < 300:
        raise ProbeError(Reason.HTTP_STATUS, f"{what}: HTTP {rsp.status}")
    body = _decoded(rsp, what)
    if not body.strip():
        return []
    try:
        doc = json.loads(body)
    except ValueError:
        raise ProbeError(Reason.INVALID_RESPONSE, f"{what}: body is not JSON") from None
    if not isinstance(doc, list) or not all(isinstance(d, dict) for d in doc):
        raise ProbeError(Reason.INVALID_RESPONSE, f"{what}: not a DICOM JSON array")
    return doc


def _decoded(rsp: HttpResponse, what: str) -> bytes:
    """The body without its Content-Encoding (gzip/deflate), inflated at most to MAX_METADATA_BODY:
    the raw body is what timed_get bounds, and a small gzip can inflate enormously."""
    encoding = rsp.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return rsp.body
    if encoding not in ("gzip", "deflate"):
        raise ProbeError(Reason.INVALID_RESPONSE, f"{what}: unsupported Content-Encoding")
    inflater = zlib.decompressobj(wbits=47 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(rsp.body, MAX_METADATA_BODY + 1)
    except zlib.error:
        raise ProbeError(Reason.INVALID_RESPONSE, f"{what}: corrupt {encoding} body") from None
    if len(out) > MAX_METADATA_BODY or inflater.unconsumed_tail:
        raise ProbeError(Reason.INVALID_RESPONSE, f"{what}: body inflates past the limit")
    return out


def _study_uid(obj: dict[str, Any]) -> str | None:
    value = obj.get(STUDY_UID_TAG)
    if not isinstance(value, dict):
        return None
    values = value.get("Value")
    if isinstance(values, list) and values and isinstance(values[0], str):
        return values[0]
    return None


class DicomwebSettings(HttpProbeSecrets):
    """`probes.dicomweb`: QIDO-RS (+ WADO-RS metadata for a canary) at a DICOMweb base URL."""

    enabled: bool = True
    endpoint: HttpUrl | None = None
    studyInstanceUID: str | None = Field(
        default=None, max_length=64, pattern=r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$"
    )
    maxRedirects: int = Field(default=3, ge=0, le=20)

    @model_validator(mode="after")
    def _endpoint_when_enabled(self) -> DicomwebSettings:
        if self.enabled and self.endpoint is None:
            raise ValueError("endpoint (the DICOMweb base URL) is required")
        return self


def build(dw: DicomwebSettings, ctx: BuildContext) -> DicomwebProbe | None:
    if not (dw.enabled and dw.endpoint):
        return None
    return DicomwebProbe(
        ctx.block_http(dw.endpoint, dw.own_secrets()),
        study_uid=dw.studyInstanceUID,
        max_redirects=dw.maxRedirects,
    )


SPEC = ProbeSpec(
    "dicomweb", DicomwebSettings, build,
    "QIDO-RS search (and WADO-RS metadata of a canary study) at a DICOMweb base URL",
    outputs=("matches", "instances"),
    optional=True,
)
