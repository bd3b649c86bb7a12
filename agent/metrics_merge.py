"""One /metrics from the workers' expositions (agent run --workers N).

Per-target families (prometheus_exporter.FAMILIES) are disjoint between workers, since every
target belongs to one worker: their sample lines are concatenated under one HELP/TYPE header, as
bytes, without parsing (10,000 targets are ~1M lines). The agent-level families, a handful of
series, are parsed and combined by a rule each (AGENT_RULES): a label-free gauge must come out
once, with the value that means the same thing it meant for one process.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.utils import floatToGoString

from agent.evaluator import _SEVERITY, HealthState
from agent.prometheus_exporter import FAMILIES

PER_TARGET = frozenset(name for name, _, _ in FAMILIES)

# family → how the workers' values of one series combine
AGENT_RULES: dict[str, str] = {
    "pacs_agent_health": "worst_state",  # the worst state of any worker that has targets
    "pacs_agent_targets": "sum",
    "pacs_agent_info": "max",  # version and shard are the pod's: the same series everywhere
    # the agent's reload succeeded only if every worker's did; its time is the oldest one's
    "pacs_config_last_reload_successful": "min",
    "pacs_config_last_reload_success_timestamp_seconds": "min",
    # the agent is as slow as its slowest process
    "pacs_agent_self_probe_overhead_seconds": "max",
    "pacs_scheduler_start_lateness_seconds": "sum",  # histogram buckets add up
    "pacs_otlp_export_failures": "sum",
}
DEFAULT_BY_TYPE = {"counter": "sum", "histogram": "sum", "summary": "sum", "gauge": "max"}

Block = tuple[bytes, bytes]  # (HELP/TYPE header, sample lines)


def split_families(text: bytes) -> list[tuple[str, bytes, bytes | memoryview]]:
    """(name, header, samples) per family, in order; a family starts at its `# HELP` line.
    The samples are a view into `text`: 10,000 targets' families are not copied to be joined."""
    out: list[tuple[str, bytes, bytes | memoryview]] = []
    starts: list[int] = [0] if text.startswith(b"# HELP ") else []
    i = text.find(b"\n# HELP ")
    while i >= 0:
        starts.append(i + 1)
        i = text.find(b"\n# HELP ", i + 1)
    view = memoryview(text)
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(text)
        head_end = text.find(b"\n", start, end) + 1 or end
        if text.startswith(b"# TYPE ", head_end):
            head_end = text.find(b"\n", head_end, end) + 1 or end
        name = text[start + 7 : text.index(b" ", start + 7)].decode()
        out.append((name, text[start:head_end], view[head_end:end]))
    return out


def _type(header: bytes) -> str:
    for line in header.splitlines():
        if line.startswith(b"# TYPE "):
            return line.split()[-1].decode()
    return "untyped"


def _samples(body: bytes | memoryview) -> list[tuple[bytes, float]]:
    out = []
    for line in bytes(body).splitlines():
        if not line or line.startswith(b"#"):
            continue
        key, _, value = line.rpartition(b" ")
        out.append((key, float(value)))
    return out


def _state_of(body: bytes | memoryview) -> HealthState | None:
    for key, v in _samples(body):
        if v == 1.0 and b'state="' in key:
            return HealthState(key.split(b'state="', 1)[1].split(b'"', 1)[0].decode())
    return None


def _combine(rule: str, values: list[float]) -> float:
    if rule == "sum":
        return sum(values)
    if rule == "min":
        return min(values)
    return max(values)


def _merge_agent_family(
    name: str, header: bytes, bodies: list[bytes | memoryview], targets: list[float]
) -> bytes:
    # a counter's family is `x_total` in the text, `x` to prometheus_client
    rule = (
        AGENT_RULES.get(name)
        or AGENT_RULES.get(name.removesuffix("_total"))
        or DEFAULT_BY_TYPE.get(_type(header), "max")
    )
    keys: dict[bytes, list[float]] = {}
    for body in bodies:
        for key, v in _samples(body):
            keys.setdefault(key, []).append(v)
    if rule == "worst_state":
        # a worker without targets says UNKNOWN; it must not hide the others' HEALTHY
        states = [
            s for body, n in zip(bodies, targets, strict=True) if n > 0 and (s := _state_of(body))
        ]
        state = max(states, key=lambda s: _SEVERITY[s]) if states else HealthState.UNKNOWN
        lines = [
            k + b" " + (b"1.0" if f'state="{state.value}"'.encode() in k else b"0.0") + b"\n"
            for k in keys
        ]
    else:
        lines = [
            k + b" " + floatToGoString(_combine(rule, vs)).encode() + b"\n"
            for k, vs in keys.items()
        ]
    return header + b"".join(lines)


def merge_expositions(texts: Sequence[bytes]) -> bytes:
    """The workers' /metrics as one exposition; families in first-seen order."""
    order: list[str] = []
    headers: dict[str, bytes] = {}
    workers: list[dict[str, bytes | memoryview]] = []
    for text in texts:
        fams: dict[str, bytes | memoryview] = {}
        for name, header, body in split_families(text):
            if name not in headers:
                order.append(name)
                headers[name] = header
            fams[name] = body
        workers.append(fams)
    targets = [
        next((v for _, v in _samples(w.get("pacs_agent_targets", b""))), 0.0) for w in workers
    ]
    parts: list[bytes | memoryview] = []
    for name in order:
        if name in PER_TARGET:
            parts.append(headers[name])
            parts.extend(w[name] for w in workers if name in w)
        else:
            bodies = [w.get(name, b"") for w in workers]
            parts.append(_merge_agent_family(name, headers[name], bodies, targets))
    return b"".join(parts)


__all__ = ["AGENT_RULES", "PER_TARGET", "merge_expositions", "split_families"]
