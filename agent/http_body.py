"""Response bodies of the agent's HTTP endpoints: whole, or as parts; gzip when the client asks.

/metrics at 5,000 targets is ~28 MB of text held as ~180,000 cached fragments: the exporters
hand their fragments over and this module joins them, or, for a body too large to copy whole
(BATCH_PARTS), compresses them a batch at a time so that a scrape never holds the whole text.
"""

from __future__ import annotations

from collections.abc import Sequence

from isal import igzip, isal_zlib

# A list of parts is sent as their concatenation.
Body = bytes | Sequence[bytes]

GZIP_LEVEL = 1  # ISA-L level 1: 5,000 targets' 28 MB in 14 ms, zlib's level 1 89 ms
GZIP_WBITS = 31  # a gzip container around a 32 KiB-window deflate stream
MIN_GZIP = 1024  # smaller bodies go as they are: the gzip container would not pay for itself
# Fragments a body may have and still be compressed in one call, its parts joined first: up to
# ~40 MB of /metrics text (~7,000 targets in one process). Each call to the compressor releases
# the GIL, and under load taking it back from the probe threads costs tens of ms: at 5,000
# targets (bench/scale, 2026-11-29) /metrics p50 / p99 were 146 / 200 ms in one call, 162 / 327
# ms in three batches, 143-190 / 243-326 ms in eleven and 217 / 393 ms in 176, for a peak ~30 MB
# lower. One call keeps the 250 ms scrape goal; beyond it, batches bound what a scrape holds.
# Counted, not measured: a len() per part costs more.
BATCH_PARTS = 1 << 18


def body_len(body: Body) -> int:
    return len(body) if isinstance(body, bytes) else sum(map(len, body))


def longer_than(body: Body, n: int) -> bool:
    """Whether the body has more than n bytes, without adding up all 180,000 parts of a scrape."""
    if isinstance(body, bytes):
        return len(body) > n
    total = 0
    for part in body:
        total += len(part)
        if total > n:
            return True
    return False


def joined(body: Body) -> bytes:
    return body if isinstance(body, bytes) else b"".join(body)


def gzip_body(body: Body) -> bytes:
    """The gzip member of the body's bytes: in one call when it fits one batch (each call to
    the compressor is a hand-over of the GIL), else batch by batch."""
    if isinstance(body, bytes) or len(body) <= BATCH_PARTS:
        return igzip.compress(joined(body), compresslevel=GZIP_LEVEL)
    c = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, GZIP_WBITS)
    n = BATCH_PARTS
    out = [c.compress(b"".join(body[i : i + n])) for i in range(0, len(body), n)]
    out.append(c.flush())
    return b"".join(out)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header admits gzip (RFC 9110 12.5.3): listed as gzip or
    x-gzip, or covered by *, with a q-value above 0."""
    if not accept_encoding:
        return False
    named: float | None = None
    wildcard: float | None = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0  # a q-value that is not a number admits nothing
        if coding in ("gzip", "x-gzip"):
            named = q if named is None else max(named, q)
        elif coding == "*":
            wildcard = q
    if named is not None:
        return named > 0
    return wildcard is not None and wildcard > 0
