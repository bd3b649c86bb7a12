"""Building blocks of the probes' settings models (each probe's `probes.NAME` config block).

A probe module owns its settings model (pydantic, strict: unknown keys rejected, types and
ranges checked); agent.config.schema assembles the `probes:` block from the registry
(probes.registry). The field types here are the config schema's own, shared with it.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from probes.addresses import parse_listen, url_problem


class Strict(BaseModel):
    # allow_inf_nan: NaN and infinity are never a setting (JSON's NaN, YAML's .nan, .inf)
    model_config = ConfigDict(
        extra="forbid", populate_by_name=False, frozen=True, allow_inf_nan=False
    )


def _listen(value: str) -> str:
    parse_listen(value)
    return value


# HOST:PORT, [IPv6]:PORT or :PORT; the HTTP server and --listen use the same parser.
Listen = Annotated[str, AfterValidator(_listen)]
# DICOM AE titles: 1-16 characters of the default character repertoire, no backslash.
AETitle = Annotated[
    str, Field(min_length=1, max_length=16, pattern=r"^[ -\[\]-~]*[!-\[\]-~][ -\[\]-~]*$")
]
# A DICOM UID: dotted decimal components, at most 64 characters (PS3.5 9.1).
DicomUID = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")
]


def _usable_url(value: str) -> str:
    problem = url_problem(value)
    if problem:
        raise ValueError(problem)
    return value


# A URL a probe can connect to: port 1-65535, a valid host name or IP address.
HttpUrl = Annotated[str, Field(pattern=r"^https?://[^\s/]+.*$"), AfterValidator(_usable_url)]


def _url_template(value: str) -> str:
    # str.format() is what the viewer probe applies: check it the same way, once, at load
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(value)]
    except ValueError:
        raise ValueError("unmatched { or } (write {{ and }} for literal braces)") from None
    for name, spec, conv in fields:
        if name is None:
            continue
        if name != "studyInstanceUID" or spec or conv:
            raise ValueError("the only placeholder is {studyInstanceUID}")
    return value


UrlTemplate = Annotated[str, AfterValidator(_url_template)]


@dataclass(frozen=True)
class HttpSecrets:
    """Headers and basic credentials for one HTTP origin."""

    headers: tuple[tuple[str, str], ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"HttpSecrets(headers=[{', '.join(k for k, _ in self.headers)}])"


class Credentials(Strict):
    username: str | None = None
    password: str | None = Field(default=None, repr=False)


# A probe block with nothing to set but `enabled` (no docstring: it would show in the JSON schema)
class ProbeToggle(Strict):
    enabled: bool = True


class HttpProbeSecrets(Strict):
    """What an HTTP probe block may send besides the API's own probe.

    `sectraConfig.customHeaders` and `config.credentials` belong to `apiEndpoint`'s origin. Another
    endpoint gets secrets only from its own block: `credentials` and `headers`, or
    `useApiCredentials: true` to reuse the API's. Either way they go only to that endpoint's own
    origin (scheme, host, port), never across a redirect to another origin.
    """

    credentials: Credentials | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    useApiCredentials: bool = False

    @model_validator(mode="after")
    def _own_or_api(self) -> HttpProbeSecrets:
        if self.useApiCredentials and (self.credentials is not None or self.headers):
            raise ValueError("give credentials/headers or useApiCredentials, not both")
        return self

    def own_secrets(self) -> HttpSecrets | None:
        """This block's own secrets, or None when it says useApiCredentials."""
        if self.useApiCredentials:
            return None
        c = self.credentials
        return HttpSecrets(
            tuple(self.headers.items()), c.username if c else None, c.password if c else None
        )
