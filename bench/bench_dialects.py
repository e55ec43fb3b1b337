"""Three dialects, one generation: what rendering as Responses or Messages costs over Chat
Completions, and what a stored-response read adds.

One `stratus serve` (the embedded model, 2 threads), the same conversation (one user turn, so
the same prompt tokens) and greedy sampling in every dialect, streamed, taking turns each round;
prints each dialect's decode rate (tokens after the first ÷ the time after the first) and time
to first token, and the ratios Responses ÷ Chat and Messages ÷ Chat (goal: >= 0.97 each).

Then the response store (SQLite, the default): the time of SQLiteResponseStore.get of a stored
two-turn conversation, in process (goal: <= 5 ms), and a previous_response_id turn's
Server-Timing `compute` beside the same turn sent whole (`store: false`).

    .venv/bin/python bench/bench_dialects.py --rounds 8 --tokens 128
    .venv/bin/python bench/bench_dialects.py --smoke   # 1 round of 16 tokens: seconds
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import smoke  # noqa: E402
from tests.processes import free_port, running  # noqa: E402

PROMPT = "Tell me a long story about a lighthouse keeper and a storm."


def bodies(tokens: int) -> dict[str, tuple[str, dict]]:
    user = [{"role": "user", "content": PROMPT}]
    # ignore_eos (chat's extension) is not in the other dialects: a story prompt and a budget
    # the model reaches are what keeps the three the same length; lengths are checked below.
    return {
        "chat": (
            "/v1/chat/completions",
            {
                "model": "gpt-4",
                "messages": user,
                "max_tokens": tokens,
                "temperature": 0,
                "stream": True,
            },
        ),
        "responses": (
            "/v1/responses",
            {
                "model": "gpt-4",
                "input": PROMPT,
                "max_output_tokens": tokens,
                "temperature": 0,
                "stream": True,
                "store": False,
            },
        ),
        "messages": (
            "/v1/messages",
            {
                "model": "gpt-4",
                "messages": user,
                "max_tokens": tokens,
                "temperature": 0,
                "stream": True,
            },
        ),
    }


def is_text(dialect: str, data: dict) -> bool:
    if dialect == "chat":
        return bool(data.get("choices")) and bool(data["choices"][0]["delta"].get("content"))
    if dialect == "responses":
        return data.get("type") == "response.output_text.delta"
    return data.get("type") == "content_block_delta"


def stream_once(
    http: httpx.Client, dialect: str, path: str, body: dict
) -> tuple[float, float, int]:
    """(time to first text, decode seconds after it, text events)."""
    started = time.perf_counter()
    first = last = None
    count = 0
    with http.stream("POST", path, json=body) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if is_text(dialect, json.loads(line[6:])):
                last = time.perf_counter()
                first = first or last
                count += 1
    assert first is not None and last is not None
    return first - started, last - first, count


def store_read_ms(samples: int) -> float:
    from common.response_store import SQLiteResponseStore

    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteResponseStore(Path(directory) / "r.sqlite3", ttl=3600, max_bytes=16 << 20)
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": PROMPT * 20}],
        }
        document = {
            "response": {"id": "resp_x", "output": [item] * 4},
            "input_items": [item],
            "history": [item] * 8,
        }
        store.put("resp_bench", "owner", document)
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            store.get("resp_bench", "owner")
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)


def compute_ms(answer: httpx.Response) -> float:
    timing = dict(
        part.split(";dur=")
        for part in answer.headers["server-timing"].split(", ")
        if ";dur=" in part
    )
    return float(timing["compute"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = smoke.parse_args(parser, {"rounds": 1, "tokens": 16, "threads": 1})
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "STRATUS_THREADS": str(args.threads),
        "STRATUS_LOG_LEVEL": "warning",
        "STRATUS_COST_LOG": "false",
        "STRATUS_CACHE_DIR": tempfile.mkdtemp(prefix="bench-dialects-"),
    }
    command = [sys.executable, "-m", "adapters.cli", "serve", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    runs = bodies(args.tokens)
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in runs}
    with running(command, f"{url}/health", env), httpx.Client(base_url=url, timeout=300) as http:
        for name, (path, body) in runs.items():  # warm up: load, prefix cache
            stream_once(http, name, path, body)
        for _ in range(args.rounds):
            for name, (path, body) in runs.items():
                results[name].append(stream_once(http, name, path, body))
        # previous_response_id: the same two-turn conversation, resolved from the store or sent
        first = http.post(
            "/v1/responses",
            json={"model": "gpt-4", "input": PROMPT, "max_output_tokens": 16, "temperature": 0},
        )
        follow = {
            "model": "gpt-4",
            "input": "And then?",
            "max_output_tokens": 1,
            "temperature": 0,
            "store": False,
        }
        whole = [*first.json()["output"], {"role": "user", "content": "And then?"}]
        stored, sent = [], []
        for _ in range(args.rounds * 2):
            stored.append(
                compute_ms(
                    http.post(
                        "/v1/responses", json={**follow, "previous_response_id": first.json()["id"]}
                    )
                )
            )
            sent.append(
                compute_ms(
                    http.post(
                        "/v1/responses",
                        json={**follow, "input": [{"role": "user", "content": PROMPT}, *whole]},
                    )
                )
            )
    rates = {}
    print(f"{args.rounds} rounds, {args.tokens} tokens, {args.threads} threads, streamed, greedy")
    for name, samples in results.items():
        counts = {count for _, _, count in samples}
        rate = statistics.median((count - 1) / decode for _, decode, count in samples)
        ttft = statistics.median(ttft for ttft, _, _ in samples) * 1000
        rates[name] = rate
        print(
            f"  {name:10s} {rate:7.1f} text events/s after the first, TTFT {ttft:6.1f} ms, "
            f"events {sorted(counts)}"
        )
    for name in ("responses", "messages"):
        print(f"  {name} / chat: {rates[name] / rates['chat']:.3f} (goal >= 0.97)")
    print(f"store read (SQLite, in process): {store_read_ms(200):.3f} ms median (goal <= 5 ms)")
    print(
        f"previous_response_id turn, compute: {statistics.median(stored):.1f} ms median; "
        f"the same turn sent whole: {statistics.median(sent):.1f} ms"
    )


if __name__ == "__main__":
    main()
