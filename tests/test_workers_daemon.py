"""`agent run --workers 2` as a user runs it: real processes, the embedded simulator as the PACS,
one port. Each target is probed by exactly one worker; /metrics, /health and / are one document
each; a killed worker comes back; SIGHUP and /-/reload reach every worker; SIGTERM stops all."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import trustme

from agent.simulator import SimulatedPACS
from agent.worker_pool import unix_request
from tests.helpers import wait_until
from tests.helpers.agent_cli import ROOT, agent_env
from tests.helpers.daemon import start_agent
from tests.helpers.promserver import find_promtool

IDS = [f"site-{i}" for i in range(6)]


def _target(sim: SimulatedPACS, tid: str) -> dict[str, Any]:
    doc = sim.endpoint_config(tid, interval_ms=1000)
    doc["secttraConfig"] = {}  # DICOM probes only: six targets stay light on a shared machine
    return doc


def _write(cfg: Path, sim: SimulatedPACS, ids: list[str]) -> None:
    cfg.write_text(json.dumps({"targets": [_target(sim, t) for t in ids]}))


@contextmanager
def _agent(cfg: Path, log: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    with log.open("w") as err:
        p, url = start_agent(
            ["--config", str(cfg), *extra],
            stderr=err,
            env=agent_env({"TMPDIR": str(log.parent)}),
            cwd=ROOT,
            timeout=60,
        )
        try:
            yield p, url
        finally:
            if p.poll() is None:
                p.kill()
            p.wait(10)


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                out.append(int(d))
    return out


def _workers(agent: subprocess.Popen[str], tmp: Path) -> dict[int, tuple[int, str]]:
    """worker index → (pid, socket path): the pid files the workers write next to their sockets
    (the agent runs with TMPDIR=tmp), for the agent's own children only."""
    kids = set(_children(agent.pid))
    out = {}
    for f in tmp.glob("pacs-agent-workers-*/worker-*.pid"):
        try:
            pid = int(f.read_text())
        except (OSError, ValueError):
            continue
        if pid in kids:
            out[int(f.stem.split("-")[1])] = (pid, str(f.with_suffix(".sock")))
    return out


def _worker_get(sock: str, path: str) -> bytes:
    got = unix_request(sock, "GET", path, timeout=10)
    assert got is not None and got[0] in (200, 503), got
    return got[1]


def _worker_targets(sock: str) -> set[str]:
    """The targets a worker reports: its /health is a line `INDEX\tJSON` per target."""
    body = _worker_get(sock, "/health")
    return {json.loads(line.split(b"\t", 1)[1])["id"] for line in body.splitlines()}


def _samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, v = line.rpartition(" ")
            assert key not in out, f"series twice in the merged /metrics: {key}"
            out[key] = float(v)
    return out


def _health(url: str) -> dict[str, Any]:
    r = httpx.get(url + "/health", timeout=10)
    assert r.status_code in (200, 503)
    return r.json()


def _all_ran(url: str, ids: list[str], after: str = "") -> bool:
    """Every target of `ids` is in /health, and each check has a result (from after `after`).
    Ran, not passed: on a loaded shared machine a run may time out; which worker ran it is
    what these tests are about."""
    doc = _health(url)
    return sorted(t["id"] for t in doc["targets"]) == sorted(ids) and all(
        c.get("lastRun", "") > after for t in doc["targets"] for c in t["checks"]
    )


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _shape(doc: dict[str, Any]) -> Any:
    return (
        sorted(doc),
        [
            (t["id"], sorted(t), [(c["name"], sorted(c)) for c in t["checks"]])
            for t in doc["targets"]
        ],
    )


def test_two_workers_split_the_targets_behind_one_port(tmp_path: Path) -> None:
    with SimulatedPACS() as sim:
        cfg = tmp_path / "agent.json"
        _write(cfg, sim, IDS)
        with _agent(cfg, tmp_path / "one.log", "--workers", "1") as (one, one_url):
            assert _children(one.pid) == []  # --workers 1: the one process of before
            wait_until(lambda: _all_ran(one_url, IDS), 30, 0.2, "single process: all targets ran")
            single = _health(one_url)
        with _agent(cfg, tmp_path / "agent.log", "--workers", "2") as (p, url):
            workers = _workers(p, tmp_path)
            assert sorted(workers) == [0, 1]
            wait_until(lambda: _all_ran(url, IDS), 30, 0.2, "all targets ran")

            # each target is probed by exactly one worker, and each worker probes some
            owned = []
            for _, sock in workers.values():
                owned.append(_worker_targets(sock))
                runs = _samples(_worker_get(sock, "/metrics").decode())
                ran = {
                    t
                    for t in IDS
                    if runs.get(f'pacs_probe_attempts_total{{target="{t}",probe="dicom_echo"}}', 0)
                    > 0
                }
                assert ran == owned[-1]  # it probes what it reports, nothing else
            assert owned[0] and owned[1] and not owned[0] & owned[1]
            assert owned[0] | owned[1] == set(IDS)

            # /health: one document for all targets, config order, the single process' shape
            doc = _health(url)
            assert [t["id"] for t in doc["targets"]] == IDS
            order = ["HEALTHY", "UNKNOWN", "DEGRADED", "UNHEALTHY"]
            assert doc["status"] == max((t["status"] for t in doc["targets"]), key=order.index)
            assert _shape(doc) == _shape(single)

            # /metrics: valid, complete, agent-level series once
            text = httpx.get(url + "/metrics", timeout=10).text
            check = subprocess.run(
                [find_promtool(), "check", "metrics"],
                input=text.encode(),
                capture_output=True,
                timeout=30,
            )
            assert check.returncode == 0, check.stderr.decode() + check.stdout.decode()
            s = _samples(text)
            for t in IDS:
                for probe in ("dicom_echo", "dicom_find"):
                    assert f'probe_success{{target="{t}",probe="{probe}"}}' in s
            assert s["pacs_agent_targets"] == len(IDS)
            assert sum(v for k, v in s.items() if k.startswith("pacs_agent_health{")) == 1.0
            assert s["pacs_agent_workers"] == 2.0
            assert (
                s['pacs_agent_worker_up{worker="0"}'] == s['pacs_agent_worker_up{worker="1"}'] == 1
            )
            assert len([k for k in s if k.startswith("pacs_agent_info{")]) == 1
            assert (
                len([k for k in s if k.startswith("pacs_agent_self_probe_overhead_seconds")]) == 1
            )

            # the status page lists every target; /probe reaches the owning worker
            page = httpx.get(url + "/", timeout=10).text
            for t in IDS:
                assert f'id="t-{t}"' in page
            assert "6 target(s)" in page
            r = httpx.get(
                url + "/probe", params={"target": IDS[3], "probe": "dicom_echo"}, timeout=30
            )
            assert r.status_code == 200 and "probe_success " in r.text
            r = httpx.get(
                url + "/probe", params={"target": "nope", "probe": "dicom_echo"}, timeout=30
            )
            assert r.status_code == 404


def test_a_killed_worker_is_restarted_and_its_targets_come_back(tmp_path: Path) -> None:
    with SimulatedPACS() as sim:
        cfg = tmp_path / "agent.json"
        _write(cfg, sim, IDS)
        log = tmp_path / "agent.log"
        with _agent(cfg, log, "--workers", "2") as (p, url):
            wait_until(lambda: _all_ran(url, IDS), 30, 0.2, "all targets ran")
            pid, sock = _workers(p, tmp_path)[1]
            theirs = _worker_targets(sock)
            killed_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), 10, 0.05, "worker 1 gone")

            def restarted() -> bool:
                w = _workers(p, tmp_path)
                return 1 in w and w[1][0] != pid

            wait_until(restarted, 30, 0.1, "worker 1 restarted")
            wait_until(lambda: _all_ran(url, IDS, killed_at), 60, 0.2, "its targets run again")
            s = _samples(httpx.get(url + "/metrics", timeout=10).text)
            assert s['pacs_agent_worker_restarts_total{worker="1"}'] == 1.0
            assert s['pacs_agent_worker_restarts_total{worker="0"}'] == 0.0
            new_sock = _workers(p, tmp_path)[1][1]
            again = _worker_targets(new_sock)
            assert again == theirs  # the same targets, the stable split
            assert p.poll() is None
        assert "worker 1 (pid" in log.read_text() and "exited" in log.read_text()


@pytest.mark.parametrize("edit", ["broken", "other targets"])
def test_a_restarted_worker_runs_the_accepted_config_not_the_edited_file(
    tmp_path: Path, edit: str
) -> None:
    """The file changed after the last accepted reload and was not reloaded: a worker that
    restarts now must run what the other workers run. Reading the file again, it exited on a
    broken file until someone fixed it, and on a valid one took its share of a target set the
    others do not run (some targets probed twice, some never)."""
    with SimulatedPACS() as sim:
        cfg = tmp_path / "agent.json"
        _write(cfg, sim, IDS)
        log = tmp_path / "agent.log"
        with _agent(cfg, log, "--workers", "2") as (p, url):
            accepted_ids = [*IDS, "site-reloaded"]  # the snapshot follows an accepted reload
            _write(cfg, sim, accepted_ids)
            r = httpx.post(url + "/-/reload", timeout=60)
            assert r.status_code == 200, r.text
            wait_until(lambda: _all_ran(url, accepted_ids), 30, 0.2, "the reloaded set runs")
            pid, sock = _workers(p, tmp_path)[1]
            theirs = _worker_targets(sock)
            if edit == "broken":
                cfg.write_text("{not json")
            else:
                _write(cfg, sim, [f"other-{i}" for i in range(6)])
            killed_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
            os.kill(pid, signal.SIGKILL)

            def restarted() -> bool:
                w = _workers(p, tmp_path)
                return 1 in w and w[1][0] != pid

            wait_until(restarted, 30, 0.1, "worker 1 restarted")
            wait_until(
                lambda: _all_ran(url, accepted_ids, killed_at), 60, 0.2, "its targets run again"
            )
            assert _worker_targets(_workers(p, tmp_path)[1][1]) == theirs
            s = _samples(httpx.get(url + "/metrics", timeout=10).text)
            assert s['pacs_agent_worker_up{worker="1"}'] == 1.0
            assert s['pacs_agent_worker_restarts_total{worker="1"}'] == 1.0
            snapshots = list(tmp_path.glob("pacs-agent-workers-*/worker-*.config"))
            assert len(snapshots) == 2 and all(f.stat().st_mode & 0o077 == 0 for f in snapshots)
        assert "invalid configuration" not in log.read_text()


def _reload_ts(sock: str) -> float:
    s = _samples(_worker_get(sock, "/metrics").decode())
    return s["pacs_config_last_reload_success_timestamp_seconds"]


def test_sighup_and_reload_reach_every_worker(tmp_path: Path) -> None:
    with SimulatedPACS() as sim:
        cfg = tmp_path / "agent.json"
        _write(cfg, sim, IDS)
        with _agent(cfg, tmp_path / "agent.log", "--workers", "2") as (p, url):
            workers = _workers(p, tmp_path)
            before = {j: _reload_ts(sock) for j, (_, sock) in workers.items()}
            new_ids = [*IDS[1:], "site-new-a", "site-new-b", "site-new-c"]
            _write(cfg, sim, new_ids)
            p.send_signal(signal.SIGHUP)
            wait_until(
                lambda: all(_reload_ts(sock) > before[j] for j, (_, sock) in workers.items()),
                30,
                0.1,
                "every worker reloaded",
            )
            wait_until(lambda: _all_ran(url, new_ids), 30, 0.2, "the new target set runs")
            assert [t["id"] for t in _health(url)["targets"]] == new_ids  # the new config's order
            assert p.poll() is None

            _write(cfg, sim, IDS)
            r = httpx.post(url + "/-/reload", timeout=60)
            assert (
                r.status_code == 200 and r.text.strip() == f"config reloaded: {len(IDS)} target(s)"
            )
            wait_until(lambda: _all_ran(url, IDS), 30, 0.2, "back to the first set")

            cfg.write_text("{not json")
            r = httpx.post(url + "/-/reload", timeout=60)
            assert r.status_code == 400 and "rejected" in r.text
            s = _samples(httpx.get(url + "/metrics", timeout=10).text)
            assert s["pacs_config_last_reload_successful"] == 0.0
            assert sorted(t["id"] for t in _health(url)["targets"]) == sorted(IDS)  # kept running


def test_sigterm_stops_the_agent_and_every_worker(tmp_path: Path) -> None:
    with SimulatedPACS() as sim:
        cfg = tmp_path / "agent.json"
        _write(cfg, sim, IDS)
        with _agent(cfg, tmp_path / "agent.log", "--workers", "2") as (p, url):
            pids = [pid for pid, _ in _workers(p, tmp_path).values()]
            assert len(pids) == 2
            p.send_signal(signal.SIGTERM)
            assert p.wait(15) == 0
            wait_until(lambda: not any(_alive(w) for w in pids), 5, 0.05, "workers gone")


def test_workers_stop_when_the_agent_is_killed(tmp_path: Path) -> None:
    with SimulatedPACS() as sim:
        cfg = tmp_path / "agent.json"
        _write(cfg, sim, IDS)
        with _agent(cfg, tmp_path / "agent.log", "--workers", "2") as (p, url):
            pids = [pid for pid, _ in _workers(p, tmp_path).values()]
            p.kill()  # no chance to stop them: they notice their stdin closing
            p.wait(10)
            wait_until(lambda: not any(_alive(w) for w in pids), 15, 0.05, "orphans gone")


def test_the_port_keeps_its_tls_and_basic_auth_with_workers(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    hashed = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"basic_auth_users:\n  prometheus: {hashed}\n"
    )
    with SimulatedPACS() as sim:
        cfg = tmp_path / "agent.json"
        _write(cfg, sim, IDS)
        extra = ("--workers", "2", "--web.config.file", str(web))
        with _agent(cfg, tmp_path / "agent.log", *extra) as (p, url):
            assert url.startswith("https://")
            assert len(_workers(p, tmp_path)) == 2
            verify = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
            for path in ("/metrics", "/health", "/"):
                assert httpx.get(url + path, verify=verify, timeout=10).status_code == 401
            auth = ("prometheus", "s3cret-pass")
            r = httpx.get(url + "/metrics", verify=verify, auth=auth, timeout=10)
            assert r.status_code == 200 and "pacs_agent_workers 2.0" in r.text
            r = httpx.get(url + "/health", verify=verify, auth=auth, timeout=10)
            assert sorted(t["id"] for t in r.json()["targets"]) == sorted(IDS)
            with pytest.raises(httpx.HTTPError):  # plain HTTP gets nothing
                httpx.get(url.replace("https://", "http://") + "/metrics", timeout=2)
