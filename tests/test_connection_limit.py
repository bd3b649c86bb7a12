"""config.maxConnections: a target's runs hold at most that many connections at once."""

from __future__ import annotations

import threading

from agent.targets import ConnectionLimit


def test_limit_holds_n_and_gives_back() -> None:
    limit = ConnectionLimit(2)
    assert limit.acquire(timeout=0.0)
    assert limit.acquire(timeout=0.0)
    assert not limit.acquire(timeout=0.0)  # the third waits, and gives up at its deadline
    limit.release()
    assert limit.acquire(timeout=0.0)


def test_a_waiter_gets_the_token_given_back() -> None:
    limit = ConnectionLimit(1)
    assert limit.acquire()
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(limit.acquire(timeout=10)))
    waiter.start()
    limit.release()
    waiter.join(10)
    assert got == [True]
