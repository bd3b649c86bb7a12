"""Open, use and always close one timed DICOM association (shared by the DICOM probes)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from probes.base import Deadline, Phases, ProbeError, Reason, TLSInfo
from probes.dicom_wire import DicomAssociation
from probes.net import open_socket, tls_handshake, tls_settings_message
from probes.specs import DicomEndpoint, tls_context


class Session:
    """What a probe gets inside dicom_session(): the association (TLS details go to `on_tls`)."""

    def __init__(self, assoc: DicomAssociation) -> None:
        self.assoc = assoc


def open_connection(
    endpoint: DicomEndpoint, deadline: Deadline, phases: Phases
) -> tuple[socket.socket, TLSInfo | None]:
    """TCP connect (phase `connect`) and, for a TLS endpoint, the handshake (phase `tls`); the
    socket is closed when the handshake fails."""
    sock = open_socket(endpoint.host, endpoint.port, deadline, phases)
    if endpoint.tls is None:
        return sock, None
    try:
        try:
            ctx = tls_context(endpoint.tls)
        except (OSError, ValueError) as e:
            raise ProbeError(Reason.TLS, tls_settings_message(e)) from None
        return tls_handshake(
            sock, ctx, endpoint.tls.server_name or endpoint.host, deadline, phases
        )
    except BaseException:
        sock.close()
        raise


@contextmanager
def dicom_session(
    endpoint: DicomEndpoint,
    abstract_syntaxes: list[str],
    deadline: Deadline,
    phases: Phases,
    on_tls: Callable[[TLSInfo], None] | None = None,
    *,
    scp_roles: tuple[str, ...] = (),
    role_transfer_syntaxes: tuple[str, ...] = (),
) -> Iterator[Session]:
    """Connect (+TLS), associate, yield, release; abort and close on any failure.

    `scp_roles`: optional storage contexts we offer to take C-STOREs on (C-GET)."""
    sock, tls_info = open_connection(endpoint, deadline, phases)
    try:
        if tls_info is not None and on_tls is not None:
            on_tls(tls_info)
        assoc = DicomAssociation(sock, deadline, phases, max_pdu=endpoint.max_pdu)
        try:
            assoc.associate(
                endpoint.calling_aet, endpoint.called_aet, abstract_syntaxes,
                scp_roles=scp_roles, role_transfer_syntaxes=role_transfer_syntaxes,
            )
            yield Session(assoc)
            assoc.release()
        except BaseException:  # a probe failure, or the run being torn down
            assoc.abort()
            raise
    finally:
        try:
            sock.close()
        except OSError:
            pass
