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
import enum
import hashlib
import hmac
import os
import ssl
import sys
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
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


class Auth(enum.Enum):
    OK = "ok"
    DENIED = "denied"  # 401
    BUSY = "busy"  # 429: every bcrypt slot stayed taken for BCRYPT_WAIT_S


# bcrypt is deliberately slow (cost 10: ~60 ms of CPU per check). A flood of wrong passwords ran
# one check per request in its own thread: 200 runnable threads, and the probe threads got their
# CPU share (start lateness p50 over 500 ms). Checks are bounded instead: they run in
# BCRYPT_SLOTS worker threads at the lowest CPU priority (nice 19, Linux), so they use what the
# probes leave idle; a request that finds every slot busy waits (blocked, not spinning) at most
# BCRYPT_WAIT_S, then gets 429. Waiting rather than answering at once also slows each attacking
# connection down: every answer costs the agent Python time and invites the next request (200
# attackers: ~190 requests/s with a 1 s wait, ~60/s with 3 s; bench/auth_flood). A scraper whose
# password is cached never waits; an uncached one gets 429 well inside Prometheus' 10 s timeout.
BCRYPT_SLOTS = 1
BCRYPT_WAIT_S = 3.0
BCRYPT_NICE = 19
CACHE_SIZE = 1024  # per outcome; exporter-toolkit caches verified credentials the same way


class _LRU:
    """A bounded set of keys, oldest evicted first."""

    def __init__(self, size: int) -> None:
        self._keys: OrderedDict[bytes, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            if key not in self._keys:
                return False
            self._keys.move_to_end(key)  # type: ignore[arg-type]
            return True

    def add(self, key: bytes) -> None:
        with self._lock:
            self._keys[key] = None
            self._keys.move_to_end(key)
            while len(self._keys) > self._size:
                self._keys.popitem(last=False)


def _lower_priority() -> None:
    # On Linux a thread id given to setpriority renices that thread only. Elsewhere it would name
    # a process: leave the priority alone there.
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BCRYPT_NICE)
        except OSError:
            pass


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # a malformed hash, or a password bcrypt refuses (over 72 bytes)
        return False


def _cost(hashed: bytes) -> int:
    # "$2y$10$...": the cost is the third field; a malformed hash is rejected by checkpw anyway
    parts = hashed.split(b"$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else 10


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    bcrypt_slots: int = BCRYPT_SLOTS
    bcrypt_wait: float = BCRYPT_WAIT_S
    # Cache keys are HMAC-SHA256 of the whole Authorization token under a per-process key, so
    # nothing reusable (no password, no bcrypt input) sits in memory, and a lookup is cheap.
    _key: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    _ok: _LRU = field(default_factory=lambda: _LRU(CACHE_SIZE), repr=False)
    _bad: _LRU = field(default_factory=lambda: _LRU(CACHE_SIZE), repr=False)
    _slots: threading.BoundedSemaphore = field(init=False, repr=False)
    _pool: ThreadPoolExecutor | None = field(init=False, repr=False, default=None)
    _dummy: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.bcrypt_slots)
        # An unknown user costs the same bcrypt check as a known one (against this hash, at the
        # highest configured cost), so response times do not tell which user names exist.
        cost = max((_cost(h) for h in self.users.values()), default=4)
        rounds = max(4, min(cost, 31))
        self._dummy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds)) if self.users else b""
        if self.users:
            self._pool = ThreadPoolExecutor(
                self.bcrypt_slots, thread_name_prefix="bcrypt", initializer=_lower_priority
            )

    def authorized(self, path: str, authorization: str | None) -> bool:
        return self.check(path, authorization) is Auth.OK

    def check(self, path: str, authorization: str | None) -> Auth:
        if not self.users or path in OPEN_PATHS:
            return Auth.OK
        if not authorization or not authorization.startswith("Basic "):
            return Auth.DENIED
        token = authorization[6:].encode()
        key = hmac.new(self._key, token, hashlib.sha256).digest()
        # A scrape every 15 s pays bcrypt once, not every time; a repeated wrong password too.
        if key in self._ok:
            return Auth.OK
        if key in self._bad:
            return Auth.DENIED
        try:
            user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return Auth.DENIED
        hashed = self.users.get(user)
        if self._pool is None or not self._slots.acquire(timeout=self.bcrypt_wait):
            return Auth.BUSY
        try:  # a slot held per job: the pool's queue never grows past the slots
            job = self._pool.submit(
                _checkpw, password.encode(), self._dummy if hashed is None else hashed
            )
            ok = job.result()
        finally:
            self._slots.release()
        ok = ok and hashed is not None
        (self._ok if ok else self._bad).add(key)
        return Auth.OK if ok else Auth.DENIED


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
