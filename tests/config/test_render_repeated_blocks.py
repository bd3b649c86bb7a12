"""check-config's YAML reuses the text of a block that repeats at the same place (a large config
is mostly the same defaulted blocks, target after target). Reuse must never show one value as
another that renders differently, nor stop a block that differs from showing."""

from __future__ import annotations

from typing import Any

import yaml

from agent.config.render import dump_yaml, yaml_chunks


def _target(i: int, tls: dict[str, Any], extra: Any) -> dict[str, Any]:
    return {
        "id": f"t{i}",
        "config": {"host": f"h{i}.example.org", "port": 104, "tls": tls},
        "probes": {"dicom_echo": {"enabled": True}, "x": extra},
        "list": [{"a": 1}, {"a": 1}],
    }


# values that are equal or alike in some ways but render differently
LOOKALIKES: list[Any] = [
    {"v": 1},
    {"v": "1"},
    {"v": True},
    {"v": "true"},
    {"v": 1.5},
    {"v": None},
    {"v": "null"},
    {"v": []},
    {"v": [1]},
    {"v": ["1"]},
    {"v": {}},
    {1: "v"},
    {"1": "v"},
]


def test_repeated_and_differing_blocks_read_back_as_themselves() -> None:
    tls = {"verify": True, "caFile": None, "minVersion": "1.2"}
    targets = [_target(i, tls, LOOKALIKES[i % len(LOOKALIKES)]) for i in range(200)]
    # after many equal blocks at one place, a different one there must still show as itself
    targets += [_target(200, {**tls, "verify": False}, {"v": 1}), _target(201, tls, {"v": 2})]
    doc = {"targets": targets}
    assert yaml.safe_load(dump_yaml(doc)) == doc
    text = dump_yaml(doc)
    assert text.count("verify: false") == 1 and text.count("verify: true") == 201


def test_blocks_that_all_differ_render_as_they_are() -> None:
    doc = {"targets": [_target(i, {"n": i, "s": str(i)}, {"v": i}) for i in range(300)]}
    assert yaml.safe_load(dump_yaml(doc)) == doc


def test_chunks_are_the_text_in_pieces() -> None:
    doc = {"targets": [_target(i, {"n": i % 3}, LOOKALIKES[i % 5]) for i in range(2000)]}
    chunks = yaml_chunks(doc)
    assert len(chunks) > 1 and all(c.endswith("\n") for c in chunks)
    assert "".join(chunks) == dump_yaml(doc)
    assert yaml.safe_load("".join(chunks)) == doc
