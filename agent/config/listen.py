"""`HOST:PORT` listen addresses: one parser for `agent.listen`, `--listen` and the HTTP server.

It lives in probes.addresses because the dicom_retrieve probe's storage SCP listens too (probes
never import the agent); this name stays for the agent's side.
"""

from __future__ import annotations

from probes.addresses import SHAPE, parse_listen

__all__ = ["SHAPE", "parse_listen"]
