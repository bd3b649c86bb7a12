"""The agent's HTTP endpoints on one port: /metrics, /health, /-/healthy, /-/ready, /-/reload.

stdlib ThreadingHTTPServer, as prometheus_client's own start_http_server uses. Slow clients
cannot pin threads: each request line + headers must arrive within REQUEST_DEADLINE_S in total
(a per-read timeout alone lets a client that drips a byte every few seconds hold a thread for
hours), and every other socket operation has a timeout.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from agent import __version__
from agent.http_body import MIN_GZIP, Body, accepts_gzip, gzip_body, joined, longer_than
from agent.web_config import Auth, WebConfig

log = logging.getLogger("agent.http")

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_DEADLINE_S = 10.0  # request line + headers, in total, from the start of each request


@dataclass
class Endpoints:
    metrics: Callable[[], Body]
    health: Callable[[], tuple[int, dict[str, Any] | Body]]  # a Body: JSON already
    ready: Callable[[], bool]
    reload: Callable[[], tuple[bool, str]]
    # GET / (agent.status_page) and GET /probe?target=&probe= (run one probe now)
    status_page: Callable[[], bytes] | None = None
    probe: Callable[[str, str], tuple[int, bytes]] | None = None


INDEX = b"""<!doctype html><html><head><title>pacs-health-agent</title></head><body>
<h1>pacs-health-agent</h1><ul>
<li><a href="/metrics">/metrics</a> Prometheus metrics</li>
<li><a href="/health">/health</a> health JSON</li>
<li><a href="/-/ready">/-/ready</a> readiness</li></ul></body></html>
"""


class _DeadlineReader(io.RawIOBase):
    """The socket's reads, each bounded by what is left of the handler's request deadline."""

    def __init__(self, sock: socket.socket, handler: _Handler) -> None:
        self._sock = sock
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        left = self._handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request deadline passed")
        self._sock.settimeout(min(left, float(self._handler.timeout)))
        return self._sock.recv_into(buf)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # every other socket operation (writes, TLS handshake)
    request_deadline = REQUEST_DEADLINE_S
    deadline = 0.0
    # Headers and body go out in two writes; with Nagle the body waited for the client's delayed
    # ACK, 40 ms on every keep-alive request (Prometheus keeps its connections alive).
    disable_nagle_algorithm = True
    endpoints: Endpoints
    web: WebConfig

    def version_string(self) -> str:
        return f"pacs-health-agent/{__version__}"  # not the stdlib's "BaseHTTP/x Python/3.x.y"

    def setup(self) -> None:
        super().setup()
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))

    def handle_one_request(self) -> None:
        # Idle keep-alive time counts too: the next request must be complete within the deadline.
        self.deadline = time.monotonic() + self.request_deadline
        super().handle_one_request()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        self.connection.settimeout(self.timeout)  # headers read: back to the per-operation timeout
        return ok

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, code: int, body: Body, ctype: str) -> None:
        if accepts_gzip(self.headers.get("Accept-Encoding")) and longer_than(body, MIN_GZIP):
            # Prometheus always asks for gzip; ISA-L's deflate (agent.http_body)
            body = gzip_body(body)
            self.send_response(code)
            self.send_header("Content-Encoding", "gzip")
        else:
            body = joined(body)
            self.send_response(code)
        for k, v in self.web.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, doc: Any) -> None:
        if not isinstance(doc, dict):  # already serialised (the agent's /health)
            self._send(code, doc, "application/json")
            return
        self._send(code, json.dumps(doc, indent=2).encode() + b"\n", "application/json")

    def _authorized(self) -> bool:
        verdict = self.web.check(self.path.split("?", 1)[0], self.headers.get("Authorization"))
        if verdict is Auth.OK:
            return True
        if verdict is Auth.BUSY:  # too many password checks at once: try again shortly
            code, body, extra = 429, b"Too many requests\n", ("Retry-After", "1")
        else:
            code, body, extra = (
                401,
                b"Unauthorized\n",
                ("WWW-Authenticate", 'Basic realm="pacs-health-agent"'),
            )
        self.send_response(code)
        self.send_header(*extra)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":  # a HEAD response has headers only
            self.wfile.write(body)
        return False

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        ep = self.endpoints
        if path == "/metrics":
            self._send(200, ep.metrics(), CONTENT_TYPE_LATEST)
        elif path == "/health":
            code, doc = ep.health()
            self._json(code, doc)
        elif path == "/-/healthy":
            self._send(200, b"OK\n", "text/plain")
        elif path == "/-/ready":
            ok = ep.ready()
            self._send(200 if ok else 503, b"Ready\n" if ok else b"Not ready\n", "text/plain")
        elif path == "/":
            page = ep.status_page() if ep.status_page is not None else INDEX
            self._send(200, page, "text/html; charset=utf-8")
        elif path == "/probe" and ep.probe is not None:
            self._probe(ep.probe)
        else:
            self._send(404, b"Not found\n", "text/plain")

    do_HEAD = do_GET  # noqa: N815

    def _probe(self, run: Callable[[str, str], tuple[int, bytes]]) -> None:
        query = parse_qs(self.path.partition("?")[2], keep_blank_values=True)
        target, probe = query.get("target", []), query.get("probe", [])
        if len(target) != 1 or len(probe) != 1:
            self._send(400, b"give exactly one target= and one probe=\n", "text/plain")
            return
        code, body = run(target[0], probe[0])
        self._send(code, body, CONTENT_TYPE_LATEST if code == 200 else "text/plain")

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return
        if self.path.split("?", 1)[0] == "/-/reload":
            ok, msg = self.endpoints.reload()
            self._send(200 if ok else 400, (msg + "\n").encode(), "text/plain")
        else:
            self._send(405, b"Method not allowed\n", "text/plain")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    ssl_context: Any = None
    # One thread per connection: cap them, so a flood of idle connections cannot exhaust the
    # agent's threads or memory. Connections past the cap are closed at once; probing goes on.
    max_connections = 256

    def server_activate(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug(
                "connection from %s refused: %d connections open",
                client_address[0],
                self.max_connections,
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshakes happen here, in the connection's own thread, so a slow or hostile
        # client cannot stall the accept loop.
        if self.ssl_context is not None:
            request.settimeout(10)
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ValueError) as e:
                log.debug("TLS handshake from %s failed: %s", client_address[0], type(e).__name__)
                return
        super().finish_request(request, client_address)


class _UnixServer(_Server):
    """The same server on a unix socket: a worker's private endpoint (agent.supervisor)."""

    address_family = socket.AF_UNIX
    allow_reuse_address = False

    def server_bind(self) -> None:
        # HTTPServer.server_bind splits the address into host and port; a path has neither.
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = "localhost", 0

    def get_request(self) -> tuple[Any, Any]:
        conn, _ = self.socket.accept()
        return conn, ("unix", 0)  # an unnamed peer's address is "": handlers index it

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The supervisor gave up waiting for this answer (its timeout) and closed: not a fault
        # worth a traceback in the log. Anything else is reported as usual.
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("the supervisor closed its connection before the answer")
            return
        super().handle_error(request, client_address)


def parse_listen(listen: str) -> tuple[str, int]:
    # one parser for agent.listen, --listen and here: ValueError with a one-line message
    from agent.config.listen import parse_listen as parse

    return parse(listen)


def make_server(
    listen: str,
    endpoints: Endpoints,
    web: WebConfig | None = None,
    request_deadline: float = REQUEST_DEADLINE_S,
) -> ThreadingHTTPServer:
    """A server on HOST:PORT, or on a unix socket for `unix:PATH` (a worker's private one)."""
    web = web or WebConfig()
    unix = listen.startswith("unix:")
    handler = type(
        "Handler",
        (_Handler,),
        {
            "endpoints": endpoints,
            "web": web,
            "request_deadline": request_deadline,
            "disable_nagle_algorithm": not unix,  # a TCP option
        },
    )
    if unix:
        return _UnixServer(listen[5:], handler)  # type: ignore[arg-type]  # AF_UNIX: a path
    host, port = parse_listen(listen)
    attrs: dict[str, Any] = {"ssl_context": web.ssl_context}
    if ":" in host:
        attrs["address_family"] = socket.AF_INET6
    server_cls = type("Server", (_Server,), attrs)
    return server_cls((host, port), handler)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    t.start()
    return t
