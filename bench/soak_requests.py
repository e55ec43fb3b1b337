"""The soak's request mix (bench/soak.py): each kind of request a client sends, and how its
answer is judged: expected statuses, the OpenAI envelope on errors, well-formed 200s."""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

import httpx

CUT = "cut"  # the client abandoned the request, as planned
PROMPTS = [
    "Hello!",
    "Tell me a story about a lighthouse.",
    "What is the capital of France?",
    "Write a haiku about rain.",
    "List three colours.",
    "Explain recursion in one sentence.",
]
SENTENCES = ["Hello, this is a test.", "The quick brown fox jumps.", "Good morning."]


@dataclass
class Client:
    """One client thread's connection and what every request needs."""

    http: httpx.Client
    rng: random.Random
    mp3: bytes


@dataclass
class Result:
    kind: str
    status: str
    problem: str | None = None
    seconds: float = 0.0


def envelope_problem(response: httpx.Response) -> str | None:
    """What is wrong with an error response's body and headers, if anything."""
    try:
        error = response.json()["error"]
        if not isinstance(error["message"], str) or not all(
            key in error for key in ("type", "param", "code")
        ):
            return f"incomplete envelope: {response.text[:300]}"
    except (ValueError, KeyError, TypeError):
        return f"not an error envelope: {response.text[:300]}"
    if response.status_code == 429 and "retry-after" not in response.headers:
        return "429 without Retry-After"
    return None


def judge(
    response: httpx.Response, expected: set[int], check: Callable[[httpx.Response], bool]
) -> tuple[str, str | None]:
    """(status, problem): a status outside `expected` (429 always expected), an error body
    that is not an envelope, or a 200 that fails `check`."""
    status = response.status_code
    head = f"{response.request.method} {response.request.url.path} -> {status}"
    if status not in expected | {429}:
        return str(status), f"{head}: {response.text[:300]}"
    if status >= 400:
        problem = envelope_problem(response)
        return str(status), problem and f"{head}: {problem}"
    if not check(response):
        return str(status), f"{head}: malformed answer: {response.text[:300]}"
    return str(status), None


def post(client: Client, path: str, body: dict, expected: set[int], check) -> tuple:
    return judge(client.http.post(path, json=body), expected, check)


def has(*keys: str) -> Callable[[httpx.Response], bool]:
    def check(response: httpx.Response) -> bool:
        data = response.json()
        return all(data.get(key) for key in keys)

    return check


def audio(response: httpx.Response) -> bool:
    return response.headers["content-type"].startswith("audio/") and len(response.content) > 100


def chat_body(client: Client, tokens: int | None = None) -> dict:
    rng = client.rng
    return {
        "model": rng.choice(["gpt-4", "gpt-4o-mini", "gpt-3.5-turbo"]),
        "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
        "max_tokens": tokens or rng.randint(8, 32),
        "temperature": rng.choice([0, 0.7]),
    }


def chat(client: Client) -> tuple:
    return post(client, "/v1/chat/completions", chat_body(client), {200}, has("choices", "usage"))


def read_stream(response: httpx.Response, events: int | None = None) -> str | None:
    """Reads an SSE answer (the first `events` only, if given); a problem, if any."""
    seen = 0
    last = None
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        last = line[6:]
        if last != "[DONE]" and "error" in json.loads(last):
            return f"error event: {last[:300]}"
        seen += 1
        if events is not None and seen >= events:
            return None
    return None if last == "[DONE]" else f"stream ended without [DONE] (last: {last!r})"


def chat_stream(client: Client) -> tuple:
    body = {**chat_body(client), "stream": True, "stream_options": {"include_usage": True}}
    with client.http.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            return judge(response, {200}, bool)
        problem = read_stream(response)
        return "200", problem and f"streamed chat: {problem}"


def completion(client: Client) -> tuple:
    body = {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": client.rng.choice(["The capital of France is", "1, 2, 3, 4,", "Once upon"]),
        "max_tokens": client.rng.randint(8, 32),
    }
    return post(client, "/v1/completions", body, {200}, has("choices", "usage"))


def embeddings(client: Client) -> tuple:
    count = client.rng.randint(1, 8)
    body = {
        "model": client.rng.choice(["text-embedding-ada-002", "text-embedding-3-small"]),
        "input": [client.rng.choice(PROMPTS) for _ in range(count)],
        "encoding_format": client.rng.choice(["float", "base64"]),
    }
    return post(client, "/v1/embeddings", body, {200}, has("data", "usage"))


def speech(client: Client) -> tuple:
    body = {
        "model": "tts-1",
        "input": client.rng.choice(SENTENCES),
        "voice": client.rng.choice(["alloy", "echo", "nova"]),
        "response_format": client.rng.choice(["mp3", "wav", "opus"]),
    }
    return post(client, "/v1/audio/speech", body, {200}, audio)


def transcription(client: Client) -> tuple:
    response = client.http.post(
        "/v1/audio/transcriptions",
        files={"file": ("speech.mp3", client.mp3, "audio/mpeg")},
        data={"model": "whisper-1", "response_format": client.rng.choice(["json", "verbose_json"])},
    )
    return judge(response, {200}, has("text"))


def image(client: Client) -> tuple:
    body = {
        "model": "dall-e-2",
        "prompt": "A cute baby sea otter",
        "size": "64x64",
        "steps": 2,
        "seed": client.rng.randint(0, 1000),
        "response_format": "b64_json",
    }

    def png(response: httpx.Response) -> bool:
        return base64.b64decode(response.json()["data"][0]["b64_json"])[:4] == b"\x89PNG"

    return post(client, "/v1/images/generations", body, {200}, png)


def models(client: Client) -> tuple:
    if client.rng.random() < 0.5:
        return judge(client.http.get("/v1/models"), {200}, has("data"))
    name = client.rng.choice(["gpt-4", "whisper-1", "tts-1", "dall-e-2", "all-minilm-l6-v2"])
    return judge(client.http.get(f"/v1/models/{name}"), {200}, has("id"))


def bad_json(client: Client) -> tuple:
    path = client.rng.choice(["/v1/chat/completions", "/v1/embeddings", "/v1/audio/speech"])
    body = client.rng.choice([b'{"model": "gpt-4", "messages": [', b"not json", b"\xff\xfe"])
    headers = {"content-type": "application/json"}
    return judge(client.http.post(path, content=body, headers=headers), {400}, bool)


def unknown_model(client: Client) -> tuple:
    name = f"no-such-model-{client.rng.randint(0, 99)}"
    choice = client.rng.randrange(4)
    if choice == 0:
        return judge(client.http.get(f"/v1/models/{name}"), {404}, bool)
    if choice == 1:
        body = {"model": name, "input": "hello"}
        return post(client, "/v1/embeddings", body, {404}, bool)
    if choice == 2:
        body = {"model": name, "input": "hello", "voice": "alloy"}
        return post(client, "/v1/audio/speech", body, {404}, bool)
    return post(client, "/v1/chat/completions", {**chat_body(client), "model": name}, {404}, bool)


def bad_params(client: Client) -> tuple:
    bad = client.rng.choice(
        [
            ("/v1/chat/completions", {**chat_body(client), "temperature": 5}),
            ("/v1/chat/completions", {"model": "gpt-4"}),
            ("/v1/chat/completions", {**chat_body(client), "max_tokens": -1}),
            ("/v1/completions", {"model": "gpt-4", "prompt": "hi", "logprobs": 99}),
            ("/v1/embeddings", {"model": "text-embedding-ada-002", "input": 42}),
            ("/v1/audio/speech", {"model": "tts-1", "input": "hi", "voice": "alloy", "speed": 9}),
            ("/v1/images/generations", {"prompt": "otter", "size": "65x65"}),
            ("/v1/images/generations", {"prompt": "otter", "n": 0}),
        ]
    )
    return post(client, *bad, {400}, bool)


def no_key(client: Client) -> tuple:
    response = client.http.post(
        "/v1/chat/completions", json=chat_body(client), headers={"authorization": "Bearer wrong"}
    )
    return judge(response, {401}, bool)


def bad_audio(client: Client) -> tuple:
    response = client.http.post(
        "/v1/audio/transcriptions",
        files={"file": ("speech.mp3", os.urandom(2000), "audio/mpeg")},
        data={"model": "whisper-1"},
    )
    return judge(response, {400}, bool)


def cut_stream(client: Client) -> tuple:
    """A streamed chat the client closes after two events."""
    body = {**chat_body(client, tokens=200), "stream": True}
    with client.http.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            return judge(response, {200}, bool)
        problem = read_stream(response, events=2)
        return CUT, problem and f"cut stream: {problem}"


def cut_timeout(client: Client) -> tuple:
    """A request the client gives up on after 0.2-0.5 s: while it waits, or while it runs."""
    timeout = client.rng.uniform(0.2, 0.5)
    if client.rng.random() < 0.7:
        path, body, check = "/v1/chat/completions", chat_body(client, tokens=200), has("choices")
    else:
        text = " ".join(client.rng.choice(SENTENCES) for _ in range(6))
        path, body, check = (
            "/v1/audio/speech",
            {"model": "tts-1", "input": text, "voice": "echo"},
            audio,
        )
    try:
        return judge(client.http.post(path, json=body, timeout=timeout), {200}, check)
    except httpx.TimeoutException:
        return CUT, None


# kind: (weight, request); about 12 % of requests are abandoned by their client.
MIX: dict[str, tuple[int, Callable[[Client], tuple]]] = {
    "chat": (18, chat),
    "chat_stream": (14, chat_stream),
    "completion": (9, completion),
    "embeddings": (12, embeddings),
    "speech": (6, speech),
    "transcription": (5, transcription),
    "image": (2, image),
    "models": (8, models),
    "bad_json": (3, bad_json),
    "unknown_model": (3, unknown_model),
    "bad_params": (5, bad_params),
    "bad_audio": (1, bad_audio),
    "no_key": (2, no_key),
    "cut_stream": (6, cut_stream),
    "cut_timeout": (6, cut_timeout),
}
