"""dicom_capabilities: does the PACS still accept what the site sends it?

One association proposes every configured SOP class with every configured transfer syntax, one
presentation context per (SOP class, transfer syntax) pair, and reads the A-ASSOCIATE-AC's answer
for each; the association is then released without any DIMSE exchange. All accepted → success;
some refused → warning naming each refused pair (UID and standard name); none → failure
(`rejected`). A PACS upgrade that drops JPEG 2000, or a storage class switched off, shows here
before the first modality's images bounce.

Transfer syntaxes may be given as UIDs or by name ("JPEG2000", "JPEG_LOSSLESS",
"ExplicitVRLittleEndian", ...): see `resolve_transfer_syntax`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from pydantic import Field
from pydicom.uid import UID, UID_dictionary
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
)
from pynetdicom.presentation import PresentationContext

from probes.base import Deadline, Facts, Phases, ProbeError, ProbeOutcome, Reason
from probes.dicom_pdu import APPLICATION_CONTEXT, user_information
from probes.dicom_session import open_connection
from probes.dicom_wire import DicomAssociation
from probes.settings import Strict
from probes.specs import BuildContext, DicomEndpoint, ProbeSpec

# Presentation context ids are odd numbers 1..255 (PS3.8 §9.3.2.2): at most 128 per association.
MAX_CONTEXTS = 128
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# Names people write in configs, for the UIDs they mean. "JPEG_LOSSLESS" is the default lossless
# JPEG syntax (Process 14, selection value 1), not pydicom's `JPEGLossless` (any predictor).
TRANSFER_SYNTAX_ALIASES = {
    "IMPLICIT": "1.2.840.10008.1.2",
    "IMPLICIT_VR_LITTLE_ENDIAN": "1.2.840.10008.1.2",
    "EXPLICIT": "1.2.840.10008.1.2.1",
    "EXPLICIT_VR_LITTLE_ENDIAN": "1.2.840.10008.1.2.1",
    "EXPLICIT_VR_BIG_ENDIAN": "1.2.840.10008.1.2.2",
    "DEFLATED": "1.2.840.10008.1.2.1.99",
    "JPEG_BASELINE": "1.2.840.10008.1.2.4.50",
    "JPEG_EXTENDED": "1.2.840.10008.1.2.4.51",
    "JPEG_LOSSLESS": "1.2.840.10008.1.2.4.70",
    "JPEG_LOSSLESS_SV1": "1.2.840.10008.1.2.4.70",
    "JPEG_LOSSLESS_NH14": "1.2.840.10008.1.2.4.57",
    "JPEG_LS": "1.2.840.10008.1.2.4.80",
    "JPEG_LS_LOSSLESS": "1.2.840.10008.1.2.4.80",
    "JPEG_LS_LOSSY": "1.2.840.10008.1.2.4.81",
    "JPEG_LS_NEAR_LOSSLESS": "1.2.840.10008.1.2.4.81",
    "JPEG2000": "1.2.840.10008.1.2.4.91",
    "JPEG2000_LOSSLESS": "1.2.840.10008.1.2.4.90",
    "JPEG2000_LOSSY": "1.2.840.10008.1.2.4.91",
    "RLE": "1.2.840.10008.1.2.5",
    "RLE_LOSSLESS": "1.2.840.10008.1.2.5",
}


def _key(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", name.upper())


def _names_of(kind: str) -> dict[str, str]:
    """Normalised keyword and name → UID, for pydicom's UIDs of one type."""
    out: dict[str, str] = {}
    for uid, (name, uid_type, _, _, keyword) in UID_dictionary.items():
        if uid_type == kind:
            out.setdefault(_key(keyword), uid)
            out.setdefault(_key(name), uid)
    return out


_TS_NAMES = {
    **_names_of("Transfer Syntax"),
    **{_key(k): v for k, v in TRANSFER_SYNTAX_ALIASES.items()},
}
_SOP_NAMES = _names_of("SOP Class")


def _resolve(value: str, names: dict[str, str], what: str) -> str:
    text = value.strip()
    if _UID.match(text):
        if len(text) > 64:
            raise ValueError(f"{what} UID longer than 64 characters: {text}")
        return text
    uid = names.get(_key(text))
    if uid is None:
        raise ValueError(f"unknown {what} {value!r} (give its UID or its standard name)")
    return uid


def resolve_transfer_syntax(value: str) -> str:
    """A transfer syntax UID, from a UID or a name ("JPEG2000", "JPEG 2000 Image Compression")."""
    return _resolve(value, _TS_NAMES, "transfer syntax")


def resolve_sop_class(value: str) -> str:
    """A SOP class UID, from a UID or a keyword/name ("CTImageStorage", "CT Image Storage")."""
    return _resolve(value, _SOP_NAMES, "SOP class")


def uid_name(uid: str) -> str:
    """ "JPEG 2000 Image Compression (1.2.840.10008.1.2.4.91)"; the UID alone when unnamed."""
    name = UID(uid).name
    return uid if name == uid else f"{name} ({uid})"


@lru_cache(maxsize=64)
def pairs_rq_bytes(
    calling_aet: str, called_aet: str, pairs: tuple[tuple[str, str], ...], max_pdu: int
) -> bytes:
    """An A-ASSOCIATE-RQ with one context per (abstract, transfer syntax); pair i gets id 2i+1."""
    prim = A_ASSOCIATE()
    prim.application_context_name = APPLICATION_CONTEXT
    prim.calling_ae_title = calling_aet
    prim.called_ae_title = called_aet
    cxs = []
    for i, (abstract, transfer) in enumerate(pairs):
        cx = PresentationContext()
        cx.context_id = 2 * i + 1
        cx.abstract_syntax = abstract
        cx.transfer_syntax = [transfer]
        cxs.append(cx)
    prim.presentation_context_definition_list = cxs
    prim.user_information = user_information(max_pdu)
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(prim)
    return bytes(rq.encode())


class _ProposingAssociation(DicomAssociation):
    """DicomAssociation's framing and timing, with a request of one context per pair."""

    def propose(
        self, calling_aet: str, called_aet: str, pairs: tuple[tuple[str, str], ...]
    ) -> list[bool]:
        """A-ASSOCIATE-RQ → AC (phase `associate`); whether each pair was accepted."""
        payload = pairs_rq_bytes(calling_aet, called_aet, pairs, self.max_pdu)
        accepted_rq = self.request_association(payload)
        results = accepted_rq.presentation_context_definition_results_list or []
        self._open = True  # from here on, release (or abort) it
        accepted = [False] * len(pairs)
        for cx in results:
            i = (cx.context_id - 1) // 2 if cx.context_id and cx.context_id % 2 else -1
            if not 0 <= i < len(pairs) or cx.result != 0 or not cx.transfer_syntax:
                continue
            # accepted only with the one syntax proposed for it (PS3.8 9.3.3.2)
            accepted[i] = str(cx.transfer_syntax[0]) == pairs[i][1]
        return accepted


class NoContextAccepted(ProbeError):
    """Every pair refused: a failure that still reports each pair (all 0) for the metric."""

    def __init__(self, message: str, contexts: tuple[tuple[str, str, bool], ...]) -> None:
        super().__init__(Reason.REJECTED, message, Facts(contexts=contexts))


@dataclass(frozen=True)
class CapabilitySet:
    sop_classes: tuple[str, ...]
    transfer_syntaxes: tuple[str, ...]

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple((s, t) for s in self.sop_classes for t in self.transfer_syntaxes)


class DicomCapabilitiesProbe:
    name = "dicom_capabilities"

    def __init__(self, endpoint: DicomEndpoint, capabilities: CapabilitySet) -> None:
        pairs = capabilities.pairs
        if not pairs or len(pairs) > MAX_CONTEXTS:
            raise ValueError(f"1 to {MAX_CONTEXTS} presentation contexts, not {len(pairs)}")
        self.endpoint = endpoint
        self.pairs = pairs

    def run(self, deadline: Deadline, phases: Phases) -> ProbeOutcome:
        ep = self.endpoint
        sock, tls = open_connection(ep, deadline, phases)
        try:
            assoc = _ProposingAssociation(sock, deadline, phases, max_pdu=ep.max_pdu)
            try:
                accepted = assoc.propose(ep.calling_aet, ep.called_aet, self.pairs)
                assoc.release()
            except BaseException:
                assoc.abort()
                raise
        finally:
            try:
                sock.close()
            except OSError:
                pass
        contexts = tuple((s, t, ok) for (s, t), ok in zip(self.pairs, accepted, strict=True))
        refused = [
            f"{uid_name(s)} with {uid_name(t)}"
            for (s, t), ok in zip(self.pairs, accepted, strict=True)
            if not ok
        ]
        n = len(self.pairs)
        if len(refused) == n:
            raise NoContextAccepted(
                f"none of {n} presentation contexts accepted: " + "; ".join(refused), contexts
            )
        facts = Facts(contexts=contexts, accepted=n - len(refused), proposed=n)
        if refused:
            return ProbeOutcome(
                f"{n - len(refused)} of {n} presentation contexts accepted",
                warning=f"{len(refused)} of {n} presentation contexts refused: "
                + "; ".join(refused),
                tls=tls,
                facts=facts,
            )
        return ProbeOutcome(f"all {n} presentation contexts accepted", tls=tls, facts=facts)


def capability_set(sop_classes: list[str], transfer_syntaxes: list[str]) -> CapabilitySet:
    """Resolve names to UIDs (order kept, duplicates dropped); ValueError when a name is unknown,
    a list is empty or the pairs exceed what one association can propose."""
    sops = tuple(dict.fromkeys(resolve_sop_class(s) for s in sop_classes))
    tss = tuple(dict.fromkeys(resolve_transfer_syntax(t) for t in transfer_syntaxes))
    if not sops:
        raise ValueError("no SOP classes to propose")
    if not tss:
        raise ValueError("no transfer syntaxes to propose")
    n = len(sops) * len(tss)
    if n > MAX_CONTEXTS:
        raise ValueError(
            f"{len(sops)} SOP classes x {len(tss)} transfer syntaxes = {n} presentation "
            f"contexts; one association can propose at most {MAX_CONTEXTS}"
        )
    return CapabilitySet(sops, tss)


class DicomCapabilitiesSettings(Strict):
    """`probes.dicom_capabilities`: one association proposing every SOP class with every
    transfer syntax. Off unless given; the lists default to dicomConfig.supportedSOPClasses and
    sectraConfig.preferredTransferSyntax (UIDs or names, checked on the target)."""

    enabled: bool = True
    sopClasses: list[str] = Field(default_factory=list)
    transferSyntaxes: list[str] = Field(default_factory=list)


def _capabilities(cap: DicomCapabilitiesSettings, ctx: BuildContext) -> CapabilitySet:
    # the lists default to the target's dicomConfig/sectraConfig ones
    return capability_set(
        cap.sopClasses or list(ctx.sop_classes),
        cap.transferSyntaxes or list(ctx.transfer_syntaxes),
    )


def check(cap: DicomCapabilitiesSettings, ctx: BuildContext) -> None:
    """Names resolve and the pairs fit one association (128 contexts), or the config is
    refused."""
    if cap.enabled:
        _capabilities(cap, ctx)


def build(cap: DicomCapabilitiesSettings, ctx: BuildContext) -> DicomCapabilitiesProbe | None:
    if not cap.enabled:
        return None
    return DicomCapabilitiesProbe(ctx.dicom, _capabilities(cap, ctx))  # check() passed at load


SPEC = ProbeSpec(
    "dicom_capabilities", DicomCapabilitiesSettings, build,
    "One association proposing each SOP class with each transfer syntax: which are accepted",
    outputs=("contexts", "accepted", "proposed", "dicom_status"),
    optional=True,
    check=check,
)
