"""Every generated file in the repository, and what generates it.

    python -m scripts.generate          # write them all (`make generate` runs this)
    python -m scripts.generate --check  # change nothing; exit 1 naming each file that differs

Generated files are committed because they ship: Grafana imports dashboards/*.json, and the Helm
chart can only read files inside its own directory, so it carries copies of alerts/ and of the
dashboards under helm/pacs-health-agent/files/. tests/test_generated_up_to_date.py generates
everything into a temporary directory and fails, naming the file and `make generate`, when a
committed copy differs or is left over.

To add a generated file, add a generator to GENERATORS: a function of the outputs generated so
far that yields Output(path, content). docs/metrics.md, generated from the metrics catalogue,
joins that way (before chart_copies, which copies nothing from docs/).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dashboards.generate import DASHBOARDS, render

REPO = Path(__file__).resolve().parent.parent
FIX = "make generate"
CHART_FILES = "helm/pacs-health-agent/files"


@dataclass(frozen=True)
class Output:
    path: str  # relative to the repository root, with forward slashes
    content: bytes


@dataclass(frozen=True)
class Mirror:
    """A directory whose files matching `patterns` are all generated: any other one is stale."""

    directory: str
    patterns: tuple[str, ...]


def dashboard_json(done: dict[str, bytes]) -> Iterator[Output]:
    for name, build in DASHBOARDS.items():
        yield Output(f"dashboards/{name}", render(build).encode())


# The chart's copies: (source directory, patterns) -> the chart directory holding them.
CHART_COPIES = (
    (Mirror("alerts", ("*.yml", "*.yaml")), Mirror(f"{CHART_FILES}/alerts", ("*.yml", "*.yaml"))),
    (Mirror("dashboards", ("*.json",)), Mirror(f"{CHART_FILES}/dashboards", ("*.json",))),
)


def chart_copies(done: dict[str, bytes]) -> Iterator[Output]:
    """alerts/*.yml|yaml and dashboards/*.json, byte for byte; a source generated above is
    copied as generated, so one run leaves the chart in step with it."""
    for source, copy in CHART_COPIES:
        names = {p.name for pat in source.patterns for p in (REPO / source.directory).glob(pat)}
        names |= {
            Path(path).name
            for path in done
            if Path(path).parent.as_posix() == source.directory
            and any(Path(path).match(pat) for pat in source.patterns)
        }
        for name in sorted(names):
            src = f"{source.directory}/{name}"
            content = done[src] if src in done else (REPO / src).read_bytes()
            yield Output(f"{copy.directory}/{name}", content)


# In order: a generator sees what the ones before it produced.
GENERATORS: tuple[Callable[[dict[str, bytes]], Iterable[Output]], ...] = (
    dashboard_json,
    chart_copies,
)
MIRRORS = tuple(copy for _source, copy in CHART_COPIES)


def generate() -> dict[str, bytes]:
    """Every generated file's path and content, in memory."""
    done: dict[str, bytes] = {}
    for generator in GENERATORS:
        for out in generator(dict(done)):
            done[out.path] = out.content
    return done


def stale(root: Path, expected: Iterable[str]) -> list[str]:
    """Files under `root` in a mirrored directory that nothing generates."""
    wanted = set(expected)
    found = {
        p.relative_to(root).as_posix()
        for m in MIRRORS
        for pat in m.patterns
        for p in (root / m.directory).glob(pat)
    }
    return sorted(found - wanted)


def write(root: Path) -> tuple[dict[str, bytes], list[str]]:
    """Write every generated file under `root` (the repository, or a temporary directory) and
    remove stale mirrored copies; returns what was generated and the paths changed."""
    outputs = generate()
    changed = []
    for path, content in outputs.items():
        target = root / path
        if not target.exists() or target.read_bytes() != content:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            changed.append(f"wrote {path}")
    for path in stale(root, outputs):
        (root / path).unlink()
        changed.append(f"removed {path}")
    return outputs, changed


def differences(generated: Path, committed: Path, paths: Iterable[str]) -> list[str]:
    """What differs between the generated tree and the committed one, one line per file, each
    naming the command that fixes it."""
    paths = sorted(paths)
    problems = []
    for path in paths:
        have = committed / path
        if not have.exists():
            problems.append(f"{path}: missing; run `{FIX}` and commit it")
        elif have.read_bytes() != (generated / path).read_bytes():
            problems.append(f"{path}: differs from what generates it; run `{FIX}` and commit it")
    for path in stale(committed, paths):
        problems.append(f"{path}: nothing generates it (its source is gone); run `{FIX}`")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a committed generated file differs")
    args = parser.parse_args(argv)
    if not args.check:
        for line in write(REPO)[1]:
            print(line)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        outputs, _ = write(Path(tmp))
        problems = differences(Path(tmp), REPO, outputs)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
