"""Read a config file: parse (YAML or JSON), substitute ${VAR}, validate, explain errors.

Errors name the file, the line and the field path, and never echo a value (it could be a secret).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agent.config.schema import AgentConfig

_VAR = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Keys whose values are secrets wherever they appear, literal or substituted.
SECRET_KEYS = frozenset({"password", "keyPassword"})
# Maps whose values may be secrets (header values carry API keys and tokens): always shown as
# <redacted> in check-config; scrubbed from free text when they came from ${VAR} or the header's
# name says it carries a credential (a literal `X-Client-ID: portal` must not mask the word
# "portal" in every log line).
SECRET_MAPS = frozenset({"customHeaders", "headers"})
_CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|passw|cookie|session", re.I)
REDACTED = "<redacted>"

Path_ = tuple[str | int, ...]


class ConfigError(Exception):
    """An invalid config; `problems` are one line each: `file:line: path: what is wrong`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class LoadedConfig:
    model: AgentConfig
    source: str
    secrets: frozenset[str]
    raw: dict[str, Any]

    def effective(self) -> dict[str, Any]:
        """The validated config as plain data, secrets replaced by <redacted>."""
        data = self.model.model_dump(mode="json")
        return _redact_tree(data)


def _redact_tree(node: Any, key: str | None = None) -> Any:
    if isinstance(node, dict):
        if key in SECRET_MAPS:
            return {k: REDACTED for k in node}
        return {k: _redact_tree(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_redact_tree(v) for v in node]
    if key in SECRET_KEYS and node is not None:
        return REDACTED
    return node


def _line_map(text: str) -> dict[Path_, int]:
    """field path → 1-based line, from the YAML node tree (JSON parses as YAML too)."""
    lines: dict[Path_, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, path: Path_) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
                lines[(*path, key)] = k.start_mark.line + 1
                walk_children(v, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    def walk_children(node: yaml.Node, path: Path_) -> None:
        key_line = lines[path]
        walk(node, path)
        lines[path] = key_line  # report the key's line, not where its value starts

    if root is not None:
        walk(root, ())
    return lines


def _parse(text: str, source: str) -> Any:
    stripped = text.lstrip()
    try:
        if source.endswith(".json") or stripped.startswith(("{", "[")):
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ConfigError([f"{source}:{e.lineno}: not valid JSON: {e.msg}"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(e, "problem", None) or "syntax error"
        raise ConfigError([f"{source}:{line}: not valid YAML: {problem}"]) from None


def _substitute(
    node: Any,
    env: Mapping[str, str],
    path: Path_,
    errors: list[tuple[Path_, str]],
    secrets: set[str],
    secret_ctx: bool,
    header: bool = False,
) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            is_secret = secret_ctx or k in SECRET_KEYS
            if k in SECRET_MAPS and isinstance(v, dict):
                out[k] = {
                    hk: _substitute(
                        hv,
                        env,
                        (*path, k, hk),
                        errors,
                        secrets,
                        secret_ctx or bool(_CREDENTIAL_HEADER.search(str(hk))),
                        header=True,
                    )
                    for hk, hv in v.items()
                }
            else:
                out[k] = _substitute(v, env, (*path, k), errors, secrets, is_secret)
        return out
    if isinstance(node, list):
        return [
            _substitute(v, env, (*path, i), errors, secrets, secret_ctx) for i, v in enumerate(node)
        ]
    if not isinstance(node, str):
        return node

    def repl(m: re.Match[str]) -> str:
        if m.group(1):  # $${X} is a literal ${X}
            return m.group(0)[1:]
        name, default = m.group(2), m.group(3)
        if name in env:
            return env[name]
        if default is not None:
            return default
        errors.append((path, f"environment variable {name} is not set (and has no :-default)"))
        return ""

    value = _VAR.sub(repl, node)
    from_env = value != node
    if value and (secret_ctx or (header and from_env)):
        secrets.add(value)
    return value


def _normalise(data: Any) -> tuple[dict[str, Any], Path_]:
    """Accept one endpoint, a list of endpoints, or {targets, agent}; return the file-path prefix
    that pydantic's `targets` location corresponds to."""
    if isinstance(data, list):
        return {"targets": data}, ()
    if isinstance(data, dict) and ("targets" in data or "agent" in data):
        return data, ("targets",)
    if isinstance(data, dict):
        return {"targets": [data]}, ("<single>",)
    raise ConfigError(["top level must be an endpoint object, a list of them, or {targets: [...]}"])


def _file_path(loc: tuple[Any, ...], prefix: Path_) -> Path_:
    if prefix == ("targets",):
        return tuple(loc)
    if prefix == ("<single>",) and loc[:2] == ("targets", 0):
        return tuple(loc[2:])
    if prefix == () and loc[:1] == ("targets",):
        return tuple(loc[1:])
    return tuple(loc)


def _fmt_path(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _line_for(path: Path_, lines: dict[Path_, int]) -> int:
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return 0


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
}


def load_config_text(
    text: str, source: str = "<config>", env: Mapping[str, str] | None = None
) -> LoadedConfig:
    env = os.environ if env is None else env
    data = _parse(text, source)
    lines = _line_map(text)
    shaped, prefix = _normalise(data)
    # Substitute inside the file's own shape so error paths match the file.
    errors: list[tuple[Path_, str]] = []
    secrets: set[str] = set()
    substituted = _substitute(data, env, (), errors, secrets, False)
    if errors:
        raise ConfigError(
            [f"{source}:{_line_for(p, lines)}: {_fmt_path(p)}: {msg}" for p, msg in errors]
        )
    shaped, prefix = _normalise(substituted)
    try:
        model = AgentConfig.model_validate(shaped)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_input=False, include_url=False):
            path = _file_path(tuple(err["loc"]), prefix)
            # pydantic puts a failing model validator's location on the model itself
            path = tuple(p for p in path if not (isinstance(p, str) and p.startswith("function-")))
            msg = _MESSAGES.get(err["type"], err["msg"])
            msg = msg.removeprefix("Value error, ")
            problems.append(f"{source}:{_line_for(path, lines)}: {_fmt_path(path)}: {msg}")
        raise ConfigError(problems) from None
    return LoadedConfig(model=model, source=source, secrets=frozenset(secrets), raw=shaped)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> LoadedConfig:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{p}: cannot read: {e.strerror}"]) from None
    return load_config_text(text, str(p), env)
