"""Log probabilities (chat and legacy completions), best_of, suffix and system_fingerprint with
the real model, checked for arithmetic and against OpenAI's spec."""

from __future__ import annotations

import math

import pytest

from tests.openai_spec import check
from tests.platforms import sse

ASK = [{"role": "user", "content": "Name three colours."}]


def test_chat_logprobs_cover_every_token_and_add_up(client):
    answer = client.chat.completions.create(
        model="gpt-4o", messages=ASK, logprobs=True, top_logprobs=5, temperature=0, max_tokens=20
    )
    check("CreateChatCompletionResponse", answer.model_dump(exclude_unset=True))
    choice = answer.choices[0]
    entries = choice.logprobs.content
    assert len(entries) == answer.usage.completion_tokens
    assert "".join(e.token for e in entries) == choice.message.content
    total = 0.0
    for entry in entries:
        assert entry.logprob <= 0 and bytes(entry.bytes).decode(errors="replace") == entry.token
        assert len(entry.top_logprobs) == 5
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        # Temperature 0: the sampled token is the most likely one, listed first.
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-6
        total += entry.logprob
    assert total < 0


def test_without_top_logprobs_each_token_still_has_its_own(client):
    answer = client.chat.completions.create(
        model="gpt-4o", messages=ASK, logprobs=True, temperature=0, max_tokens=5
    )
    entries = answer.choices[0].logprobs.content
    assert entries and all(e.top_logprobs == [] for e in entries)


def test_no_logprobs_unless_asked(client):
    answer = client.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=5)
    assert answer.choices[0].logprobs is None


def test_streamed_chunks_carry_their_own_tokens(http):
    body = {
        "model": "gpt-4o",
        "messages": ASK,
        "logprobs": True,
        "top_logprobs": 2,
        "temperature": 0,
        "max_tokens": 20,
        "stream": True,
    }
    events = sse(http.post("/v1/chat/completions", json=body).text)[:-1]
    for chunk in events:
        check("CreateChatCompletionStreamResponse", chunk)
        choice = chunk["choices"][0]
        content = choice["delta"].get("content")
        if content:
            assert "".join(e["token"] for e in choice["logprobs"]["content"]) == content
    whole = "".join(c["choices"][0]["delta"].get("content", "") for c in events)
    assert whole


@pytest.mark.parametrize(
    "fields,param",
    [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ],
)
def test_bad_logprob_requests_are_400s(http, fields, param):
    body = {"model": "gpt-4o", "messages": ASK, "max_tokens": 2, **fields}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_completion_logprobs_are_parallel_lists_with_offsets(client):
    answer = client.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="The capital of France is",
        max_tokens=8,
        temperature=0,
        logprobs=3,
    )
    check("CreateCompletionResponse", answer.model_dump(exclude_unset=True))
    choice = answer.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert len(lp.tokens) == answer.usage.completion_tokens
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert token in top and top[token] == pytest.approx(logprob)
        assert 1 <= len(top) <= 4  # the 3 most likely, and the sampled token
        assert max(top.values()) == pytest.approx(logprob)  # temperature 0


def test_echo_scores_the_prompt_too(client):
    prompt = "The capital of France is"
    answer = client.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt=prompt,
        max_tokens=4,
        temperature=0,
        logprobs=2,
        echo=True,
    )
    choice = answer.choices[0]
    lp = choice.logprobs
    assert choice.text.startswith(prompt)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    assert "".join(lp.tokens) == choice.text
    n_prompt = answer.usage.prompt_tokens
    assert len(lp.tokens) == n_prompt + answer.usage.completion_tokens
    assert lp.text_offset[n_prompt] == len(prompt)


def test_completion_logprobs_over_5_are_400(http):
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "Hi", "logprobs": 6}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "logprobs"


def test_best_of_keeps_the_most_likely(client):
    body = dict(
        model="gpt-3.5-turbo-instruct",
        prompt="Once upon a time",
        max_tokens=8,
        temperature=1.0,
        seed=11,
    )
    best = client.completions.create(best_of=4, logprobs=0, **body)
    assert len(best.choices) == 1 and best.choices[0].index == 0
    assert best.usage.completion_tokens > len(best.choices[0].logprobs.tokens)  # 4 were made
    candidates = [
        client.completions.create(logprobs=0, **{**body, "seed": 11 + i}).choices[0]
        for i in range(4)
    ]
    mean = [sum(c.logprobs.token_logprobs) / len(c.logprobs.token_logprobs) for c in candidates]
    assert best.choices[0].text == candidates[mean.index(max(mean))].text


@pytest.mark.parametrize(
    "fields,param",
    [
        ({"best_of": 1, "n": 2}, "best_of"),
        ({"best_of": 3, "stream": True}, "best_of"),
        ({"suffix": " is the capital."}, "suffix"),
        ({"best_of": 21}, "best_of"),
    ],
)
def test_completion_fields_that_cannot_be_honoured_are_400s(http, fields, param):
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "Paris", "max_tokens": 2, **fields}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_system_fingerprint_is_a_stable_string(client, http):
    chats = [
        client.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=2) for _ in range(2)
    ]
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="a", max_tokens=1)
    prints = {c.system_fingerprint for c in chats} | {completion.system_fingerprint}
    assert len(prints) == 1 and next(iter(prints)).startswith("fp_")
    body = {"model": "gpt-4o", "messages": ASK, "max_tokens": 3, "stream": True}
    for chunk in sse(http.post("/v1/chat/completions", json=body).text)[:-1]:
        assert chunk["system_fingerprint"] == chats[0].system_fingerprint


def test_user_is_accepted(client):
    answer = client.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=2, user="u-42")
    assert answer.choices
