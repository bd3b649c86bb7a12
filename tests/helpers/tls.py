"""Certificates for the TLS tests, made with trustme: a CA and leaves that are good, EXPIRED,
expiring in 5 days, or issued for another host name.

trustme's `issue_cert` takes `not_before`/`not_after`; an intermediate CA's validity it does not
take, so `chain_with_intermediate_expiring_in` re-signs trustme's intermediate with `cryptography`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


@dataclass
class Leaf:
    """A server certificate with its key, usable by an ssl server context."""

    cert: trustme.LeafCert
    not_after: float  # unix time, from the certificate itself
    # earliest notAfter of the whole chain a client verifies (leaf, intermediates, root)
    earliest_not_after: float

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.cert.configure_cert(ctx)
        return ctx


def not_after_of(pem: bytes) -> float:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


class TLSMaterial:
    """One CA (its PEM written to `ca_file`) and the leaves the tests need."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        # A second, unrelated CA: "the wrong CA" for verification failures.
        self.other_ca = trustme.CA()
        self.other_ca_file = directory / "other-ca.pem"
        self.other_ca.cert_pem.write_to_path(str(self.other_ca_file))

    def leaf(
        self,
        *names: str,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> Leaf:
        cert = self.ca.issue_cert(
            *(names or LOOPBACK_NAMES), not_before=not_before, not_after=not_after
        )
        return _leaf(cert, self.ca)

    def good(self) -> Leaf:
        now = datetime.now(UTC)
        return self.leaf(not_before=now - timedelta(days=1), not_after=now + timedelta(days=365))

    def expired(self) -> Leaf:
        now = datetime.now(UTC)
        return self.leaf(not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))

    def expiring_in(self, days: float) -> Leaf:
        now = datetime.now(UTC)
        return self.leaf(not_before=now - timedelta(days=1), not_after=now + timedelta(days=days))

    def for_other_host(self) -> Leaf:
        """Valid, from the right CA, but for a name that is not the one we connect to."""
        return self.leaf("pacs.other.example")

    def chain_with_intermediate_expiring_in(self, days: float) -> tuple[Leaf, float]:
        """A leaf valid for a year, issued by an intermediate (under `ca`) that expires in `days`.

        Returns the leaf (its server context sends leaf + intermediate) and the intermediate's
        expiry (unix time).
        """
        now = datetime.now(UTC)
        inter = self.ca.create_child_ca()
        _resign(inter, self.ca, not_after=now + timedelta(days=days))
        cert = inter.issue_cert(
            *LOOPBACK_NAMES, not_before=now - timedelta(days=1), not_after=now + timedelta(days=365)
        )
        return _leaf(cert, self.ca), not_after_of(inter.cert_pem.bytes())


def _leaf(cert: trustme.LeafCert, root: trustme.CA) -> Leaf:
    chain = [not_after_of(p.bytes()) for p in cert.cert_chain_pems]
    return Leaf(cert, chain[0], min([*chain, not_after_of(root.cert_pem.bytes())]))


def _resign(child: trustme.CA, parent: trustme.CA, *, not_after: datetime) -> None:
    """Give trustme's intermediate another notAfter: same subject, key and extensions, signed
    again by its parent (trustme keeps both in private attributes; test-only)."""
    old: x509.Certificate = child._certificate
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.issuer)
        .public_key(old.public_key())
        .serial_number(old.serial_number)
        .not_valid_before(old.not_valid_before_utc)
        .not_valid_after(not_after)
    )
    for ext in old.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    child._certificate = builder.sign(parent._private_key, hashes.SHA256())
