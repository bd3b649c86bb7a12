"""Things a valid config should not do: one-line warnings `file:line: path: warning: ...`.

`agent check-config` prints them and `agent run` logs them at start; the config still loads (the
Helm chart refuses literal secrets outright; a hand-run agent only warns). Lines are looked up
only when there is something to say.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from agent.config.loader import LoadedConfig
from agent.config.source import fmt_path

Path_ = tuple[str | int, ...]
_CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|passw|cookie|session", re.I)
# Which sectraConfig URLs each probe block's own credentials/headers go to.
_BLOCK_URLS = {
    "viewer": ("viewerEndpoint", "worklistEndpoint"),
    "failover": ("primaryEndpoint", "secondaryEndpoint"),
}


def config_warnings(loaded: LoadedConfig) -> list[str]:
    out: list[str] = []

    def warn(path: Path_, text: str) -> None:
        out.append(f"{loaded.source}:{loaded.line(path)}: {fmt_path(path)}: warning: {text}")

    for path in loaded.literal_secrets:
        warn(
            path,
            "a literal secret in the config file; write it as ${VAR} and set VAR in the "
            "agent's environment",
        )
    for path in loaded.url_passwords:
        warn(
            path,
            "the URL carries a password (redacted in every output); credentials belong "
            "in config.credentials, with the password as ${VAR}",
        )
    for path in _cleartext_credentials(loaded):
        warn(path, "credentials would be sent over plain http://; use https://")
    return out


def _has_credential_headers(headers: dict[str, str] | None) -> bool:
    return any(_CREDENTIAL_HEADER.search(k) for k in headers or {})


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def _cleartext_credentials(loaded: LoadedConfig) -> list[Path_]:
    """File paths of http:// endpoint URLs that a probe would send credentials to."""
    found: list[Path_] = []
    for i, t in enumerate(loaded.model.targets):
        s = t.sectraConfig
        key = "secttraConfig" if i in loaded.secttra_targets else "sectraConfig"
        base = (*loaded.target_path(i), key)
        api_secrets = bool(
            (t.config.credentials and t.config.credentials.password)
            or _has_credential_headers(s.customHeaders)
        )
        urls: dict[str, str] = {
            name: getattr(s, name)
            for name in (
                "apiEndpoint",
                "worklistEndpoint",
                "viewerEndpoint",
                "primaryEndpoint",
                "secondaryEndpoint",
            )
            if getattr(s, name, None)
        }
        if not any(u.lower().startswith("http://") for u in urls.values()):
            continue  # all https: nothing can be sent in the clear, whoever sends what
        sending: set[str] = set()
        if api_secrets and "apiEndpoint" in urls:
            # the API's credentials go to its own origin, whichever endpoint shares it
            api_origin = _origin(urls["apiEndpoint"])
            sending |= {n for n, u in urls.items() if _origin(u) == api_origin}
        for block, names in _BLOCK_URLS.items():
            settings = getattr(t.probes, block, None)
            own = getattr(settings, "credentials", None)
            if (
                (own is not None and getattr(own, "password", None))
                or _has_credential_headers(getattr(settings, "headers", None))
                or (getattr(settings, "useApiCredentials", False) and api_secrets)
            ):
                sending |= {n for n in names if n in urls}
        for name in sorted(sending):
            if urls[name].lower().startswith("http://"):
                found.append((*base, name))
    return found
