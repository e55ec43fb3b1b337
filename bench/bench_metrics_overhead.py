"""What metrics and cost lines cost: streamed chat tokens/s with them on and off, same run.

Two `stratus serve` processes, started together and measured in turn (never both at once):
on   STRATUS_METRICS=true, STRATUS_COST_LOG=true, and /metrics scraped every second meanwhile
     (a Prometheus with a 1 s interval; 15 s is usual), its cost lines written to stdout
     (here /dev/null: the write is the cost)
off  STRATUS_METRICS=false, STRATUS_COST_LOG=false (a request's record is still kept: it is
     what Server-Timing reports)
Each round measures both, in alternating order, at each level (1 and 4 clients, each sending
--requests streamed chats of --tokens tokens back to back, `ignore_eos`); the figure per level
is the median round. Then the ratio on ÷ off, against issue 14's goal of at least 0.99.
llama.cpp alone (the raw engine) comes first, for scale.

    .venv/bin/python bench/bench_metrics_overhead.py --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.batching_servers import stratus  # noqa: E402
from bench.bench_batching import MODEL_SOURCE, Plan, http_level, raw_levels  # noqa: E402
from common.sources import local_path  # noqa: E402

GOAL = 0.99


@contextlib.contextmanager
def scraping(url: str, every: float = 1.0):
    """/metrics fetched every `every` seconds until the block ends; yields the scrape count."""
    stop = threading.Event()
    count = [0]

    def loop() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.wait(every):
                assert client.get(url).status_code == 200
                count[0] += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield count
    finally:
        stop.set()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--levels", default="1,4")
    parser.add_argument("--requests", type=int, default=3, help="per client, per level")
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args()
    plan = Plan([int(n) for n in args.levels.split(",")], args.requests, args.tokens, 120.0)

    raw = raw_levels(local_path("smollm2", MODEL_SOURCE), plan)
    print("raw llama.cpp: " + ", ".join(
        f"{lv.clients} client(s) {lv.summary()['tps']:.1f} tok/s" for lv in raw))  # fmt: skip
    runs: dict[str, dict[int, list[float]]] = {
        "on": {n: [] for n in plan.levels},
        "off": {n: [] for n in plan.levels},
    }
    on_env = {"STRATUS_METRICS": "true", "STRATUS_COST_LOG": "true"}
    off_env = {"STRATUS_METRICS": "false", "STRATUS_COST_LOG": "false"}
    scrapes = 0
    with stratus(**on_env) as on, stratus(**off_env) as off:
        targets = {"on": on, "off": off}
        metrics_url = on.url.replace("/v1/chat/completions", "/metrics")
        for target in targets.values():  # loads each server's model
            http_level(target, 1, Plan([1], 1, 8, 120.0))
        for round_ in range(args.rounds):
            order = ("on", "off") if round_ % 2 == 0 else ("off", "on")
            for name in order:
                for clients in plan.levels:
                    if name == "on":
                        with scraping(metrics_url) as count:
                            level = http_level(targets[name], clients, plan)
                        scrapes += count[0]
                    else:
                        level = http_level(targets[name], clients, plan)
                    summary = level.summary()
                    assert summary["errors"] == 0, summary["first_error"]
                    runs[name][clients].append(summary["tps"])
            print(f"round {round_ + 1}: " + "; ".join(
                f"{name} " + ", ".join(f"{n}: {runs[name][n][-1]:.1f}" for n in plan.levels)
                for name in ("on", "off")))  # fmt: skip
    print(f"\n/metrics scraped {scrapes} times during the 'on' runs")
    print(f"{'clients':>8} {'on tok/s':>9} {'off tok/s':>10} {'on/off':>7}  goal >= {GOAL}")
    for clients in plan.levels:
        on_tps = statistics.median(runs["on"][clients])
        off_tps = statistics.median(runs["off"][clients])
        ratio = on_tps / off_tps
        verdict = "met" if ratio >= GOAL else "missed"
        print(f"{clients:>8} {on_tps:>9.1f} {off_tps:>10.1f} {ratio:>7.3f}  {verdict}")


if __name__ == "__main__":
    main()
