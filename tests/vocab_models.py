"""Tiny random-weight GGUF chat models with real vocabularies, for tests of tool-call formats
whose markers are special tokens (Llama 3's `<|python_tag|>`, Mistral's `[TOOL_CALLS]`,
DeepSeek's `<｜tool▁calls▁begin｜>`).

`build_chat_model(vocab, template, extra_special, dest_dir=...)` reads llama.cpp's tokenizer-only
`models/ggml-vocab-<vocab>.gguf`, copies every `tokenizer.*` key, sets the chat template, appends
the extra special tokens (type CONTROL, ids after the vocabulary's own) and writes a 2-layer
llama-architecture model with seeded random weights (the output matrix is tied to the
embedding). The file is named by a hash of its inputs and renamed into place when whole, so a
second call costs a stat and a killed run leaves no half-written model.

The vocabularies and templates come from llama-cpp-python's sdist (18 MB for the four used, too
large to vendor): `$STRATUS_LLAMA_CPP_SRC`, else `build/src/llama_cpp_python-<version>`, where
`make llama-server` extracts it. `missing_reason()` says how to get it when it is absent.

GGUF is read and written here directly (the format is a header, typed key-values and aligned
tensors): the `gguf` package's reader takes 12 s over the 400k strings of Llama 3's vocabulary.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.gguf_io import ALIGNMENT, ARRAY, BOOL, FLOAT32, STRING, UINT32, read_metadata, write_gguf

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / "build" / "vocab-models"  # git-ignored, kept between runs
LLAMA_CPP_VERSION = "0.3.36"  # the Makefile's LLAMA_CPP_VERSION
GENERATOR_VERSION = 1  # part of every file's hash: bump when the bytes written change

N_CTX_TRAIN = 4096
SEED = 1234


@dataclass(frozen=True)
class Shape:
    """A generated model's layers: width, heads, depth, feed-forward width."""

    embd: int
    heads: int
    layers: int
    ff: int


# The tiny model: 160 KB of layers; the embedding is n_vocab x 64 in f16 (16 MB for 128k).
TINY = Shape(embd=64, heads=4, layers=2, ff=128)
# Rows of 256 values: the block of llama.cpp's K-quants.
K_QUANT_SHAPE = Shape(embd=256, heads=4, layers=2, ff=768)

# llama.cpp's token types (llama_token_type).
TOKEN_CONTROL, TOKEN_USER_DEFINED = 3, 4


@dataclass(frozen=True)
class Recipe:
    """A model family's chat template on the nearest vocabulary llama.cpp ships."""

    vocab: str
    template: str  # a file in llama.cpp's models/templates
    extra_special: tuple[str, ...] = ()
    extra_user_defined: tuple[str, ...] = ()
    replace: Mapping[int, tuple[str, int]] = field(default_factory=dict)
    metadata: Mapping[str, int | bool | str] = field(default_factory=dict)


def _llama31_specials() -> dict[int, tuple[str, int]]:
    """Llama 3.1's control tokens where Llama 3.0's vocabulary has reserved ones."""
    names = {
        128004: "<|finetune_right_pad_id|>",
        128005: "<|reserved_special_token_2|>",
        128008: "<|eom_id|>",
        128010: "<|python_tag|>",
    }
    names |= {128011 + k: f"<|reserved_special_token_{3 + k}|>" for k in range(245)}
    return {token: (text, TOKEN_CONTROL) for token, text in names.items()}


# Qwen2.5's added tokens, in place of Qwen2's [PAD151646]... (special: false in Qwen's
# tokenizer_config for <tool_call> and the FIM tokens; llama.cpp's converter still makes the
# <|...|> ones CONTROL, so only the two tool-call tags are USER_DEFINED).
_QWEN25_ADDED = (
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
_QWEN25_SPECIALS = {
    151646 + k: (text, TOKEN_CONTROL if text.startswith("<|") else TOKEN_USER_DEFINED)
    for k, text in enumerate(_QWEN25_ADDED)
}

RECIPES: dict[str, Recipe] = {
    # Llama 3.1's vocabulary exactly: Llama 3's with <|python_tag|> (128010), <|eom_id|> (128008)
    # in its reserved slots; eos <|eot_id|> as in Meta's GGUFs (the vocab file says
    # <|end_of_text|>; llama.cpp ends generation at <|eom_id|> and <|eot_id|> either way).
    "llama31": Recipe(
        "llama-bpe",
        "meta-llama-Llama-3.1-8B-Instruct.jinja",
        replace=_llama31_specials(),
        metadata={"tokenizer.ggml.eos_token_id": 128009},
    ),
    # Mistral v0.3's SPM vocabulary had these markers as control tokens; Llama 2's (the same
    # SentencePiece base) lacks them. Nemo's own (tekken) is not among llama.cpp's vocab files.
    "mistral-nemo": Recipe(
        "llama-spm",
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        (
            "[INST]",
            "[/INST]",
            "[TOOL_CALLS]",
            "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_RESULTS]",
            "[/TOOL_RESULTS]",
        ),
    ),
    # DeepSeek LLM's vocabulary has <｜begin▁of▁sentence｜> and <｜end▁of▁sentence｜>; R1's role
    # and tool markers are added as CONTROL (llama.cpp's converter makes every <｜...｜> one so),
    # <think> and </think> as USER_DEFINED (text, as in R1's own vocabulary).
    "deepseek-r1": Recipe(
        "deepseek-llm",
        "llama-cpp-deepseek-r1.jinja",
        (
            "<｜User｜>",
            "<｜Assistant｜>",
            "<｜tool▁calls▁begin｜>",
            "<｜tool▁call▁begin｜>",
            "<｜tool▁sep｜>",
            "<｜tool▁call▁end｜>",
            "<｜tool▁calls▁end｜>",
            "<｜tool▁outputs▁begin｜>",
            "<｜tool▁output▁begin｜>",
            "<｜tool▁output▁end｜>",
            "<｜tool▁outputs▁end｜>",
        ),
        ("<think>", "</think>"),
    ),
    # Qwen2.5's vocabulary exactly: Qwen2's with the added tokens above; eos <|im_end|> and no
    # BOS, as in Qwen's GGUFs.
    "qwen25": Recipe(
        "qwen2",
        "Qwen-Qwen2.5-7B-Instruct.jinja",
        replace=_QWEN25_SPECIALS,
        metadata={"tokenizer.ggml.eos_token_id": 151645, "tokenizer.ggml.add_bos_token": False},
    ),
}


def llama_cpp_source() -> Path:
    """Where llama-cpp-python's extracted sdist is expected (it may be absent)."""
    override = os.environ.get("STRATUS_LLAMA_CPP_SRC")
    if override:
        return Path(override)
    return ROOT / "build" / "src" / f"llama_cpp_python-{LLAMA_CPP_VERSION}"


def models_dir() -> Path:
    """llama.cpp's models/: ggml-vocab-*.gguf and templates/*.jinja."""
    return llama_cpp_source() / "vendor" / "llama.cpp" / "models"


def missing_reason() -> str | None:
    """Why vocabulary models cannot be built here, or None when they can."""
    if (models_dir() / "ggml-vocab-llama-spm.gguf").is_file():
        return None
    return (
        f"llama.cpp's vocabulary files are not at {models_dir()}: run `make llama-server`, or "
        f"`.venv/bin/pip download --no-deps --no-binary :all: -d build/src "
        f"llama-cpp-python=={LLAMA_CPP_VERSION}` and extract it there, or set "
        "STRATUS_LLAMA_CPP_SRC to an extracted copy"
    )


def template_text(name: str) -> str:
    """A chat template that llama.cpp ships (models/templates/NAME)."""
    return (models_dir() / "templates" / name).read_text()


def build_recipe(name: str, *, dest_dir: Path = CACHE_DIR) -> Path:
    recipe = RECIPES[name]
    return build_chat_model(
        recipe.vocab,
        template_text(recipe.template),
        recipe.extra_special,
        extra_user_defined=recipe.extra_user_defined,
        replace=recipe.replace,
        metadata=recipe.metadata,
        dest_dir=dest_dir,
    )


def build_chat_model(
    vocab: str,
    template: str,
    extra_special: Sequence[str] = (),
    *,
    extra_user_defined: Sequence[str] = (),
    replace: Mapping[int, tuple[str, int]] | None = None,
    metadata: Mapping[str, int | bool | str] | None = None,
    dest_dir: Path = CACHE_DIR,
    shape: Shape = TINY,
) -> Path:
    """The path of a tiny model with the vocabulary `ggml-vocab-<vocab>.gguf` and the chat
    template `template` (its text), built once per distinct input into dest_dir.

    `extra_special` are appended as CONTROL tokens, then `extra_user_defined` as USER_DEFINED
    ones (text that tokenizes whole), ids after the vocabulary's own; a token the vocabulary
    already has keeps its id and type. `replace` sets {id: (text, token type)} in place
    (Llama 3.1's names for Llama 3's reserved tokens); `metadata` sets tokenizer keys
    (`tokenizer.ggml.eos_token_id`, `tokenizer.ggml.add_bos_token`).
    """
    source = models_dir() / f"ggml-vocab-{vocab}.gguf"
    raw = source.read_bytes()
    replace, metadata = dict(replace or {}), dict(metadata or {})
    digest = hashlib.sha256(f"{GENERATOR_VERSION}\0".encode())
    digest.update(hashlib.sha256(raw).digest())
    parts = [template, *extra_special, "\1", *extra_user_defined, "\1"]
    parts += [f"{k}={replace[k]!r}" for k in sorted(replace)]
    parts += [f"{k}={metadata[k]!r}" for k in sorted(metadata)]
    if shape != TINY:
        parts.append(repr(shape))
    for part in parts:
        digest.update(part.encode() + b"\0")
    path = dest_dir / f"{vocab}-{digest.hexdigest()[:16]}.gguf"
    if path.is_file():
        return path
    keys = {k: v for k, v in read_metadata(raw).items() if k.startswith("tokenizer.")}
    _edit_vocabulary(keys, extra_special, extra_user_defined, replace)
    keys["tokenizer.chat_template"] = (STRING, template.encode())
    for key, value in metadata.items():
        if isinstance(value, bool):
            keys[key] = (BOOL, value)
        elif isinstance(value, int):
            keys[key] = (keys.get(key, (UINT32,))[0], value)
        else:
            keys[key] = (STRING, str(value).encode())
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest_dir, suffix=".partial", delete=False) as file:
        try:
            _write_model(file, keys, vocab, shape)
            file.flush()
            os.fsync(file.fileno())
        except BaseException:
            file.close()
            os.unlink(file.name)
            raise
    os.chmod(file.name, 0o644)  # as a plain file would be (a temp file is private)
    os.replace(file.name, path)  # whole or not at all, even with two writers at once
    return path


def _edit_vocabulary(
    keys: dict[str, tuple[int, Any]],
    extra_special: Sequence[str],
    extra_user_defined: Sequence[str],
    replace: Mapping[int, tuple[str, int]],
) -> None:
    tokens: list[bytes] = list(keys["tokenizer.ggml.tokens"][1][1])
    type_kind, types = keys["tokenizer.ggml.token_type"][1]
    types = types.copy()
    for token, (text, kind) in replace.items():
        if not 0 <= token < len(tokens):
            raise ValueError(f"token {token} is outside the vocabulary ({len(tokens)} tokens)")
        tokens[token], types[token] = text.encode(), kind
    known = set(tokens)
    added: dict[bytes, int] = {}
    for texts, kind in ((extra_special, TOKEN_CONTROL), (extra_user_defined, TOKEN_USER_DEFINED)):
        for text in texts:
            if text.encode() not in known:
                added.setdefault(text.encode(), kind)
    tokens += added
    types = np.concatenate([types, np.array(list(added.values()), dtype=types.dtype)])
    keys["tokenizer.ggml.tokens"] = (ARRAY, (STRING, tokens))
    keys["tokenizer.ggml.token_type"] = (ARRAY, (type_kind, types))
    if "tokenizer.ggml.scores" in keys:  # SentencePiece: added tokens score 0
        score_kind, scores = keys["tokenizer.ggml.scores"][1]
        more = np.zeros(len(added), dtype=scores.dtype)
        keys["tokenizer.ggml.scores"] = (ARRAY, (score_kind, np.concatenate([scores, more])))


def _write_model(file: Any, keys: dict[str, tuple[int, Any]], vocab: str, shape: Shape) -> None:
    n_vocab = len(keys["tokenizer.ggml.tokens"][1][1])
    kv: dict[str, tuple[int, Any]] = {
        "general.architecture": (STRING, b"llama"),
        "general.name": (STRING, f"tiny-{vocab}".encode()),
        "general.alignment": (UINT32, ALIGNMENT),
        "llama.vocab_size": (UINT32, n_vocab),
        "llama.context_length": (UINT32, N_CTX_TRAIN),
        "llama.embedding_length": (UINT32, shape.embd),
        "llama.block_count": (UINT32, shape.layers),
        "llama.feed_forward_length": (UINT32, shape.ff),
        "llama.attention.head_count": (UINT32, shape.heads),
        "llama.attention.head_count_kv": (UINT32, shape.heads),
        "llama.rope.dimension_count": (UINT32, shape.embd // shape.heads),
        "llama.rope.freq_base": (FLOAT32, 10000.0),
        "llama.attention.layer_norm_rms_epsilon": (FLOAT32, 1e-5),
        **keys,
    }
    write_gguf(file, kv, _random_tensors(n_vocab, shape))


def _random_tensors(n_vocab: int, shape: Shape) -> list[tuple[str, np.ndarray]]:
    """Seeded weights in numpy's (rows, columns) order; 2-D in f16, norms in f32. No
    output.weight: llama.cpp ties the output to token_embd."""
    rng = np.random.default_rng(SEED)

    def matrix(rows: int, columns: int) -> np.ndarray:
        return (rng.standard_normal((rows, columns), dtype=np.float32) * 0.5).astype(np.float16)

    embd, ff = shape.embd, shape.ff
    ones = np.ones(embd, dtype=np.float32)
    tensors = [("token_embd.weight", matrix(n_vocab, embd)), ("output_norm.weight", ones)]
    for layer in range(shape.layers):
        blk = f"blk.{layer}"
        tensors += [
            (f"{blk}.attn_norm.weight", ones),
            (f"{blk}.attn_q.weight", matrix(embd, embd)),
            (f"{blk}.attn_k.weight", matrix(embd, embd)),
            (f"{blk}.attn_v.weight", matrix(embd, embd)),
            (f"{blk}.attn_output.weight", matrix(embd, embd)),
            (f"{blk}.ffn_norm.weight", ones),
            (f"{blk}.ffn_gate.weight", matrix(ff, embd)),
            (f"{blk}.ffn_up.weight", matrix(ff, embd)),
            (f"{blk}.ffn_down.weight", matrix(embd, ff)),
        ]
    return tensors


def quantized(path: Path, ftype: int) -> Path:
    """`path` quantized by llama.cpp (`llama_model_quantize`; `ftype` a LLAMA_FTYPE_*), once:
    beside it, renamed into place when whole."""
    import ctypes

    from layers.llama_api import bindings

    out = path.with_name(f"{path.stem}-ftype{ftype}.gguf")
    if out.is_file():
        return out
    lib = bindings()
    params = lib.llama_model_quantize_default_params()
    params.ftype = ftype
    partial = out.with_name(f"{out.name}.{os.getpid()}.partial")
    try:
        failed = lib.llama_model_quantize(
            str(path).encode(), str(partial).encode(), ctypes.byref(params)
        )
        if failed:
            raise RuntimeError(f"llama.cpp could not quantize {path.name}")
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out
