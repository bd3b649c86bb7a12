"""An embedded simulated Sectra PACS on loopback, for the no-config demo, tests and benchmarks.

* DICOM: a pynetdicom SCP (Verification, Study Root C-FIND over a few synthetic studies, one of
  them the canary patient `CANARY001`), any called AE title accepted unless `reject` is set.
* HTTP: the Sectra API (`/health`, `/worklist`), the web viewer (`/viewer`), and the two nodes
  behind the API for failover (`/primary/health`, `/secondary/health`).
* Faults, switchable at run time: `delay` (seconds added to every answer), `dicom_status`
  (non-success status), `reject` (A-ASSOCIATE-RJ), `dicom_down` / `http_down`, `http_status`,
  `primary_down` (the primary node's /primary/health fails; the secondary keeps answering and
  the API itself, `/health`, stays up because the secondary serves it).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.events import EventHandlerType

# pynetdicom creates its SOP class names at import time from the UID dictionary: no static types.
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

CANARY_PATIENT_ID = "CANARY001"
UID_ROOT = "1.2.826.0.1.3680043.10.1082.1"
CANARY_STUDY_UID = f"{UID_ROOT}.1"


def synthetic_studies() -> list[Dataset]:
    """Synthetic studies: fake names and ids, no real person."""
    rows = [
        ("CANARY001", "PACS^CANARY", CANARY_STUDY_UID, "ACC0001", "20260101", "CT"),
        ("SIM0002", "SIMULATED^ALPHA", f"{UID_ROOT}.2", "ACC0002", "20260102", "MR"),
        ("SIM0002", "SIMULATED^ALPHA", f"{UID_ROOT}.3", "ACC0003", "20260103", "CT"),
        ("SIM0004", "SIMULATED^BETA", f"{UID_ROOT}.4", "ACC0004", "20260104", "US"),
    ]
    out = []
    for pid, name, uid, acc, date, mod in rows:
        ds = Dataset()
        ds.PatientID, ds.PatientName, ds.StudyInstanceUID = pid, name, uid
        ds.AccessionNumber, ds.StudyDate, ds.ModalitiesInStudy = acc, date, mod
        out.append(ds)
    return out


@dataclass
class Faults:
    delay: float = 0.0
    dicom_status: int | None = None
    reject: bool = False
    http_status: int | None = None
    primary_down: bool = False


def study_matches(study: Dataset, query: Dataset) -> bool:
    """Study Root matching the simulators use: single values, `*` and a date range."""
    for key in ("PatientID", "StudyInstanceUID", "AccessionNumber"):
        want = str(query.get(key, "") or "")
        if want and want != "*" and str(study.get(key, "")) != want:
            return False
    date = str(query.get("StudyDate", "") or "")
    if date:
        lo, _, hi = date.partition("-")
        hi = hi if "-" in date else lo
        got = str(study.StudyDate)
        if (lo and got < lo) or (hi and got > hi):
            return False
    return True


class SimulatedPACS:
    def __init__(self, host: str = "127.0.0.1", dicom_port: int = 0, http_port: int = 0,
                 ae_title: str = "SECTRA_PACS", http_ssl_context: Any = None) -> None:
        self.host = host
        # an ssl.SSLContext (server side) makes the HTTP side HTTPS
        self.http_ssl_context = http_ssl_context
        self.ae_title = ae_title
        self.faults = Faults()
        self.studies = synthetic_studies()
        self._dicom_port_wanted = dicom_port
        self._dicom_server: Any = None
        self.dicom_port = 0
        self._http: ThreadingHTTPServer | None = None
        self._http_port_wanted = http_port
        self.http_port = 0
        self.find_count = 0
        self.echo_count = 0

    # -- DICOM ---------------------------------------------------------------------------------

    def _on_echo(self, event: Any) -> int:
        self.echo_count += 1
        if self.faults.delay:
            time.sleep(self.faults.delay)
        return self.faults.dicom_status if self.faults.dicom_status is not None else 0x0000

    def _on_find(self, event: Any) -> Any:
        self.find_count += 1
        if self.faults.delay:
            time.sleep(self.faults.delay)
        if self.faults.dicom_status is not None:
            yield self.faults.dicom_status, None
            return
        query = event.identifier
        for study in self.studies:
            if study_matches(study, query):
                rsp = Dataset()
                rsp.QueryRetrieveLevel = "STUDY"
                for key in query.dir():
                    if key != "QueryRetrieveLevel" and key in study:
                        setattr(rsp, key, study.get(key))
                    elif key != "QueryRetrieveLevel":
                        setattr(rsp, key, "")
                yield 0xFF00, rsp
        yield 0x0000, None

    def _on_conn_open(self, event: Any) -> None:
        # pynetdicom's reactor sleeps 1 ms per idle loop; a simulated PACS should not add that.
        event.assoc.dul._run_loop_delay = 0.0001  # noqa: SLF001

    def start_dicom(self) -> None:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(Verification)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.require_called_aet = False
        ae.maximum_associations = 64
        ae.network_timeout = 10
        ae.acse_timeout = 10
        ae.dimse_timeout = 10
        if self.faults.reject:
            ae.require_calling_aet = ["NOBODY-ALLOWED"]
        handlers: list[EventHandlerType] = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_CONN_OPEN, self._on_conn_open),
        ]
        port = self.dicom_port or self._dicom_port_wanted
        self._ae = ae
        self._dicom_server = ae.start_server((self.host, port), block=False, evt_handlers=handlers)
        self.dicom_port = self._dicom_server.server_address[1]

    def stop_dicom(self) -> None:
        if self._dicom_server is not None:
            self._dicom_server.shutdown()
            self._dicom_server = None

    def set_reject(self, reject: bool) -> None:
        self.faults.reject = reject
        if self._dicom_server is not None:
            self._ae.require_calling_aet = ["NOBODY-ALLOWED"] if reject else []

    # -- HTTP ----------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sim = self

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
                elif path in ("/viewer", "/viewer/"):
                    self._reply(200, b"<!doctype html><title>IDS7 Web</title><div id=ids7-viewer>"
                                b"</div>", "text/html; charset=utf-8")
                else:
                    self._reply(404, b"not found", "text/plain")

        return Handler

    def start_http(self) -> None:
        port = self.http_port or self._http_port_wanted
        self._http = ThreadingHTTPServer((self.host, port), self._handler())
        if self.http_ssl_context is not None:
            self._http.socket = self.http_ssl_context.wrap_socket(
                self._http.socket, server_side=True
            )
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="sim-http", daemon=True).start()

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    # -- whole ---------------------------------------------------------------------------------

    def start(self) -> SimulatedPACS:
        self.start_dicom()
        self.start_http()
        return self

    def stop(self) -> None:
        self.stop_dicom()
        self.stop_http()

    def __enter__(self) -> SimulatedPACS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        scheme = "https" if self.http_ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.http_port}"

    def endpoint_config(self, target_id: str = "simulated-sectra", interval_ms: int = 5000,
                        **health: Any) -> dict[str, Any]:
        """An endpoint object in the integration guide's format that probes this simulator."""
        return {
            "id": target_id,
            "name": "Simulated Sectra PACS",
            "type": "PACS",
            "vendor": "Sectra AB (simulated)",
            "enabled": True,
            "config": {
                "host": self.host, "port": self.dicom_port, "callingAET": "PACS_HEALTH",
                "calledAET": self.ae_title, "timeout": 5000, "maxConnections": 10,
                "enableTLS": False,
            },
            "secttraConfig": {
                "apiEndpoint": self.api_url,
                "worklistEndpoint": f"{self.api_url}/worklist",
                "viewerEndpoint": f"{self.api_url}/viewer",
                "enableWebViewer": True,
                "primaryEndpoint": f"{self.api_url}/primary",
                "secondaryEndpoint": f"{self.api_url}/secondary",
                "failoverTimeout": 2000,
                "healthCheckEndpoint": "/health",
            },
            "healthCheck": {"interval": interval_ms, "timeout": min(5000, interval_ms),
                            "failureThreshold": 3, **health},
            "probes": {
                "dicom_find": {"patientID": CANARY_PATIENT_ID, "expectedCount": 1},
                "viewer": {"studyInstanceUID": CANARY_STUDY_UID, "marker": "ids7-viewer"},
            },
        }
