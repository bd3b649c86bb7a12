"""Shared fixtures. Keep this small and additive: several test files and people rely on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.tls import TLSMaterial


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    """A trustme CA (PEM on disk), a second unrelated CA, and leaf certificates on demand."""
    return TLSMaterial(Path(tmp_path_factory.mktemp("tls")))
