"""Tool-call formats, and which one a model was trained on, read from its chat template.

Detection is an ordered table of template signatures, specific before generic (as llama.cpp's
common/chat.cpp keeps one): the first whose texts all occur in the template names the format.
A template that matches none gets Stratus's generic mode (Hermes' `<tool_call>` tags, described
in a system prompt when the template cannot describe tools itself). The registry's
`tool_format` overrides the detection.
"""

from __future__ import annotations

import importlib

from layers.tool_formats.base import (
    Arguments,
    CallParser,
    CallStarted,
    Event,
    PlainText,
    Reasoning,
    Text,
    ToolFormat,
)

__all__ = [
    "Arguments",
    "CallParser",
    "CallStarted",
    "Event",
    "PlainText",
    "Reasoning",
    "Text",
    "ToolFormat",
    "by_name",
    "detect",
    "formats",
]

# (texts the template contains, the format's name): the first match wins.
SIGNATURES: tuple[tuple[tuple[str, ...], str | None], ...] = (
    (("<|channel|>", "<|message|>"), "harmony"),  # GPT-OSS
    (("<seed:tool_call>",), None),  # ByteDance Seed-OSS: its own tags, not built yet
    (("<function=", "<parameter="), "qwen3-coder"),
    (("<|tool_list_start|>",), "lfm2"),
    (("<|tool_call_start|>",), "lfm2"),  # LFM2.5
    (("List of tools: [",), "lfm2"),  # LFM2.5, as llama.cpp tells it
    (("<|tool_calls_section_begin|>",), "kimi-k2"),
    (("<｜tool▁sep｜>", "```json"), "deepseek-r1"),
    (("<｜tool▁sep｜>",), "deepseek-v3"),
    (("<|START_ACTION|>",), "command-r7b"),
    (("<|tool_call|>",), "granite"),
    (("[CALL_ID]",), "mistral"),
    (("[ARGS]",), "devstral"),
    (("[TOOL_CALLS]",), "mistral-nemo"),
    ((">>>all",), "functionary-v3.2"),
    (("<function=",), "functionary-v3.1"),
    (("<tool_call>",), "hermes"),
    (("<|python_tag|>",), "llama3"),
    (('"parameters": dictionary',), "llama3"),
)
# Modules that define formats, each in a FORMATS tuple.
_MODULES = ("json_calls", "xml_calls", "harmony", "python_calls", "functionary")
GENERIC = "hermes"


def formats() -> dict[str, ToolFormat]:
    """Every format Stratus knows, by name."""
    known: dict[str, ToolFormat] = {}
    for module in _MODULES:
        for fmt in importlib.import_module(f"layers.tool_formats.{module}").FORMATS:
            known[fmt.name] = fmt
    return known


def detect(template: str | None) -> str | None:
    """The name of the format a chat template writes calls in; None when it shows none."""
    if not template:
        return None
    return next(
        (name for texts, name in SIGNATURES if all(text in template for text in texts)), None
    )


def by_name(name: str | None) -> ToolFormat:
    """The format of that name (None or one not built yet: the generic one)."""
    known = formats()
    return known.get(name or GENERIC) or known[GENERIC]
