"""One timed HTTP GET with httpx: phases from httpx's trace hooks, every wait bounded.

Phases: `dns` (our bounded resolver), `connect`, `tls`, `first_byte` (request sent → response
headers), `transfer` (body). TCP_NODELAY is set on the socket. The body is read in chunks with the
deadline checked between them and a size cap, so an endless or dripping body cannot hang a probe.

httpx's timeout bounds each socket operation, not the whole exchange: every redirect hop and every
read gets it afresh. The run's deadline is therefore enforced on top: no new operation starts
after it, and a watchdog shuts the connection's socket down when it passes, which wakes a read
that is still blocked.

Each host is resolved once, by the bounded resolver (probes.net.resolve), and the
connection dials the address it found: httpcore would otherwise resolve the name again, without a
bound and inside the `connect` phase. The Host header, SNI and certificate verification keep the
name (or config.tls.serverName for the configured host).

Redirects are followed here, hop by hop, not by httpx: each hop is resolved the same way, and the
endpoint's secrets (its headers and basic credentials) are sent only while the request goes to the
endpoint's own origin (scheme, host, port). The first hop to another origin, which includes
https → http, drops them for the rest of the chain; httpx would strip only Authorization.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from probes.base import Deadline, Phases, ProbeError, Reason, TLSInfo
from probes.net import Stage, Where, failure, peer_cert_info, resolve, tls_settings_message
from probes.specs import HttpEndpoint, origin, tls_context
from probes.watchdog import WATCHDOG

MAX_BODY = 1024 * 1024
_SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


@dataclass
class HttpResponse:
    status: int
    headers: httpx.Headers
    body: bytes
    url: str
    tls: TLSInfo | None
    size: int = 0  # body bytes received (counted also when the body is discarded)


class _Tracer:
    """Collects httpx/httpcore trace events into phases, across redirects."""

    def __init__(self, phases: Phases, deadline: Deadline) -> None:
        self.phases = phases
        self.deadline = deadline
        self.started: dict[str, float] = {}
        self.tls: TLSInfo | None = None
        self.expired = False
        # where the exchange is, so a failure is judged as the DICOM path judges it (net.reasons)
        self.stage = Stage.CONNECT
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def __call__(self, name: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        kind, _, edge = name.rpartition(".")
        if edge == "started":
            # e.g. the next redirect hop: nothing new starts after the deadline
            self.deadline.left_or_raise(Reason.TIMEOUT, "HTTP request")
            self.started[kind] = now
            self.stage = _STAGES.get(kind.rpartition(".")[2], self.stage)
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
        # httpcore hands out the low-level _ssl._SSLSocket here
        obj = stream.get_extra_info("ssl_object") if stream is not None else None
        info = peer_cert_info(obj) if obj is not None else None
        if info is not None:
            if self.tls is not None:  # an earlier hop's chain counts too
                earliest = min(info.earliest_not_after, self.tls.earliest_not_after)
                info = TLSInfo(info.leaf_not_after, earliest, info.version)
            self.tls = info


# httpcore's trace steps (the part after "connection." / "http11.") → the stage they are
_STAGES = {
    "connect_tcp": Stage.CONNECT,
    "start_tls": Stage.HANDSHAKE,
    "send_request_headers": Stage.SEND,
    "send_request_body": Stage.SEND,
    "receive_response_headers": Stage.RECEIVE,
    "receive_response_body": Stage.RECEIVE,
}


class _ResolvedBackend(httpcore.NetworkBackend):
    """Connects to the addresses our bounded resolver found for (host, port), never by name."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self.addresses: dict[tuple[str, int], list[str]] = {}
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        addresses = self.addresses.get((host, port))
        if not addresses:  # every hop is resolved before its request; this would be a bug
            raise httpcore.ConnectError(f"{host}:{port} was not resolved in advance")
        last: Exception | None = None
        for address in addresses:
            left = self.deadline.remaining()
            if left <= 0:
                raise httpcore.ConnectTimeout("deadline passed before connect")
            try:  # an IP literal: create_connection does no name lookup for it
                return self._inner.connect_tcp(
                    address,
                    port,
                    timeout=left if timeout is None else min(timeout, left),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as e:
                last = e  # try the next address, as open_socket does for DICOM
        assert last is not None
        raise last

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by the probes")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _Transport(httpx.HTTPTransport):
    """httpx's transport over a pool that uses our backend.

    httpx 0.28 (pinned) takes no network backend; its transport keeps the httpcore pool in
    `_pool` and uses nothing else, so this sets that pool instead of calling the parent's
    __init__.
    """

    def __init__(self, ssl_context: ssl.SSLContext, backend: httpcore.NetworkBackend) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            retries=0,
            socket_options=_SOCKET_OPTIONS,
            network_backend=backend,
        )


def _shutdown(sock: socket.socket) -> None:
    # socket.socket.shutdown even on an SSLSocket: only the OS socket is shut down, the TLS
    # object stays as it is for the thread that is reading it (which then sees EOF).
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _verify(ep: HttpEndpoint) -> ssl.SSLContext:
    if ep.tls is None:
        return httpx.create_ssl_context()
    try:
        return tls_context(ep.tls)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError; same reason as DICOM TLS
        raise ProbeError(Reason.TLS, tls_settings_message(e)) from None


def _peer(url: httpx.URL) -> str:
    """host:port of the hop that failed, for the message."""
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"[{url.host}]:{port}" if ":" in url.host else f"{url.host}:{port}"


def _resolve_hop(
    backend: _ResolvedBackend, url: httpx.URL, deadline: Deadline, phases: Phases
) -> None:
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    if (host, port) not in backend.addresses:
        infos = resolve(host, port, deadline, phases)  # bounded; reason `dns` when it fails
        backend.addresses[(host, port)] = list(dict.fromkeys(str(i[4][0]) for i in infos))


def timed_get(
    ep: HttpEndpoint,
    url: str,
    deadline: Deadline,
    phases: Phases,
    *,
    max_redirects: int = 0,
    max_body: int = MAX_BODY,
    keep_body: bool = True,
) -> HttpResponse:
    """GET `url` (on `ep`'s origin or not), following up to `max_redirects` redirects.

    keep_body=False: the body is read and discarded, only its size is kept (no size cap; the
    deadline bounds it), for responses that may hold patient data.
    """
    verify = _verify(ep)
    home = origin(ep.url)
    server_name = ep.tls.server_name if ep.tls is not None else None
    first_host = httpx.URL(url).host
    tracer = _Tracer(phases, deadline)
    backend = _ResolvedBackend(deadline)
    left = deadline.left_or_raise(Reason.TIMEOUT, "HTTP request")
    watchdog = WATCHDOG.after(left, tracer.expire)  # one shared thread, not a Timer per run
    auth = (ep.username, ep.password or "") if ep.username else None
    secrets_allowed = True
    current = httpx.URL(url)  # the hop being fetched (named when it fails)
    try:
        with httpx.Client(
            transport=_Transport(verify, backend), follow_redirects=False, trust_env=False
        ) as client:
            current = httpx.URL(url)
            for hop in range(max_redirects + 1):
                _resolve_hop(backend, current, deadline, phases)
                # once a hop leaves the origin, secrets stay off for the rest of the chain
                secrets_allowed = secrets_allowed and origin(str(current)) == home
                ext: dict[str, Any] = {"trace": tracer}
                if server_name and current.host == first_host:
                    ext["sni_hostname"] = server_name  # SNI and the name verified
                with client.stream(
                    "GET",
                    current,
                    headers=dict(ep.headers) if secrets_allowed else None,
                    auth=auth if secrets_allowed else None,
                    timeout=httpx.Timeout(deadline.left_or_raise(Reason.TIMEOUT, "HTTP request")),
                    extensions=ext,
                ) as rsp:
                    location = rsp.headers.get("location") if rsp.is_redirect else None
                    if location is None or max_redirects == 0:
                        return _read(rsp, tracer, deadline, phases, max_body, keep_body)
                    if hop == max_redirects:
                        raise ProbeError(Reason.HTTP_STATUS, "too many redirects")
                    _drain(rsp, deadline)
                    current = rsp.url.join(location)
                    if current.scheme not in ("http", "https"):
                        raise ProbeError(Reason.INVALID_RESPONSE, "redirect to a non-HTTP URL")
            raise AssertionError("unreachable: the loop returns or raises")
    except ProbeError:
        raise
    except (httpx.HTTPError, OSError) as e:
        where = Where("HTTP request", peer=_peer(current), budget=deadline.budget)
        if tracer.expired and not isinstance(e, httpx.ConnectTimeout):
            # the watchdog shut the socket down: whatever the read then saw, the deadline ended it
            stage = Stage.RECEIVE if tracer.stage is Stage.CONNECT else tracer.stage
            raise failure(TimeoutError(), stage, where) from None
        raise failure(e, tracer.stage, where) from None
    finally:
        watchdog.cancel()


def _read(
    rsp: httpx.Response,
    tracer: _Tracer,
    deadline: Deadline,
    phases: Phases,
    max_body: int,
    keep_body: bool,
) -> HttpResponse:
    t0 = time.perf_counter()
    body = bytearray()
    size = 0
    for chunk in rsp.iter_raw(chunk_size=65536):
        size += len(chunk)
        if keep_body:
            body += chunk
            if size > max_body:
                raise ProbeError(
                    Reason.INVALID_RESPONSE, f"response body larger than {max_body} bytes"
                )
        deadline.left_or_raise(Reason.TIMEOUT, "HTTP body")
    phases.add("transfer", time.perf_counter() - t0)
    return HttpResponse(rsp.status_code, rsp.headers, bytes(body), str(rsp.url), tracer.tls, size)


def _drain(rsp: httpx.Response, deadline: Deadline) -> None:
    """Read a redirect's body (so the connection can be reused), bounded in size and time."""
    size = 0
    for chunk in rsp.iter_raw(chunk_size=65536):
        size += len(chunk)
        if size > MAX_BODY:
            raise ProbeError(Reason.INVALID_RESPONSE, "redirect body too large")
        deadline.left_or_raise(Reason.TIMEOUT, "HTTP redirect")
