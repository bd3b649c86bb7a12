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


def _plain_ok(s: str) -> bool:
    return (
        _PLAIN.fullmatch(s) is not None
        and not s.endswith((" ", ":"))
        and ": " not in s
        and " #" not in s
        and _RESOLVER.resolve(yaml.ScalarNode, s, (True, False)) == _STR_TAG
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


def dump_yaml(data: Any) -> str:
    out: list[str] = []
    chunks: list[str] = []  # lines joined a few thousand at a time: a million small strings
    scalar = _Scalars()  # at once would cost more memory than the text itself
    strings = scalar.strings

    def append(line: str) -> None:
        out.append(line)
        if len(out) >= 4096:
            chunks.append("\n".join(out))
            out.clear()

    def value(v: Any, pad: str, prefix: str) -> None:
        """`prefix` is the text before the value on its first line ("key:" or "-")."""
        if isinstance(v, dict) and v:
            if prefix.endswith("-"):  # a mapping in a list starts on the dash's line
                mapping(v, pad + "  ", first=prefix + " ")
            else:
                append(prefix)
                mapping(v, pad + "  ", first=None)
        elif isinstance(v, list) and v:
            append(prefix)
            inner = pad if not prefix.endswith("-") else pad + "  "
            for item in v:
                value(item, inner, inner + "-")
        elif isinstance(v, dict):
            append(f"{prefix} {{}}")
        elif isinstance(v, list):
            append(f"{prefix} []")
        else:
            append(f"{prefix} {scalar(v)}")

    def mapping(m: dict[Any, Any], pad: str, first: str | None) -> None:
        lead = pad if first is None else first
        for k, v in m.items():
            key = strings.get(k) if type(k) is str else None
            if key is None:
                key = scalar(k)
            if type(v) is str:  # inlined: the common case, a million times for 5,000 targets
                text = strings.get(v)
                append(f"{lead}{key}: {scalar(v) if text is None else text}")
            else:
                value(v, pad, f"{lead}{key}:")
            lead = pad

    if isinstance(data, dict) and data:
        mapping(data, "", None)
    elif isinstance(data, list) and data:
        for item in data:
            value(item, "", "-")
    else:
        return yaml.safe_dump(data)
    out.append("")
    chunks.append("\n".join(out))
    return "\n".join(chunks)
