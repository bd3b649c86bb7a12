"""The Helm chart (helm/pacs-health-agent), rendered and linted by real Helm, no cluster needed.

Helm: the PyPI package helm-python-sdk, which binds Helm's own Go SDK (libhelm_c, shipped in the
wheel) through ctypes: `helm template` and `helm lint` without a helm binary or network.
Kubernetes schemas: kubernetes-validate (the official OpenAPI-derived JSON schemas, shipped in the
wheel), strict mode (unknown fields are errors), for the pinned current Kubernetes version and the
oldest version the chart supports (Chart.yaml kubeVersion). The Prometheus Operator kinds
(ServiceMonitor, PrometheusRule) are CRDs that kubernetes-validate has no schema for: they are
validated against the minimal structural schemas in this file instead (OPERATOR_SCHEMAS), and
only those two kinds skip kubernetes-validate.

A missing tool is an import error, so the run fails; nothing here is skipped.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "pacs-health-agent"
SYNC_SCRIPT = REPO / "helm" / "sync-files.sh"

# The current Kubernetes release (pinned) and the oldest one Chart.yaml's kubeVersion admits.
K8S_CURRENT = "1.37.0"
K8S_OLDEST = "1.25.0"
K8S_VERSIONS = (K8S_CURRENT, K8S_OLDEST)

RELEASE = "pha"
NAMESPACE = "pacs-monitoring"

# Distinctive secret values: they must reach the Secret and nothing else.
SECRETS = {
    "SECTRA_API_KEY": "k3y-9f1c2e7a-never-in-a-configmap",
    "SECTRA_API_PASSWORD": "pw-5d0b8c3e-never-in-a-configmap",
    "OTLP_TOKEN": "tok-77aa01-never-in-a-configmap",
}

FULL_CONFIG: dict[str, Any] = {
    "targets": [
        {
            "id": "sectra-pacs-prod",
            "name": "Sectra PACS Production",
            "type": "PACS",
            "vendor": "Sectra AB",
            "enabled": True,
            "config": {
                "host": "pacs.example.org",
                "port": 11112,
                "callingAET": "PACS_HEALTH",
                "calledAET": "SECTRA_PACS",
                "timeout": 30000,
                "maxConnections": 4,
                "enableTLS": True,
                "tls": {
                    "caFile": "/etc/pacs-health-agent/tls/ca.crt",
                    "certFile": "/etc/pacs-health-agent/tls/tls.crt",
                    "keyFile": "/etc/pacs-health-agent/tls/tls.key",
                },
                "credentials": {"username": "svc_monitor", "password": "${SECTRA_API_PASSWORD}"},
            },
            "secttraConfig": {
                "apiEndpoint": "https://pacs-api.example.org",
                "apiVersion": "v2",
                "viewerEndpoint": "https://viewer.example.org",
                "enableWebViewer": True,
                "customHeaders": {
                    "X-API-Key": "${SECTRA_API_KEY}",
                    "X-Client-ID": "monitoring-portal",
                },
            },
            "healthCheck": {"interval": 30000, "timeout": 5000, "failureThreshold": 3},
        },
        {
            "id": "sectra-pacs-dr",
            "name": "Sectra PACS DR",
            "config": {"host": "pacs-dr.example.org", "port": 11112, "calledAET": "SECTRA_DR"},
        },
    ],
    "agent": {"logLevel": "INFO", "maxWorkers": 8},
}

# Sharded, OTLP on, every Prometheus Operator / Grafana / NetworkPolicy option on.
FULL: dict[str, Any] = {
    "replicaCount": 3,
    "config": FULL_CONFIG,
    "secretEnv": dict(SECRETS),
    "tls": {"existingSecret": "pacs-agent-tls"},
    "otlp": {
        "enabled": True,
        "endpoint": "http://otel-collector.observability.svc:4317",
        "protocol": "grpc",
        "headers": {"Authorization": "Bearer ${OTLP_TOKEN}"},
        "resourceAttributes": {"k8s.cluster.name": "test-cluster", "site": "hospital-a"},
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "dashboards": {"enabled": True, "annotations": {"grafana_folder": "PACS"}},
    "networkPolicy": {
        "enabled": True,
        "egress": [
            {
                "cidrs": ["192.0.2.10/32", "198.51.100.0/28"],
                "ports": [{"port": 11112, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}],
            },
            {
                "to": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "observability"}
                        }
                    }
                ],
                "ports": [{"port": 4317, "protocol": "TCP"}],
            },
        ],
    },
}

VALUE_SETS = {"default": None, "full": FULL}

# Minimal structural schemas for the two Prometheus Operator CRDs (monitoring.coreos.com/v1):
# the fields this chart writes, typed as the CRDs type them, unknown fields rejected.
_DURATION = {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
             "(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}
OPERATOR_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "jobLabel": {"type": "string"},
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "any": {"type": "boolean"},
                            "matchNames": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "selector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "matchLabels": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                            "matchExpressions": {"type": "array"},
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["port"],
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                                "tlsConfig": {"type": "object"},
                                "relabelings": {"type": "array", "items": {"type": "object"}},
                                "metricRelabelings": {
                                    "type": "array",
                                    "items": {"type": "object"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "limit": {"type": "integer"},
                                "partial_response_strategy": {"type": "string"},
                                "query_offset": _DURATION,
                                "labels": {"type": "object"},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "oneOf": [
                                            {"required": ["alert"]},
                                            {"required": ["record"]},
                                        ],
                                        "additionalProperties": False,
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "record": {"type": "string"},
                                            "expr": {"type": ["string", "integer"]},
                                            "for": _DURATION,
                                            "keep_firing_for": _DURATION,
                                            "labels": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                            "annotations": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                        },
                                    },
                                },
                            },
                            "additionalProperties": False,
                        },
                    },
                },
            },
        },
    },
}


# --------------------------------------------------------------------------------------- helpers


def render_chart(
    values: dict[str, Any] | None, chart_dir: Path = CHART
) -> list[dict[str, Any]]:
    """`helm template RELEASE CHART -n NAMESPACE` (schema-validated), as parsed documents."""
    with helm.Chart.load(str(chart_dir)) as chart:
        out = chart.render(
            values=copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE, is_install=True
        )
    docs = []
    for path in sorted(out):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(out[path]) if d)
    return docs


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert len(found) == 1, [d["kind"] for d in found]
    return found[0]


def agent_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = workload(docs)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "agent")


def config_text(docs: list[dict[str, Any]]) -> str:
    cm = next(d for d in of_kind(docs, "ConfigMap") if "config.yaml" in d["data"])
    return cm["data"]["config.yaml"]


def env_map(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def source_alert_files() -> list[Path]:
    return sorted(
        [*(REPO / "alerts").glob("*.yml"), *(REPO / "alerts").glob("*.yaml")],
        key=lambda p: p.name,
    )


def source_dashboard_files() -> list[Path]:
    return sorted((REPO / "dashboards").glob("*.json"), key=lambda p: p.name)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render_chart(values) for name, values in VALUE_SETS.items()}


# ------------------------------------------------------------------------------ chart & sources


def test_chart_copies_of_alerts_and_dashboards_are_byte_identical() -> None:
    """files/alerts and files/dashboards mirror alerts/ and dashboards/ (helm/sync-files.sh)."""
    pairs = [
        (source_alert_files(), CHART / "files" / "alerts", ("*.yml", "*.yaml")),
        (source_dashboard_files(), CHART / "files" / "dashboards", ("*.json",)),
    ]
    for sources, copies_dir, patterns in pairs:
        copies = sorted(p for pat in patterns for p in copies_dir.glob(pat))
        assert [p.name for p in copies] == [p.name for p in sources], (
            f"{copies_dir.relative_to(REPO)} differs from the repository: run helm/sync-files.sh"
        )
        for src in sources:
            assert (copies_dir / src.name).read_bytes() == src.read_bytes(), (
                f"{src.name} changed: run helm/sync-files.sh"
            )
    check = subprocess.run(
        ["bash", str(SYNC_SCRIPT), "--check"], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("values_name", list(VALUE_SETS))
def test_helm_lint_is_clean(values_name: str) -> None:
    report = helm.lint(
        str(CHART), copy.deepcopy(VALUE_SETS[values_name]), strict=True,
        kube_version=f"v{K8S_CURRENT}",
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # severity 1 = info ("icon is recommended"); 2 = warning, 3 = error.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


def test_packaged_chart_renders_the_same(
    rendered: dict[str, list[dict]], tmp_path: Path
) -> None:
    """`helm package` keeps everything the templates read (files/ is not .helmignore'd)."""
    archive = helm.package(str(CHART), destination=str(tmp_path))
    with helm.Chart.load(archive) as chart:
        assert chart.metadata["name"] == "pacs-health-agent"
    extracted = tmp_path / "x"
    extracted.mkdir()
    helm.expand(str(extracted), archive)
    assert render_chart(FULL, extracted / "pacs-health-agent") == rendered["full"]


# --------------------------------------------------------------------------------------- schemas


def test_kubernetes_validate_is_not_a_no_op() -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x"},
        "data": {"a": "b"},
        "dataa": {},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_CURRENT, strict=True)


@pytest.mark.parametrize("values_name", list(VALUE_SETS))
def test_every_manifest_is_valid(rendered: dict[str, list[dict]], values_name: str) -> None:
    docs = rendered[values_name]
    kinds = {d["kind"] for d in docs}
    assert {"ConfigMap", "Service", "ServiceAccount", "PodDisruptionBudget"} <= kinds
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"].get("namespace") == NAMESPACE, name
        if doc["kind"] in OPERATOR_SCHEMAS:
            # CRDs: not in kubernetes-validate; our minimal structural schema instead.
            jsonschema.validate(doc, OPERATOR_SCHEMAS[doc["kind"]])
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{name} invalid for Kubernetes {version}: {e}")


def test_values_schema_rejects_unknown_keys() -> None:
    typos = ({"replicaCont": 3}, {"image": {"tagg": "1"}}, {"serviceMonitor": {"enable": True}})
    for typo in typos:
        with pytest.raises(helm.HelmValuesError):
            render_chart(typo)
    with pytest.raises(helm.HelmValuesError):
        render_chart({"replicaCount": 0})
    with pytest.raises(helm.HelmValuesError):  # an egress rule without ports would allow all
        render_chart({"networkPolicy": {"enabled": True, "egress": [{"cidrs": ["192.0.2.1/32"]}]}})


def test_readme_lists_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def paths(node: dict[str, Any], prefix: str = "") -> list[str]:
        out = []
        for key, sub in node.get("properties", {}).items():
            if sub.get("additionalProperties") is False and "properties" in sub:
                out.extend(paths(sub, f"{prefix}{key}."))
            else:
                out.append(prefix + key)
        return out

    missing = [p for p in paths(schema) if p != "global" and f"`{p}`" not in readme]
    assert missing == [], f"README.md does not describe: {missing}"
    undocumented = [k for k in values if k not in schema["properties"]]
    assert undocumented == []


# ------------------------------------------------------------------------------------ the config


@pytest.mark.parametrize("values_name", list(VALUE_SETS))
def test_rendered_config_passes_agent_check_config(
    rendered: dict[str, list[dict]], values_name: str, tmp_path: Path
) -> None:
    """The ConfigMap's config.yaml is accepted by the agent's own validator."""
    agent = Path(sys.executable).with_name("agent")
    assert agent.exists(), f"console script {agent} missing: pip install -e . first"
    text = config_text(rendered[values_name])
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert names, "the example config should use ${VAR} placeholders for its secrets"
    dummy = {n: f"dummy-{n.lower()}-0d1e2f" for n in names}
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), **dummy}
    proc = subprocess.run(
        # the TLS files are mounted in the pod, not here
        [str(agent), "check-config", "--no-file-checks", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for var, value in dummy.items():  # check-config prints the effective config, redacted
        if re.search(r"(?i)(key|password|token|authorization)", var):
            assert value not in proc.stdout + proc.stderr, f"{var} printed unredacted"


def test_default_config_is_a_small_example_with_placeholders(
    rendered: dict[str, list[dict]],
) -> None:
    cfg = yaml.safe_load(config_text(rendered["default"]))
    assert len(cfg["targets"]) == 1
    target = cfg["targets"][0]
    assert target["secttraConfig"]["customHeaders"]["X-API-Key"] == "${SECTRA_API_KEY}"


def test_otlp_values_reach_the_config(rendered: dict[str, list[dict]]) -> None:
    cfg = yaml.safe_load(config_text(rendered["full"]))
    assert cfg["agent"]["otlp"] == {
        "enabled": True,
        "endpoint": FULL["otlp"]["endpoint"],
        "protocol": "grpc",
        "interval": 30000,
        "headers": {"Authorization": "Bearer ${OTLP_TOKEN}"},
    }
    assert cfg["agent"]["maxWorkers"] == 8  # the rest of the agent section is kept
    assert "otlp" not in (yaml.safe_load(config_text(rendered["default"]))["agent"] or {})


# ------------------------------------------------------------------------------------- operator


def test_prometheus_rule_groups_equal_alert_files(rendered: dict[str, list[dict]]) -> None:
    expected: list[Any] = []
    for path in source_alert_files():
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and "groups" in doc:
            expected.extend(doc["groups"])
    rule = one(rendered["full"], "PrometheusRule")
    assert rule["spec"]["groups"] == expected
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert of_kind(rendered["default"], "PrometheusRule") == []


def test_dashboard_configmaps_equal_dashboard_files(rendered: dict[str, list[dict]]) -> None:
    cms = [d for d in of_kind(rendered["full"], "ConfigMap") if "grafana_dashboard" in
           d["metadata"]["labels"]]
    got = {k: v for cm in cms for k, v in cm["data"].items()}
    assert got == {p.name: p.read_text() for p in source_dashboard_files()}
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "PACS"}
        assert len(cm["data"]) == 1
    assert not any("grafana_dashboard" in d["metadata"]["labels"]
                   for d in of_kind(rendered["default"], "ConfigMap"))


def test_dashboard_and_rule_files_are_copied_verbatim(tmp_path: Path) -> None:
    """Byte-exact even for content that looks like templates, YAML or needs escaping."""
    chart = tmp_path / "pacs-health-agent"
    shutil.copytree(CHART, chart)
    for d in ("alerts", "dashboards"):
        for f in (chart / "files" / d).iterdir():
            f.unlink()
    tricky = (
        '{"title": "PACS {{ $labels.target }} ${DS_PROMETHEUS}",\n'
        '  "x": "<a&b> \\"q\\" \\u00e9 é 漢字 🙂\\t",\n  "expr": "a: b # c"}'
    )  # no trailing newline on purpose
    (chart / "files" / "dashboards" / "pacs_overview.json").write_text(tricky)
    rules = (
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n"
        "        annotations:\n          summary: '{{ $labels.instance }} is down'\n"
    )
    (chart / "files" / "alerts" / "a.yml").write_text(rules)
    (chart / "files" / "alerts" / "not-rules.yaml").write_text("rule_files: [a.yml]\n")
    docs = render_chart({"dashboards": {"enabled": True}, "prometheusRule": {"enabled": True}},
                        chart)
    cm = next(d for d in of_kind(docs, "ConfigMap") if "pacs_overview.json" in d["data"])
    assert cm["data"]["pacs_overview.json"] == tricky
    assert one(docs, "PrometheusRule")["spec"]["groups"] == yaml.safe_load(rules)["groups"]


def test_service_monitor_scrapes_each_pod_once_with_a_stable_job(
    rendered: dict[str, list[dict]],
) -> None:
    docs = rendered["full"]
    sm = one(docs, "ServiceMonitor")
    selector = sm["spec"]["selector"]["matchLabels"]
    services = of_kind(docs, "Service")
    assert len(services) == 2  # metrics Service + headless governing Service
    selected = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
    assert len(selected) == 1 and selected[0]["spec"].get("clusterIP") != "None"
    assert sm["spec"]["endpoints"][0]["port"] == "http-metrics"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    # The alert rules select job=~"pacs-health-agent.*": job comes from this Service label.
    assert selected[0]["metadata"]["labels"][sm["spec"]["jobLabel"]] == "pacs-health-agent"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert of_kind(rendered["default"], "ServiceMonitor") == []


# --------------------------------------------------------------------------------------- secrets


def test_no_secret_value_in_any_configmap(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["full"]
    secret = one(docs, "Secret")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == SECRETS
    needles = [*SECRETS.values(), *(base64.b64encode(v.encode()).decode() for v in
                                    SECRETS.values())]
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        text = json.dumps(doc)
        for needle in needles:
            assert needle not in text, f"a secret value leaked into {doc['kind']}"
    container = agent_container(docs)
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    annotations = workload(docs)["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret" in annotations


def test_existing_secret_is_used_instead_of_a_chart_secret() -> None:
    docs = render_chart({**FULL, "existingSecret": "pacs-agent-env"})
    assert of_kind(docs, "Secret") == []
    container = agent_container(docs)
    assert container["envFrom"] == [{"secretRef": {"name": "pacs-agent-env"}}]
    assert "checksum/secret" not in workload(docs)["spec"]["template"]["metadata"]["annotations"]


def test_tls_material_is_mounted_from_a_secret(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["full"]
    pod = workload(docs)["spec"]["template"]["spec"]
    tls = next(v for v in pod["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == "pacs-agent-tls"
    mount = next(m for m in agent_container(docs)["volumeMounts"] if m["name"] == "tls")
    assert mount == {"name": "tls", "mountPath": "/etc/pacs-health-agent/tls", "readOnly": True}
    assert all(v["name"] != "tls" for v in workload(rendered["default"])["spec"]["template"]
               ["spec"]["volumes"])


@pytest.mark.parametrize(
    "patch",
    [
        {"config": {"password": "hunter2"}},
        {"customHeaders": {"X-API-Key": "abc123"}},
        {"config": {"tls": {"keyPassword": "pw"}}},
    ],
)
def test_literal_secret_in_config_is_refused(patch: dict[str, Any]) -> None:
    target = {"id": "t1", "config": {"host": "pacs.example.org"}}
    if "customHeaders" in patch:
        target["secttraConfig"] = {"apiEndpoint": "https://a.example.org", **patch}
    else:
        target["config"] = {**target["config"], **patch["config"]}
    with pytest.raises(helm.HelmRenderError, match="literal secret"):
        render_chart({"config": {"targets": [target]}})


def test_otlp_header_must_be_a_placeholder() -> None:
    with pytest.raises(helm.HelmRenderError, match="literal secret"):
        render_chart({"otlp": {"enabled": True, "headers": {"Authorization": "Bearer abc"}}})


# ---------------------------------------------------------------------------------- pods & pods


@pytest.mark.parametrize("values_name", list(VALUE_SETS))
def test_security_context_on_pod_and_every_container(
    rendered: dict[str, list[dict]], values_name: str
) -> None:
    pod = workload(rendered[values_name])["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    containers = pod["containers"] + pod.get("initContainers", [])
    assert containers
    for c in containers:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True, c["name"]
        assert sc["runAsUser"] == 65532, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert not sc["capabilities"].get("add"), c["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
    assert pod["automountServiceAccountToken"] is False
    tmp = next(m for m in agent_container(rendered[values_name])["volumeMounts"]
               if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])


def test_probes_use_the_liveness_and_readiness_endpoints(rendered: dict[str, list[dict]]) -> None:
    c = agent_container(rendered["default"])
    assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http-metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http-metrics"}
    assert c["ports"] == [{"name": "http-metrics", "containerPort": 9887, "protocol": "TCP"}]
    assert c["args"][:3] == ["run", "--config", "/etc/pacs-health-agent/config.yaml"]
    assert "0.0.0.0:9887" in c["args"]
    assert c["image"] == "pacs-health-agent:0.1.0"
    digest = "sha256:" + "ab" * 32
    pinned = agent_container(render_chart({"image": {"tag": "1.2.3", "digest": digest}}))
    assert pinned["image"] == f"pacs-health-agent:1.2.3@{digest}"


def test_statefulset_when_sharded(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["full"]
    sts = one(docs, "StatefulSet")
    assert of_kind(docs, "Deployment") == []
    assert sts["spec"]["replicas"] == 3
    headless = next(s for s in of_kind(docs, "Service") if s["spec"].get("clusterIP") == "None")
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    env = env_map(agent_container(docs))
    assert env["AGENT_SHARD_COUNT"]["value"] == "3"
    # The agent takes its shard from the hostname's ordinal: nothing may override the hostname,
    # and AGENT_SHARD (which would win) must not be set to one value for every pod.
    assert "hostname" not in sts["spec"]["template"]["spec"]
    assert "AGENT_SHARD" not in env
    assert re.fullmatch(r"[a-z0-9-]+", sts["metadata"]["name"])

    default = rendered["default"]
    assert one(default, "Deployment")["spec"]["replicas"] == 1
    assert of_kind(default, "StatefulSet") == []
    assert "AGENT_SHARD_COUNT" not in env_map(agent_container(default))
    assert all(s["spec"].get("clusterIP") != "None" for s in of_kind(default, "Service"))


def test_checksum_annotation_follows_the_config() -> None:
    def checksum(values: dict[str, Any] | None) -> str:
        docs = render_chart(values)
        return workload(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    base = checksum(None)
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    changed = checksum({"config": {"agent": {"logLevel": "DEBUG"}}})
    assert changed != base
    assert checksum({"resources": {"requests": {"cpu": "100m"}}}) == base
    assert checksum({"otlp": {"enabled": True}}) != base


def test_otlp_resource_attributes_from_the_downward_api(rendered: dict[str, list[dict]]) -> None:
    env_list = agent_container(rendered["full"])["env"]
    env = env_map(agent_container(rendered["full"]))
    fields = {
        "K8S_POD_NAME": "metadata.name",
        "K8S_NAMESPACE_NAME": "metadata.namespace",
        "K8S_NODE_NAME": "spec.nodeName",
    }
    for name, field in fields.items():
        assert env[name]["valueFrom"]["fieldRef"]["fieldPath"] == field
    attrs = env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    pairs = dict(p.split("=", 1) for p in attrs.split(","))
    assert pairs["k8s.pod.name"] == "$(K8S_POD_NAME)"
    assert pairs["k8s.namespace.name"] == "$(K8S_NAMESPACE_NAME)"
    assert pairs["k8s.node.name"] == "$(K8S_NODE_NAME)"
    assert pairs["k8s.cluster.name"] == "test-cluster"
    assert pairs["site"] == "hospital-a"
    assert pairs["k8s.statefulset.name"] == workload(rendered["full"])["metadata"]["name"]
    # $(VAR) only expands when VAR is defined earlier in the list.
    order = [e["name"] for e in env_list]
    for ref in re.findall(r"\$\(([A-Z0-9_]+)\)", attrs):
        assert order.index(ref) < order.index("OTEL_RESOURCE_ATTRIBUTES")
    assert env["OTEL_SERVICE_NAME"]["value"] == "pacs-health-agent"


def test_network_policy_allows_only_dns_pacs_and_scrapes(rendered: dict[str, list[dict]]) -> None:
    docs = rendered["full"]
    np = one(docs, "NetworkPolicy")["spec"]
    assert sorted(np["policyTypes"]) == ["Egress", "Ingress"]
    assert np["podSelector"]["matchLabels"] == workload(docs)["spec"]["selector"]["matchLabels"]
    (ingress,) = np["ingress"]
    assert ingress["ports"] == [{"port": "http-metrics", "protocol": "TCP"}]
    assert ingress["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    dns, pacs, otlp = np["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert pacs["to"] == [{"ipBlock": {"cidr": "192.0.2.10/32"}},
                          {"ipBlock": {"cidr": "198.51.100.0/28"}}]
    assert pacs["ports"] == [{"port": 11112, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]
    assert otlp["ports"] == [{"port": 4317, "protocol": "TCP"}]
    for rule in np["egress"]:
        assert rule["to"] and rule["ports"], "an empty to/ports would allow everything"
    assert of_kind(rendered["default"], "NetworkPolicy") == []
    closed = one(render_chart({"networkPolicy": {"enabled": True, "ingressFrom": [],
                                                 "dns": {"enabled": False}}}), "NetworkPolicy")
    assert closed["spec"]["ingress"] == [] and closed["spec"]["egress"] == []


def test_pod_disruption_budget(rendered: dict[str, list[dict]]) -> None:
    pdb = one(rendered["full"], "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"] == workload(rendered["full"])["spec"]["selector"][
        "matchLabels"]
    minimum = render_chart({"podDisruptionBudget": {"minAvailable": 2}})
    assert one(minimum, "PodDisruptionBudget")["spec"] == {
        "minAvailable": 2,
        "selector": {"matchLabels": workload(minimum)["spec"]["selector"]["matchLabels"]},
    }
    assert of_kind(render_chart({"podDisruptionBudget": {"enabled": False}}),
                   "PodDisruptionBudget") == []


@pytest.mark.parametrize(
    ("values", "workers"),
    [
        (None, "1"),  # the default 50m request: one process, as before
        ({"resources": {"limits": {"cpu": "2500m"}}}, "2"),  # the limit, rounded down
        ({"resources": {"requests": {"cpu": 2}}}, "2"),  # no limit: the request
        ({"resources": {"requests": {"cpu": 1}, "limits": {"cpu": 4}}}, "4"),
        ({"resources": {"requests": {"cpu": "500m"}}}, "1"),  # at least one
        ({"workers": 3}, "3"),  # set explicitly
    ],
)
def test_workers_follow_the_cpu_resources(values: dict[str, Any] | None, workers: str) -> None:
    args = agent_container(render_chart(values))["args"]
    assert args[args.index("--workers") + 1] == workers


def test_workers_value_is_validated() -> None:
    for bad in (0, "two", 1.5):
        with pytest.raises(helm.HelmValuesError):
            render_chart({"workers": bad})
