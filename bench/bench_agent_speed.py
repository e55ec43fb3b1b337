"""Agent-scale speed (issue 37): decode at long contexts, and speculative decoding on edits.

Every target serves the embedded SmolLM2-135M with 2 threads, at temperature 0, and they take
turns request by request (the VM's speed drifts by the hour; only turns compare):

stratus         Stratus's agent entry as shipped (16,384 tokens for each of 2 sequences),
                drafting from n-grams (`speculative: ngram`, the default)
stratus-off     the same entry with `speculative: off`
llama-server    llama.cpp's server built from the vendored source (`make llama-server`), as its
                users run it for agents: -c 32768 --parallel 2 -t 2 (2 streams of 16,384)
llama-server-SPEC  the same with `--spec-type SPEC` (ngram-simple, ngram-map-k, ngram-mod)

1. Long context: a prompt of N tokens (text of this repository, a unique first line so no cache
   helps), 64 tokens generated with ignore_eos, one stream and two at once: prompt tokens/s
   (prompt ÷ time to first token) and decode tokens/s after the first token.
2. Edits: a file of this repository (1k-4k tokens) copied back (unchanged, a symbol renamed,
   docstrings added), against free-text and JSON-schema controls: decode tokens/s after the
   first token; Stratus's acceptance from its /metrics. With 8 streams (an entry of 8
   sequences): Stratus drafting ÷ not.

    .venv/bin/python bench/bench_agent_speed.py [--lengths 512,2048,4096,8192,16000]
        [--rounds 2] [--cached] [--json out.json] [--smoke]

`--cached` sends each long-context row's prompts every round, evaluated once first: a round
then costs its decode only, so enough rounds fit to see past the VM's drift.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import smoke  # noqa: E402
from bench.agent_speed_targets import (  # noqa: E402
    MODEL_SOURCE,
    PAUSE_SECONDS,
    Sample,
    Target,
    ask,
    at_once,
    llama_server,
    stratus,
)
from common.sources import local_path  # noqa: E402

# llama-server caps a slot's context at the model's training context (8,192 for SmolLM2): a
# longer prompt is refused there ("exceeds the available context size").
LLAMA_SERVER_SLOT = 8192 - 128
SPEC_TYPES = ("ngram-simple", "ngram-map-k", "ngram-mod")
EDIT_FILES = ("layers/prefix_cache.py", "handlers/text/chat.py", "layers/llama_batch.py")
SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "summary": {"type": "string"},
        "keywords": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["title", "summary", "keywords"],
}


# Workloads.


def corpus() -> str:
    parts = [p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))]
    parts += [p.read_text() for p in sorted((ROOT / "layers").glob("*.py"))]
    return "\n\n".join(parts)


class Cutter:
    """The corpus cut to a number of the model's tokens (its own vocabulary, loaded alone)."""

    def __init__(self, path: Path, text: str) -> None:
        from layers.llama_api import ModelFile, bindings

        lib = bindings()
        params = lib.llama_model_default_params()
        params.vocab_only = True
        model = ModelFile(lib, path, params)
        self.pieces = [
            model.piece(t, special=False) for t in model.tokenize(text.encode(), False, False)
        ]
        model.close()

    def prompt(self, tokens: int) -> list[dict]:
        """About `tokens` tokens of text with a first line of its own: no server has its
        prefix cached."""
        head = f"Session {uuid.uuid4()}. Read this and summarise it.\n\n"
        body = b"".join(self.pieces[: tokens - 40]).decode(errors="ignore")
        return [{"role": "user", "content": head + body}]


def edit_requests(files: list[str]) -> dict[str, list[dict]]:
    requests = {}
    for path in files:
        source = (ROOT / path).read_text()
        stem = Path(path).stem
        requests[f"unchanged {stem}"] = [
            {
                "role": "user",
                "content": "Rewrite this file unchanged; answer with the file only."
                f"\n\n```python\n{source}```",
            }  # fmt: skip
        ]
        symbol = re.findall(r"^def (\w+)", source, re.M)[:1] or ["log"]
        requests[f"rename {stem}"] = [
            {
                "role": "user",
                "content": f"Rename `{symbol[0]}` to `{symbol[0]}_v2` everywhere in "
                f"this file; answer with the whole file.\n\n```python\n{source}```",
            }  # fmt: skip
        ]
        requests[f"docstrings {stem}"] = [
            {
                "role": "user",
                "content": "Add a docstring to every function of this file that "
                f"has none; answer with the whole file.\n\n```python\n{source}```",
            }  # fmt: skip
        ]
    return requests


CONTROLS = {
    "free text": (
        [{"role": "user", "content": "Write an essay on the history of the printing press."}],
        {},
    ),
    "json": (
        [{"role": "user", "content": "Describe the printing press as JSON."}],
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "d", "schema": SCHEMA},
            }
        },
    ),
}


def spec_counts(target: Target) -> tuple[float, float]:
    if target.metrics is None:
        return 0.0, 0.0
    text = httpx.get(target.metrics, timeout=30).text
    totals = []
    for name in ("stratus_spec_decode_draft_tokens", "stratus_spec_decode_accepted_tokens"):
        pattern = rf'^{name}_total{{[^}}]*model="{target.model}"[^}}]*}} ([\d.e+]+)$'
        totals.append(sum(float(m) for m in re.findall(pattern, text, re.M)))
    return totals[0], totals[1]


@dataclass
class Table:
    rows: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)

    def add(self, row: str, target: str, samples: list[Sample]) -> None:
        for sample in samples:
            if sample.error:
                raise RuntimeError(f"{target} on {row}: {sample.error}")
        self.rows.setdefault(row, {}).setdefault(target, []).extend(samples)

    def decode(self, row: str, target: str) -> float:
        samples = self.rows.get(row, {}).get(target)
        return statistics.fmean(s.decode_tps for s in samples) if samples else 0.0

    def prompt(self, row: str, target: str) -> float:
        samples = self.rows.get(row, {}).get(target)
        return statistics.fmean(s.prompt_tps for s in samples) if samples else 0.0


def long_context(
    targets: list[Target],
    cutter: Cutter,
    lengths: list[int],
    streams_list: list[int],
    rounds: int,
    tokens: int,
    cached: bool = False,
) -> Table:
    """`cached`: every round sends the same prompts, evaluated once before the rounds, so a
    round costs its decode only and many rounds fit (prompt tokens/s is then meaningless)."""
    table = Table()
    for length in lengths:
        for streams in streams_list:
            row = f"{length} x{streams}"
            fixed = [cutter.prompt(length) for _ in range(streams)] if cached else None
            served = [
                t
                for t in targets  # llama-server's slots hold the model's training context at most
                if not (t.name.startswith("llama-server") and length > LLAMA_SERVER_SLOT)
            ]
            for round_ in range(rounds + int(cached)):
                for target in served:
                    time.sleep(PAUSE_SECONDS)
                    prompts = fixed or [cutter.prompt(length) for _ in range(streams)]
                    calls = [
                        lambda t=target, m=m: ask(t, m, tokens, ignore_eos=True) for m in prompts
                    ]
                    samples = at_once(calls)
                    if not (cached and round_ == 0):  # the first cached round evaluates
                        table.add(row, target.name, samples)
            print_row(table, row, targets, prompt=not cached)
    return table


def edits(
    targets: list[Target], files: list[str], rounds: int, tokens: int, smallest: bool
) -> Table:
    table = Table()
    workloads = {
        name: (messages, {"ignore_eos": True}) for name, messages in edit_requests(files).items()
    }
    workloads.update(CONTROLS)
    if smallest:
        workloads = {k: v for k, v in workloads.items() if k.endswith("prefix_cache")}
        workloads.update({"free text": CONTROLS["free text"]})
    texts: dict[str, dict[str, str]] = {}
    for name, (messages, extra) in workloads.items():
        before = {t.name: spec_counts(t) for t in targets}
        for _ in range(rounds):
            for target in targets:
                sample = ask(target, messages, tokens, **extra)
                table.add(name, target.name, [sample])
                texts.setdefault(name, {})[target.name] = sample.text
        after = {t.name: spec_counts(t) for t in targets}
        drafted = after["stratus"][0] - before["stratus"][0]
        accepted = after["stratus"][1] - before["stratus"][1]
        rate = f"acceptance {accepted / drafted:.2f} of {drafted:.0f} drafted" if drafted else ""
        print_row(table, name, targets, note=rate)
        same = texts[name].get("stratus") == texts[name].get("stratus-off")
        if not same:
            print(f"  DIFFERENT TEXT: stratus and stratus-off on {name}", flush=True)
    return table


def streams8(rounds: int, tokens: int) -> dict[str, float]:
    """Stratus alone, 8 streams (an entry of 8 sequences): drafting ÷ not, edits and free text."""
    ratios = {}
    source = (ROOT / EDIT_FILES[0]).read_text()
    edit = [{"role": "user", "content": f"Rewrite this file unchanged.\n\n```python\n{source}```"}]
    with stratus(parallel=8, n_ctx=4096) as (drafting, plain):
        for name, messages in (("edits", edit), ("free text", CONTROLS["free text"][0])):
            tps: dict[str, list[float]] = {drafting.name: [], plain.name: []}
            for _ in range(rounds):
                for target in (drafting, plain):
                    started = time.perf_counter()
                    samples = at_once(
                        [lambda t=target, m=messages: ask(t, m, tokens, ignore_eos=True)] * 8
                    )
                    wall = time.perf_counter() - started
                    tps[target.name].append(sum(s.tokens for s in samples) / wall)
            ratios[name] = statistics.fmean(tps["stratus"]) / statistics.fmean(tps["stratus-off"])
            on, off = statistics.fmean(tps["stratus"]), statistics.fmean(tps["stratus-off"])
            print(
                f"8 streams {name}: aggregate tokens/s drafting {on:.1f}, not {off:.1f}: "
                f"{ratios[name]:.2f}",
                flush=True,
            )
    return ratios


def print_row(
    table: Table, row: str, targets: list[Target], prompt: bool = False, note: str = ""
) -> None:
    cells = []
    for target in targets:
        cell = f"{target.name} {table.decode(row, target.name):6.1f}"
        if prompt:
            cell += f" (prompt {table.prompt(row, target.name):5.0f})"
        cells.append(cell)
    print(f"{row:28s} " + "  ".join(cells) + (f"  {note}" if note else ""), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="512,2048,4096,8000,16000")
    parser.add_argument("--streams", default="1,2", help="streams at once, long contexts")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument(
        "--cached", action="store_true", help="long contexts: the same prompts every round"
    )
    parser.add_argument("--edit-tokens", type=int, default=256)
    parser.add_argument("--spec-types", default=",".join(SPEC_TYPES))
    parser.add_argument("--files", default=",".join(EDIT_FILES), help="files the edits copy")
    parser.add_argument("--skip", default="", help="parts to skip: long,edits,8")
    parser.add_argument("--json", type=Path)
    args = smoke.parse_args(
        parser,
        {
            "lengths": "300",
            "rounds": 1,
            "decode_tokens": 8,
            "edit_tokens": 24,
            "spec_types": "ngram-mod",
        },
        argv,
    )
    skip = set(filter(None, args.skip.split(",")))
    path = local_path("smollm2", MODEL_SOURCE)
    binary = smoke.llama_server()
    results: dict = {"lengths": {}, "edits": {}, "streams8": {}}
    with contextlib.ExitStack() as stack:
        targets = list(stack.enter_context(stratus(parallel=2, n_ctx=16384)))
        if binary is not None:
            targets.append(stack.enter_context(llama_server(binary, path, "llama-server")))
            for spec in filter(None, args.spec_types.split(",")):
                targets.append(
                    stack.enter_context(
                        llama_server(binary, path, f"llama-server-{spec}", "--spec-type", spec)
                    )
                )
        for target in targets:
            print(f"{target.name}: {target.command}", flush=True)
        plain = [t for t in targets if "-ngram" not in t.name]
        if "long" not in skip:
            print("\ndecode tokens/s after the first token (prompt tokens/s)", flush=True)
            lengths = [int(n) for n in args.lengths.split(",")]
            cutter = Cutter(path, corpus())
            streams = [int(n) for n in args.streams.split(",")]
            table = long_context(
                plain, cutter, lengths, streams, args.rounds, args.decode_tokens, args.cached
            )
            for row in table.rows:
                results["lengths"][row] = {
                    t.name: {
                        "decode": table.decode(row, t.name),
                        "prompt": table.prompt(row, t.name),
                    }
                    for t in plain
                }
                if binary is not None and table.decode(row, "llama-server"):
                    peer = table.decode(row, "llama-server")
                    ratio = table.decode(row, "stratus-off") / peer
                    print(f"stratus-off / llama-server decode at {row}: {ratio:.2f}", flush=True)
        if "edits" not in skip:
            print("\nedits: decode tokens/s after the first token", flush=True)
            table = edits(targets, args.files.split(","), args.rounds, args.edit_tokens, args.smoke)
            for row in table.rows:
                off = table.decode(row, "stratus-off")
                speedup = table.decode(row, "stratus") / off if off else 0.0
                line = f"{row:28s} drafting / not {speedup:.2f}"
                peers = [t.name for t in targets if t.name.startswith("llama-server-")]
                if peers:
                    best = max(peers, key=lambda p: table.decode(row, p))
                    ratio = table.decode(row, "stratus") / table.decode(row, best)
                    line += f"   / best llama-server spec ({best}) {ratio:.2f}"
                print(line, flush=True)
                results["edits"][row] = {t.name: table.decode(row, t.name) for t in targets}
    if "8" not in skip:
        results["streams8"] = streams8(args.rounds, args.edit_tokens)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
