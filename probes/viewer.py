"""viewer: open the web viewer URL for a canary study and check it serves an HTML page.

The URL is viewerEndpoint + urlTemplate (default `?studyUID={studyInstanceUID}`); redirects are
followed within the deadline.

A worklist is patient data, so it is checked only when the config asks for it
(probes.viewer.worklist): then worklistEndpoint is fetched too, as the `worklist` phase of this
check (a viewer that loads but cannot list work is not usable), and only its status and size are
kept. The body is read and discarded as it arrives, bounded by the deadline, never stored.
"""

from __future__ import annotations

from pydantic import Field

from probes.api_ping import check_status
from probes.base import Deadline, Facts, Phases, ProbeError, ProbeOutcome, Reason
from probes.http_timing import timed_get
from probes.settings import HttpProbeSecrets, UrlTemplate
from probes.specs import BuildContext, HttpEndpoint, ProbeSpec

DEFAULT_STUDY = "1.2.826.0.1.3680043.10.1082.0.0"  # a syntactically valid UID that names no study


class ViewerProbe:
    name = "viewer"

    def __init__(
        self,
        endpoint: HttpEndpoint,
        *,
        study_uid: str | None = None,
        url_template: str = "?studyUID={studyInstanceUID}",
        expected_status: tuple[int, ...] = (),
        marker: str | None = None,
        max_redirects: int = 5,
        worklist: HttpEndpoint | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.url = (
            endpoint.url.rstrip("/")
            + "/"
            + url_template.format(studyInstanceUID=study_uid or DEFAULT_STUDY).lstrip("/")
        )
        if url_template.startswith("?"):
            self.url = endpoint.url + url_template.format(
                studyInstanceUID=study_uid or DEFAULT_STUDY
            )
        self.expected_status = expected_status
        self.marker = marker
        self.max_redirects = max_redirects
        self.worklist = worklist

    def run(self, deadline: Deadline, phases: Phases) -> ProbeOutcome:
        rsp = timed_get(self.endpoint, self.url, deadline, phases, max_redirects=self.max_redirects)
        check_status(rsp, self.expected_status)
        ctype = rsp.headers.get("content-type", "")
        if "html" not in ctype.lower():
            raise ProbeError(Reason.UNEXPECTED_RESULT, "viewer did not return an HTML page")
        if self.marker and self.marker not in rsp.body.decode("utf-8", "replace"):
            raise ProbeError(Reason.UNEXPECTED_RESULT, "viewer page lacks the expected marker")
        if self.worklist is not None:
            sub = Phases()
            try:
                wl = timed_get(self.worklist, self.worklist.url, deadline, sub, keep_body=False)
            finally:
                phases.add("worklist", sub.total())
            if not 200 <= wl.status < 300:
                raise ProbeError(Reason.HTTP_STATUS, f"worklist HTTP {wl.status}")
            facts = Facts(http_status=rsp.status, worklist_status=wl.status, worklist_bytes=wl.size)
            return ProbeOutcome("Viewer page loaded", tls=rsp.tls, facts=facts)
        return ProbeOutcome("Viewer page loaded", tls=rsp.tls, facts=Facts(http_status=rsp.status))


class ViewerSettings(HttpProbeSecrets):
    enabled: bool = True
    studyInstanceUID: str | None = None
    urlTemplate: UrlTemplate = "?studyUID={studyInstanceUID}"
    expectedStatus: list[int] = Field(default_factory=list)
    marker: str | None = None
    maxRedirects: int = Field(default=5, ge=0, le=20)
    # A worklist is patient data: fetched only when asked, and then only its status and size.
    worklist: bool = False


def build(v: ViewerSettings, ctx: BuildContext) -> ViewerProbe | None:
    if not (ctx.viewer_url and ctx.web_viewer and v.enabled):
        return None
    own = v.own_secrets()
    if v.worklist and not ctx.worklist_url:
        ctx.warn("probes.viewer.worklist is on but sectraConfig has no worklistEndpoint; "
                 "no worklist check")
    return ViewerProbe(
        ctx.block_http(ctx.viewer_url, own),
        study_uid=v.studyInstanceUID,
        url_template=v.urlTemplate,
        expected_status=tuple(v.expectedStatus),
        marker=v.marker,
        max_redirects=v.maxRedirects,
        # patient data: fetched only when probes.viewer.worklist is true (status/size only)
        worklist=(
            ctx.block_http(ctx.worklist_url, own) if v.worklist and ctx.worklist_url else None
        ),
    )


SPEC = ProbeSpec(
    "viewer", ViewerSettings, build,
    "HTTP GET of the web viewer for a study (and, if asked, the worklist's status and size)",
    outputs=("http_status", "worklist_status", "worklist_bytes"),
)
