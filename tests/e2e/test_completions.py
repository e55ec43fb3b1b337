"""Completions and edits through the openai SDK (edits with httpx: the SDK dropped them)."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import smollm2_path
from tests.openai_spec import check
from tests.platforms import sse


@pytest.fixture(scope="module")
def vocabulary():
    """The embedded model's tokenizer alone (no weights), to name token ids in tests."""
    import llama_cpp

    llm = llama_cpp.Llama(str(smollm2_path()), vocab_only=True, verbose=False)
    yield llm
    llm.close()


MODEL = "gpt-3.5-turbo-instruct"
PROMPT = "The capital of France is"


def test_completion_shape_and_default_budget(client):
    result = client.completions.create(model=MODEL, prompt=PROMPT, temperature=0)
    assert result.object == "text_completion" and result.id.startswith("cmpl-")
    [choice] = result.choices
    assert choice.text and choice.index == 0
    # OpenAI's default max_tokens for this endpoint is 16.
    assert result.usage.completion_tokens <= 16
    assert result.usage.prompt_tokens == 5
    check("CreateCompletionResponse", result.model_dump(exclude_unset=True))


def test_streamed_completion_chunks_match_openais_spec(http):
    body = {
        "model": MODEL,
        "prompt": PROMPT,
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = sse(http.post("/v1/completions", json=body).text)
    assert events[-1] == "[DONE]"
    for chunk in events[:-1]:
        # The spec has no chunk schema for this endpoint; OpenAI's own streams send
        # finish_reason and usage as null until they are known, and so does Stratus.
        if chunk["usage"] is None:
            del chunk["usage"]
        for choice in chunk["choices"]:
            choice["finish_reason"] = choice["finish_reason"] or "stop"
        check("CreateCompletionResponse", chunk)


def test_prompt_batch_times_n_gives_one_choice_each(client):
    result = client.completions.create(
        model=MODEL, prompt=["One, two,", "Red, green,"], n=2, max_tokens=4, temperature=0
    )
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    assert result.choices[0].text == result.choices[1].text  # temperature 0: same per prompt
    assert result.choices[0].text != result.choices[2].text
    assert result.usage.completion_tokens == 16


def test_echo_and_token_id_prompts(client):
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0)
    echoed = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0, echo=True
    )
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text
    tokens = [504, 3575, 282, 4649, 314]  # token ids of PROMPT in SmolLM2's vocabulary
    by_ids = client.completions.create(
        model=MODEL, prompt=tokens, max_tokens=5, temperature=0, echo=True
    )
    assert by_ids.choices[0].text == echoed.choices[0].text
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=[10**9], max_tokens=5)
    assert "vocabulary" in caught.value.message


def test_streamed_completion_equals_plain_and_respects_stop(client):
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=30, temperature=0)
    text = plain.choices[0].text
    stream = client.completions.create(
        model=MODEL,
        prompt=PROMPT,
        max_tokens=30,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert len({c.id for c in chunks}) == 1
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    )
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=30, temperature=0, stop=stop
    )
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_empty_prompt_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="", max_tokens=5)
    assert caught.value.param == "prompt"


def test_edit_applies_the_instruction(http):
    response = http.post(
        "/v1/edits",
        json={
            "model": "gpt-4",
            "instruction": "Make it more formal",
            "input": "Hey, how are you?",
            "temperature": 0,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "edit" and isinstance(body["created"], int)
    assert body["choices"][0]["index"] == 0 and body["choices"][0]["text"].strip()
    assert (
        body["usage"]["total_tokens"]
        == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    two = http.post(
        "/v1/edits",
        json={
            "model": "gpt-4",
            "instruction": "Fix the spelling",
            "input": "helo wrld",
            "n": 2,
            "max_tokens": 8,
        },
    ).json()
    assert [c["index"] for c in two["choices"]] == [0, 1]
    check("CreateEditResponse", body, file="openapi-2023-12-22-edits.yaml")


def test_edit_uses_the_registry_template(http):
    # tiny-chat's edit template differs from the default, so the same request uses other tokens.
    body = {"instruction": "Fix the spelling", "input": "helo wrld", "max_tokens": 4}
    default = http.post("/v1/edits", json={**body, "model": "gpt-4"}).json()
    custom = http.post("/v1/edits", json={**body, "model": "tiny-chat"}).json()
    assert default["usage"]["prompt_tokens"] != custom["usage"]["prompt_tokens"]
    missing = http.post("/v1/edits", json={"model": "gpt-4", "input": "x"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "instruction"


def test_registry_parameters_are_request_defaults(client):
    # tiny-chat: temperature 0 and max_tokens 12 by default, n_ctx 512.
    a = client.chat.completions.create(
        model="my-alias", messages=[{"role": "user", "content": "Hi"}]
    )
    b = client.chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": "Hi"}]
    )
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.usage.completion_tokens <= 12
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": "x " * 600}]
        )
    assert "512" in caught.value.message


def test_logit_bias_forces_and_bans_tokens(client, vocabulary):
    is_token = "314"  # " is" in SmolLM2's vocabulary (see test_echo_and_token_id_prompts)
    forced = client.completions.create(
        model=MODEL, prompt="Hello", max_tokens=3, temperature=0, logit_bias={is_token: 100}
    )
    assert forced.choices[0].text == " is is is"
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, temperature=0)
    first_token = str(vocabulary.tokenize(plain.choices[0].text.encode(), add_bos=False)[0])
    banned = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=3, temperature=0, logit_bias={first_token: -100}
    )
    assert banned.choices[0].text != plain.choices[0].text
    first_banned = vocabulary.tokenize(banned.choices[0].text.encode(), add_bos=False)[0]
    assert str(first_banned) != first_token
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="x", logit_bias={"999999999": 5})
    assert caught.value.param == "logit_bias"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="x", logit_bias={"a": 5})
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="x", logit_bias={"5": 500})


def test_a_request_for_too_many_choices_is_refused_before_any_work(http):
    body = {"model": MODEL, "prompt": ["a"] * 10_000, "n": 128, "max_tokens": 1}
    response = http.post("/v1/completions", json=body)
    assert response.status_code in (400, 413), response.text
    body = {"model": MODEL, "prompt": ["a"] * 65, "n": 2, "max_tokens": 1}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"
    body = {"model": MODEL, "prompt": "a", "n": 100, "best_of": 129, "max_tokens": 1}
    assert http.post("/v1/completions", json=body).status_code == 400


def test_a_prompt_too_long_for_any_tokenization_is_refused_untokenized(http):
    # tiny-chat has 512 tokens of context; SmolLM2's longest token is 81 bytes.
    huge = "word " * 10_000  # 50 kB
    for path, body in (
        ("/v1/completions", {"model": "tiny-chat", "prompt": huge}),
        (
            "/v1/chat/completions",
            {"model": "tiny-chat", "messages": [{"role": "user", "content": huge}]},
        ),
    ):
        error = http.post(path, json=body).json()["error"]
        assert error["code"] == "context_length_exceeded" and "bytes" in error["message"], error


@pytest.mark.parametrize("prompt", [[49152], [[5, 2**40]]])
def test_token_ids_past_the_vocabulary_with_a_suffix_are_a_400(http, prompt):
    """Found by fuzzing: with `suffix`, ids went to the engine unchecked and llama.cpp aborted
    the whole server."""
    body = {"model": MODEL, "prompt": prompt, "suffix": "x", "max_tokens": 1}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith("prompt")
    assert http.get("/health").status_code == 200  # still alive
