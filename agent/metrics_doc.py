"""The metrics tables of docs/metrics.md and docs/otlp.md, written from agent.metrics_catalogue.

Each table sits between `<!-- BEGIN GENERATED: <name> -->` and `<!-- END GENERATED: <name> -->`
markers; the prose around them is edited by hand. `python -m agent.metrics_doc` rewrites the
pages, `--check` exits 1 when a page is out of date (tests/test_metrics_reference.py fails then
too). `generate()` is the function a `make generate` step calls.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.metrics_catalogue import FAMILIES, OTLP_FAMILIES, Family

ROOT = Path(__file__).resolve().parents[1]
PAGES = (ROOT / "docs" / "metrics.md", ROOT / "docs" / "otlp.md")
_BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[a-z-]+) [^>]*-->\n)(?P<body>.*?)"
    r"(<!-- END GENERATED: (?P=name) -->)",
    re.S,
)


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells).replace("|  |", "| |") + " |"


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    lines = [_row(*header), _row(*("---",) * len(header))]
    lines += [_row(*r) for r in rows]
    return "\n".join(lines).replace("|  |", "| |") + "\n"


def _family_table(section: str) -> str:
    return _table(
        ("metric", "type", "labels", "meaning"),
        [(f"`{f.name}`", f.kind, ", ".join(f.labels), f.doc) for f in FAMILIES
         if f.section == section],
    )


def _otlp(f: Family) -> tuple[str, str, str]:
    assert f.otlp is not None
    return f"`{f.otlp.name}`", f.otlp.unit or "(none)", f"`{f.name}`"


def _otlp_short() -> str:
    return _table(("OTLP name", "unit", "/metrics name"), [_otlp(f) for f in OTLP_FAMILIES])


def _otlp_long() -> str:
    rows = []
    for f in OTLP_FAMILIES:
        assert f.otlp is not None
        kind = "histogram (base-2 exponential)" if f.otlp.kind == "histogram" else f.otlp.kind
        name, unit, prom = _otlp(f)
        rows.append((name, kind, unit, ", ".join(f.labels), prom))
    return _table(("OTLP name", "instrument", "unit", "attributes", "Prometheus (`/metrics`)"),
                  rows)


TABLES: dict[str, Callable[[], str]] = {
    "metrics-main": lambda: _family_table("main"),
    "metrics-thresholds": lambda: _family_table("thresholds"),
    "metrics-slo": lambda: _family_table("slo"),
    "metrics-otlp": _otlp_short,
    "otlp-instruments": _otlp_long,
}


def render(text: str) -> str:
    """`text` with every generated block replaced by its table from the catalogue."""

    def sub(m: re.Match[str]) -> str:
        return m.group(1) + TABLES[m.group("name")]() + m.group(4)

    return _BLOCK.sub(sub, text)


def blocks(text: str) -> list[str]:
    return [m.group("name") for m in _BLOCK.finditer(text)]


def generate(check: bool = False, pages: tuple[Path, ...] = PAGES) -> list[Path]:
    """Rewrite the pages (or, with `check`, only report them): the pages that were stale."""
    stale = []
    for page in pages:
        text = page.read_text()
        new = render(text)
        if new != text:
            stale.append(page)
            if not check:
                page.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = generate(check=check)
    for page in stale:
        print(f"{page}: {'out of date' if check else 'rewritten'} (python -m agent.metrics_doc)")
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
