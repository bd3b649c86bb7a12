"""Read and parse a config document with bounded cost; find the line of a field only when needed.

Parsing refuses what would otherwise pass silently or cost without bound: duplicate keys (the last
would win, so a second `tls: {verify: false}` could quietly turn verification off), text that is
not UTF-8, files over MAX_BYTES, nesting deeper than MAX_DEPTH and YAML aliases that expand past
MAX_ALIAS_NODES (a few hundred bytes of "billion laughs" would otherwise cost gigabytes).
Problems are `file:line: path: what is wrong` and never echo a value.
"""

from __future__ import annotations

import bisect
import json
import sys
from collections.abc import Callable

# Both exist at runtime (the pure-Python scanner and the C string scanner); typeshed omits them.
from json.decoder import scanstring  # type: ignore[attr-defined]
from json.scanner import py_make_scanner  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, BinaryIO

import yaml

MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
# Nodes that YAML aliases may add when expanded. Sharing a 10-key `tls` block between 5,000
# targets needs 50,000; a billion-laughs document needs 10**9.
MAX_ALIAS_NODES = 100_000

Path_ = tuple[str | int, ...]


class SourceError(Exception):
    """A problem with the document as a whole or one place in it: (line, path, message)."""

    def __init__(self, line: int, path: Path_ | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.path = path
        self.message = message


def fmt_path(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


# -- reading -------------------------------------------------------------------------------------


def read_bytes(path: str) -> bytes:
    """The file (or stdin for "-"), refusing more than MAX_BYTES without reading it all."""
    limit = MAX_BYTES
    if path == "-":
        data = _read_limited(sys.stdin.buffer, limit)
    else:
        with Path(path).open("rb") as f:
            data = _read_limited(f, limit)
    return data


def _read_limited(f: BinaryIO, limit: int) -> bytes:
    data = f.read(limit + 1)
    if len(data) > limit:
        raise SourceError(0, None, f"the file is larger than {limit // (1024 * 1024)} MiB")
    return data


def decode(data: bytes) -> str:
    """UTF-8 text without a leading byte-order mark (YAML accepts one; JSON readers differ)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise SourceError(line, None, f"not UTF-8 (invalid byte at offset {e.start})") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise SourceError(1, None, "the file is empty")
    return text


def is_json(text: str, source: str) -> bool:
    return source.endswith(".json") or text.lstrip().startswith(("{", "["))


# -- JSON ----------------------------------------------------------------------------------------


class _Duplicate(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Duplicate
    return out


def parse_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise SourceError(e.lineno, None, f"not valid JSON: {e.msg}") from None
    except RecursionError:
        line = _too_deep_line(text)
        raise SourceError(line, None, f"nested deeper than {MAX_DEPTH} levels") from None
    except _Duplicate:
        json_lines(text)  # finds the duplicate and raises with its line and path
        raise SourceError(0, None, "duplicate key") from None


def _too_deep_line(text: str) -> int:
    """The line where JSON nesting first exceeds MAX_DEPTH (0 if it does not)."""
    depth, in_string, escaped, line = 0, False, False, 1
    for c in text:
        if c == "\n":
            line += 1
        elif in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line
        elif c in "]}":
            depth -= 1
    return 0


def json_lines(text: str) -> dict[Path_, int]:
    """field path → 1-based line of its key (of the value, for list items), by a small scanner
    over the text that json.loads accepted. Raises SourceError on a duplicate key."""
    newlines = [i for i, c in enumerate(text) if c == "\n"]
    scalar = py_make_scanner(json.JSONDecoder())
    skip_value = json.JSONDecoder().raw_decode
    lines: dict[Path_, int] = {}
    ws = " \t\n\r"

    def line_of(pos: int) -> int:
        return bisect.bisect_right(newlines, pos - 1) + 1

    def skip(i: int) -> int:
        while i < len(text) and text[i] in ws:
            i += 1
        return i

    def value(i: int, path: Path_, depth: int) -> int:
        i = skip(i)
        if depth > MAX_DEPTH:  # no line is asked for deeper than the loader accepts
            return skip_value(text, i)[1]
        c = text[i]
        if c == "{":
            seen: set[str] = set()
            i = skip(i + 1)
            if text[i] == "}":
                return i + 1
            while True:
                i = skip(i)
                key, end = scanstring(text, i + 1)
                kp = (*path, key)
                if key in seen:
                    raise SourceError(
                        line_of(i), kp, "duplicate key (the last would silently replace the first)"
                    )
                seen.add(key)
                lines[kp] = line_of(i)
                i = skip(end)  # at ':'
                i = value(i + 1, kp, depth + 1)
                i = skip(i)
                if text[i] == "}":
                    return i + 1
                i += 1  # ','
        if c == "[":
            i = skip(i + 1)
            if text[i] == "]":
                return i + 1
            n = 0
            while True:
                i = skip(i)
                lines.setdefault((*path, n), line_of(i))
                i = value(i, (*path, n), depth + 1)
                i = skip(i)
                n += 1
                if text[i] == "]":
                    return i + 1
                i += 1
        _, end = scalar(text, i)
        return end

    lines[()] = line_of(skip(0))
    try:
        value(0, (), 0)
    except (RecursionError, ValueError, IndexError):
        pass  # not the text json.loads accepted: keep the lines found so far
    return lines


# -- YAML ----------------------------------------------------------------------------------------


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, deep nesting and runaway alias expansion while the
    node graph is composed, before anything is built from it."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._alias_nodes = 0
        self._sizes: dict[int, int] = {}
        self._open_anchors: list[str] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            if event.anchor in self._open_anchors:
                raise SourceError(
                    event.start_mark.line + 1, None, "an alias refers to its own anchor"
                )
            node = super().compose_node(parent, index)
            # PyYAML returns the anchored node for an alias; its stubs say "or None".
            if node is not None:
                self._alias_nodes += self._expanded(node, event.start_mark)
            if self._alias_nodes > MAX_ALIAS_NODES:
                raise SourceError(
                    event.start_mark.line + 1,
                    None,
                    f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes",
                )
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise SourceError(mark.line + 1, None, f"nested deeper than {MAX_DEPTH} levels")
        anchor = getattr(self.peek_event(), "anchor", None)
        if anchor is not None:
            self._open_anchors.append(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open_anchors.pop()

    def _expanded(self, root: yaml.Node, mark: yaml.Mark) -> int:
        """Nodes under `root` counting shared ones each time they are reached (memoised)."""
        done = self._sizes
        if id(root) in done:
            return done[id(root)]
        active: set[int] = set()

        def size(node: yaml.Node) -> int:
            k = id(node)
            if k in done:
                return done[k]
            if k in active:
                raise SourceError(mark.line + 1, None, "an alias refers to its own anchor")
            active.add(k)
            total = 1
            if isinstance(node, yaml.MappingNode):
                for kn, vn in node.value:
                    total += size(kn) + size(vn)
                    if total > MAX_ALIAS_NODES:
                        break
            elif isinstance(node, yaml.SequenceNode):
                for vn in node.value:
                    total += size(vn)
                    if total > MAX_ALIAS_NODES:
                        break
            active.discard(k)
            done[k] = total
            return total

        return size(root)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise SourceError(
                    key_node.start_mark.line + 1,
                    None,
                    "duplicate key (the last would silently replace the first)",
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    except SourceError as e:
        if e.path is None and e.message.startswith("duplicate key"):
            e.path = _yaml_path_at(text, e.line)
        raise
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(e, "problem", None) or "syntax error"
        raise SourceError(line, None, f"not valid YAML: {problem}") from None
    except RecursionError:
        raise SourceError(0, None, f"nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def _yaml_path_at(text: str, line: int) -> Path_ | None:
    """The path of the (last) key on `line`, to name a duplicate key."""
    found: Path_ | None = None
    for path, ln in yaml_lines(text, duplicates_ok=True).items():
        if ln == line and path:
            found = path
    return found


class _LenientLoader(StrictLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        return yaml.SafeLoader.construct_mapping(self, node, deep=deep)


def yaml_lines(text: str, duplicates_ok: bool = False) -> dict[Path_, int]:
    """field path → 1-based line of its key, from the composed node graph (already bounded)."""
    lines: dict[Path_, int] = {}
    loader = (_LenientLoader if duplicates_ok else StrictLoader)(text)
    try:
        root = loader.get_single_node()
    except (yaml.YAMLError, SourceError, RecursionError):
        return lines
    finally:
        loader.dispose()
    budget = [MAX_ALIAS_NODES * 2 + 1_000_000]

    def walk(node: yaml.Node, path: Path_, line: int) -> None:
        budget[0] -= 1
        if budget[0] < 0 or len(path) > MAX_DEPTH + 1:
            return
        lines[path] = line
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
                walk(v, (*path, key), k.start_mark.line + 1)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i), item.start_mark.line + 1)

    if root is not None:
        walk(root, (), root.start_mark.line + 1)
    return lines


def parse(text: str, source: str) -> tuple[Any, Callable[[], dict[Path_, int]]]:
    """The data, and a function that builds the path → line map (call it only to report)."""
    if is_json(text, source):
        return parse_json(text), lambda: json_lines(text)
    return parse_yaml(text), lambda: yaml_lines(text)
