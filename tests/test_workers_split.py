"""agent run --workers: how many workers by default, and which worker probes which target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import load_config_text
from agent.cpus import affinity_cpus, cgroup_cpu_limit, usable_cpus
from agent.shard import Shard, WorkerShard
from agent.supervisor import parse_workers, resolve_workers


def _cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return tmp_path


def test_cgroup_v2_quota_is_rounded_down(tmp_path: Path) -> None:
    root = _cgroup(tmp_path, {"cpu.max": "150000 100000\n"})
    assert cgroup_cpu_limit(root) == 1.5
    assert usable_cpus(root) == 1


def test_cgroup_v2_without_quota_leaves_the_affinity_mask(tmp_path: Path) -> None:
    root = _cgroup(tmp_path, {"cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(root) is None
    assert usable_cpus(root) == affinity_cpus()


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    root = _cgroup(
        tmp_path,
        {"cpu,cpuacct/cpu.cfs_quota_us": "50000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
    )
    assert cgroup_cpu_limit(root) == 0.5
    assert usable_cpus(root) == 1  # half a CPU is still one worker


def test_cgroup_v1_no_quota(tmp_path: Path) -> None:
    root = _cgroup(tmp_path, {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"})
    assert cgroup_cpu_limit(root) is None


def test_quota_above_the_affinity_mask_does_not_raise_it(tmp_path: Path) -> None:
    root = _cgroup(tmp_path, {"cpu.max": f"{(affinity_cpus() + 4) * 100000} 100000"})
    assert usable_cpus(root) == affinity_cpus()


IDS = [f"pacs-{i:04d}" for i in range(2000)]


@pytest.mark.parametrize(("shards", "workers"), [(1, 2), (2, 2), (3, 4), (1, 1)])
def test_every_target_has_exactly_one_shard_and_worker(shards: int, workers: int) -> None:
    for t in IDS:
        owners = [
            (k, j)
            for k in range(shards)
            for j in range(workers)
            if WorkerShard(k, shards, worker=j, workers=workers).owns(t)
        ]
        assert len(owners) == 1, (t, owners)
        assert Shard(k := owners[0][0], shards).owns(t)  # inside its pod's own shard
        assert k == owners[0][0]


def test_workers_split_a_shard_evenly_even_when_n_equals_m() -> None:
    # the same hash domain for both splits would give shard 0's targets all to worker 0
    for k in range(2):
        mine = [t for t in IDS if Shard(k, 2).owns(t)]
        counts = [
            sum(WorkerShard(k, 2, worker=j, workers=2).owns(t) for t in mine) for j in range(2)
        ]
        assert min(counts) > 0.4 * len(mine), counts


def test_a_worker_prints_as_its_pod_shard() -> None:
    assert str(WorkerShard(1, 3, worker=0, workers=2)) == "1/3"


def _loaded(n: int):  # noqa: ANN202 - a LoadedConfig
    targets = [
        {"id": f"t{i}", "enabled": i < n, "config": {"host": "127.0.0.1", "port": 104}}
        for i in range(max(n, 1))
    ]
    return load_config_text(json.dumps({"targets": targets}), "<test>", {})


def test_default_workers_is_the_usable_cpus_but_no_more_than_targets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AGENT_WORKERS", raising=False)
    monkeypatch.setattr("agent.supervisor.usable_cpus", lambda: 4)
    assert resolve_workers(None, _loaded(100), Shard(0, 1)) == 4
    assert resolve_workers(None, _loaded(1), Shard(0, 1)) == 1
    assert resolve_workers(None, _loaded(0), Shard(0, 1)) == 1
    monkeypatch.setattr("agent.supervisor.usable_cpus", lambda: 1)
    assert resolve_workers(None, _loaded(100), Shard(0, 1)) == 1  # one core: one process
    assert resolve_workers(3, _loaded(100), Shard(0, 1)) == 3  # the flag wins
    monkeypatch.setenv("AGENT_WORKERS", "2")
    assert resolve_workers(None, _loaded(100), Shard(0, 1)) == 2


@pytest.mark.parametrize("text", ["0", "-1", "two", "1000"])
def test_bad_worker_counts_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="workers"):
        parse_workers(text)
