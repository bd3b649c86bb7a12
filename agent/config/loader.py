"""Read a config file: parse (YAML or JSON), substitute ${VAR}, validate, explain errors.

Errors name the file, the line and the field path, and never echo a value (it could be a secret).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agent.config.schema import AgentConfig
from agent.config.source import (
    MAX_DEPTH,
    SourceError,
    decode,
    fmt_path,
    parse,
    read_bytes,
)
from agent.config.urls import redact_url, url_password

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
STDIN = "-"


class ConfigError(Exception):
    """An invalid config; `problems` are one line each: `file:line: path: what is wrong`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# What a load keeps besides the line map and the text: the model, secrets, the targets written
# as secttraConfig, literal secrets' and URL passwords' paths, the targets' path prefix.
_Kept = tuple[
    AgentConfig, frozenset[str], frozenset[int], tuple[Path_, ...], tuple[Path_, ...], Path_
]


@dataclass(frozen=True)
class LoadedConfig:
    model: AgentConfig
    source: str
    secrets: frozenset[str]
    # Where the file holds a literal secret, or a URL with a password (file paths, for warnings).
    literal_secrets: tuple[Path_, ...] = ()
    url_passwords: tuple[Path_, ...] = ()
    # indexes of targets written with the guide's `secttraConfig` spelling (for file paths)
    secttra_targets: frozenset[int] = frozenset()
    # the file path of targets[i]: (i,) in a list, ("targets", i) in {targets}; None: one endpoint
    target_prefix: Path_ | None = ("targets",)
    line: Callable[[Path_], int] = field(default=lambda path: 0, repr=False, compare=False)
    # The text as read, before ${VAR} substitution: what a restarted worker loads again
    # (agent/worker.py). Never printed: a literal secret may be in it.
    text: str = field(default="", repr=False, compare=False)

    def effective(self) -> dict[str, Any]:
        """The validated config as plain data, secrets replaced by <redacted>."""
        data = self.model.model_dump(mode="json")
        return _redact_tree(data)

    def target_path(self, index: int) -> Path_:
        if self.target_prefix is None:
            return ()
        return (*self.target_prefix, index)


def _redact_tree(node: Any) -> Any:
    """Secrets masked where they are (a secret key, a header map, a URL's password), in place,
    never by searching text: everything else comes out exactly as it went in."""
    if type(node) is dict:
        for k, v in node.items():
            t = type(v)
            if t is dict:
                if k in SECRET_MAPS:
                    node[k] = dict.fromkeys(v, REDACTED)
                else:
                    _redact_tree(v)
            elif t is list:
                _redact_tree(v)
            elif k in SECRET_KEYS:
                if v is not None:
                    node[k] = REDACTED
            elif t is str and "@" in v:
                node[k] = redact_url(v)
    elif type(node) is list:
        for i, v in enumerate(node):
            t = type(v)
            if t is dict or t is list:
                _redact_tree(v)
            elif t is str and "@" in v:
                node[i] = redact_url(v)
    return node


@dataclass
class _Walk:
    """What substitution finds on its way through the document."""

    env: Mapping[str, str]
    errors: list[tuple[Path_, str]] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    literal_secrets: list[Path_] = field(default_factory=list)
    url_passwords: list[Path_] = field(default_factory=list)


def _substitute(node: Any, w: _Walk, path: Path_, secret_ctx: bool, header: bool = False) -> Any:
    """A copy of `node` with ${VAR} replaced, noting secrets and literal secrets on the way.
    (A copy, not in place: a YAML alias may share one node between a secret and a plain key.)"""
    if len(path) > MAX_DEPTH and isinstance(node, dict | list):
        w.errors.append((path, f"nested deeper than {MAX_DEPTH} levels"))
        return node
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            t = type(v)
            # fast path: most values are numbers, booleans or plain strings in plain places
            if t is not dict and t is not list and not secret_ctx and k not in SECRET_KEYS:
                if t is not str or ("$" not in v and "@" not in v):
                    out[k] = v
                    continue
            if k in SECRET_MAPS and t is dict:
                out[k] = {
                    hk: _substitute(
                        hv,
                        w,
                        (*path, k, hk),
                        secret_ctx or bool(_CREDENTIAL_HEADER.search(str(hk))),
                        header=True,
                    )
                    for hk, hv in v.items()
                }
            else:
                out[k] = _substitute(v, w, (*path, k), secret_ctx or k in SECRET_KEYS)
        return out
    if isinstance(node, list):
        return [
            v
            if type(v) is not dict
            and type(v) is not list
            and not secret_ctx
            and (type(v) is not str or ("$" not in v and "@" not in v))
            else _substitute(v, w, (*path, i), secret_ctx)
            for i, v in enumerate(node)
        ]
    if not isinstance(node, str):
        return node

    from_env = False

    def repl(m: re.Match[str]) -> str:
        nonlocal from_env
        if m.group(1):  # $${X} is a literal ${X}
            return m.group(0)[1:]
        from_env = True
        name, default = m.group(2), m.group(3)
        if name in w.env:
            return w.env[name]
        if default is not None:
            return default
        w.errors.append((path, f"environment variable {name} is not set (and has no :-default)"))
        return ""

    value = _VAR.sub(repl, node) if "$" in node else node
    if value and (secret_ctx or (header and from_env)):
        w.secrets.add(value)
    if value and secret_ctx and not from_env:
        w.literal_secrets.append(path)
    if "@" in value:
        password = url_password(value)
        if password:
            w.secrets.add(password)
            w.url_passwords.append(path)
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
    raise ValueError("must be an endpoint object, a list of them, or {targets: [...]}")


def _file_path(loc: tuple[Any, ...], prefix: Path_) -> Path_:
    if prefix == ("targets",):
        return tuple(loc)
    if prefix == ("<single>",) and loc[:2] == ("targets", 0):
        return tuple(loc[2:])
    if prefix == () and loc[:1] == ("targets",):
        return tuple(loc[1:])
    return tuple(loc)


def _line_for(path: Path_, lines: dict[Path_, int]) -> int:
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return 0


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
}


def _problem(source: str, e: SourceError) -> str:
    where = f"{fmt_path(e.path)}: " if e.path is not None else ""
    return f"{source}:{e.line}: {where}{e.message}"


class _Lines:
    """The path → line map, built on the first question (only errors and warnings ask)."""

    def __init__(self, build: Callable[[], dict[Path_, int]]) -> None:
        self._build = build
        self._lines: dict[Path_, int] | None = None

    def __call__(self, path: Path_) -> int:
        if self._lines is None:
            self._lines = self._build()
        return _line_for(path, self._lines)


def load_config_text(
    text: str,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    check_files: bool = True,
    *,
    compact: bool = False,
) -> LoadedConfig:
    """Parse and validate; `check_files=False` skips checking that TLS files exist (for a config
    that will run elsewhere). `compact=True` for a config a long-running process keeps (below)."""
    # a plain dict: os.environ encodes the name on every lookup (10,000 ${VAR}s in a large config)
    env = dict(os.environ) if env is None else env
    if not text.strip():
        raise ConfigError([f"{source}:1: the file is empty"])
    try:
        data, build_lines = parse(text.removeprefix("\ufeff"), source)
    except SourceError as e:
        raise ConfigError([_problem(source, e)]) from None
    if data is None:  # YAML with nothing but comments
        raise ConfigError([f"{source}:1: the file is empty"])
    line = _Lines(build_lines)
    # Substitute inside the file's own shape so error paths match the file.
    w = _Walk(env)
    substituted = _substitute(data, w, (), False)
    del data  # the parsed copy; only the substituted one is needed from here
    if w.errors:
        raise ConfigError([f"{source}:{line(p)}: {fmt_path(p)}: {msg}" for p, msg in w.errors])
    try:
        shaped, prefix = _normalise(substituted)
    except ValueError as e:
        raise ConfigError([f"{source}:{line(())}: (top level): {e}"]) from None
    try:
        model = AgentConfig.model_validate(shaped, context={"check_files": check_files})
    except ValidationError as e:
        problems = []
        for err in e.errors(include_input=False, include_url=False):
            path = _file_path(tuple(err["loc"]), prefix)
            # pydantic puts a failing model validator's location on the model itself
            path = tuple(p for p in path if not (isinstance(p, str) and p.startswith("function-")))
            msg = _MESSAGES.get(err["type"], err["msg"])
            msg = msg.removeprefix("Value error, ")
            problems.append(f"{source}:{line(path)}: {fmt_path(path)}: {msg}")
        raise ConfigError(problems) from None
    except Exception as e:  # noqa: BLE001 - a validator bug must be one line, not a traceback
        raise ConfigError(
            [f"{source}:0: (top level): could not be validated ({type(e).__name__})"]
        ) from None
    kept: _Kept = (
        model,
        frozenset(w.secrets),
        frozenset(
            i
            for i, t in enumerate(shaped.get("targets") or [])
            if isinstance(t, dict) and "secttraConfig" in t
        ),
        tuple(w.literal_secrets),
        tuple(w.url_passwords),
        prefix,
    )
    if compact:
        # What survives a load was allocated among the parse's and validation's temporaries,
        # and what the agent builds from it next fills the holes they left: Python's allocator
        # then cannot return those arenas (at 5,000 targets the daemon kept ~100 MB for ~20 MB
        # of plans). Rebuilt from one pickle after everything else is freed, the survivors sit
        # together and their memory can be given back once they are dropped. Our own bytes,
        # made and read in this call (bench/scale/memory.py, BENCHMARKS.md).
        blob = pickle.dumps(kept, pickle.HIGHEST_PROTOCOL)
        del kept, model, shaped, substituted, w
        kept = pickle.loads(blob)  # noqa: S301
        del blob
    model, secrets, secttra, literal_secrets, url_passwords, prefix = kept
    return LoadedConfig(
        model=model,
        source=source,
        secrets=secrets,
        secttra_targets=secttra,
        literal_secrets=literal_secrets,
        url_passwords=url_passwords,
        target_prefix=None if prefix == ("<single>",) else prefix,
        line=line,
        text=text,
    )


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    check_files: bool = True,
    *,
    compact: bool = False,
) -> LoadedConfig:
    """Load a file; "-" reads standard input."""
    name = os.fspath(path)
    source = "<stdin>" if name == STDIN else name
    try:
        text = decode(read_bytes(name))
    except SourceError as e:
        raise ConfigError([_problem(source, e)]) from None
    except OSError as e:
        raise ConfigError([f"{source}: cannot read: {e.strerror or type(e).__name__}"]) from None
    return load_config_text(text, source, env, check_files, compact=compact)
