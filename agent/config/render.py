"""Plain data (what model_dump(mode="json") gives) as block YAML, without PyYAML's representer.

PyYAML builds a node per value before emitting; for 5,000 targets that was a million nodes,
most of check-config's 15 s and 200 MB. This writes the same block style directly. Strings are
plain when PyYAML would read them back as the same string, double-quoted (JSON escapes, which
YAML accepts) otherwise; whole floats are written as integers (30000, not 30000.0). So
yaml.safe_load(dump_yaml(x)) == x, with 30000.0 read back as 30000.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

_PLAIN = re.compile(r"[A-Za-z0-9_./<][A-Za-z0-9_./<>:@?=&%+~, -]*")
_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"
# First characters with which PyYAML might read a plain scalar as something else (a number, a
# boolean, null...); a string starting otherwise is a string without asking the resolver.
_IMPLICIT_FIRST = frozenset(k for k in _RESOLVER.yaml_implicit_resolvers if k is not None)
_WILDCARD = None in _RESOLVER.yaml_implicit_resolvers


def _plain_ok(s: str) -> bool:
    return (
        _PLAIN.fullmatch(s) is not None
        and not s.endswith((" ", ":"))
        and ": " not in s
        and " #" not in s
        and (
            (s[0] not in _IMPLICIT_FIRST and not _WILDCARD)
            or _RESOLVER.resolve(yaml.ScalarNode, s, (True, False)) == _STR_TAG
        )
    )


class _Scalars:
    """Scalar text, memoised: the same keys and values repeat for every target."""

    def __init__(self) -> None:
        self.strings: dict[str, str] = {}

    def __call__(self, v: Any) -> str:
        if isinstance(v, str):
            out = self.strings.get(v)
            if out is None:
                out = v if _plain_ok(v) else json.dumps(v, ensure_ascii=False)
                if len(self.strings) < 100_000:
                    self.strings[v] = out
            return out
        if v is None:
            return "null"
        if v is True:
            return "true"
        if v is False:
            return "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            if v.is_integer() and abs(v) < 2**53:
                # durations are whole milliseconds: 30000, not 30000.0
                return str(int(v))
            return repr(v) if v == v and v not in (float("inf"), float("-inf")) else ".nan"
        return json.dumps(str(v), ensure_ascii=False)


class _Blocks:
    """Rendered blocks (a mapping's or a list's lines, one string), reused for an equal value
    at the same place: most of a large config is the same defaulted blocks (tls, retryPolicy,
    probes, ...) target after target. The key is the value's repr(), which tells apart what
    renders differently (1 and "1", true and 1). Where a place's values keep differing (a
    target's own `config:` with its host), it stops trying after a few, so a config of all
    different blocks costs little more than without it."""

    TRIES = 32  # looks at a place before deciding whether its blocks repeat
    MAX_ENTRIES = 50_000  # bounds the memory a pathological config could make it hold

    def __init__(self) -> None:
        self.text: dict[tuple[str, str, str], str] = {}
        self.tries: dict[tuple[str, str], list[int]] = {}  # place -> [looks, hits]

    def key(self, pad: str, prefix: str, v: Any) -> tuple[str, str, str] | None:
        """The cache key of `v` rendered at this place, or None: not worth looking up here."""
        place = (pad, prefix)
        stats = self.tries.get(place)
        if stats is None:
            stats = self.tries[place] = [0, 0]
        looks, hits = stats
        if looks >= self.TRIES and hits * 4 < looks:  # mostly different here: stop looking
            return None
        stats[0] += 1
        key = (pad, prefix, repr(v))
        if key in self.text:
            stats[1] += 1
        return key


def dump_yaml(data: Any) -> str:
    return "".join(yaml_chunks(data))


def yaml_chunks(data: Any) -> list[str]:
    """dump_yaml(data) in pieces of a few thousand lines, each ending with a newline: a large
    config's text (13 MB for 5,000 targets) can be written out without joining it first."""
    out: list[str] = []
    chunks: list[str] = []  # lines joined a few thousand at a time: a million small strings
    scalar = _Scalars()  # at once would cost more memory than the text itself
    strings = scalar.strings
    blocks = _Blocks()

    def flush() -> None:
        if len(out) >= 4096:
            out.append("")
            chunks.append("\n".join(out))
            out.clear()

    def value(v: Any, pad: str, prefix: str, depth: int) -> None:
        """`prefix` is the text before the value on its first line ("key:" or "-")."""
        t = type(v)
        if (t is dict or t is list) and v and depth >= 2:
            key = blocks.key(pad, prefix, v)
            if key is not None:
                text = blocks.text.get(key)
                if text is None:
                    start = len(out)
                    container(v, pad, prefix, depth)
                    text = "\n".join(out[start:])
                    del out[start:]
                    if len(blocks.text) < blocks.MAX_ENTRIES:
                        blocks.text[key] = text
                out.append(text)
                return
        container(v, pad, prefix, depth)

    def container(v: Any, pad: str, prefix: str, depth: int) -> None:
        if isinstance(v, dict) and v:
            if prefix.endswith("-"):  # a mapping in a list starts on the dash's line
                mapping(v, pad + "  ", prefix + " ", depth)
            else:
                out.append(prefix)
                mapping(v, pad + "  ", None, depth)
        elif isinstance(v, list) and v:
            out.append(prefix)
            inner = pad if not prefix.endswith("-") else pad + "  "
            for item in v:
                value(item, inner, inner + "-", depth + 1)
                if depth < 2:  # never inside a block being cached
                    flush()
        elif isinstance(v, dict):
            out.append(f"{prefix} {{}}")
        elif isinstance(v, list):
            out.append(f"{prefix} []")
        else:
            out.append(f"{prefix} {scalar(v)}")

    def mapping(m: dict[Any, Any], pad: str, first: str | None, depth: int) -> None:
        lead = pad if first is None else first
        for k, v in m.items():
            key = strings.get(k) if type(k) is str else None
            if key is None:
                key = scalar(k)
            if type(v) is str:  # inlined: the common case, a million times for 5,000 targets
                text = strings.get(v)
                out.append(f"{lead}{key}: {scalar(v) if text is None else text}")
            else:
                value(v, pad, f"{lead}{key}:", depth + 1)
            lead = pad
            if depth < 2:
                flush()

    if isinstance(data, dict) and data:
        mapping(data, "", None, 0)
    elif isinstance(data, list) and data:
        for item in data:
            value(item, "", "-", 1)
            flush()
    else:
        return [yaml.safe_dump(data)]
    if out:
        out.append("")
        chunks.append("\n".join(out))
    return chunks
