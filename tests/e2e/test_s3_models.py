"""Models from S3 (moto on loopback) served end to end through /v1/chat/completions."""

from __future__ import annotations

import re

import pytest

HELLO = [{"role": "user", "content": "Hello!"}]


def timings(response) -> dict[str, float]:
    header = response.headers["server-timing"]
    return {m[1]: float(m[2]) for m in re.finditer(r"(\w+);dur=([\d.]+)", header)}


def chat(http, model: str, **extra):
    body = {"model": model, "messages": HELLO, "max_tokens": 4, "temperature": 0, **extra}
    return http.post("/v1/chat/completions", json=body)


@pytest.mark.parametrize("model", ["s3-chat", "s3-dir-chat"])
def test_file_and_directory_models_from_s3(http, s3, model):
    s3.proxy.clear()
    first = chat(http, model)
    assert first.status_code == 200, first.text
    assert first.json()["choices"][0]["message"]["content"]
    cold = timings(first)
    assert cold["fetch"] > 0 and cold["load"] > 0 and "compute" in cold
    assert s3.proxy.count("GET", "/models/") >= 1  # it did come from S3
    s3.proxy.clear()
    second = chat(http, model)
    assert set(timings(second)) == {"queue", "compute"}  # hot: no fetch, no load
    assert s3.proxy.requests == []  # and S3 was not asked again
    local = chat(http, "gpt-4")
    assert (
        local.json()["choices"][0]["message"]["content"]
        == first.json()["choices"][0]["message"]["content"]
    )


def test_streamed_response_reports_its_timing_too(http):
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "s3-chat", "messages": HELLO, "max_tokens": 2, "stream": True},
    ) as r:
        assert r.status_code == 200
        assert "compute" in timings(r)
        r.read()


def test_a_missing_object_is_a_404_naming_the_model_only(http):
    response = chat(http, "s3-missing")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_available" and "s3-missing" in error["message"]
    assert (
        "no-such-object" not in error["message"]
        and "models" not in error["message"].split("'s3-missing'")[0]
    )


def test_a_cut_transfer_leaves_nothing_and_a_later_request_succeeds(http, s3, server):
    s3.proxy.reset_after = 4 * 1024 * 1024  # every connection is cut after 4 MB
    try:
        cut = chat(http, "s3-flaky")
    finally:
        s3.proxy.reset_after = None
    assert cut.status_code == 503, cut.text
    assert cut.json()["error"]["code"] == "model_storage_unavailable"
    assert int(cut.headers["retry-after"]) > 0
    assert list((server.cache_dir / "partial").iterdir()) == []  # nothing half-written left
    flaky = [
        e
        for e in (server.cache_dir / "entries").iterdir()
        if "flaky" in (e / "meta.json").read_text()
    ]
    assert flaky == []
    retried = chat(http, "s3-flaky")
    assert retried.status_code == 200, retried.text
    assert timings(retried)["fetch"] > 0


def test_object_keys_cannot_write_outside_the_cache(http, server):
    response = chat(http, "s3-escaping")
    assert response.status_code == 503, response.text
    message = response.json()["error"]["message"]
    assert "s3-escaping" in message and "not allowed" in message
    assert "evil-model" not in message and "escaped" not in message
    # Nothing was written: not the file outside, not a partial download.
    assert not any(server.cache_dir.parent.rglob("escaped.txt"))
    assert not any((server.cache_dir / "partial").iterdir())
