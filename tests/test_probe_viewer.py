"""viewer against a real HTTP server on loopback."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from agent.runner import run_probe
from probes.base import Facts, ProbeResult, Reason
from tests.helpers.config import plan, target
from tests.helpers.http_servers import HTTPPeer, Route, redirect_loop

HTML = b"<!doctype html><title>IDS7 Web</title><div id=ids7-viewer></div>"
STUDY = "1.2.826.0.1.3680043.10.1082.1.1"


def viewer_target(viewer_url: str, *, timeout_ms: int = 3000, worklist_url: str | None = None,
                  **settings: Any) -> dict[str, Any]:
    sectra: dict[str, Any] = {"viewerEndpoint": viewer_url, "enableWebViewer": True}
    if worklist_url:
        sectra["worklistEndpoint"] = worklist_url
    return target(only=("viewer",), timeout_ms=timeout_ms, sectra=sectra,
                  probes={"viewer": settings} if settings else None)


def view(t: dict[str, Any]) -> ProbeResult:
    return run_probe(plan(t), "viewer")


def test_html_page_with_marker_succeeds_and_asks_for_the_study() -> None:
    with HTTPPeer({"/viewer": Route(body=HTML, content_type="text/html; charset=utf-8")}) as web:
        r = view(viewer_target(web.url("/viewer"), studyInstanceUID=STUDY, marker="ids7-viewer"))
        path = web.received[0].path
    assert r.ok, r.message
    assert path == f"/viewer?studyUID={STUDY}"
    assert {"connect", "first_byte", "transfer"} <= set(r.phases)


def test_viewer_needs_enable_web_viewer() -> None:
    t = viewer_target("http://127.0.0.1:1/viewer")
    t["sectraConfig"]["enableWebViewer"] = False
    assert "viewer" not in plan(t).probes


@pytest.mark.parametrize("ctype", ["application/json", "text/plain", "image/png"])
def test_non_html_content_type_is_unexpected_result(ctype: str) -> None:
    with HTTPPeer({"/viewer": Route(body=HTML, content_type=ctype)}) as web:
        r = view(viewer_target(web.url("/viewer")))
    assert not r.ok
    assert r.reason == Reason.UNEXPECTED_RESULT
    assert "HTML" in r.message


def test_missing_marker_is_unexpected_result() -> None:
    page = b"<!doctype html><title>Maintenance</title><p>Back soon</p>"
    with HTTPPeer({"/viewer": Route(body=page, content_type="text/html")}) as web:
        r = view(viewer_target(web.url("/viewer"), marker="ids7-viewer"))
    assert not r.ok
    assert r.reason == Reason.UNEXPECTED_RESULT
    assert "marker" in r.message


def test_redirects_are_followed() -> None:
    hop = {"body": b"", "content_type": "text/plain"}
    routes = {
        "/viewer": Route(status=302, redirect="/login/sso", **hop),
        "/login/sso": Route(status=303, redirect="/viewer/app", **hop),
        "/viewer/app": Route(body=HTML, content_type="text/html"),
    }
    with HTTPPeer(routes) as web:
        r = view(viewer_target(web.url("/viewer"), marker="ids7-viewer"))
        hits = dict(web.hits)
    assert r.ok, r.message
    assert r.facts.http_status == 200
    assert hits == {"/viewer": 1, "/login/sso": 1, "/viewer/app": 1}
    # each hop's request → response headers is part of first_byte
    assert r.phases["first_byte"] > 0


def test_redirect_not_followed_when_max_redirects_is_zero() -> None:
    routes = {"/viewer": Route(status=302, redirect="/viewer/app", body=b"",
                               content_type="text/plain"),
              "/viewer/app": Route(body=HTML, content_type="text/html")}
    with HTTPPeer(routes) as web:
        r = view(viewer_target(web.url("/viewer"), maxRedirects=0))
    assert not r.ok and r.reason == Reason.HTTP_STATUS


def test_redirect_loop_fails_within_the_deadline() -> None:
    with HTTPPeer(redirect_loop()) as web:
        t0 = time.monotonic()
        r = view(viewer_target(web.url("/loop/a"), timeout_ms=3000))
        elapsed = time.monotonic() - t0
        hits = sum(web.hits.values())
    assert not r.ok
    assert r.reason == Reason.HTTP_STATUS
    assert "redirect" in r.message
    assert hits == 6  # the first request and maxRedirects (5) more, then it gave up
    assert elapsed < 3.0


def test_slow_redirect_loop_is_cut_by_the_deadline() -> None:
    slow = {k: Route(status=302, redirect=v.redirect, body=b"", content_type="text/plain",
                     first_byte_delay=0.25)
            for k, v in redirect_loop().items()}
    timeout = 1.0
    with HTTPPeer(slow) as web:
        t0 = time.monotonic()
        r = view(viewer_target(web.url("/loop/a"), timeout_ms=int(timeout * 1000),
                               maxRedirects=20))
        elapsed = time.monotonic() - t0
    assert not r.ok
    assert r.reason == Reason.TIMEOUT, r.message
    assert timeout - 0.05 <= elapsed < 2 * timeout, elapsed  # at most twice the deadline


def test_worklist_is_not_fetched_unless_asked() -> None:
    # a worklist is patient data: worklistEndpoint alone does not make the agent read it
    routes = {"/viewer": Route(body=HTML, content_type="text/html"),
              "/worklist": Route(body=b'{"items": 3}')}
    with HTTPPeer(routes) as web:
        r = view(viewer_target(web.url("/viewer"), worklist_url=web.url("/worklist")))
        hits = dict(web.hits)
    assert r.ok, r.message
    assert hits == {"/viewer": 1}
    assert "worklist" not in r.phases


def test_worklist_endpoint_is_fetched_as_the_worklist_phase_when_asked() -> None:
    body = b'{"items": 3}'
    routes = {"/viewer": Route(body=HTML, content_type="text/html"),
              "/worklist": Route(body=body)}
    with HTTPPeer(routes) as web:
        r = view(viewer_target(web.url("/viewer"), worklist_url=web.url("/worklist"),
                               worklist=True))
        hits = dict(web.hits)
    assert r.ok, r.message
    assert hits.get("/worklist") == 1
    assert r.phases["worklist"] > 0
    assert r.duration == pytest.approx(sum(r.phases.values()))
    # status and size only: nothing of the content
    assert r.facts == Facts(http_status=200, worklist_status=200, worklist_bytes=len(body))


def test_large_worklist_is_counted_not_kept_and_not_a_failure() -> None:
    # larger than the 1 MiB cap a kept body has: a worklist is streamed and discarded
    body = b"x" * (3 * 1024 * 1024 + 17)
    routes = {"/viewer": Route(body=HTML, content_type="text/html"),
              "/worklist": Route(body=body)}
    with HTTPPeer(routes) as web:
        r = view(viewer_target(web.url("/viewer"), worklist_url=web.url("/worklist"),
                               worklist=True))
    assert r.ok, r.message
    assert r.facts.worklist_bytes == len(body)


def test_slow_worklist_is_bounded_by_the_deadline() -> None:
    routes = {"/viewer": Route(body=HTML, content_type="text/html"),
              "/worklist": Route(body=b"y" * 200, drip_interval=0.05)}
    with HTTPPeer(routes) as web:
        t0 = time.monotonic()
        r = view(viewer_target(web.url("/viewer"), worklist_url=web.url("/worklist"),
                               worklist=True, timeout_ms=1000))
        elapsed = time.monotonic() - t0
    assert not r.ok and r.reason == Reason.TIMEOUT, r.message
    assert elapsed < 2.5
    assert "worklist" in r.phases


def test_failing_worklist_fails_the_viewer_check() -> None:
    routes = {"/viewer": Route(body=HTML, content_type="text/html"),
              "/worklist": Route(status=500)}
    with HTTPPeer(routes) as web:
        r = view(viewer_target(web.url("/viewer"), worklist_url=web.url("/worklist"),
                               worklist=True))
    assert not r.ok
    assert r.reason == Reason.HTTP_STATUS
    assert "worklist" in r.message
    assert "worklist" in r.phases


# -- name resolution: once, bounded, and the resolved address is what is dialled ---------------


class Lookups:
    """Wraps the real socket.getaddrinfo: records (host, thread name); names in `hang` block
    until released (a resolver that does not answer)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hang: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, str]] = []
        self.release = threading.Event()
        real = socket.getaddrinfo
        self.hang = hang

        def wrapped(host: Any, *args: Any, **kw: Any) -> Any:
            self.calls.append((str(host), threading.current_thread().name))
            if host in self.hang:
                self.release.wait(10)
            return real(host, *args, **kw)

        monkeypatch.setattr(socket, "getaddrinfo", wrapped)

    def of(self, host: str) -> list[str]:
        return [thread for h, thread in self.calls if h == host]


def test_a_name_is_resolved_once_by_the_bounded_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = Lookups(monkeypatch)
    with HTTPPeer({"/viewer": Route(body=HTML, content_type="text/html")}) as web:
        r = view(viewer_target(f"http://localhost:{web.port}/viewer"))
        [rec] = web.received
    assert r.ok, r.message
    threads = lookups.of("localhost")
    assert len(threads) == 1, lookups.calls  # not again inside the HTTP client
    assert threads[0].startswith("dns")  # on the resolver pool, waited for with the deadline
    assert "dns" in r.phases and "connect" in r.phases
    assert rec.headers.get("Host") == f"localhost:{web.port}"  # the name, not the address


def test_a_redirect_to_another_host_is_resolved_the_same_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookups = Lookups(monkeypatch)
    with HTTPPeer({"/landing": Route(body=HTML, content_type="text/html")}) as other, HTTPPeer(
        {"/viewer": Route(status=302, redirect=f"http://localhost:{other.port}/landing",
                          body=b"", content_type="text/plain")}
    ) as web:
        r = view(viewer_target(web.url("/viewer")))
        hits = dict(other.hits)
    assert r.ok, r.message
    assert hits == {"/landing": 1}
    threads = lookups.of("localhost")
    assert len(threads) == 1 and threads[0].startswith("dns"), lookups.calls


def test_a_redirect_to_a_name_that_never_resolves_ends_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookups = Lookups(monkeypatch, hang=("hung.example",))
    try:
        with HTTPPeer({"/viewer": Route(status=302, redirect="http://hung.example/x", body=b"",
                                        content_type="text/plain")}) as web:
            t0 = time.monotonic()
            r = view(viewer_target(web.url("/viewer"), timeout_ms=800))
            elapsed = time.monotonic() - t0
    finally:
        lookups.release.set()
    assert not r.ok and r.reason == Reason.DNS, r.message
    assert elapsed < 1.5, elapsed
