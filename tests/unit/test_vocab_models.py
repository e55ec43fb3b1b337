"""tests/vocab_models: tiny models with real vocabularies load in llama.cpp, their format markers
are one special token each, their chat template reads back and Stratus's loader renders with it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import vocab_models
from tests.vocab_models import RECIPES, build_chat_model, build_recipe, template_text

pytestmark = pytest.mark.skipif(
    vocab_models.missing_reason() is not None, reason=vocab_models.missing_reason() or ""
)

MISTRAL_MARKERS = RECIPES["mistral-nemo"].extra_special
DEEPSEEK_MARKERS = RECIPES["deepseek-r1"].extra_special


@pytest.fixture(scope="module")
def lib() -> Any:
    llama_cpp = pytest.importorskip("llama_cpp", reason="the llama extra is not installed")
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    llama_cpp.llama_backend_init()
    return llama_cpp


@contextmanager
def loaded(lib: Any, path: Path) -> Iterator[Any]:
    """The model as layers/llama_cpp.py opens it."""
    from layers.llama_api import ModelFile

    model = ModelFile(lib, path, lib.llama_model_default_params())
    try:
        yield model
    finally:
        model.close()


def text_of(lib: Any, model: Any, token: int) -> str:
    """A token's text in the vocabulary."""
    return lib.llama_vocab_get_text(model.vocab, token).decode()


def special_token(lib: Any, model: Any, text: str) -> tuple[int, int]:
    """The one token `text` is when special tokens are parsed, and its attributes."""
    tokens = model.tokenize(text.encode(), add_bos=False, special=True)
    assert len(tokens) == 1, f"{text} is {tokens}"
    return tokens[0], lib.llama_vocab_get_attr(model.vocab, tokens[0])


def test_llama31_has_its_control_tokens_where_llama3_reserved_them(lib):
    with loaded(lib, build_recipe("llama31")) as model:
        assert model.n_vocab() == 128256
        for text, expected in (("<|python_tag|>", 128010), ("<|eom_id|>", 128008)):
            token, attributes = special_token(lib, model, text)
            assert token == expected and attributes & lib.LLAMA_TOKEN_ATTR_CONTROL
        assert special_token(lib, model, "<|reserved_special_token_247|>")[0] == 128255
        # A client's text never becomes the control token.
        assert 128010 not in model.tokenize(b"<|python_tag|>", add_bos=False, special=False)
        assert text_of(lib, model, model.token_eos()) == "<|eot_id|>"
        assert lib.llama_vocab_is_eog(model.vocab, 128008)  # <|eom_id|> ends a turn too
        template = template_text("meta-llama-Llama-3.1-8B-Instruct.jinja")
        assert model.metadata()["tokenizer.chat_template"] == template


def test_extra_specials_are_control_tokens_after_an_spm_vocabulary(lib):
    with loaded(lib, build_recipe("mistral-nemo")) as model:
        assert model.n_vocab() == 32000 + len(MISTRAL_MARKERS)
        for offset, text in enumerate(MISTRAL_MARKERS):
            token, attributes = special_token(lib, model, text)
            assert token == 32000 + offset and attributes & lib.LLAMA_TOKEN_ATTR_CONTROL
        assert len(model.tokenize(b"[TOOL_CALLS]", add_bos=False, special=False)) > 1
        assert text_of(lib, model, model.token_bos()) == "<s>"
        template = template_text("mistralai-Mistral-Nemo-Instruct-2407.jinja")
        assert model.metadata()["tokenizer.chat_template"] == template


def test_deepseek_markers_are_control_and_think_is_user_defined(lib):
    with loaded(lib, build_recipe("deepseek-r1")) as model:
        for text in DEEPSEEK_MARKERS:
            assert special_token(lib, model, text)[1] & lib.LLAMA_TOKEN_ATTR_CONTROL
        for text in ("<think>", "</think>"):
            token, attributes = special_token(lib, model, text)
            assert attributes & lib.LLAMA_TOKEN_ATTR_USER_DEFINED
            # user-defined tokens stay whole in any text, and show when generated
            assert model.tokenize(text.encode(), add_bos=False, special=False) == [token]
            assert model.piece(token, special=False) == text.encode()
        bos, eos = model.token_bos(), model.token_eos()
        assert text_of(lib, model, bos) == "<｜begin▁of▁sentence｜>" and bos == 100000
        assert text_of(lib, model, eos) == "<｜end▁of▁sentence｜>"


def test_qwen25_has_its_added_tokens_in_place_of_qwen2s_padding(lib):
    with loaded(lib, build_recipe("qwen25")) as model:
        assert model.n_vocab() == 151936
        assert special_token(lib, model, "<tool_call>") == (
            151657,
            lib.LLAMA_TOKEN_ATTR_USER_DEFINED,
        )
        assert special_token(lib, model, "</tool_call>")[0] == 151658
        assert special_token(lib, model, "<|im_start|>")[1] & lib.LLAMA_TOKEN_ATTR_CONTROL
        assert special_token(lib, model, "<|fim_prefix|>")[1] & lib.LLAMA_TOKEN_ATTR_CONTROL
        assert text_of(lib, model, model.token_eos()) == "<|im_end|>"
        assert model.add_bos_token() is False


def test_an_extra_special_on_a_bpe_vocabulary(lib, tmp_path):
    path = build_chat_model("qwen2", "{{ messages }}", ["[TOOL_CALLS]"], dest_dir=tmp_path)
    with loaded(lib, path) as model:
        assert model.n_vocab() == 151937
        token, attributes = special_token(lib, model, "[TOOL_CALLS]")
        assert token == 151936 and attributes & lib.LLAMA_TOKEN_ATTR_CONTROL
        # the vocabulary's own control tokens are not added twice
        assert special_token(lib, model, "<|im_end|>")[0] == 151645
        assert model.metadata()["tokenizer.chat_template"] == "{{ messages }}"


def test_built_once_whole_and_the_same_every_time(tmp_path):
    first = build_chat_model("llama-spm", "{{ x }}", ["[A]"], dest_dir=tmp_path / "a")
    stamp = first.stat().st_mtime_ns
    assert build_chat_model("llama-spm", "{{ x }}", ["[A]"], dest_dir=tmp_path / "a") == first
    assert first.stat().st_mtime_ns == stamp  # not written again
    again = build_chat_model("llama-spm", "{{ x }}", ["[A]"], dest_dir=tmp_path / "b")
    assert again.read_bytes() == first.read_bytes()
    other = build_chat_model("llama-spm", "{{ y }}", ["[A]"], dest_dir=tmp_path / "a")
    assert other != first
    assert sorted(p.suffix for p in (tmp_path / "a").iterdir()) == [".gguf", ".gguf"]


def test_a_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def fail(file: Any, keys: Any, vocab: str, shape: Any) -> None:
        file.write(b"GGUF half a model")
        raise OSError("disk full")

    monkeypatch.setattr(vocab_models, "_write_model", fail)
    with pytest.raises(OSError):
        build_chat_model("llama-spm", "{{ x }}", dest_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_stratus_renders_with_the_gguf_template_and_generates(lib):
    from common.registry import ModelConfig
    from common.turns import ChatTurn
    from layers import EngineOptions
    from layers.llama_cpp import LlamaCppTextModel
    from layers.text import Sampling

    path = build_recipe("llama31")
    config = ModelConfig(name="tiny-llama31", backend="llama-cpp", source=str(path))
    model = LlamaCppTextModel(config, path, EngineOptions(threads=1))
    try:
        prompt = model.chat_prompt([ChatTurn(role="user", content="Hi")])
        # Llama 3.1's template (no registry template): headers and turn ends as control tokens
        assert prompt[0] == 128000 and prompt.count(128006) == 3 and prompt.count(128009) == 2
        assert prompt[-4] == 128006 and prompt[-2] == 128007  # the assistant's header, open
        runs = [
            [t.piece for t in model.generate(prompt, Sampling(temperature=0), limit=4)]
            for _ in range(2)
        ]
        assert 1 <= len(runs[0]) <= 4 and runs[0] == runs[1]  # greedy: the same both times
    finally:
        model.close()
