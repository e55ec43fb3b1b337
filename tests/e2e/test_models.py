"""GET /v1/models and /v1/models/{id}: names and aliases, filter and excludeConfigured."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import API_KEYS


def test_models_lists_every_id_a_client_may_send(client):
    ids = [m.id for m in client.models.list()]
    for expected in ("smollm2-135m-instruct", "gpt-4", "gpt-3.5-turbo", "tiny-chat", "my-alias"):
        assert expected in ids
    assert len(ids) == len(set(ids))
    model = client.models.retrieve("gpt-4")
    assert model.id == "gpt-4" and model.object == "model" and model.owned_by
    assert model.created > 1_700_000_000
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_models_filter_and_exclude_configured(http):
    body = http.get("/v1/models", params={"filter": "^gpt-4"}).json()
    assert body["object"] == "list"
    ids = {m["id"] for m in body["data"]}
    assert "gpt-4" in ids and "gpt-4o" in ids and "gpt-3.5-turbo" not in ids
    assert all(set(m) == {"id", "object", "created", "owned_by"} for m in body["data"])
    builtin_only = {
        m["id"] for m in http.get("/v1/models", params={"excludeConfigured": "true"}).json()["data"]
    }
    assert (
        "tiny-chat" not in builtin_only
        and "my-alias" not in builtin_only
        and "gpt-4" in builtin_only
    )
    bad = http.get("/v1/models", params={"filter": "("})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "filter"


def test_a_catastrophic_filter_cannot_stall_the_server(server):
    # With a backtracking engine this pattern runs for minutes against one 22-character id,
    # on the event loop; RE2 answers at once. The client's timeout only bounds the test.
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=15) as quick:
        answer = quick.get("/v1/models", params={"filter": "(.*.*.*.*.*.*.*.*.*.*.*.*)!"})
        assert answer.status_code == 200 and answer.json()["data"] == []
        assert quick.get("/health").status_code == 200
        for bad in ("(?=a)", "(a)\\1", "x" * 300):
            refused = quick.get("/v1/models", params={"filter": bad})
            assert refused.status_code == 400 and refused.json()["error"]["param"] == "filter"


def test_an_anthropic_client_lists_the_text_models_in_anthropics_shape(server, http):
    """Claude Code lists a gateway's models with Anthropic's SDK (its anthropic-version header):
    Anthropic's Models API shape, pages by after_id/before_id, its error envelope."""
    import anthropic

    claude = anthropic.Anthropic(base_url=server.url, api_key=API_KEYS[0], max_retries=0)
    models = list(claude.models.list(limit=3))  # every page, the SDK following has_more
    ids = [m.id for m in models]
    assert "gpt-4" in ids and "tiny-chat" in ids and len(ids) == len(set(ids))
    assert "all-minilm-l6-v2" not in ids and "whisper-tiny-en" not in ids  # no text from these
    gpt4 = claude.models.retrieve("gpt-4")
    assert gpt4.type == "model" and gpt4.display_name == "gpt-4 (smollm2-135m-instruct)"
    assert gpt4.created_at.year >= 2024 and gpt4.max_input_tokens == 2048
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.models.retrieve("no-such-model")
    assert missing.value.body["type"] == "error"
    version = {"anthropic-version": "2023-06-01"}
    first = http.get("/v1/models", params={"limit": 2}, headers=version).json()
    assert set(first) == {"data", "first_id", "last_id", "has_more"} and first["has_more"]
    after = http.get("/v1/models", params={"after_id": first["last_id"]}, headers=version).json()
    assert after["first_id"] == ids[2]
    before = http.get("/v1/models", params={"before_id": ids[2], "limit": 5}, headers=version)
    assert [m["id"] for m in before.json()["data"]] == ids[:2] and not before.json()["has_more"]
    for params in ({"limit": 0}, {"limit": "x"}, {"after_id": "nope"}):
        bad = http.get("/v1/models", params=params, headers=version)
        assert bad.status_code == 400 and bad.json()["type"] == "error", params
