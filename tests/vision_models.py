"""A tiny Qwen2.5-VL for the vision tests: random weights on Qwen2's real vocabulary (llama.cpp's
ggml-vocab-qwen2.gguf, with Qwen2-VL's vision tokens added), Qwen2.5's chat template, converted
by llama.cpp's own converter as a real Qwen2.5-VL is. Its projector places an image's
embeddings with M-RoPE, at fewer positions than it has embeddings: what tiny-vlm (SmolVLM)
cannot show. Built once into build/vocab-models (about 20 s), kept between runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from layers.tiny_vlm import convert, tiny_language_half
from tests.vocab_models import CACHE_DIR, models_dir, template_text

GENERATOR_VERSION = 1  # part of the directory's name: bump when the files written change
SEED = 20261203
VISION_TOKENS = [
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
TEMPLATE = "Qwen-Qwen2.5-7B-Instruct.jinja"
# Up to 224x224 pixels read: 16 merged patches of 28 pixels a side at most, a few at least.
PROCESSOR = {
    "image_processor_type": "Qwen2VLImageProcessor",
    "min_pixels": 56 * 56,
    "max_pixels": 224 * 224,
    "patch_size": 14,
    "merge_size": 2,
    "temporal_patch_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_resize": True,
    "do_normalize": True,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
}


def build_qwen25_vl(dest_dir: Path = CACHE_DIR) -> Path:
    """The model's directory: model.gguf and mmproj.gguf."""
    key = hashlib.sha256(f"{GENERATOR_VERSION} {SEED} {json.dumps(PROCESSOR)}".encode())
    directory = dest_dir / f"qwen25-vl-{key.hexdigest()[:12]}"
    if (directory / "mmproj.gguf").is_file():
        return directory
    partial = dest_dir / f".{directory.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _write_checkpoint(partial / "hf")
    convert(partial / "hf", partial)
    partial.rename(directory)  # whole, or not there
    return directory


def _write_checkpoint(checkpoint: Path) -> None:
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(models_dir(), gguf_file="ggml-vocab-qwen2.gguf")
    known = tokenizer.get_vocab()
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [t for t in VISION_TOKENS if t not in known]}
    )
    tokenizer.chat_template = template_text(TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids
    text = tiny_language_half(
        len(tokenizer),
        max_position_embeddings=4096,
        # M-RoPE: the head's 8 rotary pairs split between time, height and width.
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        rms_norm_eps=1e-6,
        eos_token_id=ids("<|im_end|>"),
    )
    vision = {
        "depth": 4,  # the converter maps the merger's layers by block number: 2 needs 3 blocks
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1, 3],
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.save_pretrained(checkpoint, safe_serialization=True)
    tokenizer.save_pretrained(checkpoint)
    (checkpoint / "preprocessor_config.json").write_text(json.dumps(PROCESSOR, indent=1))
