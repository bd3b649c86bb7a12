"""dicomweb against a real DICOMweb server: Orthanc with its DICOMweb plugin (Debian's orthanc and
orthanc-dicomweb), on 127.0.0.1 with a generated config and a study loaded through its REST API;
and small HTTP peers for what a healthy Orthanc will not do (match a query that matches nobody,
redirect to another origin)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from agent.runner import run_probe
from probes.base import Facts, Reason
from tests.helpers import LOOPBACK, free_port, wait_until
from tests.helpers.agent_cli import run_agent
from tests.helpers.config import plan, target
from tests.helpers.dicom_scp import study, write_instance
from tests.helpers.http_servers import HTTPPeer, Route
from tests.helpers.processes import stop_group

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")
USER, PASSWORD = "probe", "dw-Pw-7731-unique"
CANARY_UID = "1.2.826.0.1.3680043.10.1082.88.1"
# planted in the stored instances: they cross the wire in QIDO/WADO responses and must not come out
PHI_NAME = "ZZDWPHI^LEAK"
PHI_ID = "ZZDWPID7731"


def _plugin() -> str:
    for d in PLUGIN_DIRS:
        for name in ("libOrthancDicomWeb.so",):
            p = Path(d) / name
            if p.exists():
                return str(p)
    raise AssertionError("Orthanc's DICOMweb plugin not found (apt-get install orthanc-dicomweb)")


class Orthanc:
    """Orthanc with DICOMweb on free loopback ports, its database in a temporary directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.http_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "orthanc.log"

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            return True
        try:
            return httpx.get(self.base + "/system", auth=(USER, PASSWORD), timeout=1).is_success
        except httpx.HTTPError:
            return False

    def __enter__(self) -> Orthanc:
        binary = shutil.which("Orthanc")
        assert binary, "Orthanc not found on PATH (apt-get install orthanc orthanc-dicomweb)"
        db = self.workdir / "db"
        db.mkdir(parents=True, exist_ok=True)
        log = self.log.open("ab")
        for _ in range(3):
            self.http_port, dicom_port = free_port(), free_port()
            cfg = self.workdir / "orthanc.json"
            cfg.write_text(
                json.dumps(
                    {
                        "Name": "PACS-HEALTH-TEST",
                        "StorageDirectory": str(db),
                        "IndexDirectory": str(db),
                        "HttpPort": self.http_port,
                        "DicomPort": dicom_port,
                        "RemoteAccessAllowed": False,  # loopback clients only
                        "AuthenticationEnabled": True,
                        "RegisteredUsers": {USER: PASSWORD},
                        "Plugins": [_plugin()],
                        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
                    }
                )
            )
            self.proc = subprocess.Popen(
                [binary, str(cfg)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            wait_until(self._ready, 30, 0.1, "Orthanc answering /system")
            if self.proc.poll() is None:
                return self
        raise AssertionError("Orthanc did not start:\n" + self.log.read_text(errors="replace"))

    def load(self, study_uid: str, instances: int) -> None:
        """Store `instances` synthetic instances of one study through Orthanc's REST API."""
        st = study(PHI_ID, PHI_NAME, study_uid=study_uid, accession="ZZDWACC")
        for i in range(instances):
            f = self.workdir / f"i{i}.dcm"
            write_instance(f, st)
            r = httpx.post(
                self.base + "/instances", content=f.read_bytes(), auth=(USER, PASSWORD), timeout=10
            )
            assert r.is_success, r.text

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_group(self.proc, grace=15)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with Orthanc(tmp_path_factory.mktemp("orthanc")) as o:
        o.load(CANARY_UID, 3)
        o.load(generate_uid(), 1)  # another study the canary query must not return
        yield o


def dw_target(base: str, **dw: Any) -> dict[str, Any]:
    block = {"endpoint": base, **dw}
    return target(port=11112, only=("dicomweb",), probes={"dicomweb": block})


def creds() -> dict[str, Any]:
    return {"credentials": {"username": USER, "password": PASSWORD}}


def assert_no_phi(*texts: str) -> None:
    for text in texts:
        for marker in (PHI_NAME, "ZZDWPHI", PHI_ID, "ZZDWACC"):
            assert marker not in text


def test_canary_found_by_qido_and_its_metadata_by_wado(orthanc: Orthanc) -> None:
    r = run_probe(
        plan(dw_target(orthanc.base + "/dicom-web", studyInstanceUID=CANARY_UID, **creds())),
        "dicomweb",
    )
    assert r.ok, r.message
    assert r.facts == Facts(matches=1, instances=3)
    assert r.message == "QIDO-RS and WADO-RS successful: 3 instances"
    assert {"connect", "first_byte", "transfer", "metadata"} <= set(r.phases)
    # `transfer` is wire time from the segment ending the headers to the one ending the body:
    # 0 when one segment carried both (a small answer on loopback)
    assert all(v > 0 for k, v in r.phases.items() if k != "transfer"), r.phases
    assert r.phases["transfer"] >= 0
    assert_no_phi(repr(r))


def test_without_a_canary_a_query_that_matches_nobody(orthanc: Orthanc) -> None:
    r = run_probe(plan(dw_target(orthanc.base + "/dicom-web/", **creds())), "dicomweb")
    assert r.ok, r.message
    assert r.facts == Facts(matches=0)
    assert "metadata" not in r.phases


def test_unknown_canary_is_unexpected_result(orthanc: Orthanc) -> None:
    r = run_probe(
        plan(dw_target(orthanc.base + "/dicom-web", studyInstanceUID="1.2.3.4.5.6", **creds())),
        "dicomweb",
    )
    assert not r.ok and r.reason == Reason.UNEXPECTED_RESULT
    assert "canary study was not found" in r.message


def test_without_credentials_orthanc_answers_401(orthanc: Orthanc) -> None:
    r = run_probe(plan(dw_target(orthanc.base + "/dicom-web")), "dicomweb")
    assert not r.ok and r.reason == Reason.HTTP_STATUS
    assert "401" in r.message


def test_api_credentials_only_when_asked(orthanc: Orthanc) -> None:
    # config.credentials belong to apiEndpoint; dicomweb reuses them only with useApiCredentials
    t = dw_target(orthanc.base + "/dicom-web", useApiCredentials=True)
    t["config"]["credentials"] = {"username": USER, "password": PASSWORD}
    t["sectraConfig"] = {"apiEndpoint": orthanc.base}
    assert run_probe(plan(t), "dicomweb").ok
    t["probes"]["dicomweb"].pop("useApiCredentials")
    r = run_probe(plan(t), "dicomweb")
    assert not r.ok and "401" in r.message


def test_agent_probe_once_passes_against_orthanc(orthanc: Orthanc, tmp_path: Path) -> None:
    cfg = tmp_path / "dw.json"
    t = dw_target(
        orthanc.base + "/dicom-web",
        studyInstanceUID=CANARY_UID,
        credentials={"username": USER, "password": "${DW_PASSWORD}"},
    )
    cfg.write_text(json.dumps({"targets": [t]}))
    r = run_agent(
        "probe",
        "--once",
        "--config",
        str(cfg),
        "--output",
        "json",
        extra_env={"DW_PASSWORD": PASSWORD},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    [tj] = json.loads(r.stdout)["targets"]
    [check] = tj["checks"]
    assert check["name"] == "dicomweb" and check["status"] == "PASS"
    assert check["matches"] == 1
    assert PASSWORD not in r.stdout + r.stderr
    assert_no_phi(r.stdout, r.stderr)


# -- what a healthy Orthanc will not do --------------------------------------------------------


def _study_json(uid: str) -> bytes:
    return json.dumps(
        [
            {
                "0020000D": {"vr": "UI", "Value": [uid]},
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": PHI_NAME}]},
            }
        ]
    ).encode()


def test_a_match_for_a_query_that_matches_nobody_fails() -> None:
    body = _study_json("1.2.3.4")
    peer = HTTPPeer({"/dw/studies": Route(body=body, content_type="application/dicom+json")})
    peer.start()
    try:
        r = run_probe(plan(dw_target(peer.url("/dw"))), "dicomweb")
    finally:
        peer.stop()
    assert not r.ok and r.reason == Reason.UNEXPECTED_RESULT
    assert "1 studies for a query that matches nobody" in r.message
    assert_no_phi(repr(r))
    [req] = peer.received
    assert "PatientID=PACS-HEALTH-NO-MATCH-0000" in req.path
    assert req.headers.get("Accept") == "application/dicom+json"


def test_a_study_other_than_the_canary_fails() -> None:
    peer = HTTPPeer(
        {"/dw/studies": Route(body=_study_json("9.9.9"), content_type="application/dicom+json")}
    )
    peer.start()
    try:
        r = run_probe(plan(dw_target(peer.url("/dw"), studyInstanceUID=CANARY_UID)), "dicomweb")
    finally:
        peer.stop()
    assert not r.ok and r.reason == Reason.UNEXPECTED_RESULT
    assert "not the one asked for" in r.message


def test_secrets_do_not_follow_a_redirect_to_another_origin() -> None:
    other = HTTPPeer({"/dw/studies": Route(body=b"[]", content_type="application/dicom+json")})
    other.start()
    home = HTTPPeer({"/dw/studies": Route(redirect=other.url("/dw/studies"))})
    home.start()
    try:
        t = dw_target(home.url("/dw"), **creds(), headers={"X-DW-Key": "dw-key-7731"})
        r = run_probe(plan(t), "dicomweb")
    finally:
        home.stop()
        other.stop()
    assert r.ok, r.message
    assert home.received[0].headers.get("X-DW-Key") == "dw-key-7731"
    assert "Authorization" in home.received[0].headers
    [away] = other.received
    assert "X-DW-Key" not in away.headers and "Authorization" not in away.headers


def test_endpoint_is_required_and_the_probe_is_off_unless_configured() -> None:
    from agent.config import ConfigError

    with pytest.raises(ConfigError, match="endpoint"):
        plan(target(port=11112, probes={"dicomweb": {"studyInstanceUID": CANARY_UID}}))
    assert "dicomweb" not in plan(target(port=11112)).probes


def test_a_compressed_body_is_inflated_within_the_limit() -> None:
    # a server that compresses despite Accept-Encoding: identity; a small gzip may inflate hugely
    import gzip

    from probes.dicomweb import _decoded
    from probes.http_timing import HttpResponse

    def rsp(body: bytes) -> HttpResponse:
        return HttpResponse(200, httpx.Headers({"Content-Encoding": "gzip"}), body, "", None)

    assert _decoded(rsp(gzip.compress(b"[]")), "QIDO-RS") == b"[]"
    bomb = gzip.compress(b"0" * (40 * 1024 * 1024))
    assert len(bomb) < 100_000
    with pytest.raises(Exception, match="inflates past the limit"):
        _decoded(rsp(bomb), "QIDO-RS")
