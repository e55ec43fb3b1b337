"""A binary answer (audio, say) through every platform: raw bytes over HTTP, base64 in a Lambda
response, base64 with its content type in a RunPod job output."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from types import SimpleNamespace

from starlette.testclient import TestClient

from adapters.aws_lambda import make_handler
from adapters.http import create_app
from adapters.operations import OPERATIONS, Operation
from adapters.runpod_worker import make_worker
from common.protocol.base import BinaryResponse
from common.settings import Settings
from tests.unit.fakes import FakeTextModel, fake_store, run_job

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\xbb\x00\x00"
SPEAK = Operation(
    "speak",
    "POST",
    "/test/speech",
    lambda body, params: SimpleNamespace(**body),  # a request naming its model, as all do
    lambda request, store: BinaryResponse(WAV, "audio/wav"),
    inference=True,
    summary="a fixed WAV file",
)
OPERATIONS_WITH_AUDIO = (*OPERATIONS, SPEAK)
EVENT = Path(__file__).parent.parent / "events" / "apigw_http_v2_chat_stream.json"


def store():
    return fake_store(FakeTextModel([b"x"]))


def test_http_sends_the_bytes_with_their_type(tmp_path):
    app = create_app(Settings(cache_dir=tmp_path), store(), OPERATIONS_WITH_AUDIO)
    with TestClient(app) as client:
        response = client.post("/v1/test/speech", json={"model": "fake", "input": "hi"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav" and response.content == WAV


def test_lambda_returns_base64(tmp_path):
    handler = make_handler(
        Settings(api_key="test-key", cache_dir=tmp_path), store(), operations=OPERATIONS_WITH_AUDIO
    )
    event = copy.deepcopy(json.loads(EVENT.read_text()))
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/v1/test/speech"
    event["headers"].pop("content-length")
    response = handler(event, None)
    assert response["statusCode"] == 200 and response["isBase64Encoded"] is True
    assert base64.b64decode(response["body"]) == WAV


def test_runpod_returns_base64_with_the_content_type(tmp_path):
    worker = make_worker(Settings(cache_dir=tmp_path), store(), operations=OPERATIONS_WITH_AUDIO)
    job = {
        "id": "j",
        "input": {
            "openai_route": "/v1/test/speech",
            "openai_input": {"model": "fake", "input": "hi"},
        },
    }

    [output] = run_job(worker, job)
    assert output["content_type"] == "audio/wav" and base64.b64decode(output["data"]) == WAV
