"""Sharding targets across agent replicas by rendezvous (highest random weight) hashing.

Every target belongs to exactly one shard; going from n to n+1 shards moves only the ~1/(n+1) of
targets that the new shard wins, and no target moves between the old shards.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, target_id: str) -> bool:
        return owner(target_id, self.count) == self.index


def _weight(shard: int, target_id: str) -> int:
    h = hashlib.blake2b(f"{shard}\x00{target_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big")


def owner(target_id: str, count: int) -> int:
    return max(range(count), key=lambda i: _weight(i, target_id))


def _worker_weight(worker: int, target_id: str) -> int:
    # Same rendezvous scheme, its own hash domain: with the shards' weights, worker j of shard k
    # would win exactly the targets shard j wins, and a pod with N = M workers would leave all
    # but one worker idle.
    h = hashlib.blake2b(
        f"{worker}\x00{target_id}".encode(), digest_size=8, person=b"agent-workers"
    ).digest()
    return int.from_bytes(h, "big")


def worker_owner(target_id: str, workers: int) -> int:
    """Which of a process's `workers` probes the target (independent of the shard split)."""
    return max(range(workers), key=lambda i: _worker_weight(i, target_id))


@dataclass(frozen=True)
class WorkerShard(Shard):
    """Worker `worker` of `workers` inside shard index/count: owns the targets the shard owns
    and, among those, the ones the worker split gives it. Prints as the shard, so what a worker
    exports (pacs_agent_info, /health "shard") reads as the pod's."""

    worker: int = 0
    workers: int = 1

    def __str__(self) -> str:
        return super().__str__()

    def owns(self, target_id: str) -> bool:
        return super().owns(target_id) and worker_owner(target_id, self.workers) == self.worker


def parse_shard(text: str) -> Shard:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"shard must look like i/n, got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {text!r}: need 0 <= i < n")
    return Shard(i, n)


def resolve_shard(flag: str | None, configured: str | None) -> Shard:
    """--shard, then AGENT_SHARD, then a StatefulSet ordinal with AGENT_SHARD_COUNT, then config."""
    if flag:
        return parse_shard(flag)
    env = os.environ.get("AGENT_SHARD")
    if env:
        return parse_shard(env)
    count = os.environ.get("AGENT_SHARD_COUNT")
    if count:
        host = os.environ.get("HOSTNAME") or socket.gethostname()
        m = re.search(r"-(\d+)$", host)
        if not m:
            raise ValueError(f"AGENT_SHARD_COUNT is set but host name {host!r} has no -<ordinal>")
        return parse_shard(f"{m.group(1)}/{count}")
    if configured:
        return parse_shard(configured)
    return Shard(0, 1)
