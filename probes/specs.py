"""What a probe needs to know about its endpoint: plain, typed values built from the config.

Probes depend on these and nothing of the agent (config flows down into probes, never back up).
BuildContext is what a probe's builder gets of a target; ProbeSpec is a probe's registry entry.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from probes.base import Probe
from probes.settings import HttpSecrets


@dataclass(frozen=True)
class TLSOptions:
    """Client TLS settings shared by DICOM TLS and HTTPS probes."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = field(default=None, repr=False)
    verify: bool = True
    verify_hostname: bool = True
    server_name: str | None = None
    min_version: str = "1.2"

    def context(self) -> ssl.SSLContext:
        ca_pem = None if self.ca_file is None else _read(self.ca_file).decode("ascii")
        ctx = ssl.create_default_context(cadata=ca_pem)
        ctx.minimum_version = (
            ssl.TLSVersion.TLSv1_3 if self.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
        )
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif not self.verify_hostname:
            ctx.check_hostname = False
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file, password=self.key_password)
        return ctx


@dataclass(frozen=True)
class DicomEndpoint:
    host: str
    port: int
    calling_aet: str
    called_aet: str
    tls: TLSOptions | None = None
    max_pdu: int = 16384

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, the unit a secret belongs to."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


@dataclass(frozen=True)
class HttpEndpoint:
    """An HTTP endpoint and the secrets that belong to it.

    `headers` and the basic credentials are sent only to the origin (scheme, host, port) of `url`,
    never to a redirect target on another origin (see probes.http_timing).
    """

    url: str
    headers: tuple[tuple[str, str], ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TLSOptions | None = None

    def __repr__(self) -> str:
        # header values carry API keys: show only their names
        names = ", ".join(k for k, _ in self.headers)
        return f"HttpEndpoint(url={self.url!r}, headers=[{names}], username={self.username!r})"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _identity(path: str | None) -> tuple[int, int, int, int] | None:
    """Which file `path` names now: a stat, not a read (this runs on every probe run). A file
    replaced in place, or a Kubernetes Secret's symlink swapped, changes inode, size or mtime."""
    if path is None:
        return None
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def tls_context(options: TLSOptions) -> ssl.SSLContext:
    """The SSL context for these options and the CURRENT files they name.

    Building a context parses the CA file, so contexts are cached, keyed on the options and each
    file's identity (device, inode, size, mtime): a CA, certificate or key replaced in place (a
    renewed secret, a reload) is used by the next run, and unchanged files cost a stat each.
    Raises OSError/ValueError (ssl.SSLError is an OSError) when a file is missing or unusable.
    """
    key = (
        options,
        _identity(options.ca_file),
        _identity(options.cert_file),
        _identity(options.key_file),
    )
    return _cached_context(key)


_FileId = tuple[int, int, int, int] | None


@lru_cache(maxsize=256)
def _cached_context(key: tuple[TLSOptions, _FileId, _FileId, _FileId]) -> ssl.SSLContext:
    return key[0].context()


@dataclass(frozen=True)
class BuildContext:
    """What builders get of one target, built once per target by the agent
    (agent.config.context).

    Plain values of the validated config, none of the agent's types. The API's secrets
    (customHeaders, config.credentials) are reachable only through `api_http` and through
    `block_http` for a block that says useApiCredentials.
    """

    target_id: str
    dicom: DicomEndpoint  # config.host/port/AE titles, DICOM TLS when enableTLS
    tls: TLSOptions  # config.tls: every HTTPS probe uses it, whatever enableTLS says
    # config.secondaryHosts as endpoints (calling AE, TLS and PDU size of `dicom`)
    secondary_dicom: tuple[DicomEndpoint, ...] = ()
    # sectraConfig
    api_url: str | None = None
    health_path: str = "/health"
    viewer_url: str | None = None
    web_viewer: bool = False
    worklist_url: str | None = None
    primary_url: str | None = None
    secondary_url: str | None = None
    failover_timeout: float | None = None
    load_balancing: str | None = None
    transfer_syntaxes: tuple[str, ...] = ()  # preferredTransferSyntax
    sop_classes: tuple[str, ...] = ()  # dicomConfig.supportedSOPClasses
    api_secrets: HttpSecrets = field(default_factory=HttpSecrets, repr=False)
    # a configuration warning about this target (the agent logs it with the target id)
    warn: Callable[[str], None] = field(default=lambda _text: None, repr=False, compare=False)

    def api_http(self, url: str) -> HttpEndpoint:
        """An endpoint on apiEndpoint's side, with the API's secrets."""
        return self._http(url, self.api_secrets)

    def block_http(self, url: str, own: HttpSecrets | None) -> HttpEndpoint:
        """An endpoint with a probe block's own secrets, or the API's when `own` is None
        (useApiCredentials)."""
        return self._http(url, self.api_secrets if own is None else own)

    def _http(self, url: str, secrets: HttpSecrets) -> HttpEndpoint:
        return HttpEndpoint(
            url=url,
            headers=secrets.headers,
            username=secrets.username,
            password=secrets.password,
            tls=self.tls,
        )


def join_url(base: str, path: str) -> str:
    """`base` + `path` with one slash between them."""
    if not path:
        return base
    return base.rstrip("/") + "/" + path.lstrip("/")


S = TypeVar("S")


@dataclass(frozen=True)
class ProbeSpec(Generic[S]):
    """One probe as the agent knows it (probes.registry lists them in run order).

    `settings` is the model of its `probes.NAME` block; `build` turns that block and the target
    into the probe, or None when the target does not configure it or the block disables it.
    `optional`: the block is absent (None) unless given, so the probe is off by default.
    `outputs`: the probes.base.Facts fields its runs fill.
    `check`: a rule between the block and the rest of the target, run when the config loads;
    its ValueError refuses the config as `probes.NAME: message` (a rule within the block
    belongs in the settings model).
    `cooperative`: the probe waits only through probes.net.waits (sockets, sleeps, lookups), so
    the daemon runs it on its probe loop; False runs it on a worker thread of its own.
    """

    name: str
    settings: type[S]
    build: Callable[[S, BuildContext], Probe | None]
    description: str
    outputs: tuple[str, ...] = ()
    optional: bool = False
    check: Callable[[S, BuildContext], None] | None = None
    cooperative: bool = True
