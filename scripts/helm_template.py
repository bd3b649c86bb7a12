"""`make helm-template VALUES=my-values.yaml`: render the chart offline and hand on its config.

Renders helm/pacs-health-agent like `helm template` (helm-python-sdk: Helm's own Go SDK shipped in
a wheel, from the test extras; no helm binary, no cluster, no network), writes every manifest to
--out, and prints the agent config that the chart's ConfigMap carries (config.yaml) on stdout, so
that it can be piped into `agent check-config --config -`. Values files are merged in order, as
`helm template -f a.yaml -f b.yaml` does.

The config's secrets are ${VAR} placeholders that only the cluster's Secret fills in; --env-out
writes `VAR=placeholder` for each one this shell does not set, so the check can run offline
(export the real values first to check those too).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

# ${VAR} without a :-default (the agent's substitution syntax; $${VAR} is a literal)
ENV_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
CHART = Path(__file__).resolve().parents[1] / "helm" / "pacs-health-agent"


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's values merge: maps merge key by key, anything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render(values: dict[str, Any], release: str, namespace: str) -> dict[str, str]:
    try:
        import helm_python as helm
    except ImportError:
        sys.exit(
            "helm-python-sdk is missing: it comes with the test extras (make .venv/.installed)"
        )
    with helm.Chart.load(str(CHART)) as chart:
        return dict(chart.render(values=values, name=release, namespace=namespace, is_install=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", "-f", action="append", default=[], help="values file (repeatable)")
    ap.add_argument("--release", default="pha")
    ap.add_argument("--namespace", default="pacs-monitoring")
    ap.add_argument("--out", default="build/helm-template.yaml", help="where the manifests go")
    ap.add_argument("--env-out", help="write VAR=placeholder for the config's unset ${VAR}s here")
    args = ap.parse_args(argv)
    values: dict[str, Any] = {}
    for path in args.values:
        values = merge(values, yaml.safe_load(Path(path).read_text()) or {})
    files = render(values, args.release, args.namespace)
    manifests = [
        f"---\n# Source: {name}\n{text.strip()}\n"
        for name, text in sorted(files.items())
        if text.strip() and not name.endswith("NOTES.txt")
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(manifests))
    config = None
    for text in manifests:
        for doc in yaml.safe_load_all(text):
            if doc and doc.get("kind") == "ConfigMap" and "config.yaml" in doc.get("data", {}):
                config = doc["data"]["config.yaml"]
    if config is None:
        sys.exit("the rendered chart has no ConfigMap with config.yaml")
    print(f"rendered {len(manifests)} manifest file(s) into {out}", file=sys.stderr)
    if args.env_out:
        unset = sorted({n for n in ENV_REF.findall(config) if n not in os.environ})
        Path(args.env_out).write_text("".join(f"{n}=placeholder-{n.lower()}\n" for n in unset))
        if unset:
            print(f"placeholders for unset {', '.join(unset)}", file=sys.stderr)
    sys.stdout.write(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
