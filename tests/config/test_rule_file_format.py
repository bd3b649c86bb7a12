"""The file itself: UTF-8 only (one line naming the file and the byte offset), nesting at most 64
levels, an empty file said to be empty, a UTF-8 byte-order mark accepted in JSON as in YAML, and
`-` reads standard input. None of these may end in a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from tests.config.common import ROOT, minimal


def load_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    return e.value.problems


def check_config(path: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "--config", path],
        input=stdin,
        capture_output=True,
        timeout=60,
        cwd=ROOT,
    )


def test_latin1_file_is_refused_with_file_and_byte_offset(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_bytes(b"targets:\n  - id: t1\n    name: M\xfcnchen\n    config: {host: h}\n")
    [p] = load_problems(f)
    assert p == f"{f}:3: not UTF-8 (invalid byte at offset 31)", p
    r = check_config(str(f))
    assert r.returncode == 3 and b"Traceback" not in r.stderr
    assert f"{f}:3: not UTF-8 (invalid byte at offset 31)".encode() in r.stderr


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize("depth", [70, 5000])
def test_nesting_beyond_64_levels_is_refused(tmp_path: Path, suffix: str, depth: int) -> None:
    f = tmp_path / f"deep{suffix}"
    text = json.dumps(minimal(name="NESTED")).replace('"NESTED"', "[" * depth + "]" * depth)
    f.write_text(text if suffix == ".json" else "# YAML\n" + text)
    [p] = load_problems(f)
    line = 1 if suffix == ".json" else 2
    assert p.startswith(f"{f}:{line}: ") and "nested deeper than 64 levels" in p, p
    if depth == 5000 and suffix == ".json":  # beyond the interpreter's recursion limit
        r = check_config(str(f))
        assert r.returncode == 3 and b"Traceback" not in r.stderr, r.stderr[-500:]


@pytest.mark.parametrize("text", ["", "\n\n   \n", "# only a comment\n", "\ufeff"])
def test_an_empty_file_is_said_to_be_empty(tmp_path: Path, text: str) -> None:
    f = tmp_path / "empty.yaml"
    f.write_text(text, encoding="utf-8")
    [p] = load_problems(f)
    assert p == f"{f}:1: the file is empty", p


def test_empty_json_file_is_said_to_be_empty(tmp_path: Path) -> None:
    f = tmp_path / "empty.json"
    f.write_text("")
    r = check_config(str(f))
    assert r.returncode == 3 and f"{f}:1: the file is empty".encode() in r.stderr


def test_a_byte_order_mark_is_accepted_in_json(tmp_path: Path) -> None:
    f = tmp_path / "bom.json"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps(minimal(), indent=2).encode())
    assert load_config(f, env={}).model.targets[0].id == "t1"
    r = check_config(str(f))
    assert r.returncode == 0, r.stderr


def test_dash_reads_standard_input() -> None:
    r = check_config("-", stdin=json.dumps(minimal(id="from-stdin")).encode())
    assert r.returncode == 0, r.stderr
    assert b"from-stdin" in r.stdout
    r = check_config("-", stdin=b"targets:\n  - id: y1\n    config: {host: h, port: 99999}\n")
    assert r.returncode == 3
    assert b"<stdin>:3: targets[0].config.port:" in r.stderr, r.stderr
