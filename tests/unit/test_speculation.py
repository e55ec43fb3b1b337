"""Speculative decoding from n-gram drafts (layers/ngram_draft, layers/speculation): the drafts,
how their length adapts, and that a sequence's tokens and log probabilities are the same with
drafts and without (the embedded SmolLM2, llama.cpp's CPU backend)."""

from __future__ import annotations

import inspect
import threading

import pytest

from common.sources import local_path
from layers import prefix_cache
from layers.ngram_draft import NgramDrafter
from layers.speculation import DraftSettings, Speculation, worth_drafting
from layers.step_costs import StepCosts
from layers.text import Sampling
from tests.unit.test_llama_context import SOURCE, _model


def test_a_draft_is_what_followed_the_latest_earlier_occurrence_of_the_last_tokens():
    drafter = NgramDrafter([1, 2, 3, 4, 5, 9, 1, 2, 3, 7, 8])
    assert drafter.draft(4) == []  # "3 7 8", "7 8": never seen before
    drafter.extend([1, 2, 3])
    assert drafter.draft(4) == [7, 8, 1, 2]  # the latest "1 2 3" was followed by 7 8 ...
    assert drafter.draft(1) == [7]
    drafter.extend([7, 8, 1, 2, 3, 7, 8])
    assert drafter.draft(3) == [1, 2, 3]
    assert NgramDrafter([5, 5]).draft(3) == []  # its only 2-gram is its end
    assert NgramDrafter([5, 5, 5]).draft(3) == [5, 5, 5]  # "5 5" recurs: 5 repeats
    assert NgramDrafter([1, 2, 3, 1, 2]).draft(5) == [3, 1, 2, 3, 1]  # a period of 3
    # A copy is followed: once a draft came from a place, the next comes from after it while
    # the sequence goes on as it did there, though its last 6 tokens last occurred elsewhere.
    copying = NgramDrafter([1, 2, 3, 4, 5, 6, 7, 8, 100, 2, 3, 4, 5, 6, 7, 8, 200, 1, 2])
    assert copying.draft(1) == [3]
    copying.extend([3, 4, 5, 6, 7, 8])
    assert copying.draft(1) == [100]  # not 200, which followed "3 ... 8" the latest time
    copying.extend([9])  # it went its own way: looked up again
    assert copying.draft(2) == []
    # Where nothing recurs, a guess: what followed the last token before, else itself.
    assert NgramDrafter([1, 2, 3, 2]).guess() == 3
    assert NgramDrafter([7]).guess() == 7


def test_a_draft_grows_while_accepted_shrinks_to_what_was_and_pauses_after_misses():
    speculation = Speculation(DraftSettings(longest=8, first=2), NgramDrafter([1, 2] * 20))
    assert len(speculation.draft(100)) == 2
    speculation.judged(2, 2)
    assert len(speculation.draft(100)) == 8  # four times as long
    speculation.judged(8, 8)
    assert len(speculation.draft(100)) == 8  # at most draft_max
    assert len(speculation.draft(3)) == 3  # at most the room left
    speculation.judged(8, 2)
    assert len(speculation.draft(100)) == 3
    for _ in range(4):
        speculation.judged(3, 0)
    assert [speculation.draft(100) for _ in range(8)] == [[]] * 8  # paused, 8 steps
    assert speculation.draft(100)
    for _ in range(4):
        speculation.judged(1, 0)
    assert speculation.draft(100) == []  # paused again (16 steps) ...
    assert speculation.draft(100, at_least=1) == [1]  # ... but a lone sequence still guesses
    assert (speculation.drafted, speculation.accepted) == (2 + 8 + 8 + 12 + 4, 2 + 8 + 2)


def test_a_draft_is_as_long_as_its_rows_are_worth_at_their_cost():
    assert worth_drafting([0.99] * 63, 0.01) == 63  # rows nearly free, a copy: the longest
    assert worth_drafting([0.95] * 63, 0.01) == 40
    assert worth_drafting([0.95] * 63, 0.1) == 15  # a row a tenth of a token: shorter
    assert worth_drafting([0.4] * 63, 0.5) == 0  # a row half a token: never at 40%
    assert worth_drafting([0.9] * 63, 0.5) > 0  # ... but a likely draft still pays
    assert worth_drafting([1.0] * 5 + [0.3] * 58, 0.2) == 5  # up to where it is unlikely
    speculation = Speculation(DraftSettings(first=8), NgramDrafter([1, 2] * 20))
    assert len(speculation.draft(100, row_share=0.01)) == 8  # before any: tried at its length
    speculation.judged(8, 8)
    speculation.judged(20, 20)
    assert len(speculation.draft(100, row_share=0.01)) == 63  # a copy: the longest
    speculation.judged(63, 50)
    assert len(speculation.draft(100, row_share=0.01)) == 51  # as long as accepted + 1
    speculation.judged(51, 0)  # one failed: the next is as long as what was accepted + 1
    assert len(speculation.draft(100, row_share=0.01)) == 1
    for _ in range(16):  # drafts keep failing what their chances promised: rows no longer pay
        speculation.judged(1, 0)
        speculation._paused = 0  # (not the pauses of this test)
        speculation.draft(100, row_share=0.02)
    assert speculation.draft(100, row_share=0.3) == []
    assert len(speculation.draft(100, row_share=0.02)) == 1  # at 0.02 it still does
    probes = [len(speculation.draft(100, row_share=0.3)) for _ in range(16)]
    assert probes == ([0] * 7 + [1]) * 2  # a token every 8 steps measures the rate again


def test_a_draft_tokens_chance_is_how_often_it_followed_its_context():
    # "1 2" came twice, followed by 3 each time; "1 2 3" was followed by 4, then by 9.
    tokens = [5, 1, 2, 3, 4, 6, 1, 2, 3, 9, 7, 1, 2]
    drafter = NgramDrafter(tokens)
    assert drafter.chances([3, 9, 7]) == [
        pytest.approx(2 / 2.1),  # the longest context seen before: "1 2", followed by 3 twice
        pytest.approx(1 / 2.1),  # "1 2 3": a branch (4 once, 9 once)
        pytest.approx(1 / 1.2),  # "2 3 9" came once: 7 followed it
    ]
    assert drafter.chances([8]) == [0.0]  # never followed "1 2"
    speculation = Speculation(DraftSettings(first=8), NgramDrafter(tokens))
    assert speculation.draft(100, row_share=0.4) == [3]  # not past the branch at "1 2 3"
    assert len(speculation.draft(100, row_share=0.01)) > 1  # where rows are cheap, past it


def test_a_rows_cost_is_learned_from_the_decodes_it_is_part_of():
    costs = StepCosts()
    assert costs.row_share(1000) is None
    for step in range(200):  # 10 ms a step, 0.5 ms a row and 0.5 ms a row per 1,024 cells
        rows, context = (1, 5, 17)[step % 3], 500 + 40 * step
        costs.observe(rows, rows * context, 0.010 + rows * (0.0005 + 0.0005 * context / 1024))
    for context in (512, 4096):
        row = 0.0005 + 0.0005 * context / 1024
        assert costs.row_share(context) == pytest.approx(row / (0.010 + row), rel=0.03)
    lone = StepCosts()
    for _ in range(50):
        lone.observe(1, 2000, 0.02)  # rows never varied: a row's cost is not known
    assert lone.row_share(2000) is None


@pytest.fixture(scope="module")
def models():
    path = local_path("smollm2", SOURCE)
    plain = _model(path, parallel=8, n_ctx=2048, speculative="off")
    drafting = _model(path, parallel=8, n_ctx=2048, speculative="ngram", draft_max=63)
    yield plain, drafting
    plain.close()
    drafting.close()


CODE = inspect.getsource(prefix_cache.prompt_blocks)  # a function to copy, rename, quote


def _chat(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


PROMPTS = {
    "copy": _chat(f"Repeat this code exactly, then explain it:\n{CODE}"),
    "rename": _chat(f"Rename `blocks` to `spans` in this code:\n{CODE}"),
    "free": _chat("Write a short story about a lighthouse keeper."),
    "list": _chat("List the numbers from 1 to 40, one per line."),
}
JSON_GRAMMAR = 'start: "{\\"lines\\": [" line ("," line)* "]}"\nline: "\\"" /[a-z ]{1,30}/ "\\""\n'


def _run(model, prompt: str, sampling: Sampling, **options) -> list[tuple]:
    tokens = model.tokenize(prompt)
    out = model.generate(tokens, sampling, logprobs=2, limit=options.pop("limit", 120), **options)
    return [(t.piece, t.logprob) for t in out]


@pytest.mark.parametrize("name", sorted(PROMPTS))
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_drafts_change_neither_tokens_nor_log_probabilities(models, name, temperature):
    plain, drafting = models
    sampling = Sampling(temperature=temperature, seed=11)
    assert _run(drafting, PROMPTS[name], sampling) == _run(plain, PROMPTS[name], sampling)


def test_under_a_grammar_drafts_change_nothing(models):
    plain, drafting = models
    prompt = _chat(f"Give the lines of this code as JSON:\n{CODE}")
    sampling = Sampling(temperature=0)
    expected = _run(plain, prompt, sampling, grammar=JSON_GRAMMAR, limit=150)
    assert _run(drafting, prompt, sampling, grammar=JSON_GRAMMAR, limit=150) == expected


def test_a_batch_of_eight_drafting_or_not_gets_each_sequence_its_own_numbers(models, monkeypatch):
    """Eight sequences at once, copies and free text, all drafting (however busy the batch),
    two of them under a grammar: each gets what it gets alone without drafts."""
    plain, drafting = models
    monkeypatch.setattr(drafting, "_drafts", DraftSettings(busy=8))
    names = sorted(PROMPTS) * 2
    samplings = [Sampling(temperature=0.0 if i % 2 else 0.9, seed=i) for i in range(8)]
    grammars = [JSON_GRAMMAR if i in (2, 5) else None for i in range(8)]
    expected = [
        _run(plain, PROMPTS[n], s, limit=60, grammar=g)
        for n, s, g in zip(names, samplings, grammars, strict=True)
    ]
    results: dict[int, list] = {}

    def one(i: int) -> None:
        results[i] = _run(drafting, PROMPTS[names[i]], samplings[i], limit=60, grammar=grammars[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert [results.get(i) for i in range(8)] == expected


@pytest.mark.parametrize("segmented", [True, False])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_a_long_sequence_alone_keeps_its_numbers_drafting_or_not(
    models, monkeypatch, temperature, segmented
):
    """Past 224 cells, on a build of llama.cpp without Stratus's segmented attention, a lone
    token needs company in its decode (layers/llama_context): a drafting sequence brings a
    draft token of its own (guessed where nothing recurs) instead of the ballast. Either way,
    and with segments (no company at all), its numbers are those it gets without drafts."""
    plain, drafting = models
    for model in (plain, drafting):
        monkeypatch.setattr(model._scheduler._context, "segmented", segmented)
    long = _chat("Summarise this code:\n" + CODE * 6)
    sampling = Sampling(temperature=temperature, seed=3)
    assert len(plain.tokenize(long)) > 600
    assert _run(drafting, long, sampling, limit=100) == _run(plain, long, sampling, limit=100)


def test_a_request_that_drafts_counts_its_drafts_in_its_record(models):
    """The cost line's `draft_tokens` and `accepted_draft_tokens` (and /metrics' counters)."""
    from common import metering

    _, drafting = models
    record = metering.RequestRecord("req", "createChatCompletion", "http")
    with metering.recording(record):
        _run(drafting, PROMPTS["copy"], Sampling(temperature=0), limit=80)
    assert 0 < record.units["accepted_draft_tokens"] <= record.units["draft_tokens"]


def test_the_engine_learns_what_a_draft_row_costs_from_its_own_decodes(models):
    _, drafting = models
    _run(drafting, PROMPTS["copy"], Sampling(temperature=0), limit=80)
    share = drafting._scheduler._costs.row_share(400)
    assert share is not None and 0.0 < share < 1.0  # a row costs part of a step, never more
