"""What a fuzzed request body may cost (tests/e2e/test_fuzz.py): the models it may name, the
bounds on its numbers and sizes, and the repairs that let more bodies past validation."""

from __future__ import annotations

import array
import io
import math
import wave
from typing import Any

from hypothesis import strategies as st

# Model names a fuzzed body may carry: the cheap ones of the test registry for each task (the
# s3-* models are left out: downloading them would change what tests/e2e/test_s3_models.py
# counts), names of another task's model (a 400), and whatever the spec's generator made up.
# Each registry entry is a model load of its own (seconds), so the text entries with their own
# templates (tools-template-chat) come only among the others.
TEXT_MODELS = ["gpt-4o-mini", "tiny-chat", "my-alias"]
MODELS = {
    "/chat/completions": TEXT_MODELS,
    "/responses": TEXT_MODELS,
    "/messages": TEXT_MODELS,
    "/messages/count_tokens": TEXT_MODELS,
    "/completions": TEXT_MODELS,
    "/edits": TEXT_MODELS,
    "/embeddings": ["text-embedding-3-small", "all-minilm-l6-v2", "smollm2-embed"],
    "/audio/speech": ["tts-1", "gpt-4o-mini-tts"],
    "/audio/transcriptions": ["whisper-1"],
    "/audio/translations": ["whisper-1"],
    "/images/generations": ["dall-e-2", "dall-e-3"],
}
ANY_MODEL = sorted({name for names in MODELS.values() for name in names} | {"tools-template-chat"})

# Valid requests run the real models, so what they may cost is bounded here: unbounded, the
# spec allows max_tokens in the thousands, n up to 128, best_of 20, 1792x1792 images with 150
# steps, 4,096 characters of speech; on two cores one such request takes minutes. Numbers
# above a bound become the bound (strings too: pydantic reads "4000" as 4000); anything the
# server must refuse (a negative, a float, a string that is no number) is left to be refused.
TOKENS = 8  # max_tokens, max_completion_tokens
CHOICES = 2  # n, best_of
BATCH = 4  # prompts in a completions batch, inputs of an embeddings request
STEPS = 2  # diffusion steps
SPEECH_CHARACTERS = 120
SMALL_SIZES = ["64x64", "64x128", "128x64"]  # tiny-sd's smallest; others stay as sent


def short_wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    """A short tone: audio the decoders accept, so whisper runs (briefly) on some requests."""
    samples = array.array(
        "h",
        (int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(seconds * rate))),
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(samples.tobytes())
    return out.getvalue()


WAV = short_wav()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _cap(body: dict, name: str, limit: int, default: bool = False) -> None:
    """body[name] at most `limit`; set to it when absent and `default` (a model's own default
    may be large: a chat model generates up to its context)."""
    if name not in body or body[name] is None:
        if default:
            body[name] = limit
        return
    number = _number(body[name])
    if number is not None and number > limit:
        body[name] = limit


def _draw_model(data: st.DataObject, path: str, current: Any) -> Any:
    choice = data.draw(st.sampled_from(["own", "own", "own", "other", "generated"]), "model kind")
    if choice == "own":
        return data.draw(st.sampled_from(MODELS[path]), "model")
    if choice == "other":
        return data.draw(st.sampled_from(ANY_MODEL), "model")
    return current


def _blank(value: Any) -> bool:
    return not isinstance(value, str) or not value.strip()


def repair(path: str, body: dict) -> None:
    """Fills the required text fields the generator left empty or mistyped with a few words, so
    that more requests get past validation into the handlers and the engines (where a crash
    would be); the optional fields stay as generated."""
    if path == "/chat/completions" and isinstance(body.get("messages"), list):
        for message in body["messages"]:
            if isinstance(message, dict) and message.get("content") == "":
                message["content"] = "Say hi."
    if path == "/responses" and (body.get("input") is None or body.get("input") == ""):
        body["input"] = "Say hi."
    if path == "/completions" and (body.get("prompt") is None or body.get("prompt") == ""):
        body["prompt"] = "Once upon a time"
    if path == "/edits":
        if _blank(body.get("instruction")):
            body["instruction"] = "Fix the spelling."
        if not isinstance(body.get("input"), str):
            body["input"] = "Helo wrld"
    if path == "/embeddings" and (body.get("input") == "" or body.get("input") == [""]):
        body["input"] = "hello world"
    if path == "/audio/speech":
        if _blank(body.get("input")):
            body["input"] = "Hello there."
        if _blank(body.get("voice")):
            body["voice"] = "alloy"
    if path == "/images/generations" and _blank(body.get("prompt")):
        body["prompt"] = "a red cat"
    if path.startswith("/audio/trans"):
        body["file"] = WAV


def bound(data: st.DataObject, path: str, body: dict, form: bool, repairs: bool = True) -> None:
    """Keeps a fuzzed body cheap to answer (see the bounds above), in place; about half the
    time (when `repairs`), also repairs its required fields."""
    path = "/" + path.removeprefix("/v1/").strip("/")
    if repairs and data.draw(st.booleans(), "repair"):
        repair(path, body)
    if path in MODELS:
        body["model"] = _draw_model(data, path, body.get("model"))
    stream = data.draw(st.sampled_from([None, True, False]), "stream")
    if path in ("/chat/completions", "/completions", "/edits"):
        _cap(body, "max_tokens", TOKENS, default=True)
        _cap(body, "max_completion_tokens", TOKENS, default=path == "/chat/completions")
        _cap(body, "n", CHOICES)
        _cap(body, "best_of", CHOICES)
        if stream is not None and path != "/edits":
            body["stream"] = stream
    if path == "/responses":
        _cap(body, "max_output_tokens", TOKENS, default=True)
        if stream is not None:
            body["stream"] = stream
    if path == "/messages":
        _cap(body, "max_tokens", TOKENS, default=True)
        if stream is not None:
            body["stream"] = stream
    if path in ("/completions", "/embeddings"):
        key = "prompt" if path == "/completions" else "input"
        if isinstance(body.get(key), list):
            body[key] = body[key][:BATCH]
    if path == "/audio/speech":
        if isinstance(body.get("input"), str):
            body["input"] = body["input"][:SPEECH_CHARACTERS]
        if stream is not None:
            body["stream_format"] = "sse" if stream else "audio"
    if path.startswith("/audio/trans"):
        if stream is not None:
            body["stream"] = "true" if stream else "false"
    if path == "/images/generations":
        _cap(body, "n", CHOICES)
        _cap(body, "steps", STEPS)
        size = body.get("size")
        if size is None or size == "auto" or _is_size(size):
            body["size"] = data.draw(st.sampled_from(SMALL_SIZES), "size")
    if form:  # multipart fields are text
        for name, value in body.items():
            if isinstance(value, bool):
                body[name] = "true" if value else "false"
            elif isinstance(value, int | float):
                body[name] = str(value)


def _is_size(size: Any) -> bool:
    if not isinstance(size, str):
        return False
    width, _, height = size.partition("x")
    return width.isdigit() and height.isdigit()
