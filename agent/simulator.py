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
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
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
CANARY_INSTANCES = 2  # images of the canary study, 8x8 pixels each: a retrieve stays cheap
MAX_STORED = 64  # C-STORE keeps UIDs only, and at most this many objects
DEMO_STATION = "PACS_HEALTH"  # the demo's calling AE title: its worklist has one item
DICOMWEB_PATH = "/dicom-web"
VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
STORAGE_SOP_CLASSES = (SECONDARY_CAPTURE, CT_IMAGE)
SUPPORTED_SOP_CLASSES = (
    VERIFICATION,
    STUDY_ROOT_FIND,
    STUDY_ROOT_MOVE,
    STUDY_ROOT_GET,
    MODALITY_WORKLIST_FIND,
    *STORAGE_SOP_CLASSES,
)
# pynetdicom's default transfer syntaxes for a supported context include both of these
SUPPORTED_TRANSFER_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


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


def canary_instances() -> list[Dataset]:
    """The canary study's images: synthetic 8x8 Secondary Captures, no real person."""
    out = []
    for n in range(1, CANARY_INSTANCES + 1):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = SECONDARY_CAPTURE
        ds.SOPInstanceUID = f"{CANARY_STUDY_UID}.1.{n}"
        ds.StudyInstanceUID = CANARY_STUDY_UID
        ds.SeriesInstanceUID = f"{CANARY_STUDY_UID}.1"
        ds.PatientID, ds.PatientName = CANARY_PATIENT_ID, "PACS^CANARY"
        ds.Modality, ds.ConversionType, ds.InstanceNumber = "OT", "SYN", n
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = bytes(range(n, n + 64))
        out.append(ds)
    return out


def instance_matches(instance: Dataset, query: Dataset) -> bool:
    """IMAGE-level matching on the UIDs (single value or empty)."""
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        want = str(query.get(key, "") or "")
        if want and want != "*" and str(instance.get(key, "")) != want:
            return False
    return True


def worklist_item(query: Dataset) -> Dataset | None:
    """The one synthetic Scheduled Procedure Step (DEMO_STATION, CT, today) if the query asks for
    it: only the Scheduled Procedure Step keys the query names come back."""
    today = dt.date.today().strftime("%Y%m%d")
    item = {
        "ScheduledStationAETitle": DEMO_STATION,
        "Modality": "CT",
        "ScheduledProcedureStepStartDate": today,
    }
    asked = query.get("ScheduledProcedureStepSequence") or [Dataset()]
    sps_query = asked[0]
    station = str(sps_query.get("ScheduledStationAETitle", "") or "")
    if station and "*" not in station and "?" not in station and station != DEMO_STATION:
        return None
    modality = str(sps_query.get("Modality", "") or "")
    if modality and modality != "CT":
        return None
    when = str(sps_query.get("ScheduledProcedureStepStartDate", "") or "")
    if when:
        lo, sep, hi = when.partition("-")
        hi = hi if sep else lo
        if (lo and today < lo) or (hi and today > hi):
            return None
    sps = Dataset()
    for key in sps_query.dir() or list(item):
        setattr(sps, key, item.get(key, ""))
    rsp = Dataset()
    rsp.ScheduledProcedureStepSequence = [sps]
    return rsp


def dicom_json(ds: Dataset, keys: tuple[str, ...]) -> dict[str, Any]:
    """A few UI/LO/CS keys of `ds` as DICOM JSON (PS3.18 Annex F)."""
    out: dict[str, Any] = {}
    for key in keys:
        if key in ds:
            elem = ds[key]
            out[f"{elem.tag:08X}"] = {"vr": elem.VR, "Value": [str(elem.value)]}
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
                elif path.startswith(DICOMWEB_PATH + "/"):
                    code, body = sim._dicomweb(self.path)
                    self._reply(code, body, "application/dicom+json")
                elif path in ("/viewer", "/viewer/"):
                    self._reply(200, b"<!doctype html><title>IDS7 Web</title><div id=ids7-viewer>"
                                b"</div>", "text/html; charset=utf-8")
                else:
                    self._reply(404, b"not found", "text/plain")

        return Handler

    def _dicomweb(self, raw_path: str) -> tuple[int, bytes]:
        """QIDO-RS /studies (StudyInstanceUID, PatientID) and WADO-RS /studies/{uid}/metadata."""
        parts = urlsplit(raw_path)
        rel = parts.path[len(DICOMWEB_PATH) :].strip("/").split("/")
        if rel == ["studies"]:
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            found = [
                s
                for s in self.studies
                if all(
                    str(s.get(k, "")) == q[k] for k in ("StudyInstanceUID", "PatientID") if k in q
                )
            ]
            keys = ("StudyInstanceUID", "PatientID", "StudyDate", "ModalitiesInStudy")
            return 200, json.dumps([dicom_json(s, keys) for s in found]).encode()
        if len(rel) == 3 and rel[0] == "studies" and rel[2] == "metadata":
            uid = unquote(rel[1])
            found = [ds for ds in self.canary if ds.StudyInstanceUID == uid]
            if not found:
                return 404, b"[]"
            keys = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
            return 200, json.dumps([dicom_json(ds, keys) for ds in found]).encode()
        return 404, b"[]"

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
