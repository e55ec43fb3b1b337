"""The model registry: merging, aliases, and errors that name file, entry and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ModelNotFound
from common.registry import RegistryError, load_registry

ENTRY = (
    "- name: {name}\n  backend: llama-cpp\n  source: /models/{name}.gguf\n  aliases: [{aliases}]\n"
)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_builtin_registry_aliases_openai_names():
    registry = load_registry()
    for alias in ("gpt-4", "gpt-4o", "gpt-3.5-turbo", "gpt-3.5-turbo-instruct"):
        assert registry.resolve(alias).name == "smollm2-135m-instruct"
    with pytest.raises(ModelNotFound):
        registry.resolve("gpt-99")


def test_user_entries_merge_over_builtin_ones(tmp_path):
    user = write(tmp_path / "m.yaml", ENTRY.format(name="big", aliases="gpt-4, mine"))
    registry = load_registry(user)
    assert registry.resolve("gpt-4").name == "big"  # the user's alias wins
    assert registry.resolve("gpt-4o").name == "smollm2-135m-instruct"
    assert registry.resolve("mine").name == "big"
    ids = dict(registry.ids())
    assert ids["big"].user_configured and not ids["smollm2-135m-instruct"].user_configured
    replaced = write(tmp_path / "r.yaml", ENTRY.format(name="smollm2-135m-instruct", aliases=""))
    assert (
        load_registry(replaced)
        .resolve("smollm2-135m-instruct")
        .source.endswith("smollm2-135m-instruct.gguf")
    )


def test_a_directory_of_files_and_a_models_key(tmp_path):
    write(tmp_path / "a.yaml", ENTRY.format(name="a", aliases=""))
    write(
        tmp_path / "b.yml",
        "models:\n"
        + ENTRY.format(name="b", aliases="").replace("\n", "\n  ").replace("- ", "  - ", 1),
    )
    write(tmp_path / "notes.txt", "not yaml: [")
    registry = load_registry(tmp_path)
    assert registry.resolve("a").name == "a" and registry.resolve("b").name == "b"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- name: x\n  backend: llama-cpp\n", ["entry 0 (x)", "field 'source'"]),
        ("- name: x\n  backend: vllm\n  source: /m\n", ["entry 0 (x)", "field 'backend'"]),
        (
            "- name: x\n  backend: llama-cpp\n  source: http://m\n",
            ["field 'source'", "absolute path"],
        ),
        ("- name: x\n  backend: llama-cpp\n  source: /m\n  colour: red\n", ["field 'colour'"]),
        (
            "- name: x\n  backend: llama-cpp\n  source: /m\n  aliases: ['bad id']\n",
            ["field 'aliases'"],
        ),
        ("- just a string\n", ["entry 0", "mapping"]),
        ("- name: [unclosed\n", ["not valid YAML"]),
        (ENTRY.format(name="x", aliases="") * 2, ["'x' is defined twice"]),
    ],
)
def test_bad_files_name_file_entry_and_field(tmp_path, text, expected):
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(RegistryError) as caught:
        load_registry(path)
    message = str(caught.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_missing_registry_path(tmp_path):
    with pytest.raises(RegistryError, match="no such registry"):
        load_registry(tmp_path / "nope.yaml")


def test_the_operators_max_tokens_is_the_default_budget_of_text_models(tmp_path):
    user = tmp_path / "models.yaml"
    user.write_text(
        "- name: capped\n  backend: llama-cpp\n  source: /m.gguf\n  parameters: {max_tokens: 7}\n"
    )
    registry = load_registry(user, max_tokens=300)
    assert registry.resolve("gpt-4").parameters["max_tokens"] == 300
    assert registry.resolve("capped").parameters["max_tokens"] == 7  # its own entry wins
    assert "max_tokens" not in registry.resolve("text-embedding-3-small").parameters
    assert "max_tokens" not in load_registry().resolve("gpt-4").parameters


def test_a_chat_without_max_tokens_stops_at_the_models_default_budget():
    from common.protocol.chat import ChatCompletionRequest
    from handlers.text.chat import create_chat_completion
    from tests.unit.fakes import FakeTextModel, fake_store

    model = FakeTextModel([b"a"] * 50, context_length=1024)
    request = ChatCompletionRequest(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    answer = create_chat_completion(request, fake_store(model, parameters={"max_tokens": 5}))
    assert answer.usage.completion_tokens == 5 and answer.choices[0].finish_reason == "length"


def test_parallel_sizes_admission_and_the_runpod_worker(tmp_path):
    from adapters.runpod_worker import concurrency_modifier
    from common.settings import Settings

    user = write(
        tmp_path / "m.yaml",
        ENTRY.format(name="wide", aliases="") + "  parameters: {parallel: 12}\n",
    )
    registry = load_registry(user)
    assert registry.resolve("wide").parallel == 12
    assert registry.resolve("gpt-4").parallel == 8  # the embedded model's entry
    assert registry.resolve("text-embedding-ada-002").parallel == 16  # batched embeddings
    assert registry.resolve("whisper-1").parallel == 1  # no batching: one at a time
    # A RunPod worker takes as many jobs as its busiest model batches, unless told otherwise.
    assert concurrency_modifier(Settings(), registry)(1) == 16
    assert concurrency_modifier(Settings(runpod_concurrency=3), registry)(1) == 3
    for bad in ("0", "true", "2.5", "'4'"):
        entry = ENTRY.format(name="bad", aliases="") + f"  parameters: {{parallel: {bad}}}\n"
        with pytest.raises(RegistryError, match="parallel"):
            load_registry(write(tmp_path / "bad.yaml", entry))


def test_poll_is_a_whole_number_from_0_to_100(tmp_path):
    entry = ENTRY.format(name="quiet", aliases="") + "  parameters: {poll: 0}\n"
    assert load_registry(write(tmp_path / "ok.yaml", entry)).resolve("quiet").parameters == {
        "poll": 0
    }
    for bad in ("-1", "101", "true", "0.5", "'50'"):
        entry = ENTRY.format(name="bad", aliases="") + f"  parameters: {{poll: {bad}}}\n"
        with pytest.raises(RegistryError, match="poll must be a whole number from 0 to 100"):
            load_registry(write(tmp_path / "bad.yaml", entry))


def test_speculative_is_ngram_or_off_and_draft_max_a_length_under_a_block(tmp_path):
    from layers.llama_files import draft_settings

    for good, mode in (
        ("{speculative: off}", "off"),
        ("{speculative: ngram, draft_max: 8}", "ngram"),
    ):
        entry = ENTRY.format(name="ok", aliases="") + f"  parameters: {good}\n"
        parameters = load_registry(write(tmp_path / "ok.yaml", entry)).resolve("ok").parameters
        assert draft_settings(parameters).mode == mode
    assert draft_settings({"draft_max": 2}).longest == 2
    for bad in ("{speculative: eagle}", "{draft_max: 64}", "{draft_max: 0}", "{draft_max: true}"):
        entry = ENTRY.format(name="bad", aliases="") + f"  parameters: {bad}\n"
        with pytest.raises(RegistryError, match="speculative must|draft_max must"):
            load_registry(write(tmp_path / "bad.yaml", entry))


def test_a_tool_format_is_checked_against_the_table_its_assembler_names(tmp_path):
    """common does not know the engines' formats (layers/tool_formats): the registry checks an
    entry's `tool_format` against the table whoever assembles it passes (adapters/runtime
    .registry_of), and asks for the table only when an entry names a format."""
    from adapters.runtime import registry_of
    from common.settings import Settings

    path = tmp_path / "models.yaml"
    entry = "- name: odd\n  backend: llama-cpp\n  source: file:///m.gguf\n"
    path.write_text(entry + "  tool_format: smoke-signals\n")
    with pytest.raises(RegistryError) as caught:
        registry_of(Settings(models=path))
    message = str(caught.value)
    assert "entry 0 (odd)" in message and "'smoke-signals' is not a tool-call format" in message
    assert "hermes" in message  # the formats that exist are named
    asked = []
    path.write_text("- name: plain\n  backend: llama-cpp\n  source: file:///m.gguf\n")
    load_registry(path, tool_formats=lambda: asked.append(1) or ())
    assert not asked
