"""A-ASSOCIATE-AC decoding is cached across targets whose ACs differ only in the AE titles."""

from __future__ import annotations

from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext

from probes import dicom_pdu
from probes.dicom_pdu import APPLICATION_CONTEXT, IMPLICIT_VR_LE, decode_associate_ac


def ac_bytes(called: str, calling: str, max_pdu: int = 16384) -> bytes:
    prim = A_ASSOCIATE()
    prim.application_context_name = APPLICATION_CONTEXT
    prim.called_ae_title = called
    prim.calling_ae_title = calling
    prim.result = 0
    cx = PresentationContext()
    cx.context_id = 1
    cx.result = 0
    cx.add_transfer_syntax(IMPLICIT_VR_LE)
    prim.presentation_context_definition_results_list = [cx]
    ml = MaximumLengthNotification()
    ml.maximum_length_received = max_pdu
    prim.user_information = [ml]
    ac = A_ASSOCIATE_AC()
    ac.from_primitive(prim)
    return bytes(ac.encode())


def test_acs_differing_only_in_ae_titles_share_one_cache_entry() -> None:
    dicom_pdu._decode_associate_ac.cache_clear()
    for i in range(50):
        ac, prim = decode_associate_ac(ac_bytes(f"PACS{i:04d}", "PACS_HEALTH"))
        assert ac.application_context_name == APPLICATION_CONTEXT
        assert prim.maximum_length_received == 16384
    info = dicom_pdu._decode_associate_ac.cache_info()
    assert (info.misses, info.hits) == (1, 49)


def test_what_else_differs_is_decoded_apart() -> None:
    dicom_pdu._decode_associate_ac.cache_clear()
    _, small = decode_associate_ac(ac_bytes("PACS0001", "PACS_HEALTH", max_pdu=4096))
    _, large = decode_associate_ac(ac_bytes("PACS0001", "PACS_HEALTH", max_pdu=65536))
    assert (small.maximum_length_received, large.maximum_length_received) == (4096, 65536)
    assert dicom_pdu._decode_associate_ac.cache_info().misses == 2
