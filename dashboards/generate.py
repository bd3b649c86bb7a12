#!/usr/bin/env python3
"""Generate the Grafana dashboards in this directory (standard library only).

    python -m dashboards.generate          # rewrite pacs-overview.json and pacs-target.json
    python -m dashboards.generate --check  # exit 1 if the committed JSON differs
    (python dashboards/generate.py works too)

The committed JSON is what ships (and what the Helm chart copies); `make generate` rewrites it
with every other generated file, and tests/test_generated_up_to_date.py fails when it differs
from this generator's output. Dashboards target current Grafana (schemaVersion 39, Grafana
10.x/11.x) and a Prometheus data source chosen with the `datasource` variable. The panels and
queries are built in dashboards/lib/.

Job selector: the `job` variable lists every job exposing `pacs_agent_info`, whatever it is
called, and every query filters on job=~"$job". The alert rules select
job=~"pacs-health-agent.*" instead (see docs/runbooks.md, "Job selector").
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file: make the repository root importable, as `python -m` from it would.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402 - after the path fix-up above
import json  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from dashboards.lib.overview import overview  # noqa: E402
from dashboards.lib.target import target_drilldown  # noqa: E402

HERE = Path(__file__).resolve().parent

DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "pacs-overview.json": overview,
    "pacs-target.json": target_drilldown,
}


def render(build: Callable[[], dict[str, Any]]) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a committed dashboard differs from the generated one")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = HERE / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run python -m dashboards.generate): {', '.join(stale)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
