"""One timed HTTP GET with httpx: phases from httpx's trace hooks, every wait bounded.

Phases: `dns` (our bounded resolver), `connect`, `tls`, `first_byte` (request sent → response
headers), `transfer` (body). TCP_NODELAY is set on the socket. The body is read in chunks with the
deadline checked between them and a size cap, so an endless or dripping body cannot hang a probe.

httpx's timeout bounds each socket operation, not the whole exchange: every redirect hop and every
read gets it afresh. The run's deadline is therefore enforced on top: no new operation starts
after it, and a watchdog shuts the connection's socket down when it passes, which wakes a read
that is still blocked.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from probes.base import Deadline, Phases, ProbeError, Reason, TLSInfo
from probes.dicom_wire import resolve
from probes.specs import HttpEndpoint, tls_context

MAX_BODY = 1024 * 1024
_SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


@dataclass
class HttpResponse:
    status: int
    headers: httpx.Headers
    body: bytes
    url: str
    tls: TLSInfo | None


class _Tracer:
    """Collects httpx/httpcore trace events into phases, across redirects."""

    def __init__(self, phases: Phases, deadline: Deadline) -> None:
        self.phases = phases
        self.deadline = deadline
        self.started: dict[str, float] = {}
        self.tls: TLSInfo | None = None
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def __call__(self, name: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        kind, _, edge = name.rpartition(".")
        if edge == "started":
            # e.g. the next redirect hop: nothing new starts after the deadline
            self.deadline.left_or_raise(Reason.TIMEOUT, "HTTP request")
            self.started[kind] = now
            return
        if edge not in ("complete", "failed"):
            return
        t0 = self.started.pop(kind, None)
        if t0 is None:
            return
        if kind == "connection.connect_tcp":
            self.phases.add("connect", now - t0)
            if edge == "complete":
                self._watch(info.get("return_value"))
        elif kind == "connection.start_tls":
            self.phases.add("tls", now - t0)
            if edge == "complete":
                self._watch(info.get("return_value"))
                self._capture_tls(info.get("return_value"))
        elif kind.endswith("send_request_headers"):
            self.started["first_byte"] = t0
        elif kind.endswith("receive_response_headers") and "first_byte" in self.started:
            self.phases.add("first_byte", now - self.started.pop("first_byte"))

    def _watch(self, stream: Any) -> None:
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def expire(self) -> None:
        """The deadline passed (watchdog thread): wake any blocked read by shutting down."""
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def _capture_tls(self, stream: Any) -> None:
        from cryptography import x509

        obj = stream.get_extra_info("ssl_object") if stream is not None else None
        # httpcore hands out the low-level _ssl._SSLSocket here: positional argument only
        der = obj.getpeercert(True) if obj is not None else None
        if der:
            exp = x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
            earliest = exp if self.tls is None else min(exp, self.tls.earliest_not_after)
            self.tls = TLSInfo(exp, earliest)


def _shutdown(sock: socket.socket) -> None:
    # socket.socket.shutdown even on an SSLSocket: only the OS socket is shut down, the TLS
    # object stays as it is for the thread that is reading it (which then sees EOF).
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _verify(ep: HttpEndpoint) -> ssl.SSLContext | bool:
    if ep.tls is None:
        return True
    try:
        return tls_context(ep.tls)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError; same reason as DICOM TLS
        raise ProbeError(Reason.TLS, f"TLS settings unusable: {type(e).__name__}") from None


def _map_error(e: Exception) -> ProbeError:
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return ProbeError(
                Reason.TLS, f"certificate verification failed: {cause.verify_message}"
            )
        if isinstance(cause, ssl.SSLError):
            return ProbeError(Reason.TLS, "TLS handshake failed")
        if isinstance(cause, ConnectionRefusedError):
            return ProbeError(Reason.REFUSED, "connection refused")
        if isinstance(cause, socket.gaierror):
            return ProbeError(Reason.DNS, "host name does not resolve")
        cause = cause.__cause__ or cause.__context__
    if isinstance(e, httpx.ConnectTimeout):
        return ProbeError(Reason.CONNECT_TIMEOUT, "TCP connect timed out")
    if isinstance(e, httpx.TimeoutException):
        return ProbeError(Reason.TIMEOUT, "no answer within the deadline")
    if isinstance(e, httpx.TooManyRedirects):
        return ProbeError(Reason.HTTP_STATUS, "too many redirects")
    if isinstance(e, httpx.RemoteProtocolError):
        if "without sending" in str(e) or "disconnected" in str(e).lower():
            return ProbeError(Reason.ABORTED, "server closed the connection")
        return ProbeError(Reason.INVALID_RESPONSE, "malformed HTTP response")
    if isinstance(e, httpx.ConnectError):
        return ProbeError(Reason.ERROR, "connect failed")
    return ProbeError(Reason.ERROR, f"HTTP request failed: {type(e).__name__}")


def timed_get(
    ep: HttpEndpoint,
    url: str,
    deadline: Deadline,
    phases: Phases,
    *,
    max_redirects: int = 0,
    max_body: int = MAX_BODY,
) -> HttpResponse:
    host = urlsplit(url).hostname or ""
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    resolve(host, port, deadline, phases)  # bounded, and reason `dns` for names that don't resolve
    verify = _verify(ep)
    tracer = _Tracer(phases, deadline)
    left = deadline.left_or_raise(Reason.TIMEOUT, "HTTP request")
    watchdog = threading.Timer(left, tracer.expire)
    watchdog.daemon = True
    watchdog.start()
    transport = httpx.HTTPTransport(verify=verify, socket_options=_SOCKET_OPTIONS, retries=0)
    auth = (ep.username, ep.password or "") if ep.username else None
    try:
        with httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(left),
            follow_redirects=max_redirects > 0,
            max_redirects=max_redirects,
            headers=dict(ep.headers),
            auth=auth,
            trust_env=False,
        ) as client:
            with client.stream("GET", url, extensions={"trace": tracer}) as rsp:
                t0 = time.perf_counter()
                body = bytearray()
                for chunk in rsp.iter_raw(chunk_size=65536):
                    body += chunk
                    if len(body) > max_body:
                        raise ProbeError(
                            Reason.INVALID_RESPONSE, f"response body larger than {max_body} bytes"
                        )
                    deadline.left_or_raise(Reason.TIMEOUT, "HTTP body")
                phases.add("transfer", time.perf_counter() - t0)
                return HttpResponse(
                    rsp.status_code, rsp.headers, bytes(body), str(rsp.url), tracer.tls
                )
    except ProbeError:
        raise
    except (httpx.HTTPError, OSError) as e:
        if tracer.expired and not isinstance(e, httpx.ConnectTimeout):
            raise ProbeError(Reason.TIMEOUT, "no answer within the deadline") from None
        raise _map_error(e) from None
    finally:
        watchdog.cancel()
