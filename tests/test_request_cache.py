"""DIMSE request PDUs are encoded once per distinct request, not once per target: probes of
different targets that send the same C-ECHO, or a C-FIND of the same query, share one copy
of its bytes, and a different query gets its own. Run against the embedded simulated PACS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.simulator import CANARY_PATIENT_ID, SimulatedPACS
from probes import dicom_wire
from probes.base import Deadline, Phases
from probes.dicom_echo import DicomEchoProbe
from probes.dicom_find import DicomFindProbe, FindQuery
from probes.specs import DicomEndpoint


@pytest.fixture
def sim() -> Iterator[SimulatedPACS]:
    pacs = SimulatedPACS()
    pacs.start()
    try:
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[list[bytes]]:
    """The PDU list each DIMSE request was sent from, in order."""
    seen: list[list[bytes]] = []
    real = dicom_wire.DicomAssociation.exchange

    def spy(self: dicom_wire.DicomAssociation, pdus: list[bytes], *a: object, **k: object):  # type: ignore[no-untyped-def]
        seen.append(pdus)
        return real(self, pdus, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(dicom_wire.DicomAssociation, "exchange", spy)
    return seen


def endpoint(port: int, calling: str) -> DicomEndpoint:
    return DicomEndpoint("127.0.0.1", port, calling, "SECTRA_PACS")


def run(probe: DicomEchoProbe | DicomFindProbe) -> None:
    outcome = probe.run(Deadline(5.0), Phases())
    assert outcome.message  # a successful run (a failure raises)


def test_echo_probes_of_two_targets_send_one_shared_request(
    sim: SimulatedPACS, sent: list[list[bytes]]
) -> None:
    a = DicomEchoProbe(endpoint(sim.dicom_port, "SITE_A"))
    b = DicomEchoProbe(endpoint(sim.dicom_port, "SITE_B"))
    run(a)
    run(b)
    run(a)
    assert len(sent) == 3
    assert sent[0] is sent[1] is sent[2]


def test_find_probes_share_a_request_only_for_the_same_query(
    sim: SimulatedPACS, sent: list[list[bytes]]
) -> None:
    default_a = DicomFindProbe(endpoint(sim.dicom_port, "SITE_A"), FindQuery())
    default_b = DicomFindProbe(endpoint(sim.dicom_port, "SITE_B"), FindQuery())
    canary = DicomFindProbe(
        endpoint(sim.dicom_port, "SITE_C"),
        FindQuery(patient_id=CANARY_PATIENT_ID, expected_count=1),
    )
    for probe in (default_a, default_b, canary):
        run(probe)
    assert sent[0] is sent[1]
    assert sent[2] is not sent[0]
    assert b"".join(sent[2]) != b"".join(sent[0])  # the canary's patient id is in its bytes
    assert CANARY_PATIENT_ID.encode() in b"".join(sent[2])
