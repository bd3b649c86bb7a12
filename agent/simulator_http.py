"""The simulated PACS's HTTP side (agent.simulator): the Sectra API (`/health`, `/worklist`), the
web viewer (`/viewer`), the two nodes behind the API for failover (`/primary/health`,
`/secondary/health`) and DICOMweb QIDO-RS / WADO-RS metadata under `/dicom-web`, with the
HTTP faults (`delay`, `http_status`, `primary_down`)."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from pydicom.dataset import Dataset

from agent.simulator_data import DICOMWEB_PATH, Faults, dicom_json


class Served(Protocol):
    """What the HTTP side reads from the simulator, at each request."""

    faults: Faults
    studies: list[Dataset]
    canary: list[Dataset]


def http_handler(sim: Served) -> type[BaseHTTPRequestHandler]:
    """The request handler class for `sim`; it reads `sim` at each request, so faults switched
    at run time apply to the next answer."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def _reply(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if sim.faults.delay:
                time.sleep(sim.faults.delay)
            path = self.path.split("?", 1)[0]
            forced = sim.faults.http_status
            if path == "/secondary/health":
                self._reply(200, b'{"status":"UP","role":"secondary"}', "application/json")
            elif forced is not None:
                self._reply(forced, b'{"status":"DOWN"}', "application/json")
            elif path == "/primary/health":
                if sim.faults.primary_down:
                    self._reply(503, b'{"status":"DOWN"}', "application/json")
                else:
                    self._reply(200, b'{"status":"UP","role":"primary"}', "application/json")
            elif path == "/health":
                role = b"secondary" if sim.faults.primary_down else b"primary"
                self._reply(200, b'{"status":"UP","role":"' + role + b'"}', "application/json")
            elif path == "/worklist":
                body = json.dumps({"items": 3}).encode()
                self._reply(200, body, "application/json")
            elif path.startswith(DICOMWEB_PATH + "/"):
                code, body = dicomweb(sim, self.path)
                self._reply(code, body, "application/dicom+json")
            elif path in ("/viewer", "/viewer/"):
                self._reply(200, b"<!doctype html><title>IDS7 Web</title><div id=ids7-viewer>"
                            b"</div>", "text/html; charset=utf-8")
            else:
                self._reply(404, b"not found", "text/plain")

    return Handler

def dicomweb(sim: Served, raw_path: str) -> tuple[int, bytes]:
    """QIDO-RS /studies (StudyInstanceUID, PatientID) and WADO-RS /studies/{uid}/metadata."""
    parts = urlsplit(raw_path)
    rel = parts.path[len(DICOMWEB_PATH) :].strip("/").split("/")
    if rel == ["studies"]:
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        found = [
            s
            for s in sim.studies
            if all(
                str(s.get(k, "")) == q[k] for k in ("StudyInstanceUID", "PatientID") if k in q
            )
        ]
        keys = ("StudyInstanceUID", "PatientID", "StudyDate", "ModalitiesInStudy")
        return 200, json.dumps([dicom_json(s, keys) for s in found]).encode()
    if len(rel) == 3 and rel[0] == "studies" and rel[2] == "metadata":
        uid = unquote(rel[1])
        found = [ds for ds in sim.canary if ds.StudyInstanceUID == uid]
        if not found:
            return 404, b"[]"
        keys = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
        return 200, json.dumps([dicom_json(ds, keys) for ds in found]).encode()
    return 404, b"[]"
