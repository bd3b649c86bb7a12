"""The agent as users install it: a venv holding `pip install .` and nothing else.

The development venv also holds the test and bench extras. Some of them change what the
daemon's process weighs: matplotlib (the growth plot) brings numpy and Pillow, and pydicom
imports numpy whenever it can, which adds ~20 MB to the agent's RSS. The container image and a
plain `pip install .` have neither, so `--installed` measures the agent from such a venv.

The venv is kept under bench/out/installed-venv and the project is reinstalled into it (without
its dependencies) at each use, so it runs the checkout's code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.scale.settings import ROOT, log

VENV = ROOT / "bench" / "out" / "installed-venv"


def installed_python(venv: Path = VENV) -> Path:
    """The venv's interpreter, with this checkout installed in it as a wheel would be."""
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"creating {venv} (pip install . with the runtime dependencies only)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # the declared dependencies (a venv cut short while it was being filled gets the rest), then
    # the checkout's code itself, rebuilt even when its version has not changed
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, str(ROOT)], check=True, timeout=1800)
    subprocess.run([*pip, "--no-deps", "--force-reinstall", str(ROOT)], check=True, timeout=600)
    # what is installed must be consistent: a broken venv would measure something else
    subprocess.run([str(python), "-m", "pip", "check"], check=True, timeout=120,
                   capture_output=True)
    return python


def extras_present(python: Path) -> list[str]:
    """Packages that pydicom would pick up and the runtime set does not declare."""
    code = ("import importlib.util as u; print(' '.join(m for m in ('numpy', 'PIL', "
            "'matplotlib') if u.find_spec(m)))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                         check=True, timeout=60, cwd="/")
    return out.stdout.split()
