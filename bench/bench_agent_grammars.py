"""What an agent's tools cost before its first token: parsing its request into a plan (every
tool schema checked), and compiling the calls' grammar into a token mask for the embedded
model's vocabulary, with a request body an agent CLI sent (captured to a file, not kept here:
the CLIs' prompts are their vendors').

    .venv/bin/python bench/bench_agent_grammars.py codex-request.json claude-request.json
    .venv/bin/python bench/bench_agent_grammars.py            # two small bodies built here
    .venv/bin/python bench/bench_agent_grammars.py --smoke    # the same, medians of 2 runs

A body with `input` is a Responses request (Codex), one with `messages` and `system` a Messages
request (Claude Code); without files, one of each is built here, offering three tools. Prints,
per body, the tools offered, the grammar's size and the medians of 20 runs (--times): plan
(parse + schema checks + grammar text), mask (llguidance compiling the grammar for the
tokenizer, as each request does), and the first mask computed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import smoke  # noqa: E402
from bench.bench_tool_formats import TOOLS  # noqa: E402
from common.protocol import parse_request  # noqa: E402


def plan_of(body: dict):
    if "input" in body:
        from common.image_input import ImageLimits
        from common.protocol.responses import ResponsesRequest
        from handlers.text.responses.create import _conversation
        from handlers.text.responses.items import normalise, read_tools

        request = parse_request(ResponsesRequest, body)
        tools = read_tools(request.tools)
        items = normalise(request.input, lambda blob: "")
        return _conversation(request, [], items, tools, ImageLimits()).plan
    from common.protocol.messages import MessageCreateRequest
    from handlers.text.messages import message_conversation

    request = parse_request(MessageCreateRequest, {"max_tokens": 64, **body})
    return message_conversation(request).plan


def sample_bodies() -> dict[str, dict]:
    """A Responses request (as Codex sends) and a Messages request (as Claude Code sends), each
    offering bench_tool_formats.py's three tools."""
    functions = [tool["function"] for tool in TOOLS]
    question = "What is the weather in Paris?"
    return {
        "responses (built here)": {
            "model": "gpt-4",
            "instructions": "You are a coding agent.",
            "input": question,
            "tools": [{"type": "function", **function} for function in functions],
        },
        "messages (built here)": {
            "model": "gpt-4",
            "system": "You are a coding agent.",
            "messages": [{"role": "user", "content": question}],
            "tools": [
                {
                    "name": function["name"],
                    "description": function["description"],
                    "input_schema": function["parameters"],
                }
                for function in functions
            ],
        },
    }


def median_ms(run, times: int) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    import tempfile

    from adapters.runtime import build_store
    from common.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bodies", nargs="*", type=Path, help="request bodies (JSON files)")
    parser.add_argument("--times", type=int, default=20, help="runs of each median")
    args = smoke.parse_args(parser, {"times": 2})
    bodies = {path.name: json.loads(path.read_text()) for path in args.bodies}
    store = build_store(Settings(cache_dir=Path(tempfile.mkdtemp()), threads=2))
    with store.use("smollm2-135m-instruct") as model:
        model._token_mask('start: "x"\n')  # llguidance's vocabulary, built once per model
        for name, body in (bodies or sample_bodies()).items():
            measure(model, name, body, args.times)
    store.close()


def measure(model, name: str, body: dict, times: int) -> None:
    import numpy as np

    plan = plan_of(body)
    assert plan.mode != "none"

    def grammar_of(plan) -> str:  # as generation writes it, in the model's tool format
        return model.tool_format.grammar(
            plan.tools, plan.mode == "required", not plan.single_call, model.grammar_literal
        )

    grammar = grammar_of(plan)
    plan_ms = median_ms(lambda: grammar_of(plan_of(body)), times)
    mask_ms = median_ms(lambda: model._token_mask(grammar), times)
    mask = model._token_mask(grammar)
    logits = np.zeros(model.vocab_size, dtype=np.float32)
    first_ms = median_ms(lambda: mask.apply(logits), min(times, 5))
    print(
        f"{name}: {len(plan.tools)} function tools, grammar "
        f"{len(grammar) / 1024:.1f} KB; plan {plan_ms:.1f} ms, "
        f"mask compiled {mask_ms:.1f} ms, a mask {first_ms:.2f} ms (medians)"
    )


if __name__ == "__main__":
    main()
