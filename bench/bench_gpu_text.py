"""The GPU text engine end to end, in one run on a CUDA machine (issue 16): a small random-weight
Llama built here (no model hub), the raw exllamav2 generator, and Stratus serving it over HTTP.

1. Builds a Llama-architecture model with random weights (transformers; --hidden, --layers) and
   a byte-level BPE tokenizer trained on a synthetic corpus, with a ChatML chat template; saves
   them as an FP16 safetensors directory.
2. Raw exllamav2: one dynamic generator in-process, one greedy job of --tokens tokens at a time
   (`ignore_eos`: random weights end anywhere): its tokens/s.
3. `stratus serve` with a registry entry `backend: exllamav2, parallel: 16` for that directory:
   process start -> first streamed token; then streamed chats at 1, 4 and 16 concurrent clients
   (bench/bench_batching.py's clients): aggregate tokens/s.
4. Prints the ratios: HTTP at 1 client ÷ raw (goal >= 0.95), and the aggregate at 4 and 16 ÷ 1.

    .venv/bin/python bench/bench_gpu_text.py --json /tmp/gpu-text.json
    .venv/bin/python bench/bench_gpu_text.py --smoke   # hidden 128, 1 layer, 8 tokens, levels 1,2

Without a CUDA GPU it prints `skipped: no GPU` and exits 0 (so `make bench` runs it anywhere);
without exllamav2 (the `exllamav2` extra) likewise, saying so.

Not yet run: this project's machines have had no GPU. llama.cpp CUDA on the same model (via the
GGUF converter vendored in llama-cpp-python's sdist) is the next step of the issue.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import smoke  # noqa: E402
from bench.batching_servers import Target  # noqa: E402
from bench.bench_batching import Plan, http_level  # noqa: E402
from tests.processes import free_port, running  # noqa: E402

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_model(directory: Path, hidden: int, layers: int) -> None:
    """A random-weight Llama and its tokenizer, as a Hugging Face FP16 safetensors directory."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=8192, special_tokens=specials)
    corpus = [f"The number {i} follows {i - 1}; counting on to {i + 1}." for i in range(20000)]
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", chat_template=CHATML
    )
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=4096,
        bos_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float16)
    model.save_pretrained(directory, safe_serialization=True)


def raw_tokens_per_second(directory: Path, tokens: int, rounds: int) -> float:
    from common.registry import ModelConfig
    from layers.exllamav2 import ExLlamaV2TextModel
    from layers.text import Sampling

    config = ModelConfig(
        name="gpu-bench", backend="exllamav2", source=str(directory), parameters={"parallel": 16}
    )
    model = ExLlamaV2TextModel(config, directory)
    prompt = model.tokenize("The number 1 follows 0; counting on to")
    greedy = Sampling(temperature=0, ignore_eos=True)
    list(model.generate(prompt, greedy, limit=8))  # warm up
    started = time.perf_counter()
    for _ in range(rounds):
        assert len(list(model.generate(prompt, greedy, limit=tokens))) == tokens
    return tokens * rounds / (time.perf_counter() - started)


def serve(directory: Path, registry: Path, plan: Plan) -> dict:
    # A registry is a YAML list of entries; JSON is YAML.
    entry = {"name": "gpu-bench", "backend": "exllamav2", "source": str(directory),
             "parameters": {"parallel": 16}}  # fmt: skip
    registry.write_text(json.dumps([entry]))
    port = free_port()
    command = [sys.executable, "-m", "adapters.cli", "serve", "--port", str(port),
               "--models", str(registry)]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with running(command, f"{url}/health", os.environ, timeout=600):
        target = Target(f"{url}/v1/chat/completions", "gpu-bench", {"ignore_eos": True})
        first = http_level(target, 1, Plan([1], 1, 1, 600.0))  # loads the model: a cold start
        assert first.errors == 0, first.summary()["first_error"]
        start_to_first_token = time.perf_counter() - started
        levels = {n: http_level(target, n, plan).summary() for n in plan.levels}
    return {"start_to_first_token_s": start_to_first_token, "levels": levels}


def missing_gpu() -> str | None:
    """Why this bench cannot run here, or None."""
    if importlib.util.find_spec("torch") is None:
        return "no GPU (torch is not installed)"
    import torch

    if not torch.cuda.is_available():
        return "no GPU (torch sees no CUDA device): this bench needs one"
    if importlib.util.find_spec("exllamav2") is None:
        return "exllamav2 is not installed: pip install -e '.[exllamav2]'"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--requests", type=int, default=4, help="per client, per level")
    parser.add_argument("--levels", default="1,4,16", help="concurrent clients; 1 comes first")
    parser.add_argument("--json", type=Path)
    args = smoke.parse_args(
        parser, {"hidden": 128, "layers": 1, "tokens": 8, "requests": 1, "levels": "1,2"}
    )
    if why := missing_gpu():
        print(f"skipped: {why}")
        return
    import torch

    gpu = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "model"
        build_model(directory, args.hidden, args.layers)
        raw = raw_tokens_per_second(directory, args.tokens, args.requests)
        torch.cuda.empty_cache()
        levels = sorted({1, *(int(level) for level in args.levels.split(","))})
        plan = Plan(levels, args.requests, args.tokens, 600.0)
        served = serve(directory, Path(scratch) / "registry.yaml", plan)
    one = served["levels"][1]["tps"]
    report = {
        "gpu": gpu,
        "model": f"random Llama, hidden {args.hidden}, {args.layers} layers, FP16",
        "raw_tps": raw,
        "http_tps": {n: row["tps"] for n, row in served["levels"].items()},
        "http_over_raw_at_1": one / raw,
        "start_to_first_token_s": served["start_to_first_token_s"],
    }
    print(json.dumps(report, indent=2))
    print(f"goal: HTTP ÷ raw at 1 client >= 0.95: {report['http_over_raw_at_1']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
