"""The probe registry (probes.registry) is the one list of probes: every entry is complete, and
the run order, the config's `probes:` block, the CLI's `--probe` and the docs all follow it.

The toy-probe test registers a probe from outside the product (as a plugin would) and shows it
appear in the config schema, build_plan, check-config, `probe --once` and the `--probe` choices
with no other file touched.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agent.cli import build_parser
from agent.config import ConfigError, load_config_text
from agent.config.schema import Endpoint
from agent.targets import PROBE_ORDER, build_plan
from probes.base import Facts
from probes.registry import PROBES, register, table
from probes.specs import BuildContext, DicomEndpoint, TLSOptions
from tests.helpers import LOOPBACK
from tests.helpers.agent_cli import agent_env

ROOT = Path(__file__).resolve().parents[1]
FACT_FIELDS = {f.name for f in fields(Facts)}

# A target that configures every probe, each with the least it needs.
EVERY_PROBE: dict[str, Any] = {
    "id": "all",
    "config": {"host": LOOPBACK, "port": 11112},
    "sectraConfig": {
        "apiEndpoint": "https://127.0.0.1:8443/api",
        "viewerEndpoint": "https://127.0.0.1:8443/viewer",
        "enableWebViewer": True,
        "primaryEndpoint": "https://127.0.0.1:8444",
        "secondaryEndpoint": "https://127.0.0.1:8445",
    },
    "probes": {
        "dicom_retrieve": {"studyInstanceUID": "1.2.3"},
        "dicom_store": {"enabled": True},
        "worklist": {},
        "dicom_capabilities": {"sopClasses": ["1.2.840.10008.1.1"],
                               "transferSyntaxes": ["1.2.840.10008.1.2"]},
        "dicomweb": {"endpoint": "https://127.0.0.1:8446/dicom-web"},
    },
}


def _load(doc: dict[str, Any]) -> Endpoint:
    [target] = load_config_text(json.dumps(doc), "t.json", {}).model.targets
    return target


def _probe_choices() -> list[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    probe = sub.choices["probe"]
    [opt] = [a for a in probe._actions if "--probe" in a.option_strings]
    assert opt.choices is not None and opt.help is not None
    assert all(name in opt.help for name in PROBES)
    return list(opt.choices)


def test_every_entry_has_settings_builder_description_and_outputs() -> None:
    assert len(PROBES) >= 10
    for name, spec in PROBES.items():
        assert spec.name == name
        assert issubclass(spec.settings, BaseModel) and "enabled" in spec.settings.model_fields
        assert callable(spec.build)
        assert spec.description and "\n" not in spec.description and len(spec.description) < 100
        assert spec.outputs and len(set(spec.outputs)) == len(spec.outputs)
        assert set(spec.outputs) <= FACT_FIELDS, (name, set(spec.outputs) - FACT_FIELDS)


def test_run_order_config_block_and_cli_choices_are_the_registry() -> None:
    names = list(PROBES)
    assert list(PROBE_ORDER) == names
    assert list(Endpoint.model_fields["probes"].annotation.model_fields) == names  # type: ignore[union-attr]
    assert _probe_choices() == names
    with pytest.raises(ConfigError) as e:
        load_config_text(json.dumps({**EVERY_PROBE, "slo": {"probes": {"nope": {}}}}), "t.json", {})
    [problem] = e.value.problems
    assert f"(known: {', '.join(names)})" in problem


def test_build_plan_builds_each_probe_under_its_registry_name_in_order() -> None:
    plan = build_plan(_load(EVERY_PROBE))
    assert list(plan.probes) == list(PROBES)
    assert all(p.name == n for n, p in plan.probes.items())
    # Without URLs or optional blocks only the DICOM basics run.
    bare = build_plan(_load({"id": "bare", "config": {"host": LOOPBACK}}))
    assert list(bare.probes) == ["dicom_echo", "dicom_find"]


def test_a_builder_warning_is_logged_with_the_target_id(caplog: pytest.LogCaptureFixture) -> None:
    doc = json.loads(json.dumps(EVERY_PROBE))
    doc["probes"]["viewer"] = {"worklist": True}  # and no sectraConfig.worklistEndpoint
    with caplog.at_level(logging.WARNING, logger="agent.targets"):
        plan = build_plan(_load(doc))
    assert "viewer" in plan.probes
    assert [r.getMessage() for r in caplog.records if r.name == "agent.targets"] == [
        "target all: probes.viewer.worklist is on but sectraConfig has no worklistEndpoint; "
        "no worklist check"
    ]


@pytest.mark.parametrize("name", list(PROBES))
def test_enabled_false_switches_each_probe_off(name: str) -> None:
    doc = json.loads(json.dumps(EVERY_PROBE))
    doc["probes"].setdefault(name, {})["enabled"] = False
    plan = build_plan(_load(doc))
    assert name not in plan.probes
    assert list(plan.probes) == [n for n in PROBES if n != name]


def test_builders_return_none_for_an_unconfigured_target() -> None:
    """A builder decides from the block and the context alone; a bare context builds only what
    needs nothing but the DICOM endpoint."""
    ctx = BuildContext(target_id="t", dicom=DicomEndpoint(LOOPBACK, 11112, "A", "B"),
                       tls=TLSOptions())
    built = {n: s.build(s.settings(), ctx) for n, s in PROBES.items()
             if n not in ("dicom_retrieve", "dicomweb", "dicom_capabilities")}  # need settings
    assert {n for n, p in built.items() if p is not None} == {"dicom_echo", "dicom_find",
                                                             "worklist"}


def test_registering_a_name_twice_is_refused() -> None:
    spec = PROBES["dicom_echo"]
    with pytest.raises(ValueError, match="registered already"):
        register(spec)
    assert list(PROBES).count("dicom_echo") == 1


def test_docs_list_the_registry() -> None:
    """docs/architecture.md carries the registry's table (`python -m probes.registry`)."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert table() in doc
    assert all(f"`{n}`" in table() for n in PROBES)
    labels = (ROOT / "docs" / "metrics.md").read_text()  # the `probe` label's values
    assert all(f"`{n}`" in labels for n in PROBES)


# A probe from outside the product: its module registers it before the agent is imported.
TOY = '''
from __future__ import annotations

import sys

from pydantic import Field

from probes.base import Deadline, Facts, Phases, ProbeOutcome
from probes.registry import register
from probes.settings import Strict
from probes.specs import BuildContext, ProbeSpec


class ToySettings(Strict):
    enabled: bool = True
    greeting: str = Field(default="hello", min_length=1)


class ToyProbe:
    name = "toy"

    def __init__(self, greeting: str, target: str) -> None:
        self.greeting, self.target = greeting, target

    def run(self, deadline: Deadline, phases: Phases) -> ProbeOutcome:
        return ProbeOutcome(f"{self.greeting} from {self.target}",
                            facts=Facts(matches=len(self.greeting)))


def build(s: ToySettings, ctx: BuildContext) -> ToyProbe | None:
    return ToyProbe(s.greeting, ctx.target_id) if s.enabled else None


register(ProbeSpec("toy", ToySettings, build, "a toy", outputs=("matches",), optional=True))

from agent.cli import main  # noqa: E402  (after registering: the agent reads the registry)

sys.exit(main(sys.argv[1:]))
'''


def _toy_agent(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "toy_agent.py"
    script.write_text(textwrap.dedent(TOY))
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env=agent_env({"PYTHONPATH": str(ROOT)}),
    )


def _toy_config(tmp_path: Path, toy: dict[str, Any]) -> str:
    doc = {"id": "t1", "config": {"host": LOOPBACK, "port": 11112},
           "probes": {"dicom_echo": {"enabled": False}, "dicom_find": {"enabled": False},
                      "toy": toy}}
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(doc, indent=2))
    return str(path)


def test_a_registered_toy_probe_reaches_config_plan_and_cli(tmp_path: Path) -> None:
    cfg = _toy_config(tmp_path, {"greeting": "hi"})
    shown = _toy_agent(tmp_path, "check-config", "--config", cfg)
    assert shown.returncode == 0, shown.stderr
    assert "# t1: toy" in shown.stdout and "greeting: hi" in shown.stdout

    ran = _toy_agent(tmp_path, "probe", "--once", "--config", cfg, "--probe", "toy",
                     "--output", "json")
    assert ran.returncode == 0, ran.stderr
    [check] = json.loads(ran.stdout)["targets"][0]["checks"]
    assert check["name"] == "toy" and check["status"] == "PASS"
    assert check["message"] == "hi from t1" and check["matches"] == 2

    unknown = _toy_agent(tmp_path, "probe", "--once", "--probe", "nosuch")
    assert unknown.returncode == 3 and "toy" in unknown.stderr

    bad = _toy_agent(tmp_path, "check-config", "--config", _toy_config(tmp_path, {"greting": "x"}))
    assert bad.returncode == 3
    assert "toy.json:" in bad.stderr and "probes.toy.greting: unknown key" in bad.stderr


def test_without_the_plugin_the_toy_block_is_an_unknown_key(tmp_path: Path) -> None:
    """The control: the same config without the toy registered is refused."""
    r = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "--config",
         _toy_config(tmp_path, {"greeting": "hi"})],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=agent_env(),
    )
    assert r.returncode == 3 and "probes.toy: unknown key" in r.stderr
