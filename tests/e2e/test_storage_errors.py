"""A model whose storage fails (a missing object, access denied, unreachable S3, a missing
local file) is named to the client, through the live server; the bucket, key, endpoint and
paths are in the server's log only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import BUCKET, LiveServer, S3World


def leaks(message: str, s3: S3World, server: LiveServer) -> list[str]:
    """Storage internals a client-visible message must not hold."""
    forbidden = [
        "s3://",
        "no-such-object",
        f"{BUCKET}/",
        ".gguf",
        "no-such-dir",
        "no-such-model",
        str(server.registry.parent),
        urlsplit(s3.moto.url).netloc,
        urlsplit(s3.proxy.url).netloc,
        "127.0.0.1",
        "http://",
        "Traceback",
        "/tmp",
    ]
    return [word for word in forbidden if word in message]


def server_log(server: LiveServer) -> str:
    """The live server's log (conftest writes it beside the registry's directory)."""
    [log] = Path(server.registry).parent.parent.glob("logs[0-9]*/server.log")
    return log.read_text()


def chat(server: LiveServer, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    return httpx.post(
        f"{server.v1}/chat/completions", json=body, headers=server.headers(), timeout=120
    )


def test_a_missing_object_names_the_model_not_the_object(server, s3):
    response = chat(server, "s3-missing")
    error = response.json()["error"]
    assert response.status_code == 404 and error["code"] == "model_not_available"
    assert "s3-missing" in error["message"] and not leaks(error["message"], s3, server)
    assert f"s3://{BUCKET}/no-such-object.gguf" in server_log(server)  # the log has it


@pytest.fixture
def s3_auth(s3: S3World) -> Iterator[None]:
    """moto checks every request's credentials (the test's are unknown to it): 403 for all."""
    reset = f"{s3.moto.url}/moto-api/reset-auth"
    before = httpx.post(reset, content=b"0").json()["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
    try:
        yield
    finally:
        httpx.post(reset, content=before.encode()).raise_for_status()


@pytest.mark.parametrize("model", ["s3-missing", "s3-escaping"])  # an object; a prefix
def test_access_denied_names_the_model_not_the_bucket(server, s3, s3_auth, model):
    response = chat(server, model)
    error = response.json()["error"]
    assert response.status_code == 503 and error["code"] == "model_access_denied", error
    assert model in error["message"] and "operator" in error["message"]
    assert not leaks(error["message"], s3, server), error["message"]
    assert "x-request-id" in response.headers


def test_access_denied_while_downloading_names_the_model_not_the_key(server, s3):
    """An object S3 describes but will not hand over (archived: a 403 on GET)."""
    client = s3.client()
    client.put_object(
        Bucket=BUCKET, Key="no-such-object.gguf", Body=b"GGUF" * 64, StorageClass="GLACIER"
    )
    try:
        response = chat(server, "s3-missing")
    finally:
        client.delete_object(Bucket=BUCKET, Key="no-such-object.gguf")
    error = response.json()["error"]
    assert response.status_code == 503 and error["code"] == "model_access_denied", error
    assert "s3:GetObject" in error["message"] and not leaks(error["message"], s3, server)
    assert "InvalidObjectState" in server_log(server)  # what S3 said is in the log
    assert not any((server.cache_dir / "partial").iterdir())


def test_unreachable_storage_names_the_model_not_the_endpoint(server, s3):
    s3.proxy.down = True
    try:
        response = chat(server, "s3-missing")  # never fetched: no cached copy to fall back on
    finally:
        s3.proxy.down = False
    error = response.json()["error"]
    assert response.status_code == 503 and error["code"] == "model_storage_unavailable", error
    assert int(response.headers["retry-after"]) > 0
    assert "s3-missing" in error["message"] and not leaks(error["message"], s3, server)


def test_a_missing_local_file_names_the_model_not_the_path(server, s3):
    response = chat(server, "file-missing")
    error = response.json()["error"]
    assert response.status_code == 404 and error["code"] == "model_not_available", error
    assert "file-missing" in error["message"] and not leaks(error["message"], s3, server)
