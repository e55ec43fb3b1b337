"""The gateway's deadline covers the wait for a slot, not only the work (fake operations)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import httpx

from adapters.http import create_app
from adapters.operations import Operation
from common.protocol.models import Model
from common.settings import Settings
from tests.unit.fakes import FakeTextModel, fake_store


def _sleep_without_checking(request, store) -> Model:
    time.sleep(1.5)  # work that never looks at its cancellation: it holds the slot throughout
    return Model(id="slow", created=0, owned_by="test")


SLOW = Operation(
    "slow",
    "POST",
    "/slow",
    lambda body, params: SimpleNamespace(**body),
    _sleep_without_checking,
    inference=True,
    summary="a handler that sleeps",
)


def test_a_request_waiting_for_a_slot_times_out_at_its_deadline(tmp_path):
    settings = Settings(cache_dir=tmp_path, request_timeout=0.5, max_queue=4)
    store = fake_store(FakeTextModel([b"x"]), parameters={"parallel": 1})  # one at a time
    app = create_app(settings, store, (SLOW,))

    async def scenario() -> tuple[httpx.Response, httpx.Response, float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            holder = asyncio.ensure_future(client.post("/v1/slow", json={"model": "fake"}))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            queued = await client.post("/v1/slow", json={"model": "fake"})
            waited = time.monotonic() - started
            return await holder, queued, waited

    holder, queued, waited = asyncio.new_event_loop().run_until_complete(scenario())
    assert holder.status_code == 200  # it never checked: it ran to its end
    assert queued.status_code == 504 and queued.json()["error"]["code"] == "request_timeout"
    assert queued.headers["retry-after"] == "1"
    assert waited < 1.3  # answered at its deadline, while the slot was still held
