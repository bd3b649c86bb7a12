"""DICOM peers on loopback: a configurable pynetdicom SCP and DCMTK's dcmqrscp.

`DicomSCP` answers C-ECHO and Study Root C-FIND over the studies it is given, and can be told to:
return a failure status (`find_status`), stall after sending the first match
(`stall_after_first`), fail the first N C-ECHOs, speak TLS (`ssl_context`), and stop and start
again on the same port. Responses carry the whole study (more than was asked, as some PACS do), so
PHI tests see identifiers on the wire that must not leak out of the probe.

`Dcmqrscp` is DCMTK's Query/Retrieve SCP as an independent second implementation: a config file
and storage area in a temporary directory, synthetic files indexed with `dcmqridx`.
"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from tests.helpers import LOOPBACK, bind_retry, free_port, wait_until
from tests.helpers.processes import stop_group

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def study(
    patient_id: str,
    patient_name: str = "SYNTHETIC^PATIENT",
    *,
    study_uid: str | None = None,
    accession: str = "ACC0001",
    study_date: str = "20260101",
) -> Dataset:
    ds = Dataset()
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.AccessionNumber = accession
    ds.StudyDate = study_date
    ds.ModalitiesInStudy = "CT"
    return ds


UID_KEYS = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"})
DATE_KEYS = frozenset({"StudyDate", "PatientBirthDate"})
RETURN_ONLY = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})


def _wildcard(pattern: str, value: str) -> bool:
    """PS3.4 C.2.2.2.4: `*` any run of characters, `?` any one; everything else literal."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.S) is not None


def matches(study: Dataset, query: Dataset) -> bool:
    """Study Root matching written from PS3.4 C.2.2.2, independent of the agent's simulator (a
    bug there must not hide in the test oracle): universal (empty), single value, wildcard, UID
    list (backslash-separated) and date range (`lo-hi`, `-hi`, `lo-`) matching, on every key the
    query gives a value for."""
    for elem in query:
        key = elem.keyword
        if not key or key in RETURN_ONLY:
            continue
        raw = elem.value
        want = "\\".join(str(v) for v in raw) if isinstance(raw, MultiValue) else str(raw or "")
        if want == "":
            continue  # universal matching
        got = str(study.get(key, "") or "")
        if key in UID_KEYS:
            if got not in want.split("\\"):
                return False
        elif key in DATE_KEYS and "-" in want:
            lo, _, hi = want.partition("-")
            if (lo and got < lo) or (hi and got > hi) or not got:
                return False
        elif "*" in want or "?" in want:
            if not _wildcard(want, got):
                return False
        elif got != want:
            return False
    return True


class DicomSCP:
    """A pynetdicom Verification + Study Root C-FIND SCP with switchable misbehaviour."""

    def __init__(
        self,
        studies: list[Dataset] | None = None,
        *,
        ae_title: str = "TEST_PACS",
        ssl_context: ssl.SSLContext | None = None,
        host: str = LOOPBACK,
        port: int = 0,
        find_status: int | None = None,
        stall_after_first: bool = False,
        echo_status: int = 0x0000,
        echo_fail_first: int = 0,
        ignore_query: bool = False,
    ) -> None:
        self.studies = list(studies or [])
        self.ae_title = ae_title
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.find_status = find_status
        self.stall_after_first = stall_after_first
        self.echo_status = echo_status
        self.echo_fail_first = echo_fail_first
        self.ignore_query = ignore_query  # a broken PACS: every study matches every query
        self.echo_count = 0
        self.find_count = 0
        self.queries: list[Dataset] = []  # the identifiers the probe sent (our own query, no PHI)
        self.stalled = threading.Event()  # set once a find has stalled after its first match
        self._unstall = threading.Event()
        self._server: Any = None
        self._lock = threading.Lock()

    # -- handlers ------------------------------------------------------------------------------

    def _on_echo(self, event: Any) -> int:
        with self._lock:
            self.echo_count += 1
            n = self.echo_count
        if n <= self.echo_fail_first:
            return 0xC000
        return self.echo_status

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        with self._lock:
            self.find_count += 1
            self.queries.append(event.identifier)
        if self.find_status is not None:
            yield self.find_status, None
            return
        query = event.identifier
        sent = 0
        for st in self.studies:
            if not self.ignore_query and not matches(st, query):
                continue
            rsp = Dataset()
            rsp.QueryRetrieveLevel = "STUDY"
            for elem in st:
                rsp.add(elem)
            yield 0xFF00, rsp
            sent += 1
            if self.stall_after_first and sent == 1:
                self.stalled.set()
                self._unstall.wait(30)  # bounded: released at stop()
                return
        yield 0x0000, None

    def _on_conn_open(self, event: Any) -> None:
        # pynetdicom's reactor sleeps 1 ms per idle loop; a test peer need not add that.
        event.assoc.dul._run_loop_delay = 0.0001  # noqa: SLF001

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> DicomSCP:
        assert self._server is None, "already running"
        self._unstall.clear()
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(Verification)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.require_called_aet = False
        ae.maximum_associations = 32
        ae.network_timeout = 10
        ae.acse_timeout = 10
        ae.dimse_timeout = 10
        handlers = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_CONN_OPEN, self._on_conn_open),
        ]
        self._server = bind_retry(
            lambda: ae.start_server(
                (self.host, self.port),
                block=False,
                evt_handlers=handlers,
                ssl_context=self.ssl_context,
            )
        )
        self.port = int(self._server.server_address[1])
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused afterwards) and release any stalled find."""
        self._unstall.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> DicomSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- DCMTK dcmqrscp ------------------------------------------------------------------------------


def echo_ok(host: str, port: int | str, ae_title: str) -> bool:
    """DCMTK's echoscu answered by the peer: a readiness check independent of our own code."""
    r = subprocess.run(
        [_tool("echoscu"), "-to", "2", "-ta", "2", "-td", "2", "-aec", ae_title, host, str(port)],
        capture_output=True,
        timeout=10,
    )
    return r.returncode == 0


def _tool(name: str) -> str:
    path = shutil.which(name)
    # A missing tool is a failure of the test environment, never a skip.
    assert path, f"DCMTK tool {name!r} not found on PATH (install the dcmtk package)"
    return path


def write_instance(path: Path, st: Dataset) -> None:
    """A minimal Secondary Capture instance of `st`, written as a DICOM Part 10 file."""
    ds = Dataset()
    for elem in st:
        ds.add(elem)
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


class Dcmqrscp:
    """DCMTK's dcmqrscp on a free loopback port, serving `studies` (one instance each)."""

    def __init__(self, workdir: Path, studies: list[Dataset], ae_title: str = "QRSCP") -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.studies = studies
        self.ae_title = ae_title
        self.host = LOOPBACK
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "dcmqrscp.log"
        self._log_file: Any = None

    def _prepare(self) -> Path:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        files = []
        for i, st in enumerate(self.studies):
            f = storage / f"instance{i}.dcm"
            write_instance(f, st)
            files.append(str(f))
        subprocess.run(
            [_tool("dcmqridx"), str(storage), *files],
            check=True,
            timeout=30,
            capture_output=True,
        )
        assert (storage / "index.dat").exists(), "dcmqridx wrote no index"
        cfg = self.workdir / "dcmqrscp.cfg"
        cfg.write_text(
            "NetworkTCPPort  = 104\n"
            "MaxPDUSize      = 16384\n"
            "MaxAssociations = 16\n\n"
            "HostTable BEGIN\nHostTable END\n\n"
            "VendorTable BEGIN\nVendorTable END\n\n"
            "AETable BEGIN\n"
            f"{self.ae_title}  {storage}  RW (20, 64mb)  ANY\n"
            "AETable END\n"
        )
        return cfg

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            return True  # exited: let start() see it
        return echo_ok(self.host, str(self.port), self.ae_title)

    def start(self) -> Dcmqrscp:
        cfg = self._prepare()
        binary = _tool("dcmqrscp")
        self._log_file = self.log.open("ab")
        for _ in range(3):  # the free port can be taken between probing and binding
            self.port = free_port()
            # Fork mode (the default): DCMTK 3.6.7's --single-process crashes after one association.
            self.proc = subprocess.Popen(
                [binary, "-c", str(cfg), str(self.port)],
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
            wait_until(self._ready, 15, 0.1, "dcmqrscp accepting associations")
            if self.proc.poll() is None:
                return self
        raise AssertionError("dcmqrscp did not start:\n" + self.log.read_text(errors="replace"))

    def stop(self) -> int | None:
        """Stop the server and its forked children (its own process group); return its exit code."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        stop_group(proc)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return proc.returncode

    def __enter__(self) -> Dcmqrscp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
