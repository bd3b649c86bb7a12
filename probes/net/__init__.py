"""The protocol-neutral network layer under the DICOM and HTTP probes.

resolver  name resolution bounded by the deadline, on a resolver pool closed by its owner
connect   TCP connect within the deadline; `connect` is the kernel's SYN → SYN-ACK time
tls       TLS handshake within the deadline; leaf and earliest chain expiry, TLS version
stream    deadline-bounded, kernel-timestamped reads and writes on a connected socket
reasons   the one table from network exceptions to probes.base.Reason
waits     every wait above: a poll on a thread of its own, a parked run on the probe loop
"""

from probes.net.connect import open_socket
from probes.net.reasons import Stage, Where, failure
from probes.net.resolver import close_resolver, resolve
from probes.net.stream import TimedStream, enable_rx_timestamps
from probes.net.tls import peer_cert_info, tls_handshake, tls_settings_message

__all__ = [
    "Stage",
    "TimedStream",
    "Where",
    "close_resolver",
    "enable_rx_timestamps",
    "failure",
    "open_socket",
    "peer_cert_info",
    "resolve",
    "tls_handshake",
    "tls_settings_message",
]
