"""The one exception → Reason table (probes.net.reasons) that the DICOM and HTTP paths share.

Every row of the table is hit by a case below, and the test fails if a row is added without one.
The rows' exceptions are built here as the socket and ssl modules (and probes.http1) raise
them; the end-to-end behaviour against real peers is in
test_faults_dicom/http and test_tls_*. A real refused connect on loopback gives the same reason
raw (the table) and through the HTTP probe's timed_get.
"""

from __future__ import annotations

import errno
import socket
import ssl

import pytest

from probes.base import Deadline, Phases, ProbeError, Reason
from probes.http_timing import timed_get
from probes.net.reasons import TABLE, ProtocolError, Row, Stage, Where, failure, lookup
from probes.specs import HttpEndpoint
from tests.helpers import LOOPBACK, free_port

WHERE = Where("DIMSE response", peer="10.0.0.7:104", host="pacs.example", budget=0.6)


def _ssl_error(reason: str) -> ssl.SSLError:
    e = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    e.reason = reason  # what OpenSSL's error queue sets on a real one
    return e


def _cert_error() -> ssl.SSLCertVerificationError:
    e = ssl.SSLCertVerificationError(1, "certificate verify failed")
    e.verify_message = "certificate has expired"
    return e


# (exception, stage, reason, message)
CASES: list[tuple[BaseException, Stage, Reason, str]] = [
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), Stage.RESOLVE,
     Reason.DNS, "pacs.example does not resolve"),
    (TimeoutError(), Stage.RESOLVE, Reason.DNS, "pacs.example: name resolution timed out"),
    (TimeoutError("timed out"), Stage.CONNECT, Reason.CONNECT_TIMEOUT,
     "TCP connect to 10.0.0.7:104 timed out"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), Stage.CONNECT,
     Reason.REFUSED, "connection refused by 10.0.0.7:104"),
    (TimeoutError(), Stage.HANDSHAKE, Reason.TIMEOUT, "TLS handshake timed out"),
    (TimeoutError(), Stage.SEND, Reason.TIMEOUT, "DIMSE response: send timed out"),
    (TimeoutError(), Stage.RECEIVE, Reason.TIMEOUT, "DIMSE response: no answer within 600 ms"),
    (_cert_error(), Stage.HANDSHAKE, Reason.TLS,
     "certificate verification failed: certificate has expired"),
    (_ssl_error("WRONG_VERSION_NUMBER"), Stage.HANDSHAKE, Reason.TLS,
     "TLS handshake failed: no TLS version in common (see config.tls.minVersion)"),
    (_ssl_error("SSLV3_ALERT_HANDSHAKE_FAILURE"), Stage.HANDSHAKE, Reason.TLS,
     "TLS handshake failed: SSLError"),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), Stage.HANDSHAKE,
     Reason.TLS, "TLS handshake failed: ConnectionResetError"),
    (_ssl_error("TLSV13_ALERT_CERTIFICATE_REQUIRED"), Stage.RECEIVE, Reason.TLS,
     "DIMSE response: the peer ended TLS with alert 'certificate required'"),
    (_ssl_error("SSLV3_ALERT_CLOSE_NOTIFY"), Stage.RECEIVE, Reason.ABORTED,
     "DIMSE response: TLS connection broken"),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), Stage.SEND, Reason.ABORTED,
     "DIMSE response: TLS connection broken"),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), Stage.RECEIVE,
     Reason.ABORTED, "DIMSE response: connection reset by peer"),
    (BrokenPipeError(errno.EPIPE, "Broken pipe"), Stage.SEND, Reason.ABORTED,
     "DIMSE response: connection reset by peer"),
    (EOFError(), Stage.RECEIVE, Reason.ABORTED, "DIMSE response: peer closed the connection"),
    (ProtocolError("malformed header line"), Stage.RECEIVE, Reason.INVALID_RESPONSE,
     "DIMSE response: malformed response"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), Stage.CONNECT, Reason.ERROR,
     "connect to 10.0.0.7:104 failed: No route to host"),
    (OSError(errno.EBADF, "Bad file descriptor"), Stage.RECEIVE, Reason.ERROR,
     "DIMSE response failed: Bad file descriptor"),
]


@pytest.mark.parametrize(("exc", "stage", "reason", "message"), CASES)
def test_row(exc: BaseException, stage: Stage, reason: Reason, message: str) -> None:
    err = failure(exc, stage, WHERE)
    assert (err.reason, err.message) == (reason, message)


def test_every_row_has_a_case() -> None:
    hit: list[Row] = []
    for exc, stage, _, _ in CASES:
        found = lookup(exc, stage)
        assert found is not None, (exc, stage)
        hit.append(found[0])
    missing = [row for row in TABLE if row not in hit]
    assert not missing, [(r.exc.__name__, sorted(s.name for s in r.stages)) for r in missing]


def test_an_error_no_row_knows_is_error_naming_its_type() -> None:
    assert lookup(ValueError("x"), Stage.RECEIVE) is None
    err = failure(ValueError("x"), Stage.RECEIVE, WHERE)
    assert (err.reason, err.message) == (Reason.ERROR, "DIMSE response failed: ValueError")


def test_a_socket_error_is_judged_as_itself_not_by_what_was_being_handled() -> None:
    # a reset met while a timeout was being handled (e.g. sending A-ABORT after one)
    try:
        try:
            raise TimeoutError
        except TimeoutError:
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer") from None
    except ConnectionResetError as e:
        err = failure(e, Stage.RECEIVE, WHERE)
    assert err.reason == Reason.ABORTED


def test_a_real_refused_connect_raw_and_through_the_http_probe_gives_the_same_reason() -> None:
    port = free_port()
    with socket.socket() as s, pytest.raises(ConnectionRefusedError) as raw:
        s.settimeout(5)
        s.connect((LOOPBACK, port))
    url = f"http://{LOOPBACK}:{port}/"
    with pytest.raises(ProbeError) as http:
        timed_get(HttpEndpoint(url), url, Deadline(5), Phases())
    where = Where("HTTP request", peer=f"{LOOPBACK}:{port}")
    err = failure(raw.value, Stage.CONNECT, where)
    expected = (Reason.REFUSED, f"connection refused by {where.peer}")
    assert (err.reason, err.message) == expected
    assert (http.value.reason, http.value.message) == expected
