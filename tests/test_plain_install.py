"""PLAIN INSTALL: the wheel installed with its declared dependencies only (no test extras), as the
container image and `make run` install it, probing real TLS peers.

The test extras pull in packages the runtime also imports (cryptography comes with trustme), so
the rest of the suite cannot notice a runtime import missing from [project.dependencies]. Here:
1. `pip wheel --no-deps` of this source tree;
2. a clean venv made `--without-pip`, the wheel installed into it WITHOUT extras (pip's cache or
   PyPI), checked to hold no test-only package;
3. this process starts an HTTPS server and a DICOM-TLS SCP on 127.0.0.1 with trustme certificates;
4. the installed `agent probe --once --output json` (outside the source tree, so only the wheel is
   importable) runs api_ping over HTTPS and dicom_echo over TLS: both must PASS.
Marked `plain_install`; it runs in `make test`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.config import target
from tests.helpers.dicom_scp import DicomSCP
from tests.helpers.http_servers import HTTPPeer, Route
from tests.helpers.tls import TLSMaterial

pytestmark = pytest.mark.plain_install

REPO = Path(__file__).resolve().parents[1]
INSTALL_TIMEOUT = 300


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh venv holding the agent wheel and its runtime dependencies only."""
    tmp = tmp_path_factory.mktemp("plain")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    wheels = tmp / "wheels"
    run = subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "--wheel-dir", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (wheel,) = wheels.glob("pacs_health_agent-*.whl")
    venv = tmp / "venv"
    run = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    run = subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return venv / "bin"


def test_plain_venv_has_no_test_extras(plain_venv: Path, tmp_path: Path) -> None:
    # Otherwise the probe below could pass thanks to a test-only package.
    probe = (
        "import importlib.util as u; print([m for m in ('trustme', 'pytest', 'hypothesis') "
        "if u.find_spec(m)])"
    )
    run = subprocess.run(
        [str(plain_venv / "python"), "-c", probe],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


@pytest.mark.timeout(INSTALL_TIMEOUT + 60)
def test_https_and_dicom_tls_probes_pass_from_a_plain_install(
    plain_venv: Path, tls_material: TLSMaterial, tmp_path: Path
) -> None:
    leaf = tls_material.good()
    ca = str(tls_material.ca_file)
    with (
        HTTPPeer({"/health": Route()}, ssl_context=leaf.server_context()) as api,
        DicomSCP(ssl_context=leaf.server_context()) as scp,
    ):
        doc = target(
            "plain-tls",
            port=scp.port,
            only=("dicom_echo", "api_ping"),
            timeout_ms=5000,
            config={"enableTLS": True, "tls": {"caFile": ca}},
            sectra={"apiEndpoint": api.base_url, "healthCheckEndpoint": "/health"},
        )
        cfg = tmp_path / "plain.json"
        cfg.write_text(json.dumps({"targets": [doc]}))
        run = subprocess.run(
            [
                str(plain_venv / "agent"),
                "probe",
                "--once",
                "--config",
                str(cfg),
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env={"PATH": f"{plain_venv}:/usr/bin:/bin", "HOME": str(tmp_path)},
        )
        reached = (scp.echo_count, api.hits.get("/health", 0))
    assert run.stdout, run.stderr
    checks = {c["name"]: c for c in json.loads(run.stdout)["targets"][0]["checks"]}
    assert set(checks) == {"dicom_echo", "api_ping"}, checks
    for name, check in checks.items():
        # A missing runtime module shows here as "internal error: ModuleNotFoundError".
        assert check["status"] == "PASS", (name, check.get("reason"), check.get("message"))
        assert "tls" in check["phases"], (name, check["phases"])
    assert reached[0] >= 1 and reached[1] >= 1, reached  # the requests went to these peers
    assert run.returncode == 0, run.stderr
