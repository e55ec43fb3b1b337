"""A GPU check of /v1/images/generations: a live `stratus serve` (CUDA, float16 unless the
registry says otherwise) drawing with tiny-sd or a real model directory, checked over HTTP:
exact sizes, n, the same seed twice, URLs, no blank (NaN) images; prints warm times per image.

    python bench/check_images_gpu.py                                   # tiny-sd
    python bench/check_images_gpu.py --model-dir /models/sd-turbo --steps 1 --guidance 0 \\
        --sizes 512x512                                                # a real model
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.processes import stratus_serve  # noqa: E402

PROMPT = "a red apple on a white table"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--guidance", type=float, default=0.0)
    parser.add_argument("--sizes", default="64x64,256x256,512x512,1024x1024")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import torch
    from PIL import Image

    print("torch", torch.__version__, "cuda", torch.cuda.is_available(), flush=True)
    if torch.cuda.is_available():
        print("device", torch.cuda.get_device_name(0), flush=True)
    failures: list[str] = []
    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "STRATUS_CACHE_DIR": f"{scratch}/cache", "STRATUS_LOG_LEVEL": "info"}
        serve_args: list[str] = []
        model = "tiny-sd"
        if args.model_dir:
            registry = Path(scratch) / "models.yaml"
            registry.write_text(
                f"- name: real\n  backend: diffusers\n  source: {args.model_dir.resolve()}\n"
                f"  parameters: {{steps: {args.steps}, guidance_scale: {args.guidance}}}\n"
            )
            serve_args, model = ["--models", str(registry)], "real"
        log = open(Path(scratch) / "server.log", "wb")  # noqa: SIM115
        with (
            stratus_serve(*serve_args, env=env, log=log) as server,
            httpx.Client(base_url=server.url, timeout=600) as client,
        ):

            def draw(size: str, seed: int, n: int = 1, fmt: str = "b64_json") -> httpx.Response:
                body = {"model": model, "prompt": PROMPT, "size": size, "n": n, "seed": seed,
                        "response_format": fmt}  # fmt: skip
                reply = client.post("/v1/images/generations", json=body)
                if reply.status_code != 200:
                    failures.append(f"{size}: {reply.status_code} {reply.text[:300]}")
                return reply

            def images(reply: httpx.Response) -> list[bytes]:
                return [base64.b64decode(d["b64_json"]) for d in reply.json()["data"]]

            first = draw("64x64", 0)
            report["first request (generate + load + draw)"] = first.headers.get("server-timing")
            for size in args.sizes.split(","):
                width, height = (int(side) for side in size.split("x"))
                [png] = images(draw(size, 1))
                [again] = images(draw(size, 1))
                [other] = images(draw(size, 2))
                picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)
                repeat = np.asarray(Image.open(io.BytesIO(again)).convert("RGB"), dtype=float)
                if picture.shape != (height, width, 3):
                    failures.append(f"{size}: drew {picture.shape}")
                if picture.std() < 1.0:
                    failures.append(f"{size}: a blank image (NaN in float16?)")
                if png == other:
                    failures.append(f"{size}: seeds 1 and 2 drew the same bytes")
                times = []
                for seed in range(args.rounds):
                    started = time.perf_counter()
                    draw(size, 100 + seed)
                    times.append(time.perf_counter() - started)
                report[size] = {
                    "same seed, same bytes": png == again,
                    "same seed, mean pixel difference": float(np.abs(picture - repeat).mean()),
                    "pixel std": round(float(picture.std()), 1),
                    "ms per image over HTTP (median)": round(1000 * statistics.median(times), 1),
                }
            two = images(draw("64x64", 5, n=2))
            if len(two) != 2 or two[0] == two[1]:
                failures.append("n=2 did not give two different images")
            url = draw("64x64", 6, fmt="url").json()["data"][0]["url"]
            fetched = httpx.get(url)
            if fetched.status_code != 200 or fetched.headers["content-type"] != "image/png":
                failures.append(f"url {url}: {fetched.status_code}")
            report["health"] = client.get("/health").json()
        log.close()
        report["server log (last lines)"] = (Path(scratch) / "server.log").read_text()[-1500:]
    print(json.dumps(report, indent=2))
    print("FAILURES:" if failures else "all checks passed", *failures, sep="\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
