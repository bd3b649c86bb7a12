"""Response bodies of the agent's HTTP endpoints: whole, or as parts; gzip when the client asks.

/metrics at 5,000 targets is ~28 MB of text held as ~180,000 cached fragments. Joining them into
one buffer only to compress it made every scrape allocate 28 MB (RSS rose by 30-40 MB for the
length of each scrape). Parts are compressed a batch at a time instead, so a scrape holds one
batch and the compressed output (~2.5 MB each).
"""

from __future__ import annotations

from collections.abc import Sequence

from isal import isal_zlib

# A list of parts is sent as their concatenation.
Body = bytes | Sequence[bytes]

GZIP_LEVEL = 1  # ISA-L level 1: 5,000 targets' 28 MB in 14 ms, zlib's level 1 89 ms
GZIP_WBITS = 31  # a gzip container around a 32 KiB-window deflate stream
MIN_GZIP = 1024  # smaller bodies go as they are: the gzip container would not pay for itself
# Fragments per batch: ~2.5 MB of /metrics text (fragments average ~155 bytes at 5,000
# targets), ~11 batches for the whole scrape. The compressor releases the GIL for every batch
# and taking it back from 256 probe threads can take a switch interval or more: 1,024-part
# batches (176 hand-overs) doubled the scrape's latency under load (bench/scale). Counted, not
# measured: a len() per part costs more than it saves.
BATCH_PARTS = 16384


def body_len(body: Body) -> int:
    return len(body) if isinstance(body, bytes) else sum(map(len, body))


def joined(body: Body) -> bytes:
    return body if isinstance(body, bytes) else b"".join(body)


def gzip_body(body: Body) -> bytes:
    """The gzip member of the body's bytes, compressed batch by batch."""
    c = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, GZIP_WBITS)
    if isinstance(body, bytes):
        return c.compress(body) + c.flush()
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
