"""Stored responses outlive the process that made them: across a restart on SQLite (a local disk
or a volume), and across two server processes sharing one S3 bucket (moto on loopback); a store
that is down is a 503, never a turn reported as kept."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import S3World
from tests.processes import ServerProcess, stratus_serve

KEY = "store-key"
TURN = {"model": "gpt-4", "max_output_tokens": 6, "temperature": 0}
RESPONSES_BUCKET = "stratus-turns"


@contextlib.contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[ServerProcess]:
    settings = {**os.environ, "API_KEY": KEY, "STRATUS_LOG_LEVEL": "warning", **env}
    with open(log, "ab") as out, stratus_serve(env=settings, log=out) as server:
        yield server


def post(server: ServerProcess, body: dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(f"{server.url}/v1/responses", json=body, headers=headers, timeout=120)


def get(server: ServerProcess, response_id: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.get(f"{server.url}/v1/responses/{response_id}", headers=headers, timeout=30)


def test_a_conversation_continues_after_a_restart(tmp_path: Path):
    env = {"STRATUS_CACHE_DIR": str(tmp_path / "cache")}
    with serving(env, tmp_path / "log") as first:
        made = post(first, {**TURN, "input": "My name is Ada."})
        assert made.status_code == 200, made.text
    with serving(env, tmp_path / "log") as second:
        stored = get(second, made.json()["id"])
        assert stored.status_code == 200 and stored.json() == made.json()
        follow = post(second, {**TURN, "input": "Name?", "previous_response_id": made.json()["id"]})
        assert follow.status_code == 200, follow.text
    assert (tmp_path / "cache" / "responses.sqlite3").is_file()


@pytest.fixture
def bucket_store(s3: S3World, tmp_path: Path) -> dict[str, str]:
    with contextlib.suppress(Exception):
        s3.client().create_bucket(Bucket=RESPONSES_BUCKET)
    return {**s3.env, "STRATUS_RESPONSES_STORE": f"s3://{RESPONSES_BUCKET}/conversations"}


def test_two_workers_share_conversations_through_s3(
    bucket_store: dict[str, str], s3: S3World, tmp_path: Path
):
    one = {**bucket_store, "STRATUS_CACHE_DIR": str(tmp_path / "one")}
    two = {**bucket_store, "STRATUS_CACHE_DIR": str(tmp_path / "two")}
    with serving(one, tmp_path / "log") as first, serving(two, tmp_path / "log") as second:
        made = post(first, {**TURN, "input": "Remember: blue."})
        assert made.status_code == 200, made.text
        response_id = made.json()["id"]
        follow = post(second, {**TURN, "input": "Colour?", "previous_response_id": response_id})
        assert follow.status_code == 200, follow.text
        assert get(first, follow.json()["id"]).json()["previous_response_id"] == response_id
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=RESPONSES_BUCKET)["Contents"]]
    assert f"conversations/{response_id}.json" in keys
    assert not (tmp_path / "one" / "responses.sqlite3").exists()


def test_a_store_that_is_down_is_a_503_and_nothing_claims_success(
    bucket_store: dict[str, str], s3: S3World, tmp_path: Path
):
    env = {**bucket_store, "STRATUS_CACHE_DIR": str(tmp_path / "cache")}
    with serving(env, tmp_path / "log") as server:
        s3.proxy.down = True
        try:
            kept = post(server, {**TURN, "input": "Keep this."})
            assert kept.status_code == 503, kept.text
            error = kept.json()["error"]
            assert error["code"] == "response_store_unavailable"
            assert RESPONSES_BUCKET not in error["message"]
            assert kept.headers.get("retry-after")
            streamed = httpx.post(
                f"{server.url}/v1/responses",
                json={**TURN, "input": "Keep this.", "stream": True},
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=120,
            )
            assert '"type":"response.failed"' in streamed.text
            assert "response.completed" not in streamed.text
            # Not stored: nothing needed from the store answers as usual.
            assert post(server, {**TURN, "input": "Fine.", "store": False}).status_code == 200
        finally:
            s3.proxy.down = False


def test_a_conversation_too_large_to_keep_is_refused_before_it_is_generated(tmp_path: Path):
    env = {"STRATUS_CACHE_DIR": str(tmp_path / "cache"), "STRATUS_RESPONSES_MAX_MB": "0.002"}
    with serving(env, tmp_path / "log") as server:
        long = "word " * 600  # 3 KB: more than the 2 KB a stored response may hold
        refused = post(server, {**TURN, "input": long})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["param"], error["code"]) == ("store", "response_too_large")
        assert post(server, {**TURN, "input": long, "store": False}).status_code == 200
    # Refused before the prompt was even evaluated: its cost line counts no tokens.
    lines = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()
             if line.startswith('{"event":"request"')]  # fmt: skip
    [cost] = [line for line in lines if line["status"] == 400]
    assert cost["error"] == "response_too_large" and cost["units"] == {}
