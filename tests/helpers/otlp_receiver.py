"""Real OTLP metric receivers on loopback: a gRPC MetricsService and an HTTP /v1/metrics endpoint.

Both keep every ExportMetricsServiceRequest they receive (with its request headers / gRPC
metadata) and can be stopped and restarted on the same port, or made to hang (a slow collector).
"""

from __future__ import annotations

import gzip
import socket
import threading
import zlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import (
    MetricsServiceServicer,
    add_MetricsServiceServicer_to_server,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

LOOPBACK = "127.0.0.1"
HANG_LIMIT = 30.0  # a hanging receiver gives up after this long, so no test can hang forever


@dataclass
class Received:
    request: ExportMetricsServiceRequest
    headers: dict[str, str]
    path: str = "/"


def value_of(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in kvs}


@dataclass
class Point:
    """One data point, flattened: metric name/unit/kind, resource and point attributes."""

    name: str
    unit: str
    kind: str  # sum | gauge | histogram | exponential_histogram | summary
    resource: dict[str, Any]
    attributes: dict[str, Any]
    point: Any
    metric: Any = field(repr=False, default=None)

    @property
    def value(self) -> float:
        p = self.point
        return p.as_double if p.WhichOneof("value") == "as_double" else p.as_int


def points(requests: list[Received]) -> Iterator[Point]:
    for rec in requests:
        for rm in rec.request.resource_metrics:
            res = attrs(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    for dp in getattr(m, kind).data_points:
                        yield Point(m.name, m.unit, kind, res, attrs(dp.attributes), dp, m)


class _Store:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self.hang = threading.Event()  # set: every request waits (bounded) instead of answering
        self.release = threading.Event()
        self.delay = 0.0  # seconds every answer is late (a slow collector)
        self.reject = False  # answer every request with a non-retryable error
        self.attempts = 0  # requests that arrived, answered or not

    def add(self, r: Received) -> None:
        with self._lock:
            self._received.append(r)

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def count(self) -> int:
        with self._lock:
            return len(self._received)

    def points(self, since: int = 0) -> list[Point]:
        return list(points(self.received[since:]))

    def latest(self, name: str, since: int = 0) -> list[Point]:
        """The data points of metric `name` from the last request (at or after `since`) that
        carried it."""
        for rec in reversed(self.received[since:]):
            pts = [p for p in points([rec]) if p.name == name]
            if pts:
                return pts
        return []

    def wait_hang(self) -> None:
        with self._lock:
            self.attempts += 1
        if self.hang.is_set():
            self.release.wait(HANG_LIMIT)
        elif self.delay:
            self.release.wait(self.delay)


class GrpcReceiver(_Store):
    """opentelemetry-proto's MetricsService on 127.0.0.1 (optionally TLS)."""

    def __init__(self, port: int = 0, tls: tuple[bytes, bytes] | None = None) -> None:
        super().__init__()
        self.port = port
        self.tls = tls  # (private key PEM, certificate chain PEM)
        self._server: grpc.Server | None = None

    def start(self) -> GrpcReceiver:
        store = self

        class Servicer(MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
                store.wait_hang()
                if store.reject:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "rejected by the test")
                md = {k: v for k, v in context.invocation_metadata()}
                store.add(Received(request, md))
                return ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        add_MetricsServiceServicer_to_server(Servicer(), server)
        addr = f"{LOOPBACK}:{self.port}"
        if self.tls:
            creds = grpc.ssl_server_credentials([self.tls])
            port = server.add_secure_port(addr, creds)
        else:
            port = server.add_insecure_port(addr)
        if not port:
            raise OSError(f"cannot bind the gRPC receiver to {addr}")
        self.port = port
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.release.set()
            self._server.stop(grace=None).wait(5)
            self._server = None
            self.release.clear()

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.port}"

    def __enter__(self) -> GrpcReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HttpReceiver(_Store):
    """POST /v1/metrics with an ExportMetricsServiceRequest protobuf body (OTLP/HTTP)."""

    def __init__(self, port: int = 0) -> None:
        super().__init__()
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self.bad_requests = 0
        self._conns: set[socket.socket] = set()

    def start(self) -> HttpReceiver:
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def setup(self) -> None:
                super().setup()
                with store._lock:  # noqa: SLF001
                    store._conns.add(self.connection)  # noqa: SLF001

            def finish(self) -> None:
                with store._lock:  # noqa: SLF001
                    store._conns.discard(self.connection)  # noqa: SLF001
                super().finish()

            def _reply(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                store.wait_hang()
                if store.reject:
                    self._reply(400, b"")
                    return
                enc = (self.headers.get("Content-Encoding") or "").lower()
                if enc == "gzip":
                    body = gzip.decompress(body)
                elif enc == "deflate":
                    body = zlib.decompress(body)
                if self.path != "/v1/metrics" or (
                    self.headers.get("Content-Type") != "application/x-protobuf"
                ):
                    store.bad_requests += 1
                    self._reply(404, b"")
                    return
                req = ExportMetricsServiceRequest()
                req.ParseFromString(body)
                store.add(Received(req, {k.lower(): v for k, v in self.headers.items()},
                                   self.path))
                self._reply(200, ExportMetricsServiceResponse().SerializeToString())

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a connection cut by stop() is expected, not worth a traceback

        self._server = Server((LOOPBACK, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="otlp-http-receiver",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.release.set()
            self._server.shutdown()
            self._server.server_close()
            # A stopped collector also drops its keep-alive connections.
            with self._lock:
                conns, self._conns = list(self._conns), set()
            for c in conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._server = None
            self.release.clear()

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["GrpcReceiver", "HttpReceiver", "KeyValue", "Point", "Received", "attrs", "points"]
