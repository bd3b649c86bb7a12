"""Turn validated endpoint configs into runnable plans: which probes, with what settings.

Which probes run follows from what the endpoint configures: dicom_echo and dicom_find
from config.host/port, api_ping from apiEndpoint, viewer from viewerEndpoint + enableWebViewer,
failover from primaryEndpoint + secondaryEndpoint (or config.secondaryHosts). `probes:` tunes them
and `probes.NAME.enabled: false` switches one off.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from agent.config.listen import parse_listen
from agent.config.schema import Endpoint, HttpProbeSecrets, TLSConfig
from agent.evaluator import Thresholds
from agent.maintenance import Schedule, schedule_from_config
from agent.probe_selection import PROBE_ORDER, plan_warnings
from agent.slo import ProbeObjectives, resolve
from probes.api_ping import ApiPingProbe
from probes.base import Probe
from probes.dicom_capabilities import DicomCapabilitiesProbe, capability_set
from probes.dicom_echo import DicomEchoProbe
from probes.dicom_find import DicomFindProbe, FindQuery
from probes.dicom_retrieve import DicomRetrieveProbe, RetrieveSpec
from probes.dicom_store import DicomStoreProbe
from probes.dicomweb import DicomwebProbe
from probes.failover import FailoverProbe
from probes.specs import DicomEndpoint, HttpEndpoint, TLSOptions
from probes.viewer import ViewerProbe
from probes.worklist import WorklistProbe, WorklistQuery

log = logging.getLogger("agent.targets")

_TARGET_LOG = logging.getLogger("agent.target")


class TargetLogger(logging.LoggerAdapter):
    """A target's log: the one "agent.target" logger, the target id in `extra`.

    The target's monitoring.logLevel / enableLogging can only quieten it, never make it louder
    than the agent's level (`probe --once` stays silent on stderr). One logging.getLogger() per
    target id would be cached by `logging` for the life of the process: reloads that bring new
    ids would grow it without bound.
    """

    def __init__(self, target_id: str, level: int) -> None:
        super().__init__(_TARGET_LOG, {"target": target_id})
        self.min_level = level

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        return level >= self.min_level and self.logger.isEnabledFor(level)


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 1
    multiplier: float = 2.0
    initial_delay: float = 0.1
    max_delay: float = 30.0


@dataclass
class TargetPlan:
    id: str
    name: str
    interval: float
    timeout: float
    retry: RetrySettings
    thresholds: Thresholds
    probes: dict[str, Probe]
    metrics_enabled: bool = True
    # Service-level objectives of the probes that have one (agent/slo.py).
    slos: dict[str, ProbeObjectives] = field(default_factory=dict)
    logger: logging.LoggerAdapter = field(default_factory=lambda: TargetLogger("", 0))
    # config.maxConnections: concurrent associations/requests this agent opens to the PACS.
    limiter: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(10)
    )
    maintenance: Schedule = field(default_factory=Schedule)  # planned windows (agent.maintenance)


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


@dataclass(frozen=True)
class _Secrets:
    headers: tuple[tuple[str, str], ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def _block_secrets(block: HttpProbeSecrets, api: _Secrets) -> _Secrets:
    """A probe block's own credentials/headers, or the API's when it says useApiCredentials."""
    if block.useApiCredentials:
        return api
    creds = block.credentials
    return _Secrets(
        tuple(block.headers.items()),
        creds.username if creds else None,
        creds.password if creds else None,
    )


def _join(base: str, path: str) -> str:
    if not path:
        return base
    return base.rstrip("/") + "/" + path.lstrip("/")


def build_plan(ep: Endpoint) -> TargetPlan:
    c, s, p = ep.config, ep.sectraConfig, ep.probes
    tls = tls_options(c.tls)
    for warning in plan_warnings(ep):  # TLS verification off, a viewer worklist with no URL
        log.warning("%s", warning)
    dicom = DicomEndpoint(
        host=c.host,
        port=c.port,
        calling_aet=c.callingAET,
        called_aet=c.calledAET,
        tls=tls if c.enableTLS else None,
        max_pdu=ep.dicomConfig.maxPDUSize,
    )
    # customHeaders and config.credentials belong to apiEndpoint; other endpoints get secrets only
    # from their own probe block (HttpProbeSecrets), each only for its own origin.
    api_secrets = _Secrets(
        tuple(s.customHeaders.items()),
        c.credentials.username if c.credentials else None,
        c.credentials.password if c.credentials else None,
    )

    def http(url: str, secrets: _Secrets) -> HttpEndpoint:
        return HttpEndpoint(
            url=url,
            headers=secrets.headers,
            username=secrets.username,
            password=secrets.password,
            tls=tls,
        )

    probes: dict[str, Probe] = {}
    if p.dicom_echo.enabled:
        probes["dicom_echo"] = DicomEchoProbe(dicom)
    if p.dicom_find.enabled:
        f = p.dicom_find
        probes["dicom_find"] = DicomFindProbe(
            dicom,
            FindQuery(
                patient_id=f.patientID,
                accession_number=f.accessionNumber,
                study_instance_uid=f.studyInstanceUID,
                study_date=f.studyDate,
                expected_count=f.expectedCount,
                min_count=f.minCount,
                max_results=f.maxResults,
            ),
        )
    if s.apiEndpoint and p.api_ping.enabled:
        a = p.api_ping
        path = a.path if a.path is not None else s.healthCheckEndpoint
        probes["api_ping"] = ApiPingProbe(
            http(_join(s.apiEndpoint, path), api_secrets),
            expected_status=tuple(a.expectedStatus),
            body=a.body,
        )
    if s.viewerEndpoint and s.enableWebViewer and p.viewer.enabled:
        v = p.viewer
        own = _block_secrets(v, api_secrets)
        probes["viewer"] = ViewerProbe(
            http(s.viewerEndpoint, own),
            study_uid=v.studyInstanceUID,
            url_template=v.urlTemplate,
            expected_status=tuple(v.expectedStatus),
            marker=v.marker,
            max_redirects=v.maxRedirects,
            # patient data: fetched only when probes.viewer.worklist is true (status/size only)
            worklist=http(s.worklistEndpoint, own) if v.worklist and s.worklistEndpoint else None,
        )
    if p.failover.enabled and s.primaryEndpoint and s.secondaryEndpoint:
        own = _block_secrets(p.failover, api_secrets)
        probes["failover"] = FailoverProbe.for_http(
            http(_join(s.primaryEndpoint, s.healthCheckEndpoint), own),
            http(_join(s.secondaryEndpoint, s.healthCheckEndpoint), own),
            failover_timeout=s.failoverTimeout,
            load_balancing=s.loadBalancing,  # ROUND_ROBIN: every node must serve
        )
    elif p.failover.enabled and c.secondaryHosts:
        nodes = [dicom] + [
            DicomEndpoint(
                host=h.host, port=h.port, calling_aet=c.callingAET,
                called_aet=h.calledAET or c.calledAET, tls=dicom.tls, max_pdu=dicom.max_pdu,
            )
            for h in c.secondaryHosts
        ]
        probes["failover"] = FailoverProbe.for_dicom(
            nodes, failover_timeout=s.failoverTimeout, load_balancing=s.loadBalancing
        )

    if p.dicom_retrieve is not None and p.dicom_retrieve.enabled:
        g = p.dicom_retrieve
        assert g.studyInstanceUID is not None  # the schema requires it when enabled
        store_host, store_port = parse_listen(g.storeListen) if g.storeListen else (None, None)
        probes["dicom_retrieve"] = DicomRetrieveProbe(
            dicom,
            RetrieveSpec(
                study_uid=g.studyInstanceUID,
                method=g.method,
                move_destination=g.moveDestination,
                store_host=store_host,
                store_port=store_port,
                expected_instances=g.expectedInstances,
            ),
        )
    if p.dicom_store.enabled:
        probes["dicom_store"] = DicomStoreProbe(dicom, ep.id, verify=p.dicom_store.verify)

    if p.worklist is not None and p.worklist.enabled:
        w = p.worklist
        probes["worklist"] = WorklistProbe(
            dicom,
            WorklistQuery(
                station_aet=w.scheduledStationAETitle or c.callingAET,
                modality=w.modality,
                scheduled_date=w.scheduledDate,
                min_count=w.minCount,
                max_results=w.maxResults,
            ),
        )
    if p.dicom_capabilities is not None and p.dicom_capabilities.enabled:
        cap = p.dicom_capabilities
        probes["dicom_capabilities"] = DicomCapabilitiesProbe(
            dicom,  # the schema has checked that these resolve and fit one association
            capability_set(
                cap.sopClasses or ep.dicomConfig.supportedSOPClasses,
                cap.transferSyntaxes or s.preferredTransferSyntax,
            ),
        )
    dw = p.dicomweb
    if dw is not None and dw.enabled and dw.endpoint:
        probes["dicomweb"] = DicomwebProbe(
            http(dw.endpoint, _block_secrets(dw, api_secrets)),
            study_uid=dw.studyInstanceUID,
            max_redirects=dw.maxRedirects,
        )

    hc, r = ep.healthCheck, ep.retryPolicy
    level = "WARNING" if ep.monitoring.logLevel == "WARN" else ep.monitoring.logLevel
    logger = TargetLogger(
        ep.id,
        logging.getLevelName(level) if ep.monitoring.enableLogging else logging.CRITICAL + 1,
    )
    return TargetPlan(
        id=ep.id,
        name=ep.name or ep.id,
        interval=hc.interval,
        timeout=hc.timeout,
        retry=RetrySettings(r.maxAttempts, r.backoffMultiplier, r.initialDelay, r.maxDelay),
        thresholds=Thresholds(
            hc.failureThreshold, hc.successThreshold, hc.degradedLatency, hc.certExpiryWarningDays
        ),
        probes={n: probes[n] for n in PROBE_ORDER if n in probes},
        metrics_enabled=ep.monitoring.enableMetrics,
        slos=resolve(ep.slo, probes),
        logger=logger,
        limiter=threading.BoundedSemaphore(c.maxConnections),
        maintenance=schedule_from_config(ep.maintenance),
    )
