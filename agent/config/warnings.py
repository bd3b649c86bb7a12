"""Things a valid config should not do: one-line warnings `file:line: path: warning`.

`agent check-config` prints them and `agent run` logs them at start (and on reload); the config
still loads.
"""

from __future__ import annotations

from agent.config.loader import LoadedConfig
from agent.config.source import fmt_path


def config_warnings(loaded: LoadedConfig) -> list[str]:
    out: list[str] = []

    def warn(path: tuple[str | int, ...], text: str) -> None:
        out.append(f"{loaded.source}:{loaded.line(path)}: {fmt_path(path)}: warning: {text}")

    for path in loaded.url_passwords:
        warn(
            path,
            "the URL carries a password (redacted in every output); credentials belong in "
            "config.credentials, with the password as ${VAR}",
        )
    return out
