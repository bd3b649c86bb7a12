"""The echo, TLS and fault basics against DCMTK's storescp: an implementation that shares nothing
with the agent (nor with pynetdicom), so a misreading common to the probe and the pynetdicom test
peers cannot hide here. Includes a client certificate to a DICOM-TLS PACS that requires one.

storescp runs in fork mode on a port it binds itself; readiness is a plain TCP accept (each
connection gets its own child, so the check does not block the next association).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.runner import run_probe
from probes.base import Reason
from tests.helpers import LOOPBACK, bind_retry, free_port, port_accepts, wait_until
from tests.helpers.config import plan, target
from tests.helpers.dicom_scp import _tool
from tests.helpers.processes import stop_group
from tests.helpers.tls import Leaf, TLSMaterial, not_after_of

AET = "DCMTK_SCP"


def _up(proc: subprocess.Popen[bytes], port: int) -> Callable[[], bool]:
    return lambda: proc.poll() is not None or port_accepts(LOOPBACK, port)


@contextmanager
def storescp(workdir: Path, *extra: str) -> Iterator[int]:
    """DCMTK storescp (fork mode) with `extra` options; yields its port; stopped at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "storescp.log").open("ab")
    proc: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(3):  # the free port can be taken between probing and binding
            port = free_port()
            proc = subprocess.Popen(
                [
                    _tool("storescp"),
                    "--fork",
                    "-aet",
                    AET,
                    "-od",
                    str(workdir),
                    "-ta",
                    "5",
                    *extra,
                    str(port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            wait_until(_up(proc, port), 15, 0.05, "storescp listening")
            if proc.poll() is None:
                break
        else:
            raise AssertionError((workdir / "storescp.log").read_text(errors="replace"))
        yield port
    finally:
        if proc is not None:
            stop_group(proc)
        log.close()


def echo(port: int, **config: Any) -> Any:
    t = target(
        "dcmtk",
        port=port,
        called_aet=AET,
        only=("dicom_echo",),
        timeout_ms=3000,
        config=config or None,
    )
    return run_probe(plan(t), "dicom_echo")


def pem_files(leaf: Leaf, directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    leaf.cert.cert_chain_pems[0].write_to_path(str(cert))
    leaf.cert.private_key_pem.write_to_path(str(key))
    return cert, key


def test_echo_against_dcmtk(tmp_path: Path) -> None:
    with storescp(tmp_path) as port:
        r = echo(port)
    assert r.ok, r.message
    assert {"connect", "associate", "dimse", "release"} <= set(r.phases), r.phases


def test_dcmtk_refusing_the_association_is_rejected(tmp_path: Path) -> None:
    with storescp(tmp_path, "--refuse") as port:
        r = echo(port)
    assert not r.ok and r.reason == Reason.REJECTED, (r.reason, r.message)
    assert "associate" in r.phases and "dimse" not in r.phases


def test_dcmtk_stopped_is_refused(tmp_path: Path) -> None:
    with storescp(tmp_path) as port:
        assert echo(port).ok
    # hold the released port bound (not listening) so nothing else answers on it
    with socket.socket() as hold:
        bind_retry(lambda: hold.bind((LOOPBACK, port)))
        r = echo(port)
    assert not r.ok and r.reason == Reason.REFUSED, (r.reason, r.message)


def test_dcmtk_requiring_an_implementation_class_uid_accepts_the_agent(tmp_path: Path) -> None:
    # storescp --reject refuses an A-ASSOCIATE-RQ without an Implementation Class UID: the
    # agent's request carries one (PS3.7 D.3.3.2 makes it mandatory)
    with storescp(tmp_path, "--reject") as port:
        r = echo(port)
    assert r.ok, r.message


# -- DICOM TLS --------------------------------------------------------------------------------


def test_tls_echo_against_dcmtk(tls_material: TLSMaterial, tmp_path: Path) -> None:
    leaf = tls_material.good()
    cert, key = pem_files(leaf, tmp_path, "server")
    with storescp(tmp_path, "+tls", str(key), str(cert), "-ic") as port:
        r = echo(port, enableTLS=True, tls={"caFile": str(tls_material.ca_file)})
        wrong = echo(port, enableTLS=True, tls={"caFile": str(tls_material.other_ca_file)})
    assert r.ok, r.message
    assert "tls" in r.phases
    assert r.tls is not None and r.tls.leaf_not_after == not_after_of(
        leaf.cert.cert_chain_pems[0].bytes()
    )
    assert not wrong.ok and wrong.reason == Reason.TLS, (wrong.reason, wrong.message)


def test_client_certificate_to_a_dicom_tls_pacs_that_requires_one(
    tls_material: TLSMaterial, tmp_path: Path
) -> None:
    """storescp verifies client certificates against the test CA and fails without one."""
    server = tls_material.good()
    cert, key = pem_files(server, tmp_path, "server")
    client = tls_material.ca.issue_cert("pacs-health-agent.example")
    ccert, ckey = tmp_path / "client.crt", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(ccert))
    client.private_key_pem.write_to_path(str(ckey))
    ca = str(tls_material.ca_file)
    with storescp(tmp_path, "+tls", str(key), str(cert), "-rc", "+cf", ca) as port:
        with_cert = echo(
            port, enableTLS=True, tls={"caFile": ca, "certFile": str(ccert), "keyFile": str(ckey)}
        )
        without = echo(port, enableTLS=True, tls={"caFile": ca})
    assert with_cert.ok, with_cert.message
    assert not without.ok, without.message
    # the PACS ends the handshake (TLS 1.3: right after it) for want of a certificate
    assert without.reason in (Reason.TLS, Reason.ABORTED), (without.reason, without.message)


@pytest.mark.parametrize(
    ("server_max", "client_min", "ok"),
    [
        (ssl.TLSVersion.TLSv1_2, "1.3", False),
        (ssl.TLSVersion.TLSv1_3, "1.3", True),
        (ssl.TLSVersion.TLSv1_2, "1.2", True),
    ],
)
def test_dicom_tls_min_version(
    tls_material: TLSMaterial, server_max: ssl.TLSVersion, client_min: str, ok: bool
) -> None:
    """`tls.minVersion: "1.3"` on the DICOM side: a PACS that stops at TLS 1.2 is refused."""
    from tests.helpers import hostile_peers as hp

    ctx = tls_material.good().server_context()
    ctx.maximum_version = server_max
    with hp.ScriptServer(hp.echo_ok, ssl_context=ctx) as s:
        r = echo(
            s.port,
            enableTLS=True,
            tls={"caFile": str(tls_material.ca_file), "minVersion": client_min},
        )
        assert s.errors == []
    assert r.ok is ok, (r.reason, r.message)
    if not ok:
        assert r.reason == Reason.TLS, (r.reason, r.message)


def test_dcmqrscp_rejects_an_unknown_called_ae_title(tmp_path: Path) -> None:
    """dcmqrscp only accepts the AE titles of its AETable: another is A-ASSOCIATE-RJ."""
    from tests.helpers.dicom_scp import Dcmqrscp

    with Dcmqrscp(tmp_path / "qr", []) as qr:
        good = run_probe(
            plan(target("qr", port=qr.port, called_aet="QRSCP", only=("dicom_echo",))), "dicom_echo"
        )
        wrong = run_probe(
            plan(target("qr", port=qr.port, called_aet="NOT_QRSCP", only=("dicom_echo",))),
            "dicom_echo",
        )
    assert good.ok, good.message
    assert not wrong.ok and wrong.reason == Reason.REJECTED, (wrong.reason, wrong.message)
