"""One timed HTTP GET, spoken over the probes' own sockets (probes.net), read by probes.http1.

The exchange runs on the same dialing, TLS and timing code as the DICOM probes, and its failures
are judged by the same table (probes.net.failure with the Stage they happened in):

* `dns`: our bounded resolver (probes.net.resolve), once per host and port of the chain; the
  connection dials the address it found (probes.net.connect_any, trying each address in turn).
* `connect`: the kernel's SYN → SYN-ACK time; TCP_NODELAY is set on the socket.
* `tls`: the handshake (probes.net.tls_handshake). SNI and certificate verification use the
  URL's host, or config.tls.serverName for the configured host; earliest certificate expiry is
  kept across the redirect chain.
* `first_byte`: just before the request is sent → arrival of the segment that completed the
  response headers (the kernel's receive timestamp where the OS gives one, probes.net.TimedStream).
* `transfer`: that arrival → arrival of the segment that completed the body (0 when one segment
  carried both).

The request is a few header lines written here (names and values checked: nothing from the config
can inject a line); the response is read by probes.http1 (chunked, Content-Length and
read-until-close bodies, 1xx skipped, a capped head). One request per connection
(`Connection: close`): a prober dials afresh each run. No Accept-Encoding is sent, so bodies come
as they are. Each wait is a socket timeout set to what is left of the run's deadline, so no wait
outlives it; the shared watchdog also shuts the socket down when the deadline passes, so a read
that is blocked anyway wakes (its failure is then reported as the timeout it is). The body is
read with the deadline checked between chunks and a size cap (keep_body=False: read, counted,
discarded).

Redirects are followed here, hop by hop: each hop is resolved the same way, and the endpoint's
secrets (its headers and basic credentials) are sent only while the request goes to the
endpoint's own origin (scheme, host, port). The first hop to another origin, which includes
https → http, drops them for the rest of the chain.
"""

from __future__ import annotations

import base64
import re
import socket
import ssl
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urljoin, urlsplit

from probes.base import Deadline, Phases, ProbeError, Reason, TLSInfo
from probes.http1 import ResponseReader
from probes.net import Stage, TimedStream, Where, failure, resolve, tls_handshake
from probes.net.connect import connect_any
from probes.net.reasons import ProtocolError
from probes.net.resolver import AddrInfo
from probes.net.tls import tls_settings_message
from probes.specs import HttpEndpoint, TLSOptions, origin, tls_context
from probes.watchdog import WATCHDOG

MAX_BODY = 1024 * 1024
MAX_HEAD = 100 * 1024  # status line and headers (httpcore's limit, which the probes had before)
USER_AGENT = "pacs-health-agent"
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# what a read woken by the watchdog's shutdown reports (EOF, a broken TLS stream, a cut body)
_WOKEN = frozenset({Reason.ABORTED, Reason.TLS, Reason.INVALID_RESPONSE, Reason.ERROR})
WHAT = "HTTP request"
# kept as given in a request target: reserved characters and existing %-escapes
_SAFE = "!#$%&'()*+,/:;=?@[]~"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class Headers(Mapping[str, str]):
    """A response's header fields by case-insensitive name; a repeated field's values are
    joined with ", " (as httpx.Headers.get did)."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[bytes, bytes]]) -> None:
        out: dict[str, str] = {}
        for name, value in fields:  # names come lowercased
            k, v = name.decode("latin-1"), value.decode("latin-1")
            out[k] = f"{out[k]}, {v}" if k in out else v
        self._fields = out

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)


@dataclass
class HttpResponse:
    status: int
    headers: Headers
    body: bytes
    url: str
    tls: TLSInfo | None
    size: int = 0  # body bytes received (counted also when the body is discarded)


@dataclass(frozen=True)
class _Hop:
    """One URL of the chain, as it is dialed and asked for."""

    url: str
    scheme: str
    host: str  # no brackets, IDNA-encoded: what is resolved, verified and named
    port: int
    authority: str  # the Host header
    target: str  # path?query as sent
    userinfo: tuple[str, str] | None  # credentials written into the URL itself

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def peer(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _hop(url: str) -> _Hop:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a malformed port or IPv6 literal
        raise ProbeError(Reason.ERROR, f"{WHAT} failed: malformed URL") from None
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if scheme not in ("http", "https") or not host:
        raise ProbeError(Reason.ERROR, f"{WHAT} failed: not an http(s) URL")
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    default = 443 if scheme == "https" else 80
    port = port or default
    name = f"[{host}]" if ":" in host else host
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    userinfo = None
    if parts.username is not None:
        userinfo = (unquote(parts.username), unquote(parts.password or ""))
    return _Hop(
        url=url,
        scheme=scheme,
        host=host,
        port=port,
        authority=name if port == default else f"{name}:{port}",
        target=quote(target, safe=_SAFE),  # spaces and non-ASCII escaped; the rest as given
        userinfo=userinfo,
    )


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _request_headers(hop: _Hop, ep: HttpEndpoint, secrets: bool) -> list[tuple[str, str]]:
    """Ours, then the endpoint's (which replace ours by name) while secrets may go."""
    fields = {"host": ("Host", hop.authority), "user-agent": ("User-Agent", USER_AGENT),
              "accept": ("Accept", "*/*")}
    if secrets:
        for name, value in ep.headers:
            fields[name.lower()] = (name, value)
        if ep.username:
            fields["authorization"] = ("Authorization", _basic(ep.username, ep.password or ""))
    if hop.userinfo is not None and "authorization" not in fields:
        fields["authorization"] = ("Authorization", _basic(*hop.userinfo))
    fields["connection"] = ("Connection", "close")  # one request per connection
    return list(fields.values())


class _Guard:
    """The sockets of one run, shut down by the watchdog thread when the deadline passes."""

    def __init__(self) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    # socket.socket.shutdown even on an SSLSocket: only the OS socket is shut down, the TLS
    # object stays as it is for the thread that is reading it (which then sees EOF).
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _context(options: TLSOptions | None) -> ssl.SSLContext:
    try:  # cached per options and file identity; no TLS options: the system's trust store
        return tls_context(options or TLSOptions())
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError; same reason as DICOM TLS
        raise ProbeError(Reason.TLS, tls_settings_message(e)) from None


class _Run:
    """What one timed_get keeps across its hops."""

    def __init__(self, ep: HttpEndpoint, deadline: Deadline, phases: Phases) -> None:
        self.ep = ep
        self.deadline = deadline
        self.phases = phases
        self.guard = _Guard()
        self.addresses: dict[tuple[str, int], list[AddrInfo]] = {}
        self.tls: TLSInfo | None = None
        self._context: ssl.SSLContext | None = None

    def open(self, hop: _Hop, server_name: str | None) -> TimedStream:
        """Resolve (once per host and port), connect, handshake: a stream the watchdog guards."""
        key = (hop.host, hop.port)
        infos = self.addresses.get(key)
        if infos is None:  # bounded; reason `dns` when it fails
            infos = self.addresses[key] = resolve(hop.host, hop.port, self.deadline, self.phases)
        sock: socket.socket = connect_any(infos, self.deadline, self.phases, hop.host)
        self.guard.watch(sock)
        if hop.scheme == "https":
            if self._context is None:
                try:
                    self._context = _context(self.ep.tls)
                except ProbeError:
                    sock.close()
                    raise
            sock, info = tls_handshake(
                sock, self._context, server_name or hop.host, self.deadline, self.phases
            )
            self.guard.watch(sock)  # the TLS socket took over the descriptor
            if info is not None and self.tls is not None:  # an earlier hop's chain counts too
                earliest = min(info.earliest_not_after, self.tls.earliest_not_after)
                info = TLSInfo(info.leaf_not_after, earliest, info.version)
            self.tls = info or self.tls
        return TimedStream(sock, self.deadline)


def _request(hop: _Hop, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"GET {hop.target} HTTP/1.1"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):  # no header injection
            raise ProbeError(Reason.ERROR, f"{WHAT} failed: header {name!r} is not valid")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    try:
        return "\r\n".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise ProbeError(Reason.ERROR, f"{WHAT} failed: a header is not Latin-1") from None


def _exchange(
    stream: TimedStream, hop: _Hop, headers: list[tuple[str, str]], phases: Phases
) -> ResponseReader:
    """Send the GET; read the response's status and headers (1xx answers skipped)."""
    data = _request(hop, headers)
    sent = stream.send_pdus([data], WHAT)
    reader = ResponseReader(lambda: stream.recv_some(WHAT), MAX_HEAD)
    try:
        reader.head()
    except (ProtocolError, EOFError) as e:
        raise failure(e, Stage.RECEIVE, Where(WHAT)) from None
    phases.add("first_byte", stream.received_at - sent)
    return reader


def _read_body(
    reader: ResponseReader, deadline: Deadline, cap: int | None, keep: bool, what: str
) -> tuple[bytes, int]:
    """The body (or b"" when not kept) and its size; `cap` bounds the bytes read."""
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in reader.body():
            size += len(chunk)
            if cap is not None and size > cap:
                raise ProbeError(Reason.INVALID_RESPONSE, f"{what} larger than {cap} bytes")
            if keep:
                parts.append(chunk)
            deadline.left_or_raise(Reason.TIMEOUT, "HTTP body")
    except (ProtocolError, EOFError) as e:
        raise failure(e, Stage.RECEIVE, Where(WHAT)) from None
    return b"".join(parts), size


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
    home = origin(ep.url)
    hop = _hop(url)
    first_host = hop.host
    server_name = ep.tls.server_name if ep.tls is not None else None
    run = _Run(ep, deadline, phases)
    left = deadline.left_or_raise(Reason.TIMEOUT, WHAT)
    watchdog = WATCHDOG.after(left, run.guard.expire)  # one shared thread, not a Timer per run
    secrets = True
    stream: TimedStream | None = None
    try:
        for n in range(max_redirects + 1):
            # once a hop leaves the origin, secrets stay off for the rest of the chain
            secrets = secrets and hop.origin == home
            deadline.left_or_raise(Reason.TIMEOUT, WHAT)  # e.g. the next hop: nothing new starts
            stream = run.open(hop, server_name if hop.host == first_host else None)
            reader = _exchange(stream, hop, _request_headers(hop, ep, secrets), phases)
            headers = Headers(reader.fields)
            location = headers.get("location") if reader.status in REDIRECTS else None
            if location is None or max_redirects == 0:
                head_at = stream.received_at
                body, size = _read_body(
                    reader, deadline, max_body if keep_body else None, keep_body, "response body"
                )
                phases.add("transfer", stream.received_at - head_at)
                return HttpResponse(reader.status, headers, body, hop.url, run.tls, size)
            if n == max_redirects:
                raise ProbeError(Reason.HTTP_STATUS, "too many redirects")
            _read_body(reader, deadline, MAX_BODY, False, "redirect body")
            stream.sock.close()
            stream = None
            target = urljoin(hop.url, location.strip())
            if urlsplit(target).scheme.lower() not in ("http", "https"):
                raise ProbeError(Reason.INVALID_RESPONSE, "redirect to a non-HTTP URL")
            hop = _hop(target)
        raise AssertionError("unreachable: the loop returns or raises")
    except ProbeError as e:
        if run.guard.expired and e.reason in _WOKEN:
            # the watchdog shut the socket down: whatever the read then saw, the deadline ended it
            where = Where(WHAT, peer=hop.peer, budget=deadline.budget)
            raise failure(TimeoutError(), Stage.RECEIVE, where) from None
        raise
    finally:
        watchdog.cancel()
        if stream is not None:
            stream.sock.close()
