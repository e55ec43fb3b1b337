"""Every other endpoint's answers against OpenAI's own schemas (chat, completions, edits and
verbose transcriptions are checked in their own test files)."""

from __future__ import annotations

from tests.openai_spec import check


def test_models(http):
    listing = http.get("/v1/models").json()
    check("ListModelsResponse", listing)
    check("Model", http.get(f"/v1/models/{listing['data'][0]['id']}").json())


def test_embeddings(http):
    # Floats only: the spec types `embedding` as numbers, though OpenAI's own base64 answers
    # (and Stratus's) carry a string there.
    body = {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "float"}
    check("CreateEmbeddingResponse", http.post("/v1/embeddings", json=body).json())


def test_images(http):
    body = {"model": "dall-e-2", "prompt": "a cat", "size": "64x64", "response_format": "b64_json"}
    check("ImagesResponse", http.post("/v1/images/generations", json=body).json())


def test_transcriptions_and_translations(http):
    # mp3, not wav: Piper's length varies, and a wav can pass the test server's 64 KiB body cap.
    speech = {
        "model": "tts-1",
        "input": "The quick brown fox.",
        "voice": "alloy",
        "response_format": "mp3",
    }
    audio = http.post("/v1/audio/speech", json=speech).content
    for path, verbose, plain in (
        (
            "/v1/audio/transcriptions",
            "CreateTranscriptionResponseVerboseJson",
            "CreateTranscriptionResponseJson",
        ),
        (
            "/v1/audio/translations",
            "CreateTranslationResponseVerboseJson",
            "CreateTranslationResponseJson",
        ),
    ):
        for response_format, schema in (("json", plain), ("verbose_json", verbose)):
            answer = http.post(
                path,
                files={"file": ("a.mp3", audio)},
                data={"model": "whisper-1", "response_format": response_format},
            )
            check(schema, answer.json())
