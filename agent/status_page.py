"""The status page at GET /: what the person paged at 3 a.m. reads before anything else.

Every target, worst first, with each check's status, the reason in plain words, when it last ran,
its windowed p95 and a sparkline of the last few minutes' p95 (from the latency recorder's
sub-windows), the failover side, the earliest certificate expiry and maintenance windows.

One self-contained HTML document: inline CSS and SVG, no JavaScript, nothing fetched from
elsewhere (it must work on a locked-down hospital network and with JavaScript off), a viewport
meta for phones and a meta refresh so it stays current on a wall screen. Every value that came
from the config or a peer is HTML-escaped: target names may hold anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from html import escape

from agent import __version__
from agent.evaluator import _SEVERITY, CheckState, CheckStatus, HealthState, TargetState, worst
from probes.base import Facts, Reason

History = Callable[[str, str], list[float | None]]

# The fixed failure reasons, said the way an on-call engineer would say them.
PLAIN_REASON: dict[Reason, str] = {
    Reason.DNS: "The host name does not resolve (DNS).",
    Reason.REFUSED: "Connection refused: nothing is listening on that port (service down?).",
    Reason.CONNECT_TIMEOUT: "No answer to the TCP connection: host down or a firewall drops it.",
    Reason.TLS: "The TLS handshake failed: certificate expired, untrusted or for another name.",
    Reason.REJECTED: "The PACS refused the DICOM association (AE title not allowed, or busy).",
    Reason.ABORTED: "The PACS aborted the DICOM association.",
    Reason.TIMEOUT: "No answer within the deadline: the PACS is slow or stuck.",
    Reason.DIMSE_STATUS: "The PACS answered the DICOM request with an error status.",
    Reason.HTTP_STATUS: "The web service answered with an error HTTP status.",
    Reason.INVALID_RESPONSE: "The answer did not make sense (wrong protocol or garbled).",
    Reason.UNEXPECTED_RESULT: "The answer was valid but not what was expected (e.g. match count).",
    Reason.ERROR: "The agent could not run this check (internal or local error).",
}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:.5rem;
background:#f6f7f9;color:#1b1f24;font-size:16px;line-height:1.35}
h1{font-size:1.25rem;margin:.25rem 0 .5rem}
.meta{color:#57606a;font-size:.85rem;margin-bottom:.75rem}
section{background:#fff;border:1px solid #d0d7de;border-left-width:.5rem;border-radius:6px;
margin:0 0 .75rem;padding:.5rem .75rem;overflow-x:auto}
h2{font-size:1.05rem;margin:.1rem 0 .35rem;word-break:break-word}
.facts{font-size:.85rem;color:#57606a;margin:.1rem 0 .4rem}
.facts span{margin-right:1rem;display:inline-block}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.25rem .4rem;border-top:1px solid #eaeef2;vertical-align:top}
th{font-weight:600;color:#57606a;font-size:.8rem}
.b{display:inline-block;padding:.05rem .45rem;border-radius:1rem;font-weight:600;
font-size:.8rem;color:#fff;white-space:nowrap}
.UNHEALTHY,.FAIL{background:#cf222e}.DEGRADED,.WARN{background:#bf8700}
.HEALTHY,.PASS{background:#1a7f37}.UNKNOWN,.PENDING{background:#6e7781}
.MAINT{background:#0969da}
section.UNHEALTHY{border-left-color:#cf222e;background:#fff}
section.DEGRADED{border-left-color:#bf8700;background:#fff}
section.HEALTHY{border-left-color:#1a7f37;background:#fff}
section.UNKNOWN{border-left-color:#6e7781;background:#fff}
.why{max-width:28rem}.msg{color:#57606a;font-size:.8rem;word-break:break-word}
svg{vertical-align:middle}
.num{white-space:nowrap}
@media (max-width:600px){th.opt,td.opt{display:none}body{font-size:15px}}
"""


def _ago(then: datetime, now: datetime) -> str:
    s = max(0.0, (now - then).total_seconds())
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def sparkline(values: list[float | None], width: int = 100, height: int = 22) -> str:
    """An inline SVG polyline of the sub-windows' p95; gaps where nothing ran."""
    known = [v for v in values if v is not None]
    label = ", ".join(_ms(v) if v is not None else "no runs" for v in values)
    if not known:
        return '<span class="msg">no runs yet</span>'
    top = max(known) or 1.0
    n = max(len(values) - 1, 1)
    pad = 2
    segments: list[list[str]] = [[]]
    dots: list[str] = []
    for i, v in enumerate(values):
        if v is None:
            if segments[-1]:
                segments.append([])
            continue
        x = pad + i * (width - 2 * pad) / n
        y = height - pad - (v / top) * (height - 2 * pad)
        segments[-1].append(f"{x:.1f},{y:.1f}")
        dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.6"/>')
    lines = "".join(
        f'<polyline points="{" ".join(seg)}" fill="none" stroke="#0969da" stroke-width="1.5"/>'
        for seg in segments
        if len(seg) > 1
    )
    return (
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="p95 per sub-window, oldest first: {escape(label)}">'
        f"<title>p95, oldest first: {escape(label)}</title>{lines}"
        f'<g fill="#0969da">{"".join(dots)}</g></svg>'
    )


def _check_row(t: TargetState, c: CheckState, history: History, now: datetime) -> str:
    r = c.last
    if r is None:
        status, why, last = "PENDING", "Waiting for the first run.", "never"
    else:
        status = c.status.value
        if r.reason is not None:
            why = PLAIN_REASON.get(r.reason, r.reason.value)
        elif c.status == CheckStatus.PASS:
            why = "OK."
        else:
            why = "Works, but with a warning:"
        last = _ago(r.started_at, now)
    detail = escape(c.message or (r.message if r else ""))
    reason_code = f" <code>{escape(r.reason.value)}</code>" if r and r.reason else ""
    return (
        f"<tr><td>{escape(c.name)}</td>"
        f'<td><span class="b {status}">{status}</span></td>'
        f'<td class="why">{escape(why)}{reason_code}<div class="msg">{detail}</div></td>'
        f'<td class="num">{escape(last)}</td>'
        f'<td class="num">{_ms(c.p95)}</td>'
        f'<td class="opt">{sparkline(history(t.id, c.name))}</td></tr>'
    )


def _facts(t: TargetState, now: datetime, declared: Mapping[str, Facts]) -> list[str]:
    facts: list[str] = []
    for c in t.checks.values():
        # the serving side of any check that reports (or, failed, declares) its nodes
        r = c.last
        if r is None:
            continue
        decl = declared.get(c.name)
        if r.facts.endpoints_up is None and (decl is None or decl.endpoints_up is None):
            continue
        active = r.facts.active_endpoint if r.ok else None
        side = f"running on {active}" if active else "no endpoint answering"
        facts.append(f"Failover: {escape(side)}")
    expiries = [c.last.tls.earliest_not_after for c in t.checks.values() if c.last and c.last.tls]
    if expiries:
        at = datetime.fromtimestamp(min(expiries), UTC)
        days = (at - now).total_seconds() / 86400
        when = f"expired {-days:.0f} days ago" if days < 0 else f"in {days:.0f} days"
        warn = " ⚠" if days < t.thresholds.cert_warning_days else ""
        facts.append(f"Certificate expires {at:%Y-%m-%d} ({when}){warn}")
    return facts


def _target(
    t: TargetState, history: History, now: datetime, declared: Mapping[str, Facts]
) -> str:
    state = t.state.value
    badges = f'<span class="b {state}">{state}</span>'
    if t.maintenance:
        badges += ' <span class="b MAINT">MAINTENANCE</span>'
    title = escape(t.name)
    ident = "" if t.name == t.id else f' <span class="msg">({escape(t.id)})</span>'
    facts = _facts(t, now, declared)
    if t.maintenance:
        facts.insert(0, "In a planned maintenance window: probes run, alerts stay quiet")
    facts_html = "".join(f"<span>{f}</span>" for f in facts)
    rows = "".join(_check_row(t, c, history, now) for c in t.checks.values())
    return (
        f'<section class="{state}" id="t-{escape(t.id)}"><h2>{badges} {title}{ident}</h2>'
        f'<div class="facts">{facts_html}</div>'
        "<table><thead><tr><th>Check</th><th>Status</th><th>Why</th><th>Last run</th>"
        '<th>p95</th><th class="opt">Last minutes</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></section>"
    )


def order(targets: list[TargetState]) -> list[TargetState]:
    """Worst first; a target in maintenance after those that are not (its trouble is planned)."""
    return sorted(targets, key=lambda t: (t.maintenance, -_SEVERITY[t.state], t.name, t.id))


def render(
    targets: list[TargetState],
    history: History,
    *,
    now: datetime | None = None,
    refresh: int = 15,
    shard: str | None = None,
    declared: Mapping[str, Mapping[str, Facts]] | None = None,
) -> bytes:
    """`declared`: per target and probe, the facts the probe declares (TargetInfo.declared), so
    a failed run of a probe that serves from one of several nodes still shows that none does."""
    now = now or datetime.now(UTC)
    declared = declared or {}
    agent_state = worst([t.state for t in targets]) if targets else HealthState.UNKNOWN
    counts = {s: sum(1 for t in targets if t.state == s) for s in HealthState}
    summary = ", ".join(f"{n} {s.value.lower()}" for s, n in counts.items() if n)
    maint = sum(1 for t in targets if t.maintenance)
    if maint:
        summary += f", {maint} in maintenance"
    shard_txt = f" · shard {escape(shard)}" if shard else ""
    body = "".join(_target(t, history, now, declared.get(t.id, {})) for t in order(targets)) or (
        "<p>No targets configured.</p>"
    )
    doc = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta http-equiv="refresh" content="{int(refresh)}">'
        f"<title>{agent_state.value} · pacs-health-agent</title><style>{CSS}</style></head><body>"
        f'<h1><span class="b {agent_state.value}">{agent_state.value}</span> pacs-health-agent</h1>'
        f'<div class="meta">{len(targets)} target(s): {escape(summary or "none")} · '
        f"updated {now:%Y-%m-%d %H:%M:%S} UTC, refreshes every {int(refresh)} s{shard_txt} · "
        f'<a href="/metrics">metrics</a> · <a href="/health">health JSON</a> · '
        f"v{escape(__version__)}</div>{body}</body></html>\n"
    )
    return doc.encode()


__all__ = ["PLAIN_REASON", "order", "render", "sparkline"]
