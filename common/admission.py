"""Admission control: per model as many requests as its engine batches, a bounded queue, 429
beyond it.

A model runs up to its `slots` requests at once (registry `parallel`: the sequences its
engine generates together, or the requests its embedding batcher merges). Different models
running at once fight over the cores (on two CPU cores, about 4x less throughput in total), so
only `engines` models run at a time. Requests are admitted in arrival order: one never
overtakes an earlier one, so a request for another model gets its turn once the running
model's requests drain, however busy that model stays.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from common.errors import ClientGone, Overloaded, RequestTimeout


@dataclass(eq=False)
class _Waiter:
    key: str
    slots: int
    granted: asyncio.Future = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class InferenceGate:
    def __init__(self, engines: int, max_waiting: int) -> None:
        self._engines = engines
        self._max_waiting = max_waiting
        self._running: dict[str, int] = {}  # model -> requests running
        self._queue: deque[_Waiter] = deque()

    @property
    def active(self) -> int:
        return sum(self._running.values())

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def acquire(self, key: str = "", slots: int = 1) -> None:
        """Waits for one of model `key`'s `slots`; Overloaded when the queue is full."""
        waiter = _Waiter(key, slots)
        if not self._queue and self._can_run(waiter):
            self._grant(waiter)
            return
        if len(self._queue) >= self._max_waiting:
            raise Overloaded(
                "The server is busy with other requests; please retry shortly.",
                headers={"Retry-After": "1"},
            )
        self._queue.append(waiter)
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter.granted.done() and not waiter.granted.cancelled():
                self.release(key)  # granted at the moment it was cancelled
            else:
                self._queue.remove(waiter)
                self._dispatch()  # the next in line may run now
            raise

    async def acquire_in_time(
        self, key: str, slots: int, gone: asyncio.Future, deadline: float | None
    ) -> None:
        """acquire(), given up when `gone` completes first (the client left: ClientGone) or
        the deadline (time.monotonic()) passes (RequestTimeout)."""
        acquiring = asyncio.ensure_future(self.acquire(key, slots))
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, _ = await asyncio.wait(
            {acquiring, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if acquiring in done:
            acquiring.result()  # Overloaded: the queue is full
            return
        acquiring.cancel()
        try:
            await acquiring
        except asyncio.CancelledError:
            pass
        else:  # it got the slot at the very moment the client left
            self.release(key)
        if gone in done:
            raise ClientGone("The client closed the connection before its request ran.")
        raise RequestTimeout(
            "The request waited for a free slot longer than this server allows "
            "(STRATUS_REQUEST_TIMEOUT); please retry shortly.",
            headers={"Retry-After": "1"},
        )

    def release(self, key: str = "") -> None:
        self._running[key] -= 1
        if not self._running[key]:
            del self._running[key]
        self._dispatch()

    def _can_run(self, waiter: _Waiter) -> bool:
        running = self._running.get(waiter.key)
        if running is not None:
            return running < waiter.slots
        return len(self._running) < self._engines

    def _grant(self, waiter: _Waiter) -> None:
        self._running[waiter.key] = self._running.get(waiter.key, 0) + 1

    def _dispatch(self) -> None:
        """Admits waiters in arrival order while the first of them can run."""
        while self._queue and self._can_run(self._queue[0]):
            waiter = self._queue.popleft()
            self._grant(waiter)
            waiter.granted.set_result(None)
