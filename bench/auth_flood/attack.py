"""The attackers: N concurrent clients on loopback sending GET /metrics with wrong passwords for a
real user name, each on a keep-alive connection (reconnecting when the server closes it), for a
fixed time. A different password every request, as a password-guessing client sends them, so no
verdict cache helps the server. One asyncio process, so the attackers' own CPU stays small.

    python -m bench.auth_flood.attack --port P [--clients 200] [--seconds 30] [--user prometheus]

Prints one JSON line: responses by status, errors, requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from collections import Counter

LOOPBACK = "127.0.0.1"


async def client(i: int, port: int, user: str, stop_at: float, stats: Counter[str]) -> None:
    n = 0
    while time.monotonic() < stop_at:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 5)
        except (OSError, TimeoutError):
            stats["connect_error"] += 1
            await asyncio.sleep(0.05)  # pacing after a refused connection, not synchronisation
            continue
        try:
            while time.monotonic() < stop_at:
                token = base64.b64encode(f"{user}:wrong-{i}-{n}".encode()).decode()
                n += 1
                writer.write(
                    f"GET /metrics HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
                    f"Authorization: Basic {token}\r\n\r\n".encode()
                )
                await writer.drain()
                left = max(0.1, stop_at - time.monotonic() + 5)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), left)
                stats[head.split(b" ", 2)[1].decode()] += 1
                length = 0
                close = False
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                    if line.startswith(b"connection:") and b"close" in line:
                        close = True
                if length:
                    await asyncio.wait_for(reader.readexactly(length), left)
                if close:
                    break
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            stats["error"] += 1
        finally:
            writer.close()


async def main_async(port: int, clients: int, seconds: float, user: str) -> dict[str, object]:
    stats: Counter[str] = Counter()
    t0 = time.monotonic()
    stop_at = t0 + seconds
    tasks = [asyncio.create_task(client(i, port, user, stop_at, stats)) for i in range(clients)]
    # Bounded: whatever is still waiting 5 s after the end is cancelled.
    _, pending = await asyncio.wait(tasks, timeout=seconds + 5)
    for t in pending:
        t.cancel()
    elapsed = time.monotonic() - t0
    answered = sum(v for k, v in stats.items() if k.isdigit())
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "responses": dict(sorted(stats.items())),
        "requests_per_s": round(answered / elapsed, 1),
        "cancelled": len(pending),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--user", default="prometheus")
    a = ap.parse_args()
    print(json.dumps(asyncio.run(main_async(a.port, a.clients, a.seconds, a.user))), flush=True)


if __name__ == "__main__":
    main()
