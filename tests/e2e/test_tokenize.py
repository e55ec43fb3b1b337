"""POST /tokenize and /detokenize on the real server and model, in llama.cpp's server's shape
and vLLM's: the ids the engine itself uses, a chat's count equal to the chat's prompt_tokens,
and bad input refused by name."""

from __future__ import annotations

import pytest

from tests.e2e.test_completions import vocabulary  # noqa: F401  (a fixture)

MODEL = "gpt-4o"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_llama_cpp_shape_gives_the_engines_ids_and_pieces(http, vocabulary):  # noqa: F811
    text = "Hello world<|im_end|> é"
    expected = vocabulary.tokenize(text.encode(), add_bos=False, special=True)
    plain = http.post("/tokenize", json={"model": MODEL, "content": text})
    assert plain.status_code == 200, plain.text
    assert plain.json()["tokens"] == expected  # llama.cpp's default: no BOS, specials parsed
    assert plain.json()["count"] == len(expected)
    pieces = http.post("/tokenize", json={"model": MODEL, "content": text, "with_pieces": True})
    tokens = pieces.json()["tokens"]
    assert [t["id"] for t in tokens] == expected
    assert "".join(t["piece"] for t in tokens) == text  # <|im_end|> spelled out, é whole
    literal = http.post(
        "/tokenize", json={"model": MODEL, "content": "<|im_end|>", "parse_special": False}
    ).json()["tokens"]
    assert len(literal) > 1 and 2 not in literal  # as text, not the control token (id 2)


def test_vllm_shape_counts_and_the_chat_count_is_the_chats_prompt_tokens(http, client):
    answer = http.post(
        "/v1/tokenize", json={"model": MODEL, "prompt": "Hello world", "return_token_strs": True}
    ).json()
    assert answer["count"] == len(answer["tokens"]) == 2 and answer["max_model_len"] == 2048
    assert answer["token_strs"] == ["Hello", " world"]
    messages = [{"role": "user", "content": "What is the weather in Oslo?"}]
    counted = http.post(
        "/tokenize", json={"model": MODEL, "messages": messages, "tools": [WEATHER]}
    ).json()
    chat = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], max_tokens=1, temperature=0
    )
    assert counted["count"] == chat.usage.prompt_tokens
    assert "token_strs" not in counted  # absent unless asked, never null


def test_detokenize_inverts_tokenize(http):
    text = "The capital of France is Paris.<|im_end|>"  # control tokens spelled out
    tokens = http.post("/tokenize", json={"model": MODEL, "content": text}).json()["tokens"]
    back = http.post("/detokenize", json={"model": MODEL, "tokens": tokens})
    assert back.status_code == 200, back.text
    assert back.json() == {"content": text, "prompt": text}  # llama.cpp's name, vLLM's name


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/tokenize", {"model": MODEL}, "content"),
        ("/tokenize", {"model": MODEL, "content": "a", "prompt": "b"}, "prompt"),
        ("/tokenize", {"model": MODEL, "content": "a", "tools": [WEATHER]}, "tools"),
        ("/tokenize", {"model": MODEL, "content": "a", "chat_template": "{{x}}"}, "chat_template"),
        (
            "/tokenize",
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "a"}],
                "add_generation_prompt": False,
            },
            "add_generation_prompt",
        ),
        ("/tokenize", {"model": MODEL, "messages": [{"role": "nobody"}]}, "messages[0].role"),
        ("/tokenize", {"model": "all-minilm-l6-v2", "content": "a"}, "model"),
        ("/detokenize", {"model": MODEL, "tokens": [10**9]}, "tokens"),
        ("/detokenize", {"model": MODEL, "tokens": [-1]}, "tokens"),
    ],
)
def test_bad_input_is_refused_by_name(http, path, body, param):
    answer = http.post(path, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
