"""check-config lists the probes that will run without building plans (agent.probe_selection);
the list must be exactly what build_plan builds, for every combination that decides it, with
the same warnings."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from agent.config import load_config_text
from agent.probe_selection import selected_probes
from agent.targets import PROBE_ORDER, build_plan

ROOT = Path(__file__).resolve().parents[2]

# Each switch adds or removes one thing selected_probes and build_plan look at.
SWITCHES: dict[str, tuple[str, ...]] = {
    "echo_off": ("probes", "dicom_echo"),
    "find_off": ("probes", "dicom_find"),
    "api": ("sectraConfig", "apiEndpoint"),
    "api_off": ("probes", "api_ping"),
    "viewer_url": ("sectraConfig", "viewerEndpoint"),
    "web_viewer": ("sectraConfig", "enableWebViewer"),
    "viewer_off": ("probes", "viewer"),
    "primary": ("sectraConfig", "primaryEndpoint"),
    "secondary": ("sectraConfig", "secondaryEndpoint"),
    "secondary_hosts": ("config", "secondaryHosts"),
    "failover_off": ("probes", "failover"),
    "retrieve": ("probes", "dicom_retrieve"),
    "store": ("probes", "dicom_store"),
    "worklist": ("probes", "worklist"),
    "capabilities": ("probes", "dicom_capabilities"),
    "dicomweb": ("probes", "dicomweb"),
}
VALUES: dict[str, Any] = {
    "echo_off": {"enabled": False},
    "find_off": {"enabled": False},
    "api": "https://api.example.org",
    "api_off": {"enabled": False},
    "viewer_url": "https://viewer.example.org",
    "web_viewer": True,
    "viewer_off": {"enabled": False},
    "primary": "https://a.example.org",
    "secondary": "https://b.example.org",
    "secondary_hosts": [{"host": "pacs-b.example.org", "port": 104}],
    "failover_off": {"enabled": False},
    "retrieve": {"studyInstanceUID": "1.2.3"},
    "store": {"enabled": True},
    "worklist": {"modality": "CT"},
    "capabilities": {
        "sopClasses": ["Verification"],
        "transferSyntaxes": ["ExplicitVRLittleEndian"],
    },
    "dicomweb": {"endpoint": "https://dicomweb.example.org"},
}
# Blocks that are given but switched off: present and `enabled: false` is not "not given".
DISABLED: dict[str, Any] = {
    "retrieve": {"enabled": False},
    "worklist": {"enabled": False},
    "capabilities": {"enabled": False},
    "dicomweb": {"enabled": False},
}


def _endpoint(n: int, on: set[str], disabled: set[str]) -> dict[str, Any]:
    ep: dict[str, Any] = {
        "id": f"t{n}",
        "config": {"host": "pacs.example.org", "port": 104},
        "sectraConfig": {},
        "probes": {},
    }
    for name in on | disabled:
        section, key = SWITCHES[name]
        ep[section][key] = DISABLED[name] if name in disabled else VALUES[name]
    return ep


def _combinations() -> list[dict[str, Any]]:
    """Every pair of switches on (with the rest off), every switch alone, each given-but-off
    block, all on, and each group that decides one probe in all its subsets."""
    names = list(SWITCHES)
    sets: list[tuple[set[str], set[str]]] = [(set(), set()), (set(names), set())]
    sets += [({a, b}, set()) for a, b in itertools.combinations(names, 2)]
    sets += [(set(), {d}) for d in DISABLED]
    groups = [
        ("api", "api_off"),
        ("viewer_url", "web_viewer", "viewer_off"),
        ("primary", "secondary", "secondary_hosts", "failover_off"),
    ]
    for g in groups:
        for k in range(len(g) + 1):
            sets += [(set(c), set()) for c in itertools.combinations(g, k)]
    return [_endpoint(i, on, off) for i, (on, off) in enumerate(sets)]


def test_selected_probes_are_what_build_plan_builds() -> None:
    endpoints = _combinations()
    loaded = load_config_text(json.dumps({"targets": endpoints}), "<test>", {})
    seen: set[str] = set()
    for ep in loaded.model.targets:
        names = selected_probes(ep, warn=lambda _text: None)
        assert names == tuple(build_plan(ep).probes), ep.id
        seen |= set(names)
    # the combinations reach every probe, so a probe missing from either side shows here
    assert seen == set(PROBE_ORDER)


def test_guide_example_selects_what_build_plan_builds() -> None:
    text = (ROOT / "examples" / "sectra-pacs-prod.json").read_text()
    env = {"SECTRA_API_PASSWORD": "p", "SECTRA_API_KEY": "k"}
    loaded = load_config_text(text, "example", env, check_files=False)
    for ep in loaded.model.targets:
        names = selected_probes(ep, warn=lambda _text: None)
        assert names == tuple(build_plan(ep).probes)
        assert "api_ping" in names
