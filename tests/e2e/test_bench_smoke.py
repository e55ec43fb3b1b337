"""Every benchmark's `--smoke` run: the same code end to end at its smallest sizes, so that a
bench that no longer runs fails here, not on the day someone wants its figures.

Each bench runs as a process of its own, in its own process group (a bench that overruns its
time limit is stopped with every server it started), and must exit 0 and print the summary its
figures end in. A peer that is not installed here (llama.cpp's servers, infinity) is skipped by
the bench with a line that says so, checked here; a bench that cannot run here at all
(bench_gpu_text.py without a CUDA GPU or exllamav2) is reported skipped with that line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
NUMBER = r"-?\d+(\.\d+)?"


@dataclass(frozen=True)
class Smoke:
    shows: tuple[str, ...]  # patterns its output must match (re.MULTILINE), each
    timeout: float = 180  # seconds, server starts included (a busy machine is slower)


SMOKES = {  # bench -> what its output must show
    "bench_text": Smoke(
        (
            rf"^stratus_vs_raw\s+{NUMBER}$",
            rf"^cold_start_s\s+{NUMBER}$",
            rf"^stratus_vs_peer_tps\s+{NUMBER}$|^llama_cpp\.server: skipped \(.+\)$",
        )
    ),
    "bench_store": Smoke((rf"^store_vs_boto3\s+{NUMBER}$", rf"^ttft_hot_memory_s\s+{NUMBER}$")),
    "bench_cold_start": Smoke(
        tuple(
            rf"^{name}\s+process start -> first answer: {NUMBER} s"
            for name in ("http", "runpod", "lambda")
        )
    ),
    "bench_container_images": Smoke(
        (
            rf"^  after a one-line change +{NUMBER} s$",
            rf"^stratus:text-cpu-http +{NUMBER} +{NUMBER}$",
            *(
                rf"^{name} +process start -> first answer: {NUMBER} s median"
                for name in ("http", "runpod-lb", "runpod", "lambda")
            ),
        ),
        timeout=600,
    ),
    "bench_embeddings": Smoke((rf"^batch1_ratio\s+{NUMBER}$", rf"^batch32_ratio\s+{NUMBER}$")),
    "bench_speech": Smoke((rf"^speed_ratio\s+{NUMBER}", rf"^stratus_first_byte_ms\s+{NUMBER}")),
    "bench_transcription": Smoke((rf"^speed_ratio\s+{NUMBER}",)),
    "bench_images": Smoke((rf"^64x64_ratio\s+{NUMBER}$",), timeout=300),
    "bench_structured": Smoke(
        (
            rf"^json_vs_free\s+{NUMBER}$",
            rf"^mask_vs_gbnf\s+{NUMBER}$",
            rf"^stratus_vs_llama_server_json\s+{NUMBER}$|^llama-server: skipped \(.+\)$",
        )
    ),
    "bench_batching": Smoke(
        (
            rf"^stratus\s+2\s+{NUMBER}\s",
            rf"^raw\s+2\s+{NUMBER}\s",
            r"^Stratus ÷ llama-server +aggregate tokens/s at 1|^llama-server: skipped \(.+\)$",
            r"^llama-cpp-py\s+1\s|^llama_cpp\.server: skipped \(.+\)$",
        )
    ),
    "bench_embeddings_batching": Smoke(
        (rf"^1x32\s+{NUMBER}\s", r"^max \|stratus - infinity\||^infinity: skipped \(.+\)$"),
        timeout=300,
    ),
    "bench_metrics_overhead": Smoke((rf"^\s+1\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s.*(met|missed)",)),
    "bench_vision": Smoke(
        (
            rf"^stratus / raw engine:\s+{NUMBER}$",
            rf"^stratus / llama-server: {NUMBER}|^llama-server: skipped \(.+\)$",
        )
    ),
    "bench_dialects": Smoke(
        (rf"^  responses / chat: {NUMBER}", rf"^  messages / chat: {NUMBER}", r"^store read")
    ),
    "bench_tool_formats": Smoke((rf"^  generic: tools offered ÷ no tools = {NUMBER}",)),
    "bench_agent_grammars": Smoke(
        tuple(
            rf"^{kind} \(built here\): 3 function tools, .* mask compiled {NUMBER} ms"
            for kind in ("responses", "messages")
        )
    ),
    "bench_agent_speed": Smoke(
        (
            rf"^300 x1 +stratus +{NUMBER} \(prompt +{NUMBER}\)",
            rf"^unchanged prefix_cache +drafting / not {NUMBER}",
            rf"^8 streams edits: aggregate tokens/s drafting {NUMBER}, not {NUMBER}: {NUMBER}$",
            rf"^stratus-off / llama-server decode at 300 x1: {NUMBER}$|^llama-server: skipped",
        ),
        timeout=400,
    ),
    "bench_gpu_text": Smoke((rf"^goal: HTTP ÷ raw at 1 client >= 0\.95: {NUMBER}$",)),
}


def test_every_bench_has_a_smoke_run_and_runs_in_make_bench() -> None:
    benches = {path.stem for path in BENCH.glob("bench_*.py")}
    assert benches == set(SMOKES)
    recipe = (ROOT / "Makefile").read_text().split("\nbench:", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"bench/(bench_\w+)\.py", recipe)) == benches


def run_smoke(name: str, timeout: float, *options: str) -> str:
    """The bench's output (stdout and stderr); fails on a non-zero exit or an overrun."""
    process = subprocess.Popen(
        [sys.executable, str(BENCH / f"{name}.py"), "--smoke", *options],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the servers it starts are in it
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{name} --smoke ran over {timeout:.0f} s; its output:\n{output[-4000:]}")
    assert process.returncode == 0, f"{name} --smoke exited {process.returncode}:\n{output[-4000:]}"
    return output


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.gpu) if name == "bench_gpu_text" else name
        for name in SMOKES
    ],
)
def test_smoke(name: str, tmp_path: Path) -> None:
    smoke = SMOKES[name]
    written = tmp_path / "results.json"
    json_option = ("--json", str(written)) if name in ("bench_batching", "bench_gpu_text") else ()
    output = run_smoke(name, smoke.timeout, *json_option)
    if skipped := re.search(r"^skipped: .+$", output, re.MULTILINE):
        pytest.skip(f"{name}: {skipped[0]}")  # the whole bench cannot run here
    for pattern in smoke.shows:
        assert re.search(pattern, output, re.MULTILINE), f"no /{pattern}/ in:\n{output[-4000:]}"
    if json_option:  # the same shape as a full run's
        report = json.loads(written.read_text())
        if name == "bench_batching":
            assert set(report) == {"config", "results", "goals"}
            assert {"raw", "stratus"} <= set(report["results"])
        else:
            assert {"raw_tps", "http_tps", "http_over_raw_at_1"} <= set(report)
