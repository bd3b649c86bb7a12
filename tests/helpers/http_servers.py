"""Small real HTTP/HTTPS servers on 127.0.0.1 for the HTTP probe tests.

Each path is a `Route`: status, body, content type, a delay before the first byte, a redirect,
required headers or basic credentials (401 otherwise), and "fail the first N requests". The
server can be stopped and started again on the same port (failover tests), and it records what
it received so a test can assert on the request itself.
"""

from __future__ import annotations

import base64
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers import LOOPBACK, bind_retry


@dataclass
class Route:
    status: int = 200
    body: bytes = b'{"status":"UP"}'
    content_type: str = "application/json"
    first_byte_delay: float = 0.0  # seconds before the status line is sent
    drip_interval: float = 0.0  # send the body one byte at a time, this many seconds apart
    redirect: str | None = None  # Location header (status defaults to 302 then)
    require_headers: dict[str, str] = field(default_factory=dict)
    require_basic: tuple[str, str] | None = None
    fail_first: int = 0  # answer the first N requests with fail_status
    fail_status: int = 503


@dataclass
class Received:
    path: str
    headers: dict[str, str]


def redirect_loop(a: str = "/loop/a", b: str = "/loop/b") -> dict[str, Route]:
    return {
        a: Route(status=302, redirect=b, body=b"", content_type="text/plain"),
        b: Route(status=302, redirect=a, body=b"", content_type="text/plain"),
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    peer: HTTPPeer

    def finish_request(self, request: Any, client_address: Any) -> None:
        ctx = self.peer.ssl_context
        if ctx is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(10)
        try:
            tls = ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client refused our certificate (that is what some tests want)
        try:
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _reply(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None,
               drip: float = 0.0) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        if not drip:
            self.wfile.write(body)
            return
        for i in range(len(body)):
            self.wfile.write(body[i:i + 1])
            self.wfile.flush()
            if self.server.peer._stopping.wait(drip):
                return

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        peer = self.server.peer
        path = self.path.split("?", 1)[0]
        route = peer.routes.get(path)
        n = peer._count(path, Received(self.path, dict(self.headers.items())))
        if route is None:
            self._reply(404, b"not found", "text/plain")
            return
        if route.first_byte_delay and peer._stopping.wait(route.first_byte_delay):
            return  # server stopping: drop the request
        for k, want in route.require_headers.items():
            if self.headers.get(k) != want:
                self._reply(401, b'{"error":"missing or wrong header"}', "application/json")
                return
        if route.require_basic is not None:
            user, pw = route.require_basic
            want = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
            if self.headers.get("Authorization") != want:
                self._reply(401, b'{"error":"unauthorized"}', "application/json",
                            {"WWW-Authenticate": 'Basic realm="test"'})
                return
        if n <= route.fail_first:
            self._reply(route.fail_status, b'{"status":"DOWN"}', "application/json")
            return
        if route.redirect is not None:
            self._reply(route.status if 300 <= route.status < 400 else 302, route.body,
                        route.content_type, {"Location": route.redirect})
            return
        try:
            self._reply(route.status, route.body, route.content_type, drip=route.drip_interval)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a test that wants exactly that)


class HTTPPeer:
    """An HTTP (or, with `ssl_context`, HTTPS) server on loopback serving `routes`."""

    def __init__(
        self,
        routes: dict[str, Route] | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        host: str = LOOPBACK,
        port: int = 0,
    ) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.received: list[Received] = []
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _count(self, path: str, rec: Received) -> int:
        with self._lock:
            self.received.append(rec)
            self.hits[path] = self.hits.get(path, 0) + 1
            return self.hits[path]

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def url(self, path: str = "") -> str:
        return self.base_url + path

    def start(self) -> HTTPPeer:
        """Start serving; a restart re-binds the same port (waiting, bounded, if it must)."""
        assert self._server is None, "already running"
        self._stopping.clear()
        server = bind_retry(lambda: _Server((self.host, self.port), _Handler))
        server.peer = self
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"http-peer-{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: new connections to the port are refused from now on."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> HTTPPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

