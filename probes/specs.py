"""What a probe needs to know about its endpoint: plain, typed values built from the config.

Probes depend on these and nothing of the agent (config flows down into probes, never back up).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from functools import lru_cache


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
        ctx = ssl.create_default_context(cafile=self.ca_file)
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


@dataclass(frozen=True)
class HttpEndpoint:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TLSOptions | None = None


@lru_cache(maxsize=256)
def tls_context(options: TLSOptions) -> ssl.SSLContext:
    """Building a context reads CA files: once per distinct option set, not once per run."""
    return options.context()
