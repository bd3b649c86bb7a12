"""The chart's storage SCP port for dicom_retrieve with method: move (dicomStore values): a
container port, its own Service, NetworkPolicy ingress from the PACS only, refused when sharded.
Rendered by real Helm and validated against the Kubernetes schemas, as in tests/test_helm.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.test_helm import K8S_VERSIONS, agent_container, of_kind, one, render_chart

STORE = {
    "dicomStore": {
        "enabled": True,
        "port": 11113,
        "service": {"type": "NodePort", "nodePort": 31113},
        "allowFrom": ["192.0.2.10/32", "198.51.100.0/28"],
    },
    "networkPolicy": {
        "enabled": True,
        "ingressFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
    },
}


def test_off_by_default_no_port_no_service() -> None:
    docs = render_chart(None)
    assert [p["name"] for p in agent_container(docs)["ports"]] == ["http-metrics"]
    assert [s["metadata"]["name"] for s in of_kind(docs, "Service")] == ["pha-pacs-health-agent"]


def test_enabled_adds_port_service_and_pacs_only_ingress() -> None:
    docs = render_chart(STORE)
    ports = {p["name"]: p["containerPort"] for p in agent_container(docs)["ports"]}
    assert ports == {"http-metrics": 9887, "dicom-store": 11113}
    (svc,) = [s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("dicom-store")]
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"] == [
        {
            "name": "dicom-store",
            "port": 11113,
            "targetPort": "dicom-store",
            "protocol": "TCP",
            "nodePort": 31113,
        }
    ]
    # the metrics ServiceMonitor selects on this label: the DICOM Service must not carry it
    assert "pacs-health-agent/metrics" not in svc["metadata"]["labels"]
    scrape, pacs = one(docs, "NetworkPolicy")["spec"]["ingress"]
    assert scrape["ports"] == [{"port": "http-metrics", "protocol": "TCP"}]
    assert pacs["ports"] == [{"port": "dicom-store", "protocol": "TCP"}]
    assert pacs["from"] == [
        {"ipBlock": {"cidr": "192.0.2.10/32"}},
        {"ipBlock": {"cidr": "198.51.100.0/28"}},
    ]
    for doc in docs:
        if doc["kind"] in ("Service", "NetworkPolicy", "Deployment"):
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)


def test_no_allow_from_means_no_dicom_ingress() -> None:
    values = json.loads(json.dumps(STORE))
    values["dicomStore"]["allowFrom"] = []
    values["networkPolicy"]["ingressFrom"] = []
    np = one(render_chart(values), "NetworkPolicy")
    assert np["spec"]["ingress"] == []


def test_refused_when_sharded() -> None:
    with pytest.raises(Exception, match="dicomStore needs replicaCount 1"):
        render_chart({**STORE, "replicaCount": 2})


def test_rendered_move_target_passes_check_config(tmp_path: Path) -> None:
    target: dict[str, Any] = {
        "id": "pacs",
        "config": {"host": "pacs.example.org", "port": 11112, "calledAET": "PACS"},
        "probes": {
            "dicom_retrieve": {
                "studyInstanceUID": "1.2.826.0.1.3680043.10.1082.1",
                "method": "move",
                "moveDestination": "PACS_HEALTH",
                "storeListen": ":11113",
            }
        },
    }
    docs = render_chart({**STORE, "config": {"targets": [target]}})
    cm = [d for d in of_kind(docs, "ConfigMap") if "config.yaml" in d.get("data", {})]
    cfg = tmp_path / "config.yaml"
    cfg.write_text(cm[0]["data"]["config.yaml"])
    assert yaml.safe_load(cfg.read_text())["targets"][0]["probes"]["dicom_retrieve"]
    agent = str(Path(sys.executable).with_name("agent"))
    r = subprocess.run(
        [agent, "check-config", "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
