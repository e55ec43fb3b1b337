"""The platform matrix for audio and images: binary answers, uploads and image URLs through
http, lambda, runpod and runpod-api (tests/platforms.py)."""

from __future__ import annotations

import base64
import copy
import json

import httpx
import pytest

from adapters.aws_lambda import make_handler
from adapters.runpod_worker import make_worker
from tests.conftest import IMAGE_BUCKET
from tests.platforms import EVENTS, PLATFORMS, Answer
from tests.transcripts import SENTENCE, heard


@pytest.mark.parametrize("platform", PLATFORMS)
def test_speech_is_audio_everywhere(platforms, platform):
    import io

    import av

    text = "Hello there. This is the second sentence, streamed."
    body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav"}
    answer = platforms.call(platform, "POST", "/v1/audio/speech", body)
    assert answer.status == 200
    with av.open(io.BytesIO(answer.audio)) as container:
        stream = container.streams.audio[0]
        seconds = sum(f.samples for f in container.decode(stream)) / stream.rate
    assert 1.5 < seconds < 6.0


IMAGE = {"prompt": "A cute baby sea otter", "size": "64x64", "seed": 11}


@pytest.fixture(scope="module")
def reference_images(platforms) -> Answer:
    return platforms.call("http", "POST", "/v1/images/generations", {**IMAGE, "n": 2,
                          "response_format": "b64_json"})  # fmt: skip


@pytest.mark.parametrize("platform", PLATFORMS)
def test_images_are_the_same_everywhere(platforms, reference_images, platform):
    body = {**IMAGE, "n": 2, "response_format": "b64_json"}
    answer = platforms.call(platform, "POST", "/v1/images/generations", body)
    assert answer.status == 200, answer.body
    assert answer.body["data"] == reference_images.body["data"]  # the same PNG bytes


@pytest.mark.parametrize("platform", PLATFORMS)
def test_image_urls_work_everywhere(platforms, reference_images, platform):
    """The gateway serves its own; Lambda and RunPod answer presigned S3 URLs."""
    answer = platforms.call(platform, "POST", "/v1/images/generations", {**IMAGE, "n": 2})
    assert answer.status == 200, answer.body
    for item, reference in zip(answer.body["data"], reference_images.body["data"], strict=True):
        if platform == "http":
            assert item["url"].startswith(f"{platforms.server.url}/generated-images/")
        else:
            assert f"/{IMAGE_BUCKET}/" in item["url"] and "X-Amz-Signature=" in item["url"]
        png = httpx.get(item["url"], timeout=30).content
        assert png == base64.b64decode(reference["b64_json"])


def test_image_urls_off_http_without_a_bucket_are_a_clear_400(platforms):
    bare = copy.copy(platforms)  # the same store, adapters as they are built with no bucket
    bare.lambda_handler = make_handler(platforms.settings, platforms.store)
    bare.worker = make_worker(platforms.settings, platforms.store)
    for platform in ("lambda", "runpod"):
        answer = bare.call(platform, "POST", "/v1/images/generations", IMAGE)
        assert answer.status == 400, (platform, answer.body)
        assert answer.body["error"]["param"] == "response_format"
        assert "b64_json" in answer.body["error"]["message"]


@pytest.fixture(scope="module")
def fox_mp3(http) -> bytes:
    speech = {"model": "tts-1", "input": SENTENCE, "voice": "alloy", "response_format": "mp3"}
    return http.post("/v1/audio/speech", json=speech).content


def test_a_multipart_upload_through_lambda(platforms, fox_mp3):
    audio = fox_mp3
    upload = httpx.Request(
        "POST", "http://x/v1/audio/transcriptions", files={"file": ("fox.mp3", audio)},
        data={"model": "whisper-1"},
    )  # fmt: skip
    event = copy.deepcopy(json.loads((EVENTS / "apigw_http_v2_chat_stream.json").read_text()))
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/v1/audio/transcriptions"
    event["headers"]["content-type"] = upload.headers["content-type"]
    event["headers"]["content-length"] = str(len(upload.read()))
    event["body"] = base64.b64encode(upload.read()).decode()  # API Gateway base64-encodes it
    response = platforms.lambda_handler(event, None)
    assert response["statusCode"] == 200, response["body"]
    assert heard(json.loads(response["body"])["text"]), response["body"]


def test_audio_in_runpod_jobs_as_base64_or_url(platforms, fox_mp3, tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    audio = fox_mp3
    (tmp_path / "fox.mp3").write_bytes(audio)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    files = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{files.server_address[1]}"
    # The worker as an operator who allows a loopback host configures it.
    allowing = copy.copy(platforms)
    allowed = platforms.settings.model_copy(update={"fetch_allow": "127.0.0.1"})
    allowing.worker = make_worker(allowed, platforms.store)
    try:
        for file in (base64.b64encode(audio).decode(), f"{url}/fox.mp3"):
            body = {"model": "whisper-1", "file": file}
            answer = allowing.call("runpod", "POST", "/v1/audio/transcriptions", body)
            assert answer.status == 200 and heard(answer.body["text"]), answer.body
        for file, status in (("not base64!", 400), (f"{url}/missing.mp3", 400)):
            body = {"model": "whisper-1", "file": file}
            answer = allowing.call("runpod", "POST", "/v1/audio/transcriptions", body)
            assert answer.status == status and answer.body["error"]["param"] == "file"
        # By default a worker fetches from public addresses only: loopback is refused, in the
        # same words as a file that is not there (no port scanning through the worker).
        body = {"model": "whisper-1", "file": f"{url}/fox.mp3"}
        refused = platforms.call("runpod", "POST", "/v1/audio/transcriptions", body)
        assert refused.status == 400 and refused.body["error"]["param"] == "file"
        assert refused.body["error"]["message"] == answer.body["error"]["message"]
        assert "127.0.0.1" not in refused.body["error"]["message"]
    finally:
        files.shutdown()


@pytest.mark.parametrize("platform", ["runpod", "runpod-api"])
def test_streamed_transcription_through_runpod(platforms, fox_mp3, platform):
    audio = base64.b64encode(fox_mp3).decode()
    body = {"model": "whisper-1", "file": audio, "stream": True}
    answer = platforms.call(platform, "POST", "/v1/audio/transcriptions", body)
    assert answer.status == 200 and answer.events[-1] == "[DONE]", answer
    *deltas, done = answer.events[:-1]
    assert deltas and {e["type"] for e in deltas} == {"transcript.text.delta"}
    assert done["type"] == "transcript.text.done" and heard(done["text"]), done
