"""The Responses renderer and items, without an engine: reasoning sealed for the caller and read
back on the next turn (a blob made elsewhere, changed, or another key's is refused), input items
normalised, and the semantic events' order for reasoning, text and calls."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from common.errors import InvalidRequest
from common.protocol.responses import Response
from common.sealed import Sealer, Signer, Unsealed
from handlers.text.conversation import events
from handlers.text.responses.events import ResponseEvents
from handlers.text.responses.items import Tools, normalise, read_tools, turns_of
from handlers.text.responses.stored import blobs


def job(owner: str = "alice", secret: bytes = b"s" * 32) -> SimpleNamespace:
    return SimpleNamespace(owner=owner, sealer=Sealer(secret))


def test_a_sealed_blob_round_trips_and_refuses_changes():
    sealer = Sealer(b"k" * 32)
    blob = sealer.seal({"text": "thinking…", "n": 1})
    assert "thinking" not in blob  # opaque
    assert sealer.unseal(blob) == {"text": "thinking…", "n": 1}
    changed = blob[:-3] + ("A" if blob[-3] != "A" else "B") + blob[-2:]
    for forged in (changed, "", "not base64!", Sealer(b"x" * 32).seal({"text": "x"})):
        with pytest.raises(Unsealed):
            sealer.unseal(forged)


def test_sealers_of_a_fleet_share_keys_and_random_ones_do_not():
    one = Sealer.from_settings("", ("key-a", "key-b"))
    two = Sealer.from_settings("", ("key-b", "key-a"))
    assert two.unseal(one.seal("x")) == "x"
    with pytest.raises(Unsealed):
        Sealer.from_settings("", ()).unseal(Sealer.from_settings("", ()).seal("x"))
    assert Sealer.from_settings("s", ()).unseal(Sealer.from_settings("s", ("k",)).seal(1)) == 1


def test_a_signature_verifies_only_its_own_text_owner_and_server():
    alice = Signer(Sealer(b"k" * 32), "alice")
    signature = alice.sign("thinking…")
    assert alice.verify("thinking…", signature)
    assert Signer(Sealer(b"k" * 32), "alice").verify("thinking…", signature)  # another worker
    assert not alice.verify("thinking… (edited)", signature)
    assert not Signer(Sealer(b"k" * 32), "bob").verify("thinking…", signature)
    assert not Signer(Sealer(b"x" * 32), "alice").verify("thinking…", signature)
    blob = Sealer(b"k" * 32).seal({"owner": "alice", "text": "thinking…"})
    for forged in ("", "AAAA", "not base64!", signature[:-4], blob):
        assert not alice.verify("thinking…", forged)


def render(generated: list[events.Event], sealed: bool, caller=None) -> list:
    response = Response(id="resp_1", created_at=0, status="in_progress", model="m")
    seal, _ = blobs(caller or job())
    renderer = ResponseEvents(response, Tools(), True, seal if sealed else None)

    def stream():
        yield from generated

    return list(renderer.render(stream(), lambda final: None))


TURN = [
    events.Started(10, "fp"),
    events.ReasoningDelta(0, "Let me think. "),
    events.ReasoningDelta(0, "Paris."),
    events.TextDelta(0, "It is Paris."),
    events.Finished(0, "stop", None, 5),
    events.TokenUsage(10, 5),
]


def test_reasoning_then_text_render_as_two_items_in_order():
    out = render(TURN, sealed=False)
    assert [e.sequence_number for e in out] == list(range(len(out)))
    assert [e.type for e in out] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = out[-1].response
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == "Let me think. Paris."
    assert final.output[0].encrypted_content is None
    assert "encrypted_content" not in final.output[0].model_dump(mode="json")
    assert final.output[1].content[0].text == "It is Paris."
    assert final.usage.total_tokens == 15


def test_encrypted_reasoning_comes_back_on_the_next_turn_for_its_key_only():
    final = render(TURN, sealed=True)[-1].response
    blob = final.output[0].encrypted_content
    assert blob and "Paris" not in blob
    item = {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": blob}
    _, unseal = blobs(job())
    [restored] = normalise([item], unseal)
    assert restored["content"] == [{"type": "reasoning_text", "text": "Let me think. Paris."}]
    _, bob = blobs(job(owner="bob"))
    _, elsewhere = blobs(job(secret=b"t" * 32))
    for other in (bob, elsewhere):
        with pytest.raises(InvalidRequest) as refused:
            normalise([item], other)
        assert refused.value.param == "input[0].encrypted_content"


def test_items_become_turns_with_calls_on_the_assistant_turn():
    _, unseal = blobs(job())
    items = normalise(
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "lookup",
                "namespace": "crm",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
        ],
        unseal,
    )
    turns = turns_of(items, "Instructions.", first_param=0)
    assert [t.role for t in turns] == ["system", "system", "user", "assistant", "tool"]
    assert turns[3].tool_calls[0].name == "crm__lookup"
    assert turns[4].name == "crm__lookup" and turns[4].content == "Sunny"


def test_tools_skip_what_stratus_cannot_run_and_name_namespaced_functions():
    tools = read_tools(
        [
            {"type": "web_search"},
            {"type": "function", "name": "f", "parameters": {"type": "object"}},
            {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "g"}]},
        ]
    )
    assert [spec.name for spec in tools.specs] == ["f", "ns__g"]
    assert tools.called("ns__g") == ("ns", "g") and tools.called("f") == (None, "f")
    with pytest.raises(InvalidRequest) as twice:
        read_tools([{"type": "function", "name": "f"}] * 2)
    assert twice.value.param == "tools[1].name"
