"""Literal secrets in the config file (password, keyPassword, credential-like header values not
from ${VAR}) and credentials sent to http:// endpoints are warned about, in one line each
(`file:line: path: warning: ...`), by check-config and at `agent run` start. The Helm chart
refuses literal secrets; a hand-run agent used to say nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.config import load_config_text
from agent.config.warnings import config_warnings
from tests.config.common import ENV, ROOT, example, minimal
from tests.helpers.peers import free_port

LITERAL = "hunter2-literal-pw"


def literal_doc() -> dict:
    doc = example()
    doc["config"]["credentials"]["password"] = LITERAL
    doc["secttraConfig"]["customHeaders"]["Authorization"] = "Bearer literal-token-77"
    doc["secttraConfig"]["apiEndpoint"] = "http://pacs-api.hospital.com.au"
    return doc


def test_literal_secrets_and_cleartext_credentials_are_warned_about() -> None:
    text = json.dumps(literal_doc(), indent=2)
    warnings = config_warnings(load_config_text(text, "e.json", ENV))
    assert all(LITERAL not in w and "literal-token-77" not in w for w in warnings)
    assert any(
        w.startswith("e.json:17: config.credentials.password: warning: a literal secret")
        for w in warnings
    ), warnings
    assert any(
        ": secttraConfig.customHeaders.Authorization: warning: a literal secret" in w
        for w in warnings
    ), warnings
    assert any(
        w.startswith(
            "e.json:21: secttraConfig.apiEndpoint: warning: credentials would "
            "be sent over plain http://"
        )
        for w in warnings
    ), warnings
    # the API's worklist shares its https origin: no warning there
    assert not any("worklistEndpoint" in w for w in warnings)
    assert len(warnings) == 3, warnings


def test_the_guide_sample_with_env_secrets_has_no_warning() -> None:
    assert config_warnings(load_config_text(json.dumps(example()), "e.json", ENV)) == []


def test_a_literal_key_password_and_a_plain_header_value() -> None:
    doc = minimal(sectraConfig={"customHeaders": {"X-Client-ID": "portal"}})
    doc["config"]["tls"] = {"keyPassword": "literal-kp"}
    [w] = config_warnings(load_config_text(json.dumps({"targets": [doc]}, indent=2), "t.json", {}))
    assert ": targets[0].config.tls.keyPassword: warning: a literal secret" in w, w


def test_check_config_and_agent_run_print_the_warnings(tmp_path: Path) -> None:
    doc = literal_doc()
    doc["config"].update(host="127.0.0.1", enableTLS=False)
    cfg = tmp_path / "e.json"
    cfg.write_text(json.dumps({"targets": [doc], "agent": {"listen": f"127.0.0.1:{free_port()}"}}))
    env = {**ENV, "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert f"{cfg}:1: targets[0].config.credentials.password: warning: a literal secret" in r.stderr
    assert "warning: credentials would be sent over plain http://" in r.stderr
    assert LITERAL not in r.stdout + r.stderr
    # `agent run` logs them at start; it is stopped as soon as they are out
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(cfg)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        seen: list[str] = []
        assert proc.stderr is not None
        for line in proc.stderr:  # bounded by the timeout below (proc.kill in finally)
            seen.append(line)
            if "Metrics: http" in line:
                break
        text = "".join(seen)
        assert "targets[0].config.credentials.password: warning: a literal secret" in text, text
        assert "warning: credentials would be sent over plain http://" in text
        assert LITERAL not in text
    finally:
        proc.kill()
        proc.wait(timeout=30)
