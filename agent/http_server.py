"""The agent's HTTP endpoints on one port: /metrics, /health, /-/healthy, /-/ready, /-/reload.

stdlib ThreadingHTTPServer, as prometheus_client's own start_http_server uses; each connection
gets a socket timeout so idle or slow clients cannot pin threads forever.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.web_config import WebConfig

log = logging.getLogger("agent.http")

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Endpoints:
    metrics: Callable[[], bytes]
    health: Callable[[], tuple[int, dict[str, Any] | bytes]]  # bytes: JSON already
    ready: Callable[[], bool]
    reload: Callable[[], tuple[bool, str]]


INDEX = b"""<!doctype html><html><head><title>pacs-health-agent</title></head><body>
<h1>pacs-health-agent</h1><ul>
<li><a href="/metrics">/metrics</a> Prometheus metrics</li>
<li><a href="/health">/health</a> health JSON</li>
<li><a href="/-/ready">/-/ready</a> readiness</li></ul></body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    server_version = "pacs-health-agent"
    protocol_version = "HTTP/1.1"
    timeout = 10  # per-connection socket timeout (slow-loris guard)
    endpoints: Endpoints
    web: WebConfig

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        if "gzip" in (self.headers.get("Accept-Encoding") or "") and len(body) > 1024:
            body = gzip.compress(body, compresslevel=1)
            self.send_response(code)
            self.send_header("Content-Encoding", "gzip")
        else:
            self.send_response(code)
        for k, v in self.web.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, doc: Any) -> None:
        if isinstance(doc, bytes):  # already serialised (the agent's /health)
            self._send(code, doc, "application/json")
            return
        self._send(code, json.dumps(doc, indent=2).encode() + b"\n", "application/json")

    def _authorized(self) -> bool:
        if self.web.authorized(self.path.split("?", 1)[0], self.headers.get("Authorization")):
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="pacs-health-agent"')
        self.send_header("Content-Length", "13")
        self.end_headers()
        self.wfile.write(b"Unauthorized\n")
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
            self._send(200, INDEX, "text/html; charset=utf-8")
        else:
            self._send(404, b"Not found\n", "text/plain")

    do_HEAD = do_GET  # noqa: N815

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
            log.debug("connection from %s refused: %d connections open", client_address[0],
                      self.max_connections)
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


def parse_listen(listen: str) -> tuple[str, int]:
    # one parser for agent.listen, --listen and here: ValueError with a one-line message
    from agent.config.listen import parse_listen as parse

    return parse(listen)


def make_server(
    listen: str, endpoints: Endpoints, web: WebConfig | None = None
) -> ThreadingHTTPServer:
    web = web or WebConfig()
    handler = type("Handler", (_Handler,), {"endpoints": endpoints, "web": web})
    host, port = parse_listen(listen)
    attrs: dict[str, Any] = {"ssl_context": web.ssl_context}
    if ":" in host:
        import socket

        attrs["address_family"] = socket.AF_INET6
    server_cls = type("Server", (_Server,), attrs)
    return server_cls((host, port), handler)


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    t.start()
    return t
