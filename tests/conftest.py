"""Shared fixtures and the test tiers. Keep this small and additive: several test files and
people rely on it.

Tiers: `make test` runs everything; `make test-fast` runs `-m fast`, the unit tests. At
collection, a test is marked `integration` when it, its fixtures or the test helpers they call
(followed through tests.*, found by the names their code uses) start another process (DCMTK,
Prometheus/promtool, `python -m agent`, Chromium, helm: anything through `subprocess`), or use a
whole in-process stack (INTEGRATION_NAMES: the agent service, an OTLP collector). Mark a test
`integration` by hand where this cannot see it. SLOW_TESTS get `slow`. A test not marked
`integration`, `slow`, `timing`, `image` or `plain_install` is marked `fast`.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.transport import ThreadedAssociationServer

from tests.helpers.tls import TLSMaterial

# Fixture modules, registered once for every test (a test asks for the fixture by name).
pytest_plugins = ["tests.helpers.promserver"]

# socketserver's accept loop looks for a shutdown request every 0.5 s, so stopping a pynetdicom
# SCP (start_server(block=False), then shutdown()) took half a second, once per test with a DICOM
# peer. In the test process the loop polls every 20 ms, as tests/helpers/http_servers.py does
# for HTTP peers (50 wake-ups a second per live server; nothing else changes).
_serve_forever = ThreadedAssociationServer.serve_forever


def _serve_forever_polling_fast(
    self: ThreadedAssociationServer, poll_interval: float = 0.02
) -> None:
    _serve_forever(self, poll_interval)


ThreadedAssociationServer.serve_forever = _serve_forever_polling_fast  # type: ignore[method-assign]

# In-process, but the whole stack: the agent service with its HTTP server, scheduler and
# exporters; a gRPC/HTTP OTLP collector.
INTEGRATION_NAMES = frozenset({"running_agent", "AgentService", "GrpcReceiver", "HttpReceiver"})
# In-process tests that wait out a deadline on purpose (a hung, dripping or stalled peer) or
# repeat thousands of times: about a second or more each, 55 s together on a 2-core machine.
# They get `slow` (module file name, test function name); `make test` still runs them.
SLOW_TESTS = {
    "test_config_behaviours.py": {
        "test_degraded_clears_once_slow_runs_leave_the_window",
        "test_max_connections_caps_concurrent_associations",
    },
    "test_faults_dicom.py": {"test_find_fault_reason_and_deadline"},
    "test_fuzz_dicom.py": {"test_malformed_association_replies", "test_malformed_dimse_replies"},
    "test_probe_api_ping.py": {
        "test_dripping_body_is_cut_at_the_deadline",
        "test_https_slow_first_byte_is_timeout_not_tls",
        "test_slow_first_byte_beyond_the_timeout_is_timeout",
    },
    "test_probe_dicom_find.py": {"test_stall_after_first_match_times_out_within_the_deadline"},
    "test_probe_dicom_retrieve.py": {"test_pending_forever_times_out_within_the_deadline"},
    "test_probe_dicom_store.py": {"test_never_findable_is_unexpected_result_within_the_deadline"},
    "test_probe_failover.py": {
        "test_failover_timeout_split_decides_whether_a_slow_secondary_serves",
        "test_hung_primary_fails_over_within_the_run_timeout",
    },
    "test_probe_viewer.py": {
        "test_slow_worklist_is_bounded_by_the_deadline",
        "test_slow_redirect_loop_is_cut_by_the_deadline",
        "test_a_redirect_to_a_name_that_never_resolves_ends_at_the_deadline",
    },
    "test_probe_worklist.py": {
        "test_an_endless_worklist_ends_within_the_deadline",
        "test_thousands_of_items_are_counted_up_to_max_results_within_the_deadline",
        "test_a_long_worklist_below_the_cap_is_counted_exactly",
    },
    "test_retry_policy.py": {"test_retries_never_exceed_the_deadline"},
    "test_shard.py": {"test_every_target_in_exactly_one_shard"},
    "test_web_config.py": {
        "test_password_checks_are_bounded_and_excess_gets_429",
        "test_dripping_client_is_closed_at_the_total_deadline",
        "test_unknown_user_costs_as_much_as_a_wrong_password",
    },
}
SLOW_MARKERS = ("integration", "slow", "timing", "image", "plain_install")


def _names(code: types.CodeType) -> set[str]:
    """Global and attribute names a code object and its nested functions use."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _functions(obj: Any) -> list[Any]:
    if not (inspect.isclass(obj) or callable(obj)) or hasattr(obj, "__self__"):
        obj = type(getattr(obj, "__self__", obj))  # an instance or a bound method: its class
    if inspect.isclass(obj):
        members = [getattr(m, "__func__", getattr(m, "fget", m)) for m in vars(obj).values()]
        return [m for m in members if inspect.isfunction(m)]
    obj = inspect.unwrap(obj)
    return [obj] if inspect.isfunction(obj) else []


def _is_integration(obj: Any, seen: set[int]) -> bool:
    """Whether `obj` (a function or class) reaches `subprocess` or INTEGRATION_NAMES, following
    the functions and classes of tests.* modules it names."""
    for fn in _functions(obj):
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        names = _names(fn.__code__)
        if "subprocess" in names or names & INTEGRATION_NAMES:
            return True
        # `from tests.x import y` inside a function: y is looked up in tests.x
        scopes = [fn.__globals__] + [
            vars(sys.modules[n]) for n in names if n.startswith("tests.") and n in sys.modules
        ]
        for name, scope in ((n, sc) for sc in scopes for n in names):
            value = scope.get(name)
            if value is None:
                continue
            if value is subprocess:
                return True
            module = getattr(value, "__module__", None) or ""
            if module == "subprocess":
                return True
            if module.startswith("tests.") and _is_integration(value, seen):
                return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        defs = fixtures.name2fixturedefs.values() if fixtures is not None else []
        seen: set[int] = set()
        # Autouse fixtures apply to every test, so they are cheap or act only where needed (the
        # Prometheus prewarm): they do not decide a test's tier.
        if _is_integration(getattr(item, "function", None), seen) or any(
            _is_integration(d.func, seen)
            for ds in defs
            for d in ds
            if not getattr(d, "_autouse", False)
        ):
            item.add_marker(pytest.mark.integration)
        name = getattr(item, "originalname", item.name)
        if name in SLOW_TESTS.get(item.path.name, ()):
            item.add_marker(pytest.mark.slow)
        if not any(item.get_closest_marker(m) for m in SLOW_MARKERS):
            item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    """A trustme CA (PEM on disk), a second unrelated CA, and leaf certificates on demand."""
    return TLSMaterial(Path(tmp_path_factory.mktemp("tls")))
