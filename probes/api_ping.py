"""api_ping: GET the Sectra API's health endpoint with the guide's customHeaders.

Success needs the expected status (default any 2xx) and, when configured, a body condition:
a JSON field equal to a value, or a regular expression matching the body.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from pydantic import Field, model_validator

from probes.base import Deadline, Facts, Phases, ProbeError, ProbeOutcome, Reason
from probes.http_timing import HttpResponse, timed_get
from probes.settings import Strict
from probes.specs import BuildContext, HttpEndpoint, ProbeSpec, join_url


class BodyRule(Protocol):
    jsonField: str | None
    equals: Any
    regex: str | None


def check_status(rsp: HttpResponse, expected: tuple[int, ...]) -> None:
    ok = rsp.status in expected if expected else 200 <= rsp.status < 300
    if not ok:
        raise ProbeError(Reason.HTTP_STATUS, f"HTTP {rsp.status}")


def json_field(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise KeyError(dotted)
    return doc


def check_body(body: bytes, rule: BodyRule | None) -> None:
    if rule is None:
        return
    if rule.regex is not None:
        if not re.search(rule.regex, body.decode("utf-8", "replace")):
            raise ProbeError(Reason.UNEXPECTED_RESULT, "body does not match the expected pattern")
        return
    try:
        doc = json.loads(body)
    except ValueError:
        raise ProbeError(Reason.INVALID_RESPONSE, "body is not JSON") from None
    try:
        value = json_field(doc, rule.jsonField or "")
    except KeyError:
        raise ProbeError(Reason.UNEXPECTED_RESULT, f"JSON field {rule.jsonField} missing") from None
    if value != rule.equals:
        raise ProbeError(Reason.UNEXPECTED_RESULT, f"JSON field {rule.jsonField} not as expected")


class ApiPingProbe:
    name = "api_ping"

    def __init__(
        self,
        endpoint: HttpEndpoint,
        expected_status: tuple[int, ...] = (),
        body: BodyRule | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.expected_status = expected_status
        self.body = body

    def run(self, deadline: Deadline, phases: Phases) -> ProbeOutcome:
        rsp = timed_get(self.endpoint, self.endpoint.url, deadline, phases)
        check_status(rsp, self.expected_status)
        check_body(rsp.body, self.body)
        return ProbeOutcome("API ping successful", tls=rsp.tls, facts=Facts(http_status=rsp.status))


class BodyCondition(Strict):
    jsonField: str | None = None
    equals: Any = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self) -> BodyCondition:
        if (self.jsonField is None) == (self.regex is None):
            raise ValueError("give either jsonField (with equals) or regex")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as e:
                raise ValueError(f"invalid regular expression: {e.msg}") from None
        return self


class ApiPingSettings(Strict):
    enabled: bool = True
    path: str | None = None
    expectedStatus: list[int] = Field(default_factory=list)
    body: BodyCondition | None = None


def build(a: ApiPingSettings, ctx: BuildContext) -> ApiPingProbe | None:
    if not (ctx.api_url and a.enabled):
        return None
    path = a.path if a.path is not None else ctx.health_path
    return ApiPingProbe(
        ctx.api_http(join_url(ctx.api_url, path)),  # customHeaders/credentials: the API's own
        expected_status=tuple(a.expectedStatus),
        body=a.body,
    )


SPEC = ProbeSpec(
    "api_ping", ApiPingSettings, build,
    "HTTP GET of sectraConfig.apiEndpoint's health path: status (and body) checked",
    outputs=("http_status",),
)
