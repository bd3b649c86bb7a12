"""DCMTK peers for the imaging-path probes: dcmqrscp serving a generated study over C-GET and
C-MOVE, and storescp taking C-STOREs.

The study is synthetic (Secondary Capture, a made-up patient); its files are written with
pydicom and indexed with dcmqridx, so dcmqrscp serves exactly what the test planted. A tool that
is missing fails the test (tests.helpers.dicom_scp._tool), never skips it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.helpers import LOOPBACK, free_port, wait_until
from tests.helpers.dicom_scp import SECONDARY_CAPTURE, Dcmqrscp, _tool, echo_ok
from tests.helpers.processes import stop_group

SIDE = 64  # pixels per row and column of each generated instance (8-bit: 4 KiB of pixel data)


def write_study(directory: Path, count: int, study_uid: str, side: int = SIDE) -> list[Path]:
    """`count` Secondary Capture instances of one synthetic study, one series; returns the files."""
    directory.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    files = []
    for i in range(count):
        ds = Dataset()
        ds.PatientID = "SYNTH-RETRIEVE"
        ds.PatientName = "SYNTHETIC^RETRIEVE"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPClassUID = SECONDARY_CAPTURE
        ds.SOPInstanceUID = generate_uid()
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20260101", "120000", "1"
        ds.AccessionNumber = "ACCRET01"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "OT", 1, i + 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = side
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = bytes((i + k) % 256 for k in range(side * side))
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta = meta
        path = directory / f"img{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


class QRServer(Dcmqrscp):
    """dcmqrscp serving one generated study of `count` instances over C-FIND/C-GET/C-MOVE.

    `move_destinations` maps AE titles to loopback ports: the HostTable dcmqrscp resolves a
    C-MOVE destination with (any other title is "Move destination unknown", 0xA801).
    """

    def __init__(
        self,
        workdir: Path,
        study_uid: str,
        count: int,
        *,
        move_destinations: dict[str, int] | None = None,
        ae_title: str = "QRSCP",
        side: int = SIDE,
    ) -> None:
        super().__init__(workdir, [], ae_title=ae_title)
        self.study_uid = study_uid
        self.count = count
        self.move_destinations = dict(move_destinations or {})
        self.side = side
        self.instance_bytes = 0  # data-set bytes per instance on the wire is checked by tests

    def _prepare(self) -> Path:
        storage = self.workdir / "storage"
        files = write_study(storage, self.count, self.study_uid, self.side)
        subprocess.run(
            [_tool("dcmqridx"), str(storage), *map(str, files)],
            check=True,
            timeout=60,
            capture_output=True,
        )
        assert (storage / "index.dat").exists(), "dcmqridx wrote no index"
        hosts = "".join(
            f"dest{i} = ({aet}, {LOOPBACK}, {port})\n"
            for i, (aet, port) in enumerate(self.move_destinations.items())
        )
        cfg = self.workdir / "dcmqrscp.cfg"
        cfg.write_text(
            "NetworkTCPPort  = 104\n"
            "MaxPDUSize      = 16384\n"
            "MaxAssociations = 16\n\n"
            f"HostTable BEGIN\n{hosts}HostTable END\n\n"
            "VendorTable BEGIN\nVendorTable END\n\n"
            "AETable BEGIN\n"
            f"{self.ae_title}  {storage}  RW (200, 64mb)  ANY\n"
            "AETable END\n"
        )
        return cfg


class StoreSCP:
    """DCMTK's storescp on a free loopback port, writing what it receives under `workdir/in`."""

    def __init__(self, workdir: Path, ae_title: str = "STORESCP") -> None:
        self.workdir = workdir
        self.ae_title = ae_title
        self.out = workdir / "in"
        self.host = LOOPBACK
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "storescp.log"
        self._log_file: Any = None

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.rglob("*") if p.is_file())

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            return True
        return echo_ok(self.host, str(self.port), self.ae_title)

    def start(self) -> StoreSCP:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(exist_ok=True)
        self._log_file = self.log.open("ab")
        for _ in range(3):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [
                    _tool("storescp"),
                    "-aet",
                    self.ae_title,
                    "-od",
                    str(self.out),
                    "-uf",
                    str(self.port),
                ],
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            wait_until(self._ready, 15, 0.1, "storescp accepting associations")
            if self.proc.poll() is None:
                return self
        raise AssertionError("storescp did not start:\n" + self.log.read_text(errors="replace"))

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        stop_group(proc)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> StoreSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
