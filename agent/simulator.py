"""An embedded simulated Sectra PACS on loopback, for the no-config demo, tests and benchmarks.

* DICOM: a pynetdicom SCP (Verification, Study Root C-FIND over a few synthetic studies, one of
  them the canary patient `CANARY001`), any called AE title accepted unless `reject` is set.
  For the imaging-path probes: C-GET (and C-MOVE to a destination in `move_destinations`) of
  the canary study's CANARY_INSTANCES tiny Secondary Captures, C-STORE (kept in memory by
  UIDs only, at most MAX_STORED, findable at IMAGE level), a Modality Worklist with one
  synthetic item for station DEMO_STATION scheduled today, and the presentation contexts
  SUPPORTED_SOP_CLASSES x SUPPORTED_TRANSFER_SYNTAXES (what the demo's dicom_capabilities asks).
* HTTP: the Sectra API (`/health`, `/worklist`), the web viewer (`/viewer`), the two nodes
  behind the API for failover (`/primary/health`, `/secondary/health`), and DICOMweb QIDO-RS /
  WADO-RS metadata of the synthetic studies under `/dicom-web`.
* Faults, switchable at run time: `delay` (seconds added to every answer), `dicom_status`
  (non-success status), `reject` (A-ASSOCIATE-RJ), `dicom_down` / `http_down`, `http_status`,
  `primary_down` (the primary node's /primary/health fails; the secondary keeps answering and
  the API itself, `/health`, stays up because the secondary serves it).

This module runs the servers and answers DICOM; agent.simulator_data holds the synthetic data
and matching rules, agent.simulator_http answers HTTP.
"""

from __future__ import annotations

import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.events import EventHandlerType

# pynetdicom creates its SOP class names at import time from the UID dictionary: no static types.
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from agent.simulator_data import (
    CANARY_INSTANCES,
    CANARY_PATIENT_ID,
    CANARY_STUDY_UID,
    DEMO_STATION,
    DICOMWEB_PATH,
    MAX_STORED,
    MODALITY_WORKLIST_FIND,
    STORAGE_SOP_CLASSES,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
    SUPPORTED_SOP_CLASSES,
    SUPPORTED_TRANSFER_SYNTAXES,
    Faults,
    canary_instances,
    instance_matches,
    study_matches,
    synthetic_studies,
    worklist_item,
)
from agent.simulator_http import http_handler

# Importers use these through this module (the demo config, tests, benchmarks).
__all__ = [
    "CANARY_INSTANCES",
    "CANARY_PATIENT_ID",
    "CANARY_STUDY_UID",
    "DEMO_STATION",
    "DICOMWEB_PATH",
    "SUPPORTED_SOP_CLASSES",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "Faults",
    "SimulatedPACS",
]


class SimulatedPACS:
    def __init__(
        self,
        host: str = "127.0.0.1",
        dicom_port: int = 0,
        http_port: int = 0,
        ae_title: str = "SECTRA_PACS",
        http_ssl_context: Any = None,
        imaging: bool = False,
    ) -> None:
        self.host = host
        # True: endpoint_config() also configures the imaging-path probes (the no-config demo)
        self.imaging = imaging
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
        self.retrieve_count = 0
        self.store_count = 0
        self.canary = canary_instances()
        # UIDs of what C-STORE received (never the pixel data): SOP Instance UID -> UIDs
        self.stored: dict[str, Dataset] = {}
        # C-MOVE destinations: AE title -> (host, port)
        self.move_destinations: dict[str, tuple[str, int]] = {}

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
        if event.request.AffectedSOPClassUID == MODALITY_WORKLIST_FIND:
            item = worklist_item(query)
            if item is not None:
                yield 0xFF00, item
            yield 0x0000, None
            return
        if str(query.get("QueryRetrieveLevel", "")) == "IMAGE":
            for inst in [*self.canary, *list(self.stored.values())]:
                if instance_matches(inst, query):
                    rsp = Dataset()
                    rsp.QueryRetrieveLevel = "IMAGE"
                    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                        setattr(rsp, key, inst.get(key, ""))
                    yield 0xFF00, rsp
            yield 0x0000, None
            return
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

    def _retrieved(self, query: Dataset) -> list[Dataset]:
        study = str(query.get("StudyInstanceUID", "") or "")
        return [ds for ds in self.canary if ds.StudyInstanceUID == study]

    def _sub_operations(self, event: Any) -> Any:
        """What C-GET and C-MOVE share: the number of sub-operations, then each instance (or
        the injected failure status)."""
        if self.faults.dicom_status is not None:
            yield 1
            yield self.faults.dicom_status, None
            return
        found = self._retrieved(event.identifier)
        yield len(found)
        for ds in found:
            yield 0xFF00, ds

    def _on_get(self, event: Any) -> Any:
        self.retrieve_count += 1
        if self.faults.delay:
            time.sleep(self.faults.delay)
        yield from self._sub_operations(event)

    def _on_move(self, event: Any) -> Any:
        self.retrieve_count += 1
        if self.faults.delay:
            time.sleep(self.faults.delay)
        dest = str(event.move_destination).strip()
        addr = self.move_destinations.get(dest)
        yield addr if addr is not None else (None, None)  # unknown: 0xA801
        yield from self._sub_operations(event)

    def _on_store(self, event: Any) -> int:
        self.store_count += 1
        if self.faults.delay:
            time.sleep(self.faults.delay)
        if self.faults.dicom_status is not None:
            return self.faults.dicom_status
        ds = event.dataset
        uids = Dataset()
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            setattr(uids, key, str(ds.get(key, "") or ""))
        if len(self.stored) >= MAX_STORED and uids.SOPInstanceUID not in self.stored:
            self.stored.pop(next(iter(self.stored)))
        self.stored[uids.SOPInstanceUID] = uids
        return 0x0000

    def _on_conn_open(self, event: Any) -> None:
        # pynetdicom's reactor sleeps 1 ms per idle loop; a simulated PACS should not add that.
        event.assoc.dul._run_loop_delay = 0.0001  # noqa: SLF001

    def start_dicom(self) -> None:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(Verification)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        for uid in (STUDY_ROOT_GET, STUDY_ROOT_MOVE, MODALITY_WORKLIST_FIND):
            ae.add_supported_context(uid)
        for uid in STORAGE_SOP_CLASSES:
            # C-STORE from the agent, and C-GET's sub-operations back to it (role selection)
            ae.add_supported_context(uid, scu_role=True, scp_role=True)
        # C-MOVE: the sub-operations go out on a new association to the destination
        for uid in STORAGE_SOP_CLASSES:
            ae.add_requested_context(uid, ExplicitVRLittleEndian)
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
        handlers.extend(
            [
                (evt.EVT_C_GET, self._on_get),
                (evt.EVT_C_MOVE, self._on_move),
                (evt.EVT_C_STORE, self._on_store),
            ]
        )
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

    # -- HTTP (agent.simulator_http answers) ---------------------------------------------------

    def start_http(self) -> None:
        port = self.http_port or self._http_port_wanted
        self._http = ThreadingHTTPServer((self.host, port), http_handler(self))
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

    def imaging_probes(self) -> dict[str, Any]:
        """`probes:` blocks for the five imaging-path probes, against this simulator."""
        return {
            "dicom_retrieve": {
                "studyInstanceUID": CANARY_STUDY_UID,
                "method": "get",
                "expectedInstances": CANARY_INSTANCES,
            },
            "dicom_store": {"enabled": True, "verify": True},
            "worklist": {
                "scheduledStationAETitle": DEMO_STATION,
                "modality": "CT",
                "scheduledDate": "today",
                "minCount": 1,
            },
            "dicom_capabilities": {
                "sopClasses": list(SUPPORTED_SOP_CLASSES),
                "transferSyntaxes": list(SUPPORTED_TRANSFER_SYNTAXES),
            },
            "dicomweb": {
                "endpoint": f"{self.api_url}{DICOMWEB_PATH}",
                "studyInstanceUID": CANARY_STUDY_UID,
            },
        }

    def endpoint_config(
        self,
        target_id: str = "simulated-sectra",
        interval_ms: int = 5000,
        *,
        imaging: bool | None = None,
        **health: Any,
    ) -> dict[str, Any]:
        """An endpoint object in the integration guide's format that probes this simulator;
        `imaging` (default: the constructor's `imaging`) adds the five imaging-path probes."""
        probes: dict[str, Any] = {
            "dicom_find": {"patientID": CANARY_PATIENT_ID, "expectedCount": 1},
            "viewer": {"studyInstanceUID": CANARY_STUDY_UID, "marker": "ids7-viewer"},
        }
        if self.imaging if imaging is None else imaging:  # None: the constructor's choice
            probes.update(self.imaging_probes())
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
            "probes": probes,
        }
