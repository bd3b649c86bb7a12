"""The Prometheus exporter-toolkit web configuration (`--web.config.file`), so operators reuse
the files they already have for node_exporter or blackbox_exporter:

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # or NoClientCert, RequireAnyClientCert, ...
      client_ca_file: ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...   # bcrypt

Liveness and readiness (`/-/healthy`, `/-/ready`) stay open without basic auth, so kubelet
probes work; they reveal nothing. Everything else needs the credentials when users are set.
"""

from __future__ import annotations

import base64
import hmac
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

OPEN_PATHS = frozenset({"/-/healthy", "/-/ready"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Strict):
    cert_file: str
    key_file: str
    client_auth_type: Literal[
        "NoClientCert",
        "RequestClientCert",
        "RequireAnyClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
    ] = "NoClientCert"
    client_ca_file: str | None = None
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] | None = None
    cipher_suites: list[str] = Field(default_factory=list)
    prefer_server_cipher_suites: bool | None = None
    curve_preferences: list[str] = Field(default_factory=list)


class HTTPServerConfig(_Strict):
    http2: bool | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class WebConfigModel(_Strict):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig | None = None
    basic_auth_users: dict[str, str] = Field(default_factory=dict)


_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


class WebConfigError(Exception):
    pass


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    _ok_cache: set[bytes] = field(default_factory=set)

    def authorized(self, path: str, authorization: str | None) -> bool:
        if not self.users or path in OPEN_PATHS:
            return True
        if not authorization or not authorization.startswith("Basic "):
            return False
        token = authorization[6:].encode()
        # bcrypt is deliberately slow (~50-100 ms); remember credentials that already passed,
        # like exporter-toolkit does, so a 15 s scrape does not pay that every time.
        if any(hmac.compare_digest(token, t) for t in self._ok_cache):
            return True
        try:
            user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            return False
        if ok and len(self._ok_cache) < 64:
            self._ok_cache.add(token)
        return ok


def load_web_config(path: str) -> WebConfig:
    base = Path(path).parent
    try:
        raw: Any = yaml.safe_load(Path(path).read_text()) or {}
        model = WebConfigModel.model_validate(raw)
    except OSError as e:
        raise WebConfigError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError:
        raise WebConfigError(f"{path}: not valid YAML") from None
    except ValidationError as e:
        msgs = [
            f"{'.'.join(map(str, er['loc']))}: {er['msg']}" for er in e.errors(include_input=False)
        ]
        raise WebConfigError(f"{path}: " + "; ".join(msgs)) from None

    def rel(p: str) -> str:
        return str(base / p) if not Path(p).is_absolute() else p

    wc = WebConfig(
        users={u: h.encode() for u, h in model.basic_auth_users.items()},
        headers=dict(model.http_server_config.headers) if model.http_server_config else {},
    )
    t = model.tls_server_config
    if t is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _VERSIONS[t.min_version]
        if t.max_version:
            ctx.maximum_version = _VERSIONS[t.max_version]
        try:
            ctx.load_cert_chain(rel(t.cert_file), rel(t.key_file))
            if t.client_ca_file:
                ctx.load_verify_locations(rel(t.client_ca_file))
        except (OSError, ssl.SSLError) as e:
            raise WebConfigError(f"{path}: TLS files unusable: {type(e).__name__}") from None
        if t.client_auth_type == "RequireAndVerifyClientCert":
            if not t.client_ca_file:
                raise WebConfigError(f"{path}: {t.client_auth_type} needs client_ca_file")
            ctx.verify_mode = ssl.CERT_REQUIRED
        elif t.client_auth_type in ("VerifyClientCertIfGiven",):
            ctx.verify_mode = ssl.CERT_OPTIONAL
        elif t.client_auth_type in ("RequireAnyClientCert", "RequestClientCert"):
            # Python cannot request a certificate without verifying it against a CA
            if not t.client_ca_file:
                raise WebConfigError(f"{path}: {t.client_auth_type} needs client_ca_file here")
            ctx.verify_mode = (
                ssl.CERT_REQUIRED
                if t.client_auth_type == "RequireAnyClientCert"
                else ssl.CERT_OPTIONAL
            )
        wc.ssl_context = ctx
    return wc
