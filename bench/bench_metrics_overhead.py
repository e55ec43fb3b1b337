"""What metrics and cost lines cost: streamed chat tokens/s with them on and off, same run.

Two `stratus serve` processes, started together and measured in turn (never both at once):
on   STRATUS_METRICS=true, STRATUS_COST_LOG=true, and /metrics scraped every --scrape-every
     seconds meanwhile (default 5; Prometheus' default is 60, 15 is usual), its cost lines on stdout
     (here /dev/null: the write is the cost)
off  STRATUS_METRICS=false, STRATUS_COST_LOG=false (a request's record is still kept: it is
     what Server-Timing reports)
At each level (1 and 4 clients, each sending one streamed chat of --tokens tokens,
`ignore_eos`), --pairs pairs of runs, on and off back to back in alternating order; the figure
is the median of the pairs' ratios on ÷ off, against issue 14's goal of at least 0.99. First,
for scale: llama.cpp alone (the raw engine, one stream), and the bookkeeping alone, timed
in-process (per token; per request: record, metrics, cost line).

    .venv/bin/python bench/bench_metrics_overhead.py --pairs 15
    .venv/bin/python bench/bench_metrics_overhead.py --smoke   # 2 pairs: 1 client, 8 tokens
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import smoke  # noqa: E402
from bench.batching_servers import THREADS, stratus  # noqa: E402
from bench.bench_batching import MODEL_SOURCE, Plan, http_level, raw_levels  # noqa: E402
from common.sources import local_path  # noqa: E402

GOAL = 0.99


class Scraper:
    """Fetches /metrics every `every` seconds of the time it is switched on (only while the
    'on' server is measured: its clock stops in between, so short runs still see scrapes at
    the given rate, and the 'off' runs never share the cores with a scrape)."""

    def __init__(self, url: str, every: float) -> None:
        self.url, self.every = url, every
        self.on = threading.Event()
        self.stopped = threading.Event()
        self.count = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @contextlib.contextmanager
    def switched_on(self):
        self.on.set()
        try:
            yield
        finally:
            self.on.clear()

    def _loop(self) -> None:
        tick, elapsed = 0.02, 0.0
        with httpx.Client(timeout=10) as client:
            while not self.stopped.wait(tick):
                if not self.on.is_set():
                    continue
                elapsed += tick
                if elapsed >= self.every:
                    elapsed = 0.0
                    assert client.get(self.url).status_code == 200
                    self.count += 1

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()


def paired(targets: dict, clients: int, plan: Plan, pairs: int, scraper: Scraper) -> dict:
    """`pairs` runs of each server back to back, in alternating order: each pair's ratio
    compares two runs a few seconds apart, so the machine's slow swings (on a shared VM,
    +-15 % from minute to minute) cancel; the median ratio is the figure."""
    one = Plan([clients], 1, plan.tokens, plan.timeout)
    tps: dict[str, list[float]] = {"on": [], "off": []}
    scrapes = scraper.count
    for index in range(pairs):
        for name in ("on", "off") if index % 2 == 0 else ("off", "on"):
            if name == "on":
                with scraper.switched_on():
                    level = http_level(targets[name], clients, one)
            else:
                level = http_level(targets[name], clients, one)
            summary = level.summary()
            assert summary["errors"] == 0, summary["first_error"]
            tps[name].append(summary["tps"])
    ratios = [on / off for on, off in zip(tps["on"], tps["off"], strict=True)]
    return {
        "clients": clients,
        "on": statistics.median(tps["on"]),
        "off": statistics.median(tps["off"]),
        "ratio": statistics.median(ratios),
        "ratio_q1_q3": statistics.quantiles(ratios, n=4)[::2],
        "scrapes": scraper.count - scrapes,
    }


def in_process_costs(tokens: int) -> dict:
    """The bookkeeping itself, timed alone: per output token (a record's token count and
    clock) and per request (metrics observed, the cost line written to /dev/null)."""
    import os

    from common.metering import CostLog, RequestRecord
    from common.metrics import Metrics

    metrics = Metrics()
    log = CostLog(open(os.devnull, "w"))  # noqa: SIM115 (closed with the process)
    requests = 2000
    started = time.perf_counter()
    for index in range(requests):
        record = RequestRecord(f"r{index}", "createChatCompletion", "http")
        record.model = "smollm2"
        record.add_span("queue", 0.001)
        record.count("prompt_tokens", 40)
        for _ in range(tokens):
            record.output_token()
        record.close(200)
        metrics.observe(record)
        log.write(record)
    per_request = (time.perf_counter() - started) / requests
    started = time.perf_counter()
    record = RequestRecord("t", "createChatCompletion", "http")
    for _ in range(100_000):
        record.output_token()
    per_token = (time.perf_counter() - started) / 100_000
    return {"per_request_s": per_request, "per_token_s": per_token}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=15, help="pairs of runs per level")
    parser.add_argument("--levels", default="1,4")
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--scrape-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--threads", type=int, default=THREADS, help="both servers' and raw's")
    args = smoke.parse_args(
        parser, {"pairs": 2, "levels": "1", "tokens": 8, "scrape_every": 0.5, "threads": 1}
    )
    plan = Plan([int(n) for n in args.levels.split(",")], 1, args.tokens, 120.0)

    costs = in_process_costs(args.tokens)
    path = local_path("smollm2", MODEL_SOURCE)
    raw = raw_levels(path, Plan([1], 3, args.tokens, 120.0), args.threads)
    raw_tps = raw[0].summary()["tps"]
    print(f"raw llama.cpp, one stream: {raw_tps:.1f} tok/s ({1000 / raw_tps:.1f} ms a token)")
    request_s = args.tokens / raw_tps
    share = costs["per_request_s"] / request_s
    print(
        f"bookkeeping alone, in-process: {costs['per_token_s'] * 1e6:.2f} us a token; "
        f"{costs['per_request_s'] * 1e6:.0f} us a request of {args.tokens} tokens "
        f"(record, metrics, cost line) = {share:.5%} of that request's {request_s:.2f} s"
    )
    on_env = {"STRATUS_METRICS": "true", "STRATUS_COST_LOG": "true"}
    off_env = {"STRATUS_METRICS": "false", "STRATUS_COST_LOG": "false"}
    rows = []
    with stratus(args.threads, **on_env) as on, stratus(args.threads, **off_env) as off:
        targets = {"on": on, "off": off}
        scraper = Scraper(on.url.replace("/v1/chat/completions", "/metrics"), args.scrape_every)
        for target in targets.values():  # loads each server's model
            http_level(target, 1, Plan([1], 1, 8, 120.0))
        for clients in plan.levels:
            rows.append(paired(targets, clients, plan, args.pairs, scraper))
            print(json.dumps(rows[-1]), flush=True)
        scraper.close()
    print(f"\n{'clients':>8} {'on tok/s':>9} {'off tok/s':>10} {'on/off':>7} "
          f"{'(q1-q3)':>13}  goal >= {GOAL}")  # fmt: skip
    for row in rows:
        verdict = "met" if row["ratio"] >= GOAL else "missed"
        q1, q3 = row["ratio_q1_q3"]
        print(f"{row['clients']:>8} {row['on']:>9.1f} {row['off']:>10.1f} {row['ratio']:>7.3f} "
              f"{q1:>6.3f}-{q3:.3f}  {verdict} (/metrics scraped {row['scrapes']}x)")  # fmt: skip


if __name__ == "__main__":
    main()
