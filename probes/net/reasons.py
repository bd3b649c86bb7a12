"""One table from network exceptions to probes.base.Reason, shared by the DICOM and HTTP paths.

The same fault must get the same reason whichever protocol met it, so the probes do not each
catch socket errors their own way: they say at which stage the exception came (resolving,
connecting, the TLS handshake, sending, receiving) and `failure()` looks it up in `TABLE`.

Lookup: the exception and its causes (a wrapper raised from the socket's error)
are tried from the innermost out, so the operating system's own error decides where there is one;
for each, its classes are tried from the most specific (its MRO), and the first row naming that
class, the stage, and whose condition holds wins. Rows for a base class (OSError) are fallbacks.
"""

from __future__ import annotations

import enum
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from probes.base import ProbeError, Reason


class ProtocolError(Exception):
    """A peer's bytes that break the protocol it should speak (probes.http1 raises it)."""


class Stage(enum.Enum):
    RESOLVE = "name resolution"
    CONNECT = "connect"
    HANDSHAKE = "TLS handshake"
    SEND = "send"
    RECEIVE = "receive"


ANY = frozenset(Stage)
STREAM = frozenset({Stage.SEND, Stage.RECEIVE})  # the connection is up


@dataclass(frozen=True)
class Where:
    """What failed, for the message (never PHI or a secret: names, addresses, fixed words)."""

    what: str = "connection"  # the operation: "association", "DIMSE response", "HTTP request"
    peer: str = ""  # host:port that failed
    host: str = ""  # the name being resolved
    silence: str = ""  # how a missing answer is said ("no A-ASSOCIATE answer"); default below
    budget: float | None = None  # the deadline's length in seconds, named when no answer came


@dataclass(frozen=True)
class Row:
    exc: type[BaseException]
    stages: frozenset[Stage]
    reason: Reason
    message: Callable[[BaseException, Where], str]
    when: Callable[[BaseException], bool] | None = None  # a condition on the exception


def tls_failure_message(e: BaseException) -> str:
    """A handshake failure in words; no protocol version in common is named as such."""
    why = str(getattr(e, "reason", "") or "")
    if "VERSION" in why or "UNSUPPORTED_PROTOCOL" in why or "NO_PROTOCOLS" in why:
        return "TLS handshake failed: no TLS version in common (see config.tls.minVersion)"
    return f"TLS handshake failed: {type(e).__name__}"


def _alert(e: BaseException) -> str:
    return str(getattr(e, "reason", "") or "").upper()


def _peer_alert(e: BaseException) -> bool:
    """With TLS 1.3 a server that refuses our certificate (or wants one) says so with an alert
    only after the client's handshake has completed: a certificate problem, not a broken
    stream. close_notify is an orderly end, not a refusal."""
    alert = _alert(e)
    return "ALERT" in alert and "CLOSE_NOTIFY" not in alert


def _alert_name(e: BaseException) -> str:
    return _alert(e).split("ALERT_", 1)[-1].replace("_", " ").lower()


def _no_answer(w: Where) -> str:
    within = f"{w.budget * 1000:.0f} ms" if w.budget is not None else "the deadline"
    return f"{w.silence or w.what + ': no answer'} within {within}"


def _oserror(e: BaseException) -> str:
    return (e.strerror if isinstance(e, OSError) else None) or type(e).__name__


# Timeouts: the socket's own (a deadline found gone before a wait is a ProbeError already).
_TIMEOUTS: tuple[type[BaseException], ...] = (TimeoutError,)

TABLE: tuple[Row, ...] = (
    Row(socket.gaierror, ANY, Reason.DNS, lambda e, w: f"{w.host} does not resolve"),
    Row(TimeoutError, frozenset({Stage.RESOLVE}), Reason.DNS,
        lambda e, w: f"{w.host}: name resolution timed out"),
    *(Row(t, frozenset({Stage.CONNECT}), Reason.CONNECT_TIMEOUT,
          lambda e, w: f"TCP connect to {w.peer} timed out") for t in _TIMEOUTS),
    Row(ConnectionRefusedError, ANY, Reason.REFUSED,
        lambda e, w: f"connection refused by {w.peer}"),
    *(Row(t, frozenset({Stage.HANDSHAKE}), Reason.TIMEOUT,
          lambda e, w: "TLS handshake timed out") for t in _TIMEOUTS),
    *(Row(t, frozenset({Stage.SEND}), Reason.TIMEOUT,
          lambda e, w: f"{w.what}: send timed out") for t in _TIMEOUTS),
    *(Row(t, frozenset({Stage.RECEIVE}), Reason.TIMEOUT, lambda e, w: _no_answer(w))
      for t in _TIMEOUTS),
    Row(ssl.SSLCertVerificationError, ANY, Reason.TLS,
        lambda e, w: f"certificate verification failed: {getattr(e, 'verify_message', '')}"),
    Row(ssl.SSLError, frozenset({Stage.HANDSHAKE}), Reason.TLS,
        lambda e, w: tls_failure_message(e)),
    # a reset in the middle of the handshake: the peer would not do TLS with us
    Row(ConnectionResetError, frozenset({Stage.HANDSHAKE}), Reason.TLS,
        lambda e, w: tls_failure_message(e)),
    Row(ssl.SSLError, STREAM, Reason.TLS,
        lambda e, w: f"{w.what}: the peer ended TLS with alert '{_alert_name(e)}'",
        when=_peer_alert),
    Row(ssl.SSLError, STREAM, Reason.ABORTED, lambda e, w: f"{w.what}: TLS connection broken"),
    Row(ConnectionError, STREAM, Reason.ABORTED,
        lambda e, w: f"{w.what}: connection reset by peer"),
    Row(EOFError, STREAM, Reason.ABORTED, lambda e, w: f"{w.what}: peer closed the connection"),
    Row(ProtocolError, ANY, Reason.INVALID_RESPONSE, lambda e, w: f"{w.what}: malformed response"),
    Row(OSError, frozenset({Stage.CONNECT}), Reason.ERROR,
        lambda e, w: f"connect to {w.peer} failed: {_oserror(e)}"),
    Row(OSError, ANY, Reason.ERROR, lambda e, w: f"{w.what} failed: {_oserror(e)}"),
)


def _chain(e: BaseException) -> list[BaseException]:
    """e and the errors under it, innermost last. A library's wrapper is
    looked through to the error it was raised from (kept as the cause or context); an
    operating-system error is where the chain ends: its context would be an unrelated error
    that was being handled when it came."""
    out: list[BaseException] = []
    cause: BaseException | None = e
    while cause is not None and cause not in out and len(out) < 16:
        out.append(cause)
        if isinstance(cause, OSError):
            break
        cause = cause.__cause__ or cause.__context__
    return out


def lookup(e: BaseException, stage: Stage) -> tuple[Row, BaseException] | None:
    """The row that decides `e` at `stage`, and the exception of the chain it matched."""
    for link in reversed(_chain(e)):
        for cls in type(link).__mro__:
            for row in TABLE:
                if row.exc is cls and stage in row.stages and (row.when is None or row.when(link)):
                    return row, link
    return None


def failure(e: BaseException, stage: Stage, where: Where) -> ProbeError:
    """The ProbeError for an exception met at `stage`; `error` when no row knows it."""
    found = lookup(e, stage)
    if found is None:
        return ProbeError(Reason.ERROR, f"{where.what} failed: {type(e).__name__}")
    row, link = found
    return ProbeError(row.reason, row.message(link, where))
