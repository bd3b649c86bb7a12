"""IMAGE TEST: the container image's build steps, run without a Docker engine (there is none
here), so no image is built; what an engine would add (the base image itself) is checked apart.

Marked `image` (`pytest -m "not image"` leaves it out).
1. the build context from the builder stage's COPY instructions, honouring .dockerignore;
2. the builder's own `RUN pip wheel ... && python -m venv ... && pip --python ... install` line,
   parsed from the Dockerfile and run by /bin/sh with the image paths (/wheels,
   /opt/pacs-health-agent) mapped into a temporary directory, `python`/`pip` being this test's
   interpreter (not the image's: the wheel is pure Python, its dependencies come from PyPI or
   pip's cache, which the image build turns off);
3. every pinned dependency resolves to wheels for the image's Python version on x86_64
   (`pip install --dry-run --only-binary=:all: --python-version`), so the build needs no compiler
   there;
4. the installed `agent check-config` on examples/sectra-pacs-prod.json from outside the source
   tree (only the installed wheel is importable), with the ${VAR}s it needs set;
5. the installed `agent run` on 127.0.0.1 passes the Dockerfile's own HEALTHCHECK command, then
   stops on SIGTERM as Kubernetes would stop it.
The static tests check the rest: pinned base image (Python >= 3.13, within requires-python),
non-root user, no build tools in the final stage, entrypoint, healthcheck.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.daemon import start_agent

pytestmark = pytest.mark.image

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
EXAMPLE = REPO / "examples" / "sectra-pacs-prod.json"
BUILD_TIMEOUT = 600


# ------------------------------------------------------------------------- Dockerfile, parsed


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with line continuations joined and comment lines dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    return out


def parse_dockerfile() -> tuple[dict[str, str], list[Stage]]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, args in _instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            parts = args.split()
            base = re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m.group(1) or m.group(2)], parts[0]
            )
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif not stages:
            if keyword == "ARG" and "=" in args:
                key, _, value = args.partition("=")
                global_args[key] = value
        else:
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


# ------------------------------------------------------------------------ .dockerignore, applied


def _glob_re(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go filepath.Match plus **), anchored at the context root."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _glob_re(pattern)))
    return rules


def excluded(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """A path is excluded when the last rule matching it, or one of its parent directories, is
    an exclusion (Docker's semantics: a rule on a directory covers its contents)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for negate, regex in rules:
        if any(regex.match(p) for p in prefixes):
            verdict = not negate
    return verdict


def build_context_files() -> list[str]:
    rules = ignore_rules()
    files = []
    for root, dirs, names in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        dirs[:] = [d for d in dirs if d not in (".git", ".venv")]
        for name in names:
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            if not excluded(rel, rules):
                files.append(rel)
    return sorted(files)


def stage_copies(stage: Stage, dest_root: Path) -> None:
    """Carry out the stage's COPY instructions (from the build context) into dest_root."""
    context = set(build_context_files())
    workdir = "/"
    for keyword, args in stage.instructions:
        if keyword == "WORKDIR":
            workdir = os.path.join(workdir, args)
        if keyword != "COPY" or "--from" in args:
            continue
        tokens = [t for t in shlex.split(args) if not t.startswith("--")]
        *sources, dest = tokens
        dest_abs = os.path.normpath(os.path.join(workdir, dest))
        for src in sources:
            src = os.path.normpath(src)
            target = dest_root / dest_abs.lstrip("/")
            if src in context:  # a file
                if dest.endswith("/") or len(sources) > 1:
                    target = target / os.path.basename(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / src, target)
                continue
            members = [f for f in context if f.startswith(src + "/")]
            assert members, f"COPY {src}: not in the build context (see .dockerignore)"
            for member in members:
                out = target / os.path.relpath(member, src)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / member, out)


# ----------------------------------------------------------------------------- static checks


def test_dockerfile_is_multi_stage_pinned_and_non_root() -> None:
    global_args, stages = parse_dockerfile()
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name == "builder"
    pinned = r"python:3\.\d+\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?"
    assert re.fullmatch(pinned, final.base), f"final base {final.base!r} not pinned"
    assert builder.base == final.base  # the venv is copied across: same interpreter path
    assert any("pip wheel --no-deps" in run for run in builder.all("RUN"))
    assert any(args.startswith("--from=builder") for args in final.all("COPY"))
    final_runs = " ".join(final.all("RUN"))
    for tool in ("apt-get install", "gcc", "build-essential", "make ", "pip install"):
        assert tool not in final_runs, f"final stage installs build tooling: {tool}"
    assert final.last("USER") in ("65532", "65532:65532")
    assert exec_form(final.last("ENTRYPOINT")) == ["agent"]
    assert exec_form(final.last("CMD")) == ["run", "--config", "/etc/pacs-health-agent/config.yaml"]
    assert "9887" in final.last("EXPOSE").split()
    health = final.last("HEALTHCHECK")
    assert health.split(" CMD ")[0].startswith("--")
    argv = exec_form(health.split(" CMD ", 1)[1])
    assert argv[:2] == ["python", "-c"]
    assert "urllib.request" in argv[2] and "/-/healthy" in argv[2]


def image_python() -> tuple[int, int]:
    """(major, minor) of the Python in the final stage's base image tag."""
    _, stages = parse_dockerfile()
    m = re.fullmatch(r"python:(\d+)\.(\d+)\.\d+-slim.*", stages[-1].base)
    assert m, stages[-1].base
    return int(m.group(1)), int(m.group(2))


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_image_python_reads_certificate_chains_and_suits_the_package() -> None:
    major, minor = image_python()
    # SSLSocket.get_verified_chain() is public from 3.13: the chain's earliest expiry, not a
    # private-API fallback.
    assert (major, minor) >= (3, 13)
    floor = re.fullmatch(r">=\s*(\d+)\.(\d+)", pyproject()["project"]["requires-python"])
    assert floor and (major, minor) >= (int(floor.group(1)), int(floor.group(2)))


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_every_pin_has_a_wheel_for_the_image_python(tmp_path: Path) -> None:
    major, minor = image_python()
    # The trixie base has glibc 2.41: any manylinux tag up to that runs there.
    platforms = [f"manylinux_2_{n}_x86_64" for n in range(5, 42)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    report = tmp_path / "report.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--only-binary=:all:",
            "--python-version",
            f"{major}.{minor}",
            *(a for p in platforms for a in ("--platform", p)),
            "--target",
            str(tmp_path / "t"),
            "--report",
            str(report),
            *pyproject()["project"]["dependencies"],
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    names = {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower() for i in installs}
    assert {"cryptography", "grpcio", "bcrypt", "pydantic-core"} <= names, names


def test_dockerignore_keeps_the_context_small_and_clean() -> None:
    files = build_context_files()
    assert "pyproject.toml" in files
    assert any(f.startswith("agent/") and f.endswith(".py") for f in files)
    for f in files:
        top = f.split("/")[0]
        assert top in ("pyproject.toml", "README.md", "LICENSE", "agent", "probes"), f
        assert "__pycache__" not in f and not f.endswith(".pyc"), f


def test_dockerignore_matcher() -> None:
    rules = ignore_rules()
    assert excluded("tests/test_image.py", rules)
    assert excluded(".git/config", rules)
    assert excluded("agent/__pycache__/x.cpython-311.pyc", rules)
    assert not excluded("agent/cli.py", rules)
    assert not excluded("probes/base.py", rules)


# ------------------------------------------------------------------ build, install, run (slow)


def env_of(stage: Stage) -> dict[str, str]:
    out: dict[str, str] = {}
    for args in stage.all("ENV"):
        for token in shlex.split(args):
            key, _, value = token.partition("=")
            out[key] = value
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent installed by the builder stage's own pip line. Returns the venv's bin."""
    tmp = tmp_path_factory.mktemp("image")
    _, stages = parse_dockerfile()
    builder, final = stages[0], stages[-1]
    root = tmp / "rootfs"
    stage_copies(builder, root)
    src = root / "src"  # the builder's WORKDIR
    assert (src / "pyproject.toml").exists()
    (line,) = [run for run in builder.all("RUN") if "pip wheel" in run]
    venv_path = "/opt/pacs-health-agent"
    assert any(f"--from=builder {venv_path}" in c for c in final.all("COPY")), final.all("COPY")
    wheels, venv = tmp / "wheels", tmp / "venv"
    command = line.replace(venv_path, str(venv)).replace("/wheels", str(wheels))
    # `python` and `pip` of the image are this interpreter here
    shims = tmp / "shims"
    shims.mkdir()
    (shims / "python").symlink_to(sys.executable)
    (shims / "pip").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pip "$@"\n')
    (shims / "pip").chmod(0o755)
    env = {**os.environ, **env_of(builder), "PATH": f"{shims}:{os.environ['PATH']}"}
    env.pop("PIP_NO_CACHE_DIR")  # the image build has no cache to keep; here it saves downloads
    run = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert run.returncode == 0, command + "\n" + run.stdout[-3000:] + run.stderr[-3000:]
    (wheel,) = wheels.glob("pacs_health_agent-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        tops = {n.split("/")[0] for n in zf.namelist()}
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    assert tops <= {"agent", "probes", dist_info}, tops
    assert (venv / "bin" / "agent").exists()
    return venv / "bin"


def image_env(bin_dir: Path, home: Path, **extra: str) -> dict[str, str]:
    """The image's environment: its venv first on PATH, nothing from this test run."""
    return {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        **extra,
    }


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_installed_wheel_accepts_the_example_config(installed: Path, tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    names = sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)))
    env = image_env(installed, tmp_path, **{n: f"dummy-{n.lower()}" for n in names})
    proc = subprocess.run(
        [str(installed / "agent"), "check-config", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_healthcheck_command_passes_against_the_installed_agent(
    installed: Path, tmp_path: Path
) -> None:
    _, stages = parse_dockerfile()
    argv = exec_form(stages[-1].last("HEALTHCHECK").split(" CMD ", 1)[1])
    env = image_env(installed, tmp_path)
    # No config: the agent probes its embedded simulated PACS on loopback. It binds port 0 and
    # prints the URL (no released port another process could take in between).
    log = (tmp_path / "agent.log").open("w")
    agent, base = start_agent(
        [], command=[str(installed / "agent")], stderr=log, env=env, cwd=tmp_path
    )
    env["AGENT_HEALTHCHECK_URL"] = f"{base}/-/healthy"
    try:
        healthy, last = False, None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and agent.poll() is None:
            last = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=10, cwd=tmp_path
            )
            if last.returncode == 0:
                healthy = True
                break
            time.sleep(0.5)
        assert agent.poll() is None, "agent exited early:\n" + (tmp_path / "agent.log").read_text()
        assert healthy, last.stderr if last else "no healthcheck ran"
        assert shutil.which(argv[0], path=env["PATH"]) == str(installed / "python")
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(timeout=5)
                pytest.fail("agent did not stop within 15 s of SIGTERM")
        log.close()
