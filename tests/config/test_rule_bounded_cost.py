"""Loading costs a bounded amount: files over 16 MiB are refused before parsing, and YAML aliases
may add at most 100,000 nodes (a 300-byte "billion laughs" document used to take 20 s and 2.3 GB).
The bomb runs in a subprocess with a memory limit and a timeout, so a regression fails fast
instead of taking the machine down."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

from agent.config import load_config_text
from tests.config.common import ROOT, minimal

MAX_BYTES = 16 * 1024 * 1024

BOMB = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def limited() -> None:
    limit = 1024**3  # 1 GiB of address space: the old loader needed 2.3 GB for this bomb
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def check_config(path: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        preexec_fn=limited,
    )


def test_billion_laughs_is_refused_early(tmp_path: Path) -> None:
    assert len(BOMB) < 400
    f = tmp_path / "bomb.yaml"
    f.write_text(BOMB)
    r = check_config(f)
    assert r.returncode == 3, r.stderr[-1000:]
    assert "Traceback" not in r.stderr
    assert f"{f}:6: aliases expand to more than 100,000 nodes" in r.stderr, r.stderr


def test_an_alias_that_refers_to_itself_is_refused() -> None:
    from tests.config.common import problems

    [p] = problems(None, yaml_text="targets: &t\n  - id: t1\n    config: {host: h}\n    x: *t\n")
    assert p.startswith("t.yaml:") and "refers to its own anchor" in p, p


def test_sharing_blocks_through_aliases_still_loads() -> None:
    lines = ["targets:"]
    for i in range(500):
        anchor = " &hc" if i == 0 else ""
        lines.append(f"  - id: t{i}\n    config: {{host: h{i}}}")
        if i == 0:
            lines.append(f"    healthCheck:{anchor} {{interval: 60000, timeout: 5000}}")
        else:
            lines.append("    healthCheck: *hc")
    loaded = load_config_text("\n".join(lines) + "\n", "t.yaml", {})
    assert len(loaded.model.targets) == 500
    assert loaded.model.targets[499].healthCheck.interval == 60


def test_a_file_over_16_mib_is_refused_naming_the_limit(tmp_path: Path) -> None:
    f = tmp_path / "big.json"
    head = json.dumps(minimal(name="x"))[:-1]
    f.write_text(head + ', "description": "' + "x" * MAX_BYTES + '"}')
    r = check_config(f)
    assert r.returncode == 3
    assert f"{f}:0: the file is larger than 16 MiB" in r.stderr, r.stderr[-500:]
