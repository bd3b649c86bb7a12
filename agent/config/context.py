"""What the probes' builders get of a target: its validated config as plain probe values
(probes.specs.BuildContext), built once per target for build_plan and the config's own checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from probes.settings import HttpSecrets
from probes.specs import BuildContext, DicomEndpoint, TLSOptions

if TYPE_CHECKING:  # the schema imports this module
    from agent.config.schema import Endpoint, TLSConfig


def _quiet(_text: str) -> None:
    pass


def tls_options(cfg: TLSConfig) -> TLSOptions:
    return TLSOptions(
        ca_file=cfg.caFile,
        cert_file=cfg.certFile,
        key_file=cfg.keyFile,
        key_password=cfg.keyPassword,
        verify=cfg.verify,
        verify_hostname=cfg.verifyHostname,
        server_name=cfg.serverName,
        min_version=cfg.minVersion,
    )


def build_context(ep: Endpoint, warn: Callable[[str], None] = _quiet) -> BuildContext:
    """What the probes' builders get of this target (probes.specs.BuildContext)."""
    c, s = ep.config, ep.sectraConfig
    tls = tls_options(c.tls)
    dicom = DicomEndpoint(
        host=c.host,
        port=c.port,
        calling_aet=c.callingAET,
        called_aet=c.calledAET,
        tls=tls if c.enableTLS else None,
        max_pdu=ep.dicomConfig.maxPDUSize,
    )

    return BuildContext(
        target_id=ep.id,
        dicom=dicom,
        tls=tls,
        secondary_dicom=tuple(
            DicomEndpoint(
                host=h.host, port=h.port, calling_aet=c.callingAET,
                called_aet=h.calledAET or c.calledAET, tls=dicom.tls, max_pdu=dicom.max_pdu,
            )
            for h in c.secondaryHosts
        ),
        api_url=s.apiEndpoint,
        health_path=s.healthCheckEndpoint,
        viewer_url=s.viewerEndpoint,
        web_viewer=s.enableWebViewer,
        worklist_url=s.worklistEndpoint,
        primary_url=s.primaryEndpoint,
        secondary_url=s.secondaryEndpoint,
        failover_timeout=s.failoverTimeout,
        load_balancing=s.loadBalancing,
        transfer_syntaxes=tuple(s.preferredTransferSyntax),
        sop_classes=tuple(ep.dicomConfig.supportedSOPClasses),
        # customHeaders and config.credentials belong to apiEndpoint; other endpoints get
        # secrets only from their own probe block, each only for its own origin.
        api_secrets=HttpSecrets(
            tuple(s.customHeaders.items()),
            c.credentials.username if c.credentials else None,
            c.credentials.password if c.credentials else None,
        ),
        warn=warn,
    )
