"""Admission control: a few inferences at a time, a bounded queue, 429 beyond it.

On two CPU cores, concurrent generations share the cores and all slow down (measured here:
about 4x less throughput in total), so requests wait their turn instead.
"""

from __future__ import annotations

import asyncio

from common.errors import Overloaded


class InferenceGate:
    def __init__(self, concurrency: int, max_waiting: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._max_waiting = max_waiting
        self.waiting = 0
        self.active = 0

    async def acquire(self) -> None:
        if self._slots.locked() and self.waiting >= self._max_waiting:
            raise Overloaded(
                "The server is busy with other requests; please retry shortly.",
                headers={"Retry-After": "1"},
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        self._slots.release()
