"""The `stratus` command: a bad registry fails at start naming the problem; `stratus models`."""

from __future__ import annotations

import os
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


def test_models_command_lists_sources_cache_state_and_aliases(server, tmp_path):
    result = run("models", "--models", str(server.registry))
    assert result.returncode == 0, result.stderr
    lines = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    name, backend, source, state, aliases, tools, reasoning = lines["smollm2-135m-instruct"]
    assert source.startswith("pkg://") and state == "local" and "gpt-4" in aliases
    # What the chat template says: SmolLM2's shows no tool format; R1's thinks in <think>.
    assert (tools, reasoning) == ("tools: hermes (generic)", "reasoning: none")
    assert lines["r1-chat"][5:] == ["tools: deepseek-r1", "reasoning: think"]
    assert "my-alias" in lines["tiny-chat"][4]


def test_prefetch_then_models_shows_cached(server, s3, tmp_path):
    env = {**os.environ, **s3.env, "STRATUS_CACHE_DIR": str(tmp_path)}
    registry = ["--models", str(server.registry)]

    def stratus(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "adapters.cli", *args, *registry]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    assert stratus("models").stdout.count("\tnot cached\t") == 6  # the six S3 models
    fetched = stratus("prefetch", "s3-chat")
    assert fetched.returncode == 0, fetched.stderr
    # Not a terminal: the final line only, no progress bar (tests/unit/test_progress.py)
    assert "s3-chat: fetched to" in fetched.stdout and "B/s" not in fetched.stderr
    states = {
        line.split("\t")[0]: line.split("\t")[3] for line in stratus("models").stdout.splitlines()
    }
    assert states["s3-chat"] == "cached" and states["s3-dir-chat"] == "not cached"
    missing = stratus("prefetch", "s3-missing")
    assert missing.returncode == 1 and "s3-missing" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_prefetch_generates_tiny_sd_into_the_cache(tmp_path):
    """What BAKE_MODELS does for an image: tiny-sd written into the cache, ready to load."""
    env = {**os.environ, "STRATUS_CACHE_DIR": str(tmp_path)}

    def stratus(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "adapters.cli", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    def state() -> str:
        lines = [line.split("\t") for line in stratus("models").stdout.splitlines()]
        return next(line[3] for line in lines if line[0] == "tiny-sd")

    assert state() == "not generated yet"
    generated = stratus("prefetch", "dall-e-2")
    assert generated.returncode == 0, generated.stderr
    assert "tiny-sd: available at" in generated.stdout
    assert state() == "generated"
    [entry] = (tmp_path / "entries").iterdir()
    assert (entry / "data" / "model_index.json").is_file()
    assert not any((tmp_path / "partial").iterdir())


def test_serving_beyond_loopback_without_a_key_warns(tmp_path):
    from tests.processes import stratus_serve

    env = {k: v for k, v in os.environ.items() if k != "API_KEY"}
    log = tmp_path / "serve.log"
    for host, warned in (("0.0.0.0", True), ("127.0.0.1", False)):
        with open(log, "wb") as file, stratus_serve("--host", host, env=env, log=file):
            pass
        assert ("API_KEY is not set" in log.read_text()) is warned, log.read_text()


def test_sigterm_ends_work_in_flight_within_the_grace_period(tmp_path):
    import signal
    import threading
    import time

    import httpx

    from tests.processes import stratus_serve

    env = {**os.environ, "STRATUS_SHUTDOWN_GRACE": "1", "STRATUS_LOG_LEVEL": "warning"}
    env.pop("API_KEY", None)
    body = {
        "model": "gpt-4",
        "messages": [{"role": "user", "content": "Count."}],
        "max_tokens": 1500,
        "ignore_eos": True,
    }
    with open(tmp_path / "serve.log", "wb") as log, stratus_serve(env=env, log=log) as server:
        client = threading.Thread(
            target=lambda: httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60),
            daemon=True,
        )
        client.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{server.url}/health").json()["active"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)
        # 1500 tokens take 15 s or more; the grace is 1 s, then the generation is stopped.
        server.process.wait(timeout=10)
    # uvicorn re-raises the signal it shut down for: the parent sees a SIGTERM exit.
    assert server.process.returncode in (0, -signal.SIGTERM)


def test_stratus_max_tokens_caps_a_request_that_names_none(tmp_path):
    import httpx

    from tests.processes import stratus_serve

    env = {**os.environ, "STRATUS_MAX_TOKENS": "3", "STRATUS_LOG_LEVEL": "warning"}
    env.pop("API_KEY", None)
    body = {"model": "gpt-4", "messages": [{"role": "user", "content": "Tell me a story."}]}
    with open(tmp_path / "serve.log", "wb") as log, stratus_serve(env=env, log=log) as server:
        answer = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()
        assert answer["usage"]["completion_tokens"] == 3
        assert answer["choices"][0]["finish_reason"] == "length"
        named = httpx.post(
            f"{server.url}/v1/chat/completions", json={**body, "max_tokens": 6}, timeout=60
        ).json()
        assert named["usage"]["completion_tokens"] == 6  # a request's own budget wins
