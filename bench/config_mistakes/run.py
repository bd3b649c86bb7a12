"""The mistake matrix: `agent check-config` (and, where it matters, a bounded `agent run`) on
each kind of bad config, recording exit code, wall time and peak memory of the agent process.

A mistake is handled ("ok") when the agent exits 3 within the time bound, names the problem in a
few lines on stderr (no traceback) and stays within the memory bound. The valid guide sample and
5,000 valid targets are measured in the same run as the reference.

    .venv/bin/python -m bench.config_mistakes.run           # results/ and the table
    .venv/bin/python -m bench.config_mistakes.run --update  # and the BENCHMARKS.md section
    # --reload-before DIR: also reload memory, this tree against an older checkout (git archive)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sectra-pacs-prod.json"
ENV = {"SECTRA_API_PASSWORD": "bench-password-value", "SECTRA_API_KEY": "bench-api-key-value"}
RESULTS = Path(__file__).resolve().parent / "results"
TIME_BOUND = 30.0  # seconds a check-config may take before it counts as hung
RUN_BOUND = 30.0  # seconds an `agent run` may take to refuse a bad config (or start serving)
SERVE_FOR = 2.0  # a started `agent run` is stopped this long after it printed its address
MEMORY_BOUND_MB = 300.0
SECTION = "## Config mistakes (bench/config_mistakes)"


def sample() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text())


def _json(doc: Any) -> bytes:
    return json.dumps(doc, indent=2).encode()


def _with(path: list[str | int], value: Any) -> bytes:
    doc = sample()
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return _json(doc)


def _raw_duration(text: str) -> bytes:
    """The sample with healthCheck.interval replaced by a raw JSON token (nan, inf, 1e300)."""
    doc = sample()
    doc["healthCheck"]["interval"] = "__RAW__"
    return _json(doc).replace(b'"__RAW__"', text.encode())


def _many(n: int) -> bytes:
    base = sample()
    targets = []
    for i in range(n):
        t = json.loads(json.dumps(base))
        t["id"] = f"pacs-{i:05d}"
        t["config"].update(host=f"pacs-{i}.example.org", enableTLS=False)
        s = t["secttraConfig"]
        s["apiEndpoint"] = f"https://api-{i}.example.org"
        s["worklistEndpoint"] = f"https://api-{i}.example.org/worklist"
        s["viewerEndpoint"] = f"https://viewer-{i}.example.org"
        targets.append(t)
    return _json({"targets": targets})


def _alias_bomb() -> bytes:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    lines.append("id: bomb\nconfig:\n  host: pacs.example.org\n  port: 104\nextra: *a8")
    return ("\n".join(lines) + "\n").encode()


def _deep(n: int) -> bytes:
    return ("[" * n + "]" * n).encode()


@dataclass
class Case:
    name: str
    what: str
    data: bytes
    suffix: str = ".json"
    expect: int = 3
    run_too: bool = False  # also start `agent run` on it (bounded)


def cases() -> list[Case]:
    dup = _json(sample()).replace(b'"id": "sectra-pacs-prod",', b'"id": "a", "id": "b",', 1)
    return [
        Case(
            "valid sample",
            "examples/sectra-pacs-prod.json as is (reference)",
            _json(sample()),
            expect=0,
            run_too=True,
        ),
        Case(
            "5,000 targets",
            "5,000 valid copies of the sample (reference for size)",
            _many(5000),
            expect=0,
            run_too=True,
        ),
        Case("duplicate keys", 'a JSON object with "id" twice', dup, run_too=True),
        Case("nan duration", "healthCheck.interval: NaN", _raw_duration("NaN"), run_too=True),
        Case(
            "inf duration",
            "healthCheck.interval: Infinity",
            _raw_duration("Infinity"),
            run_too=True,
        ),
        Case(
            "1e300 duration",
            "healthCheck.interval: 1e300 (ms)",
            _raw_duration("1e300"),
            run_too=True,
        ),
        Case(
            "bad listen",
            'agent.listen: "127.0.0.1:99999"',
            _json({"targets": [sample()], "agent": {"listen": "127.0.0.1:99999"}}),
            run_too=True,
        ),
        Case(
            "URL port out of range",
            "secttraConfig.apiEndpoint with port 70000",
            _with(["secttraConfig", "apiEndpoint"], "https://pacs-api.example.org:70000/api"),
            run_too=True,
        ),
        Case(
            "unknown urlTemplate placeholder",
            "probes.viewer.urlTemplate with {patientName}",
            _with(["probes"], {"viewer": {"urlTemplate": "?p={patientName}"}}),
            run_too=True,
        ),
        Case(
            "missing caFile",
            "config.tls.caFile names a file that does not exist",
            _with(["config", "tls"], {"caFile": "/nonexistent/pacs-ca.pem"}),
            run_too=True,
        ),
        Case(
            "non-UTF-8",
            "a Latin-1 byte (0xE9) in a name",
            _json(sample()).replace(b"Sectra PACS Production", b"Sectra PACS Produ\xe9", 1),
        ),
        Case("deep nesting", "100,000 nested JSON arrays", _deep(100_000)),
        Case("empty file", "0 bytes", b""),
        Case(
            "BOM JSON",
            "the sample with a UTF-8 byte-order mark",
            b"\xef\xbb\xbf" + _json(sample()),
            expect=0,
        ),
        Case("alias bomb", "YAML aliases expanding to 10^9 nodes", _alias_bomb(), suffix=".yaml"),
    ]


@dataclass
class Row:
    case: str
    command: str
    what: str
    exit: int | None
    seconds: float
    peak_mb: float
    stderr_lines: int
    first_line: str
    traceback: bool
    listening_s: float | None
    ok: bool


def measure(args: list[str], bound: float) -> tuple[int | None, float, float, str, float | None]:
    """Run the agent, bounded; (exit code or None if killed, seconds, peak RSS MB, stderr,
    seconds until it printed "Listening on" or None). A started daemon is stopped SERVE_FOR
    seconds after it started listening."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_"))}
    env.update(ENV)
    t0 = time.monotonic()
    p = subprocess.Popen(
        [sys.executable, "-m", "agent", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
    reader.start()
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    listening: list[float] = []

    def watch_stdout() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            if line.startswith(b"Listening on") and not listening:
                listening.append(time.monotonic() - t0)
                threading.Timer(SERVE_FOR, kill).start()

    threading.Thread(target=watch_stdout, daemon=True).start()
    timer = threading.Timer(bound, kill)
    timer.start()
    # wait4: this child's own rusage (ru_maxrss in KiB on Linux), not the sum of all children
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.monotonic() - t0
    timer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    reader.join(5)
    text = b"".join(err).decode("utf-8", "replace")
    code = None if killed.is_set() else p.returncode
    return code, elapsed, usage.ru_maxrss / 1024.0, text, (listening or [None])[0]


def judge(
    case: Case,
    code: int | None,
    seconds: float,
    mb: float,
    err: str,
    bound: float,
    run: bool,
    listening: float | None,
) -> bool:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    tb = "Traceback" in err
    if tb or mb > MEMORY_BOUND_MB:
        return False
    if case.expect == 0:
        # a valid config: check-config exits 0; `agent run` keeps running until the bound
        return listening is not None if run else code == 0 and seconds < bound
    return code == 3 and seconds < bound and 0 < len(lines) <= 5


def _file_name(case: Case) -> str:
    return f"{case.name.replace(' ', '_').replace(',', '')}{case.suffix}"


def generate(directory: Path) -> None:
    """Write every input and a manifest. Runs in its own process (see main): a child's ru_maxrss
    starts from its parent's RSS at fork, so the measuring process must stay small."""
    manifest = []
    for case in cases():
        (directory / _file_name(case)).write_bytes(case.data)
        manifest.append({**asdict(case), "data": None})
    (directory / "manifest.json").write_text(json.dumps(manifest))


def run_case(case: Case, directory: Path) -> list[Row]:
    path = directory / _file_name(case)
    rows = []
    plans = [("check-config", ["check-config", "--config", str(path)], TIME_BOUND, False)]
    if case.run_too:
        plans.append(
            ("run", ["run", "--listen", "127.0.0.1:0", "--config", str(path)], RUN_BOUND, True)
        )
    for label, args, bound, is_run in plans:
        code, seconds, mb, err, listening = measure(args, bound)
        lines = [ln.replace(str(path), "<input>") for ln in err.splitlines() if ln.strip()]
        # the reason, not the "<input>: invalid" / "invalid configuration:" header above it
        reasons = [ln for ln in lines if not ln.rstrip().endswith(("invalid", ":"))]
        first = (reasons or lines or [""])[0]
        if listening is not None:
            first = f"(serving after {listening:.2f} s, stopped {SERVE_FOR:.0f} s later)"
        rows.append(
            Row(
                case=case.name,
                command=label,
                what=case.what,
                exit=code,
                seconds=round(seconds, 2),
                peak_mb=round(mb, 1),
                stderr_lines=len(lines),
                first_line=first[:160],
                traceback="Traceback" in err,
                listening_s=None if listening is None else round(listening, 2),
                ok=judge(case, code, seconds, mb, err, bound, is_run, listening),
            )
        )
    return rows


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), Python "
        f"{platform.python_version()}"
    )


def table(rows: list[Row]) -> str:
    out = [
        "| input | command | exit | time s | peak MB | lines on stderr | first line | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        first = r.first_line.replace("|", "\\|")
        if r.traceback:
            first = "Traceback ... " + first
        exit_text = (
            ("stopped" if r.listening_s is not None else "killed at bound")
            if (r.exit is None)
            else str(r.exit)
        )
        verdict = "ok" if r.ok else "**RED**"
        out.append(
            f"| {r.case} | {r.command} | {exit_text} | {r.seconds:.2f} | {r.peak_mb:.0f} | "
            f"{r.stderr_lines} | `{first}` | {verdict} |"
        )
    return "\n".join(out)


def section(rows: list[Row], when: str, commit: str, reload_table: str = "") -> str:
    red = [f"{r.case} ({r.command})" for r in rows if not r.ok]
    return f"""{SECTION}

What the agent does with each kind of config mistake: `agent check-config` on the input, and for
the mistakes that `agent run` would also meet, a bounded `agent run` ({RUN_BOUND:.0f} s). "ok" means
it exits 3 in time with at most five lines on stderr, no traceback, under {MEMORY_BOUND_MB:.0f} MB
(for the two valid references: check-config exits 0 and `run` starts serving, printing its
address; it is then stopped {SERVE_FOR:.0f} s later). Peak memory is the
agent process's own maximum RSS (`os.wait4` rusage of the child; the inputs are generated in a
separate process so that the measuring parent, whose RSS at fork a child's maximum starts from,
stays small). The valid guide sample and 5,000
valid targets, measured in the same run, are the reference.

Command: `git archive 55a295f | tar -x -C /tmp/agent-before`, then
`.venv/bin/python -m bench.config_mistakes.run --update --reload-before /tmp/agent-before`
Machine: {machine()}
Run: {when}, commit {commit}

{table(rows)}

Red: {", ".join(red) if red else "none"}.
{reload_table}"""


def update_benchmarks(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text()
    if SECTION in doc:
        start = doc.index(SECTION)
        nxt = doc.find("\n## ", start + len(SECTION))
        doc = doc[:start] + text + (doc[nxt + 1 :] if nxt != -1 else "")
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update", action="store_true", help="rewrite the BENCHMARKS.md section")
    ap.add_argument("--only", help="run only cases whose name contains this")
    ap.add_argument("--generate", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument(
        "--reload-before",
        type=Path,
        metavar="DIR",
        help="also measure reload memory (reload_memory.py) here and in this older checkout",
    )
    args = ap.parse_args()
    if args.generate:
        generate(Path(args.generate))
        return 0
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="config-mistakes-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "bench.config_mistakes.run", "--generate", tmp],
            cwd=ROOT,
            check=True,
        )
        manifest = json.loads((Path(tmp) / "manifest.json").read_text())
        for item in manifest:
            case = Case(**{**item, "data": b""})
            if args.only and args.only not in case.name:
                continue
            for row in run_case(case, Path(tmp)):
                rows.append(row)
                print(
                    f"{row.case:32} {row.command:12} exit={row.exit} {row.seconds:6.2f}s "
                    f"{row.peak_mb:6.1f}MB {'ok' if row.ok else 'RED'}  {row.first_line[:70]}",
                    flush=True,
                )
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "results.json").write_text(
        json.dumps(
            {
                "when": when,
                "commit": commit,
                "machine": machine(),
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
        )
        + "\n"
    )
    reload_table = ""
    if args.reload_before:
        from bench.config_mistakes.reload_memory import measure as reload_measure

        now = reload_measure(ROOT, 200, 100)
        before = reload_measure(args.reload_before, 200, 100)
        reload_table = f"""
Reloads that bring new target ids (`bench/config_mistakes/reload_memory.py`, same run; "before"
is `{args.reload_before}`, an older checkout whose targets each had a `logging.getLogger()`):

| tree | RSS growth over 200 reloads of 100 new ids | loggers added |
|---|---|---|
| this tree | {now["rss_growth_mb"]:.1f} MB | {now["loggers_added"]} |
| before | {before["rss_growth_mb"]:.1f} MB | {before["loggers_added"]} |
"""
    text = section(rows, when, commit, reload_table)
    (RESULTS / "report.md").write_text(text)
    if args.update:
        update_benchmarks(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
