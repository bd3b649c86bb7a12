"""Every committed generated file (dashboards JSON, the Helm chart's copies of alerts and
dashboards) is what `make generate` writes now: the generators write into a temporary
directory and each committed file is compared with it byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

from scripts import generate

REPO = Path(__file__).resolve().parent.parent


def test_committed_generated_files_are_up_to_date(tmp_path: Path) -> None:
    outputs, _ = generate.write(tmp_path)
    problems = generate.differences(tmp_path, REPO, outputs)
    assert not problems, "generated files out of date:\n" + "\n".join(problems)


def test_everything_generated_is_covered() -> None:
    """The check covers both dashboards and every chart copy, so a generator that silently
    stopped producing a file cannot pass it."""
    outputs = set(generate.generate())
    dashboards = {f"dashboards/{p.name}" for p in (REPO / "dashboards").glob("*.json")}
    alerts = {p.name for p in (REPO / "alerts").glob("*.yml")}
    assert dashboards and alerts
    assert dashboards <= outputs
    assert {f"{generate.CHART_FILES}/dashboards/{Path(d).name}" for d in dashboards} <= outputs
    assert {f"{generate.CHART_FILES}/alerts/{a}" for a in alerts} <= outputs


def test_a_hand_edit_a_missing_copy_and_a_leftover_are_named_with_the_fix(tmp_path: Path) -> None:
    generated, committed = tmp_path / "generated", tmp_path / "committed"
    outputs, _ = generate.write(generated)
    shutil.copytree(generated, committed)
    assert generate.differences(generated, committed, outputs) == []

    edited = committed / "dashboards" / "pacs-overview.json"
    edited.write_text(edited.read_text().replace('"refresh": "1m"', '"refresh": "5m"'))
    (committed / generate.CHART_FILES / "alerts" / "pacs-health-agent.slo.yml").unlink()
    (committed / generate.CHART_FILES / "dashboards" / "retired.json").write_text("{}\n")

    assert generate.differences(generated, committed, outputs) == [
        "dashboards/pacs-overview.json: differs from what generates it; "
        "run `make generate` and commit it",
        f"{generate.CHART_FILES}/alerts/pacs-health-agent.slo.yml: missing; "
        "run `make generate` and commit it",
        f"{generate.CHART_FILES}/dashboards/retired.json: nothing generates it "
        "(its source is gone); run `make generate`",
    ]

    # and writing again repairs all three
    generate.write(committed)
    assert generate.differences(generated, committed, outputs) == []
