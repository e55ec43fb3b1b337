"""bench/bench_batching.py's report: the table of levels and issue 25's goals, Stratus ÷ each
llama-server layout that ran."""

from __future__ import annotations

PEERS = ("llama-server-default", "llama-server-auto", "llama-server")  # the goals' yardsticks
GOALS = (  # (title, the summary's key, clients, bound on Stratus ÷ the peer, higher better)
    ("aggregate tokens/s at 8", "tps", 8, 1.0, True),
    ("aggregate tokens/s at 1", "tps", 1, 0.95, True),
    ("time to first token p50 at 8", "ttft_p50_ms", 8, 1.5, False),
    ("time to first token p50 at 1", "ttft_p50_ms", 1, 1.0, False),
)


def goals(results: dict[str, list[dict]]) -> list[dict]:
    """Issue 25's goals, Stratus ÷ each llama-server layout that ran."""
    by_level = {name: {row["clients"]: row for row in rows} for name, rows in results.items()}
    out = []
    for peer in (p for p in PEERS if p in results and "stratus" in results):
        for title, key, level, bound, higher in GOALS:
            ours = by_level["stratus"].get(level, {}).get(key)
            theirs = by_level[peer].get(level, {}).get(key)
            ratio = ours / theirs if ours is not None and theirs else None
            met = None if ratio is None else ratio >= bound if higher else ratio <= bound
            bound_text = f"{'>=' if higher else '<='} {bound}"
            out.append(
                {"peer": peer, "goal": title, "ratio": ratio, "bound": bound_text, "pass": met}
            )
    return out


def print_report(results: dict[str, list[dict]], goal_rows: list[dict], tokens: int) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    print()
    header = f"{'runner':20} {'clients':>7} {'tok/s':>8} {'TTFT p50 ms':>11} {'TTFT p95 ms':>11}"
    print(f"{header} {'tok/req':>7} {'errors':>6}")
    for name, rows in results.items():
        for row in rows:
            print(
                f"{name:20} {row['clients']:>7} {row['tps']:>8.1f} {ms(row['ttft_p50_ms']):>11} "
                f"{ms(row['ttft_p95_ms']):>11} {row['tokens_per_request']:>7.1f} "
                f"{row['errors']:>6}"
            )
            if row["first_error"]:
                print(f"{'':14} first error: {row['first_error']}")
    if "raw" in results:
        print(
            "raw: one sequence, a level's requests one after another: its tok/s is its "
            "single-stream rate; its TTFT leaves out the wait"
        )
    if any(row["tokens_per_request"] < tokens for rows in results.values() for row in rows):
        print(f"note: some answers streamed fewer than {tokens} tokens: tok/s counts those sent")
    for row in goal_rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        verdict = {True: "PASS", False: "FAIL", None: "n/a: level not run"}[row["pass"]]
        peer = row["peer"]
        print(f"Stratus ÷ {peer:20} {row['goal']:30} {ratio:>6} ({row['bound']}) {verdict}")
