"""TLS on a connected socket within the deadline, and what the peer's certificates say.

Used by the DICOM path (tls_handshake on our own socket) and the HTTP path (peer_cert_info on the
TLS object httpcore hands out), so both report the same expiry and version.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

from probes.base import Deadline, Phases, Reason, TLSInfo
from probes.net.reasons import Stage, Where, failure
from probes.net.waits import READ, WRITE, wait_fd


def tls_settings_message(e: BaseException) -> str:
    """Why the TLS settings could not be used, naming the file that could not be read."""
    if isinstance(e, OSError) and e.filename is not None and not isinstance(e, ssl.SSLError):
        return f"TLS settings unusable: cannot read {e.filename}: {e.strerror or type(e).__name__}"
    return f"TLS settings unusable: {type(e).__name__}"


def tls_handshake(
    sock: socket.socket,
    context: ssl.SSLContext,
    server_hostname: str | None,
    deadline: Deadline,
    phases: Phases,
) -> tuple[ssl.SSLSocket, TLSInfo | None]:
    """Wrap and handshake within the deadline; return the socket and the peer's cert expiry."""
    tls = context.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)
    try:
        deadline.left_or_raise(Reason.TIMEOUT, "TLS handshake")
        t0 = time.perf_counter()
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                events = READ
            except ssl.SSLWantWriteError:
                events = WRITE
            if not wait_fd(tls, events, deadline.left_or_raise(Reason.TIMEOUT, "TLS handshake")):
                raise TimeoutError("timed out")
        phases.add("tls", time.perf_counter() - t0)
    except OSError as e:  # ssl.SSLError and socket timeouts are OSErrors
        tls.close()
        raise failure(e, Stage.HANDSHAKE, Where("TLS handshake")) from None
    except BaseException:  # the deadline gone: wrap_socket took over the descriptor, close it
        tls.close()
        raise
    return tls, peer_cert_info(tls)


# DER encoding for _ssl.Certificate.public_bytes (the private chain API hands those out)
_ENCODING_DER = getattr(getattr(ssl, "_ssl", None), "ENCODING_DER", 2)


def verified_chain_der(tls: Any) -> list[bytes]:
    """DER of the peer's verified chain, leaf first; [] where Python cannot tell.

    `tls` is an ssl.SSLSocket or the _ssl object under it (what httpcore hands out). The public
    SSLSocket.get_verified_chain() exists from Python 3.13; the _ssl object has had its own since
    3.10 (private, returns Certificate objects).
    """
    for owner in (tls, getattr(tls, "_sslobj", None)):
        get = getattr(owner, "get_verified_chain", None) if owner is not None else None
        if get is None:
            continue
        try:
            return [
                c if isinstance(c, bytes) else bytes(c.public_bytes(_ENCODING_DER))
                for c in get() or []
            ]
        except (ssl.SSLError, ValueError, AttributeError, TypeError):
            return []
    return []


_TLS_VERSIONS = {
    "TLSv1": "TLS 1.0",
    "TLSv1.1": "TLS 1.1",
    "TLSv1.2": "TLS 1.2",
    "TLSv1.3": "TLS 1.3",
}


def tls_version_label(tls: Any) -> str | None:
    """The negotiated version as blackbox_exporter labels it ("TLS 1.3"); a bounded set."""
    try:
        raw = tls.version()
    except (AttributeError, ValueError, ssl.SSLError):
        return None
    return _TLS_VERSIONS.get(raw, "other") if raw else None


def peer_cert_info(tls: Any) -> TLSInfo | None:
    """Leaf expiry, earliest expiry over the verified chain (an intermediate or root can expire
    before the leaf) and the negotiated version; leaf only where the chain is not available."""
    from cryptography import x509

    leaf = tls.getpeercert(True)  # positional: the _ssl object takes no keyword
    if not leaf:
        return None
    ders = [leaf, *verified_chain_der(tls)]
    expiries = [x509.load_der_x509_certificate(d).not_valid_after_utc.timestamp() for d in ders]
    return TLSInfo(
        leaf_not_after=expiries[0],
        earliest_not_after=min(expiries),
        version=tls_version_label(tls),
    )
