"""The `stratus` command: a bad registry fails at start naming the problem; `stratus models`."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "adapters.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_serve_refuses_a_bad_registry_naming_file_entry_and_field(tmp_path):
    bad = tmp_path / "models.yaml"
    bad.write_text("- name: broken\n  backend: llama-cpp\n  source: /m.gguf\n  parameters: 5\n")
    result = run("serve", "--port", "0", "--models", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr and "entry 0 (broken)" in result.stderr
    assert "field 'parameters'" in result.stderr
    assert "Traceback" not in result.stderr


def test_models_command_lists_sources_and_aliases(server):
    result = run("models", "--models", str(server.registry))
    assert result.returncode == 0, result.stderr
    lines = {line.split("\t")[0]: line for line in result.stdout.splitlines()}
    assert (
        "gpt-4" in lines["smollm2-135m-instruct"]
        and "SmolLM2-135M-Instruct.Q4_1.gguf" in lines["smollm2-135m-instruct"]
    )
    assert "my-alias" in lines["tiny-chat"]
