"""The real agent CLIs complete a turn against a live Stratus: OpenAI's Codex (`codex exec`, over
the Responses API) and Anthropic's Claude Code (`claude -p`, over the Messages API), pinned and
installed from the npm registry into build/npm (skipped, with the reason, without npm or a
registry to install from).

Their default prompts are 9-13 thousand tokens (docs/AGENTS.md has the measures), two to five
minutes of prompt evaluation on a small CPU; each turn here slims its CLI's prompt the way a
user of a small local model would (Codex: `model_instructions_file` and fewer context sections;
Claude Code: `--system-prompt`, `--tools Read`, `--bare`) so it takes seconds. What still goes
over the wire is each CLI's own request shape: streamed, with its function tools, its headers,
`store: false`, Claude Code's thinking and effort settings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import API_KEYS, smollm2_path
from tests.processes import ROOT, stratus_serve

CODEX = ("@openai/codex", "0.171.0")
CLAUDE_CODE = ("@anthropic-ai/claude-code", "2.1.332")
NPM_PREFIX = ROOT / "build" / "npm"
TURN_TIMEOUT = 180  # seconds a CLI may take for its one turn
MODEL = "agent-chat"
# Room for the CLIs' default prompts too (Codex 9.2k, Claude Code 12.6k tokens), so a turn
# without the slimming below is answered rather than refused; temperature 0 makes the tiny
# model's answers (and so whether it ends by itself) the same on every run.
REGISTRY = f"""
- name: {MODEL}
  backend: llama-cpp
  source: file://{smollm2_path()}
  parameters: {{n_ctx: 16384, parallel: 1, temperature: 0}}
"""
# Neither CLI asks for an output budget the model can use up in seconds (Codex sends none,
# Claude Code 32k), and both fail a turn cut by it (Codex: "Incomplete response returned,
# reason: max_output_tokens"; Claude Code: "response exceeded the N output token maximum").
# The operator's cap keeps a rambling answer short; the prompts ask for an answer that ends.
MAX_TOKENS = 64
PROMPT = "Reply with the single word: hi"


@dataclass(frozen=True)
class AgentServer:
    url: str
    log: Path

    def cost_lines(self, operation: str, timeout: float = 10.0) -> list[dict]:
        """The server's cost lines for `operation` (waiting briefly for the first)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [
                json.loads(line)
                for line in self.log.read_text(errors="replace").splitlines()
                if line.startswith("{") and f'"operation":"{operation}"' in line
            ]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


def _installed_version(package: str) -> str | None:
    manifest = NPM_PREFIX / "node_modules" / package / "package.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("version")


@pytest.fixture(scope="session")
def agent_bin() -> Path:
    """build/npm/node_modules/.bin with the pinned CLIs, installed on first use."""
    bin_dir = NPM_PREFIX / "node_modules" / ".bin"
    pinned = (CODEX, CLAUDE_CODE)
    if any(_installed_version(name) != version for name, version in pinned):
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: the agent CLIs come from the npm registry")
        command = [
            npm, "install", "--prefix", str(NPM_PREFIX), "--save-exact", "--no-audit",
            "--no-fund", *(f"{name}@{version}" for name, version in pinned),
        ]  # fmt: skip
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            pytest.skip("npm install of the agent CLIs took over 10 minutes (no registry?)")
        if result.returncode != 0:
            tail = (result.stderr or result.stdout)[-800:]
            pytest.skip(f"npm could not install the agent CLIs (no registry?): {tail}")
    for name in ("codex", "claude"):
        if not (bin_dir / name).exists():
            pytest.skip(f"npm installed no `{name}` command in {bin_dir}")
    return bin_dir


@pytest.fixture(scope="session")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    directory = tmp_path_factory.mktemp("agent-server")
    registry = directory / "models.yaml"
    registry.write_text(REGISTRY)
    log = directory / "server.log"
    env = {
        **os.environ,
        "STRATUS_CACHE_DIR": str(directory / "cache"),
        "API_KEY": ",".join(API_KEYS),
        "STRATUS_MAX_TOKENS": str(MAX_TOKENS),
        "STRATUS_LOG_LEVEL": "warning",
    }
    with open(log, "wb") as log_file:
        try:
            with stratus_serve("--models", str(registry), env=env, log=log_file) as started:
                yield AgentServer(started.url, log)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{log.read_text()}") from None
    assert started.process.returncode in (0, -15), log.read_text()


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """Only what the CLI needs: no user's keys, proxies or settings leak into the turn."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "LANG": "C.UTF-8", **extra}  # fmt: skip


def _run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=TURN_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"{command[0]} took over {TURN_TIMEOUT}s:\n{exc.stdout}\n{exc.stderr}"
        ) from None


def codex_config(base_url: str, instructions: Path) -> str:
    """A CODEX_HOME config.toml: Stratus as the provider, no login, no network but Stratus;
    the prompt's base instructions and context sections slimmed for a small model."""
    return f"""\
model = "{MODEL}"
model_provider = "stratus"
approval_policy = "never"
sandbox_mode = "read-only"
check_for_update_on_startup = false
model_context_window = 16384
model_instructions_file = "{instructions}"
include_permissions_instructions = false
include_environment_context = false
include_apps_instructions = false
include_collaboration_mode_instructions = false
web_search = "disabled"

[model_providers.stratus]
name = "Stratus"
base_url = "{base_url}/v1"
wire_api = "responses"
env_key = "STRATUS_API_KEY"

[agents]
enabled = false

[features]
goals = false

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"
"""


def test_codex_exec_completes_a_turn(agent_bin: Path, agent_server: AgentServer, tmp_path: Path):
    codex_home, work = tmp_path / "codex-home", tmp_path / "work"
    codex_home.mkdir()
    work.mkdir()
    instructions = codex_home / "instructions.md"
    instructions.write_text("You are a terse assistant in a terminal. Answer in one sentence.\n")
    (codex_home / "config.toml").write_text(codex_config(agent_server.url, instructions))
    env = _clean_env(tmp_path, CODEX_HOME=str(codex_home), STRATUS_API_KEY=API_KEYS[0])
    command = [str(agent_bin / "codex"), "exec", "--skip-git-repo-check", PROMPT]
    result = _run(command, env, work)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), result.stderr
    assert "ERROR" not in result.stderr, result.stderr
    answered = agent_server.cost_lines("createResponse")
    assert [line for line in answered if line["status"] == 200 and line["model"] == MODEL], answered


def test_claude_code_print_completes_a_turn(
    agent_bin: Path, agent_server: AgentServer, tmp_path: Path
):
    env = _clean_env(
        tmp_path,
        ANTHROPIC_BASE_URL=agent_server.url,
        ANTHROPIC_API_KEY=API_KEYS[0],
        ANTHROPIC_DEFAULT_HAIKU_MODEL=MODEL,  # its background model, were one asked for
        CLAUDE_CODE_MAX_OUTPUT_TOKENS=str(MAX_TOKENS),
        CLAUDE_CODE_MAX_CONTEXT_TOKENS="16384",  # the agent entry's window (docs/AGENTS.md)
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1",
    )
    command = [
        str(agent_bin / "claude"), "-p", PROMPT, "--model", MODEL,
        "--system-prompt", "You are a terse assistant. Answer in one short sentence.",
        "--tools", "Read", "--bare", "--no-session-persistence",
    ]  # fmt: skip
    result = _run(command, env, tmp_path)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), result.stderr
    assert "doesn't recognize the model" not in result.stdout + result.stderr  # the window set
    answered = agent_server.cost_lines("createMessage")
    assert [line for line in answered if line["status"] == 200 and line["model"] == MODEL], answered
