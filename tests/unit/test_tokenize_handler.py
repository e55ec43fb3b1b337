"""The tokenize handler's rules on a fake model (the real engine: tests/e2e/test_tokenize.py):
each server's default for the beginning-of-sequence token, a chat counted through the chat
template, pieces that are not whole UTF-8 given as bytes."""

from __future__ import annotations

import pytest

from common.errors import InvalidRequest
from common.protocol.tokenize import TokenizeRequest
from handlers.text.tokenize import tokenize
from tests.unit.fakes import FakeTextModel, fake_store


class Recording(FakeTextModel):
    def __init__(self) -> None:
        super().__init__([])
        self.switches: list[tuple[bool, bool]] = []

    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        self.switches.append((add_special, parse_special))
        return super().tokenize(text)


@pytest.mark.parametrize(
    ("fields", "switches"),
    [
        ({"content": "a"}, (False, True)),  # llama.cpp's default: no BOS
        ({"prompt": "a"}, (True, True)),  # vLLM's: with it
        ({"content": "a", "add_special": True}, (True, True)),
        ({"prompt": "a", "add_special_tokens": False}, (False, True)),
        ({"content": "a", "parse_special": False}, (False, False)),
    ],
)
def test_each_servers_default_for_special_tokens(fields, switches):
    model = Recording()
    tokenize(TokenizeRequest(model="gpt-4", **fields), fake_store(model))
    assert model.switches == [switches]


def test_a_chat_is_counted_through_the_template_and_pieces_may_be_bytes():
    model = Recording()
    store = fake_store(model)
    chat = tokenize(
        TokenizeRequest(model="gpt-4", messages=[{"role": "user", "content": "hé"}]), store
    )
    assert bytes(chat.tokens) == "<user>hé<assistant>".encode()  # the fake's template
    assert chat.count == len(chat.tokens) and chat.max_model_len == 64
    pieces = tokenize(TokenizeRequest(model="gpt-4", content="é", with_pieces=True), store)
    assert [p.piece for p in pieces.tokens] == [[0xC3], [0xA9]]  # half a character each


def test_disagreeing_switches_are_refused():
    request = TokenizeRequest(
        model="gpt-4", content="a", add_special=True, add_special_tokens=False
    )
    with pytest.raises(InvalidRequest) as refused:
        tokenize(request, fake_store(Recording()))
    assert refused.value.param == "add_special_tokens"
