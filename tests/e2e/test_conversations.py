"""The Conversations API with the official SDK on a live server: create, retrieve, update and
delete; list, add, retrieve and delete items; `conversation` on a response reads the items
before its input and adds its input and output to them; per API key, with the store's size cap
(across a restart and on S3: the store's own tests, tests/e2e/test_stored_responses.py)."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.conftest import API_KEYS
from tests.e2e.test_stored_responses import serving

TURN = {"model": "gpt-4", "max_output_tokens": 8, "temperature": 0}
FIRST = [{"type": "message", "role": "user", "content": "My name is Ada. Remember it."}]


@pytest.fixture
def other(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=API_KEYS[1], max_retries=0, timeout=120)


def test_a_conversation_lives_through_its_whole_api(client):
    made = client.conversations.create(metadata={"topic": "demo"}, items=FIRST)
    assert made.id.startswith("conv_") and made.metadata == {"topic": "demo"}
    assert client.conversations.retrieve(made.id) == made
    updated = client.conversations.update(made.id, metadata={"topic": "names"})
    assert updated.metadata == {"topic": "names"} and updated.created_at == made.created_at
    [first] = client.conversations.items.list(made.id).data
    assert first.type == "message" and first.role == "user" and first.id.startswith("msg_")
    assert first.content[0].text == FIRST[0]["content"]
    assert client.conversations.items.retrieve(first.id, conversation_id=made.id) == first
    more = [{"type": "message", "role": "user", "content": f"Note {i}."} for i in range(3)]
    added = client.conversations.items.create(made.id, items=more)
    assert [item.content[0].text for item in added.data] == ["Note 0.", "Note 1.", "Note 2."]
    listed = client.conversations.items.list(made.id, order="asc", limit=2)
    assert [i.id for i in listed.data] == [first.id, added.data[0].id] and listed.has_more
    rest = client.conversations.items.list(made.id, order="asc", after=listed.last_id)
    assert [i.id for i in rest.data] == [added.data[1].id, added.data[2].id]
    newest = client.conversations.items.list(made.id).data[0]
    assert newest.id == added.data[2].id  # newest first by default
    left = client.conversations.items.delete(added.data[1].id, conversation_id=made.id)
    assert left.id == made.id
    assert len(client.conversations.items.list(made.id).data) == 3
    gone = client.conversations.delete(made.id)
    assert gone.deleted and gone.id == made.id
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(made.id)


def test_a_response_reads_the_conversation_and_adds_its_turn(client):
    conversation = client.conversations.create(items=FIRST)
    alone = client.responses.create(input="What is my name?", **TURN)
    first = client.responses.create(input="What is my name?", conversation=conversation.id, **TURN)
    assert first.conversation.id == conversation.id
    assert first.usage.input_tokens > alone.usage.input_tokens  # the earlier item is read
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [(i.type, i.role) for i in items] == [
        ("message", "user"), ("message", "user"), ("message", "assistant")
    ]  # fmt: skip
    assert items[2].content[0].text == first.output_text
    second = client.responses.create(
        input="And again?", conversation={"id": conversation.id}, **TURN
    )
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert len(client.conversations.items.list(conversation.id).data) == 5
    unstored = client.responses.create(
        input="Once more.", conversation=conversation.id, store=False, **TURN
    )
    assert len(client.conversations.items.list(conversation.id, limit=100).data) == 7
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)  # not stored; its turn is in the conversation
    with pytest.raises(openai.BadRequestError) as both:
        client.responses.create(
            input="x", conversation=conversation.id, previous_response_id=first.id, **TURN
        )
    assert both.value.body["param"] == "conversation"


def test_another_keys_conversation_is_not_found(client, other):
    mine = client.conversations.create(items=FIRST)
    item = client.conversations.items.list(mine.id).data[0]
    for attempt in (
        lambda: other.conversations.retrieve(mine.id),
        lambda: other.conversations.update(mine.id, metadata={"a": "b"}),
        lambda: other.conversations.delete(mine.id),
        lambda: other.conversations.items.list(mine.id),
        lambda: other.conversations.items.create(mine.id, items=FIRST),
        lambda: other.conversations.items.retrieve(item.id, conversation_id=mine.id),
        lambda: other.conversations.items.delete(item.id, conversation_id=mine.id),
        lambda: other.responses.create(input="Name?", conversation=mine.id, **TURN),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert client.conversations.items.list(mine.id).data == [item]  # untouched


def test_bad_conversation_requests_are_4xx_naming_the_field(client, http):
    made = client.conversations.create()
    twenty_one = [{"role": "user", "content": "x"}] * 21
    robot = [{"role": "robot", "content": "x"}]
    cases = [
        ("POST", "/v1/conversations", {"items": twenty_one}, 400, "items"),
        ("POST", "/v1/conversations", {"metadata": {"k": "v" * 513}}, 400, "metadata"),
        ("POST", "/v1/conversations", {"items": robot}, 400, "items[0]"),
        ("POST", f"/v1/conversations/{made.id}", {}, 400, "metadata"),
        ("POST", f"/v1/conversations/{made.id}/items", {"items": []}, 400, "items"),
        ("GET", f"/v1/conversations/{made.id}/items/msg_nope", None, 404, "item_id"),
        ("GET", f"/v1/conversations/{made.id}/items?after=msg_nope", None, 404, "after"),
        ("GET", f"/v1/conversations/{made.id}/items?limit=0", None, 400, "limit"),
        ("GET", f"/v1/conversations/{made.id}/items?include=x", None, 400, "include"),
        ("GET", "/v1/conversations/conv_nope", None, 404, "conversation_id"),
        ("DELETE", "/v1/conversations/conv_nope", None, 404, "conversation_id"),
    ]  # fmt: skip
    for method, path, body, status, param in cases:
        answer = http.request(method, path, json=body)
        assert answer.status_code == status, (path, body, answer.text)
        assert answer.json()["error"]["param"].startswith(param), (path, answer.json())
    response = client.responses.create(input="Hi.", **TURN)
    not_a_conversation = http.get(f"/v1/conversations/{response.id}")
    assert not_a_conversation.status_code == 404  # a response's id is not a conversation's


def test_a_conversation_too_large_to_keep_refuses_the_turn_before_it_is_generated(
    tmp_path: Path,
):
    env = {"STRATUS_CACHE_DIR": str(tmp_path / "cache"), "STRATUS_RESPONSES_MAX_MB": "0.002"}
    with serving(env, tmp_path / "log") as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="store-key", max_retries=0)
        made = client.conversations.create(items=FIRST)
        long = "word " * 600  # 3 KB: more than the 2 KB the store keeps
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(input=long, conversation=made.id, store=False, **TURN)
        assert refused.value.body["param"] == "conversation"
        with pytest.raises(openai.BadRequestError) as too_many:
            client.conversations.items.create(made.id, items=[{"role": "user", "content": long}])
        assert too_many.value.body["param"] == "items"
        assert len(client.conversations.items.list(made.id).data) == 1  # nothing half-written
