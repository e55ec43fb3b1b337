"""Handler logic on a deterministic fake engine: decoding, stops, budgets, usage, shapes."""

from __future__ import annotations

import pytest

from common.errors import InvalidRequest, ModelNotFound
from common.protocol.chat import ChatCompletion, ChatCompletionRequest
from common.protocol.completions import Completion, CompletionRequest, EditRequest
from handlers.text.chat import create_chat_completion
from handlers.text.completions import create_completion
from handlers.text.edits import create_edit
from tests.unit.fakes import FakeTextModel, fake_store

HELLO = [{"role": "user", "content": "hi"}]
# "café ok" with the two bytes of "é" split across tokens.
PIECES = [b"ca", b"f\xc3", b"\xa9", b" o", b"k"]


def chat(model: FakeTextModel, **fields):
    fields.setdefault("messages", HELLO)
    request = ChatCompletionRequest(model="gpt-4", **fields)
    return create_chat_completion(request, fake_store(model))


def test_multibyte_characters_split_across_tokens_decode_whole():
    result = chat(FakeTextModel(PIECES))
    assert isinstance(result, ChatCompletion)
    assert result.choices[0].message.content == "café ok"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage.completion_tokens == 5
    deltas = [
        c.choices[0].delta.content for c in chat(FakeTextModel(PIECES), stream=True) if c.choices
    ]
    assert "\ufffd" not in "".join(d or "" for d in deltas)


@pytest.mark.parametrize("stop", ["é o", "fé", "k", ["zz", "af"]])
def test_stops_never_reach_the_client_plain_or_streamed(stop):
    full = "café ok"
    first = min(full.find(s) for s in ([stop] if isinstance(stop, str) else stop) if s in full)
    plain = chat(FakeTextModel(PIECES), stop=stop)
    assert plain.choices[0].message.content == full[:first]
    assert plain.choices[0].finish_reason == "stop"
    model = FakeTextModel(PIECES)
    chunks = list(chat(model, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full[:first]
    assert model.closed == 1  # generation was stopped, not run to the end


def test_partial_stop_at_the_end_is_flushed():
    result = chat(FakeTextModel(PIECES), stop="okay")
    assert result.choices[0].message.content == "café ok"


def test_budget_gives_length_and_counts_tokens():
    result = chat(FakeTextModel(PIECES), max_tokens=2)
    assert result.choices[0].finish_reason == "length"
    assert result.usage.completion_tokens == 2
    assert result.choices[0].message.content == "caf\ufffd"  # cut inside "é": replaced, not raised


def test_context_checks_come_before_the_first_chunk():
    model = FakeTextModel(PIECES, context_length=16)
    stream = chat(model, stream=True, messages=[{"role": "user", "content": "x" * 40}])
    with pytest.raises(InvalidRequest) as caught:
        next(stream)
    assert caught.value.code == "context_length_exceeded"
    with pytest.raises(InvalidRequest):
        chat(FakeTextModel(PIECES, context_length=32), max_tokens=30)


def test_unknown_model_is_model_not_found():
    with pytest.raises(ModelNotFound):
        create_chat_completion(
            ChatCompletionRequest(model="nope", messages=HELLO), fake_store(FakeTextModel(PIECES))
        )


def test_sampling_precedence_request_then_registry_then_defaults():
    model = FakeTextModel(PIECES)
    store = fake_store(model, parameters={"temperature": 0.2, "top_k": 5})
    request = ChatCompletionRequest(model="gpt-4", messages=HELLO, top_k=9, seed=10, n=2)
    create_chat_completion(request, store)
    first, second = model.samplings
    assert (first.temperature, first.top_k, first.top_p) == (0.2, 9, 1.0)
    assert (first.seed, second.seed) == (10, 11)


def test_n_streams_choices_with_their_indexes_and_usage():
    chunks = list(
        chat(FakeTextModel(PIECES), n=2, stream=True, stream_options={"include_usage": True})
    )
    indexes = [c.choices[0].index for c in chunks if c.choices]
    assert indexes == sorted(indexes) and set(indexes) == {0, 1}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


class _Counted(FakeTextModel):
    """Counts the generations asked of it when they are asked for, as a batching engine
    queues them (FakeTextModel's own generate starts when first read)."""

    asked = 0

    def generate(self, *args, **kwargs):
        self.asked += 1
        return super().generate(*args, **kwargs)


def test_every_choice_is_queued_before_the_first_chunk_goes_out():
    """The engine works while the response's head and first chunk are sent."""
    model = _Counted(PIECES)
    stream = chat(model, n=2, stream=True)
    first = next(stream)
    assert first.choices[0].delta.content == "" and model.asked == 2
    stream.close()


def test_completion_batch_echo_and_token_prompts():
    request = CompletionRequest(model="gpt-4", prompt=["ab", "c"], n=2, echo=True)
    result = create_completion(request, fake_store(FakeTextModel(PIECES)))
    assert isinstance(result, Completion)
    assert [c.text for c in result.choices] == ["abcafé ok"] * 2 + ["ccafé ok"] * 2
    assert result.usage.prompt_tokens == 3 and result.usage.completion_tokens == 20
    by_ids = create_completion(
        CompletionRequest(model="gpt-4", prompt=[97, 98], echo=True),
        fake_store(FakeTextModel(PIECES)),
    )
    assert by_ids.choices[0].text == "abcafé ok"
    with pytest.raises(InvalidRequest) as caught:
        create_completion(
            CompletionRequest(model="gpt-4", prompt=[[97], [300]]),
            fake_store(FakeTextModel(PIECES)),
        )
    assert caught.value.param == "prompt[1]"


def test_edit_renders_the_template_and_reshapes_the_chat():
    model = FakeTextModel(PIECES)
    store = fake_store(model, templates={"edit": "DO {instruction} TO {input}", "edit_system": "S"})
    result = create_edit(EditRequest(model="gpt-4", instruction="fix", input="txt"), store)
    assert result.object == "edit" and result.choices[0].text == "café ok"
    expected_prompt = len("<system>S<user>DO fix TO txt<assistant>")
    assert result.usage.prompt_tokens == expected_prompt


def test_user_is_written_to_the_request_log(caplog):
    from adapters.operations import start

    request = ChatCompletionRequest(model="gpt-4", messages=HELLO, user="customer-7")
    with caplog.at_level("INFO", logger="stratus.requests"):
        start(create_chat_completion, request, fake_store(FakeTextModel(PIECES)))
    assert "customer-7" in caplog.text


def test_every_inference_request_names_the_model_it_waits_for():
    from adapters.parsed import Publishing, requested_model
    from common.protocol.audio import TranscriptionRequest
    from common.protocol.images import ImageGenerationRequest

    upload = (TranscriptionRequest(model="whisper-1"), b"audio")
    assert requested_model(upload) == "whisper-1"
    assert requested_model(Publishing(ImageGenerationRequest(prompt="x"), None)) == "dall-e-2"
    assert requested_model(ImageGenerationRequest(prompt="x", model="tiny-sd")) == "tiny-sd"
